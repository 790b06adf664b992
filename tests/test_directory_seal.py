"""The directory's envelopes between servers, sans-IO: sealed, addressed, fresh and used once."""

import json

import pytest

from dp2pt.errors import ConfigError, RemoteProtocolError
from dp2pt.proto import directory as d
from dp2pt.proto.messages import make

SECRET = b"0123456789abcdef0123456789abcdef"
SESSION = make("deliver", to="A", msg=make("session", session="0123456789abcdef", role="A", peer="B",
                                           variant="basic", k=1, schedule="diagram1", key="ab" * 16))
NOW = 1_000_000.0


def pair():
    return d.Sealer(SECRET, "s1", "i1"), d.Sealer(SECRET, "s2", "i2")


def test_a_sealed_message_opens_at_its_recipient_and_reads_as_nothing_on_the_way():
    s1, s2 = pair()
    data = s1.seal("s2", SESSION, NOW)
    assert b"ab" * 16 not in data and b"session" not in data and b"deliver" not in data
    assert s2.open(data, NOW + 1) == ("s1", "i1", SESSION)


@pytest.mark.parametrize("tamper", ["ciphertext", "sender", "recipient", "time", "nonce"])
def test_any_change_on_the_way_is_refused(tamper):
    s1, s2 = pair()
    outer = json.loads(s1.seal("s2", SESSION, NOW))
    if tamper == "ciphertext":
        c = bytearray(outer["c"].encode())
        c[5] = ord("A") if c[5] != ord("A") else ord("B")
        outer["c"] = c.decode()
    elif tamper == "sender":
        outer["h"]["from"] = "s3"
    elif tamper == "recipient":
        outer["h"]["to"] = "s3"
        s2 = d.Sealer(SECRET, "s3", "i3")
    elif tamper == "time":
        outer["h"]["t"] += 1
    else:
        outer["h"]["nonce"] = "00" * d.NONCE_BYTES
    with pytest.raises(RemoteProtocolError, match="authenticate"):
        s2.open(json.dumps(outer).encode(), NOW)


def test_wrong_secret_wrong_recipient_old_replayed_and_garbage_are_refused():
    s1, s2 = pair()
    stranger = d.Sealer(b"some other directory's secret!!", "s1", "i9")
    with pytest.raises(RemoteProtocolError, match="authenticate"):
        s2.open(stranger.seal("s2", SESSION, NOW), NOW)
    with pytest.raises(RemoteProtocolError, match="not us"):
        s2.open(s1.seal("s3", SESSION, NOW), NOW)
    with pytest.raises(RemoteProtocolError, match="old"):
        s2.open(s1.seal("s2", SESSION, NOW - d.MAX_AGE - 1), NOW)
    data = s1.seal("s2", SESSION, NOW)
    s2.open(data, NOW)
    with pytest.raises(RemoteProtocolError, match="replayed"):
        s2.open(data, NOW + 5)
    for garbage in (b"", b"{}", b"[1]", b'{"h":{},"c":"!"}', b"x" * (d.MAX_ENVELOPE + 1)):
        with pytest.raises(RemoteProtocolError):
            s2.open(garbage, NOW)


@pytest.mark.parametrize("nested", [b"[" * 4000 + b"]" * 4000, b'{"h":' * 1000 + b"1" + b"}" * 1000,
                                    b'{"h":{"from":[[]]},"c":""}'], ids=["lists", "objects", "in the header"])
def test_deeply_nested_garbage_is_refused_before_parsing(nested):
    """The audit: an 8,000-byte ``[[[...]]]`` made json recurse until RecursionError, which escaped
    ``open`` and cost the server its inbox subscription (messages published meanwhile were lost)."""
    _, s2 = pair()
    with pytest.raises(RemoteProtocolError, match="deeper"):
        s2.open(nested, NOW)


def test_remembered_nonces_are_forgotten_once_their_envelopes_are_too_old_anyway():
    s1, s2 = pair()
    for i in range(50):
        s2.open(s1.seal("s2", SESSION, NOW + i), NOW + i)
    s2.open(s1.seal("s2", SESSION, NOW + 10 * d.MAX_AGE), NOW + 10 * d.MAX_AGE)
    assert len(s2._seen) == 1


def test_a_sealed_message_must_still_be_a_valid_control_message():
    s1, s2 = pair()
    data = s1.seal("s2", {"type": "deliver", "to": "A"}, NOW)  # no msg field
    with pytest.raises(RemoteProtocolError, match="deliver message"):
        s2.open(data, NOW)


def test_entries_names_and_secrets():
    assert d.parse_entry(d.entry("eu:7000", "abc")) == ("eu:7000", "abc")
    assert d.parse_entry(b"ls 1 x") == ("ls 1", "x") and d.parse_entry(None) is None and d.parse_entry("x") is None
    with pytest.raises(ConfigError):
        d.check_name("two words")
    with pytest.raises(ConfigError, match="at least 16"):
        d.load_secret(b"  short \n", "FILE")
    assert d.load_secret(SECRET + b"\n", "FILE") == SECRET
