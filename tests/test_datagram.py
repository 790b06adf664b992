import pytest

from dp2pt.errors import RemoteProtocolError
from dp2pt.proto import datagram
from dp2pt.proto.datagram import Datagram, Kind


KEY = bytes(range(16))
SID = bytes.fromhex("0011223344556677")


def test_round_trip_and_magic():
    d = Datagram(Kind.DATA, SID, 3, 42, b"hello")
    data = datagram.seal(d, KEY, "A")
    assert data.startswith(b"D2PT") and datagram.is_direct(data) and data[4] == Kind.DATA  # what captures read
    parsed = datagram.parse(data)
    assert (parsed.kind, parsed.session, parsed.index, parsed.seq, parsed.payload) == (Kind.DATA, SID, 3, 42, b"hello")
    assert datagram.verify(parsed, KEY, "A")


@pytest.mark.parametrize("change", ["key", "sender", "seq", "payload", "session"])
def test_the_tag_binds_key_sender_and_every_field(change):
    d = Datagram(Kind.PUNCH, SID, 1, 0, b"x")
    parsed = datagram.parse(datagram.seal(d, KEY, "B"))
    key, sender = (bytes(16) if change == "key" else KEY), ("A" if change == "sender" else "B")
    if change in ("seq", "payload", "session"):
        field = {"seq": ("seq", 1), "payload": ("payload", b"y"), "session": ("session", bytes(8))}[change]
        parsed = Datagram(**{**parsed.__dict__, field[0]: field[1]})
    assert not datagram.verify(parsed, key, sender)


@pytest.mark.parametrize("data", [b"D2PT", b"XXXX" + bytes(31), b"D2PT\x09" + bytes(30),
                                  bytes(Datagram(Kind.DATA, bytes(8))) + bytes(2000),
                                  bytes(Datagram(Kind.DATA, bytes(8)))[:-1]])
def test_bad_datagrams_are_remote_errors(data):
    with pytest.raises(RemoteProtocolError):
        datagram.parse(data)


def test_session_bytes_checks_length():
    assert datagram.session_bytes("00ff00ff00ff00ff") == bytes.fromhex("00ff00ff00ff00ff")
    with pytest.raises(RemoteProtocolError):
        datagram.session_bytes("abcd")
