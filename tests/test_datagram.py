import pytest

from dp2pt.errors import RemoteProtocolError
from dp2pt.proto import datagram
from dp2pt.proto.datagram import Datagram, Kind


def test_round_trip_and_magic():
    d = Datagram(Kind.DATA, bytes.fromhex("0011223344556677"), 3, 42, b"hello")
    data = bytes(d)
    assert data.startswith(b"D2PT") and datagram.is_direct(data)
    assert datagram.parse(data) == d


@pytest.mark.parametrize("data", [b"D2PT", b"XXXX" + bytes(15), b"D2PT\x09" + bytes(14), bytes(Datagram(Kind.DATA, bytes(8))) + bytes(2000)])
def test_bad_datagrams_are_remote_errors(data):
    with pytest.raises(RemoteProtocolError):
        datagram.parse(data)


def test_session_bytes_checks_length():
    assert datagram.session_bytes("00ff00ff00ff00ff") == bytes.fromhex("00ff00ff00ff00ff")
    with pytest.raises(RemoteProtocolError):
        datagram.session_bytes("abcd")
