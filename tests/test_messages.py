import pytest

from dp2pt.errors import LocalProtocolError, RemoteProtocolError
from dp2pt.proto import messages


def test_round_trip():
    msg = messages.make("report", token="t", session="s", ip="198.51.100.1", port=4000, delta=1)
    assert messages.decode(messages.encode(msg)) == msg


@pytest.mark.parametrize(
    "data, words",
    [
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"type": "nope"}', "unknown control message type"),
        (b'{"type": "login"}', "field 'id'"),
        (b'{"type": "report", "token": "t", "session": "s", "ip": "x", "port": true, "delta": 1}', "field 'port'"),
        (b'{"type": "ack", "n": "1"}', "field 'n'"),
        (b"{" + b" " * messages.MAX_MESSAGE_SIZE + b"}", "exceeds"),
    ],
)
def test_decode_rejects_with_a_sentence(data, words):
    with pytest.raises(RemoteProtocolError, match=words):
        messages.decode(data)


def test_make_refuses_a_message_missing_a_field():
    with pytest.raises(LocalProtocolError, match="field 'token'"):
        messages.make("connect", target="A", variant="basic", k=1, schedule="diagram1")
