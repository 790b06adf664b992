import pytest

from dp2pt.errors import LocalProtocolError, RemoteProtocolError
from dp2pt.proto import messages


def test_round_trip():
    msg = messages.make("report", session="s", ip="198.51.100.1", port=4000, delta=1)
    assert messages.decode(messages.encode(msg)) == msg


@pytest.mark.parametrize(
    "data, words",
    [
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"type": "nope"}', "unknown control message type"),
        (b'{"type": "login"}', "field 'id'"),
        (b'{"type": "report", "session": "s", "ip": "x", "port": true, "delta": 1}', "field 'port'"),
        (b'{"type": "ack", "n": "1"}', "field 'n'"),
        (b'{"type": "ping", "n": 1, "mac": 7}', "field 'mac'"),
        (b'{"type": "login", "id": "A", "allow": "B"}', "field 'allow'"),
        (b"{" + b" " * messages.MAX_MESSAGE_SIZE + b"}", "exceeds"),
        (b'{"type": "ping", "x": ' + b"[" * 2000 + b"]" * 2000 + b"}", "deeper"),
        (b'{"type": "ping", "x": ' + b'{"a":' * 9 + b"1" + b"}" * 9 + b"}", "deeper"),
        ("{\"type\": \"\u00e9\u00e9\"}".encode(), "unknown control message type"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_decode_rejects_with_a_sentence(data, words):
    with pytest.raises(RemoteProtocolError, match=words):
        messages.decode(data)


def test_make_refuses_a_message_missing_a_field():
    with pytest.raises(LocalProtocolError, match="field 'schedule'"):
        messages.make("connect", target="A", variant="basic", k=1)


def test_brackets_inside_strings_do_not_count_as_depth():
    deep_looking = '{"type": "login", "id": "' + "[{" * 100 + '\\\\\\"", "allow": [["x"]]}'
    msg = messages.decode(deep_looking.encode())
    assert msg["id"].startswith("[{") and msg["allow"] == [["x"]]


def test_the_deepest_legitimate_message_passes():
    inner = messages.make("login_ok", key="k", server="ls1", stun=[["198.51.100.10", 3478]])
    msg = messages.make("deliver", to="A", msg=inner)
    assert messages.decode(messages.encode(msg)) == msg
