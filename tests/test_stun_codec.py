"""The STUN codec: RFC 5769's test vectors, RFC 3489 messages, lengths and FINGERPRINT checked before trust."""

import struct

import pytest
from aioice import stun as aioice_stun

from dp2pt.errors import RemoteProtocolError
from dp2pt.proto import stun
from tests.stun_golden import CLASSIC_TID, GOLDEN, RFC5769_REQUEST, RFC5769_RESPONSE, TID, attr, request


def test_rfc5769_sample_request_is_read_attribute_by_attribute():
    m = stun.parse(RFC5769_REQUEST)
    assert stun.is_binding_request(m) and not m.classic and m.transaction_id == TID
    assert m.attributes["SOFTWARE"] == "STUN test client"
    assert m.attributes["PRIORITY"] == 0x6E0001FF
    assert m.attributes["USERNAME"] == b"evtj:h6vY"
    assert m.attributes["FINGERPRINT"] == 0xE57A3BCF  # and it matched, or parse would have raised
    assert m.unknown == []


def test_rfc5769_sample_response_gives_its_mapped_address():
    m = stun.parse(RFC5769_RESPONSE)
    assert stun.is_binding_response(m)
    assert stun.mapped_address(m) == ("192.0.2.1", 32853)


def test_encode_round_trips_and_aioice_reads_our_bytes():
    m = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, TID,
                     {"XOR-MAPPED-ADDRESS": ("192.0.2.1", 32853), "OTHER-ADDRESS": ("203.0.113.51", 3479)})
    data = m.encode(fingerprint=True)
    assert data[20:32] == bytes.fromhex("002000080001a147e112a643")  # RFC 5769 §2.2's XOR-MAPPED-ADDRESS
    back = stun.parse(data)
    assert back.attributes["OTHER-ADDRESS"] == ("203.0.113.51", 3479) and "FINGERPRINT" in back.attributes
    theirs = aioice_stun.parse_message(data)  # a second implementation checks the fingerprint too
    assert theirs.attributes["XOR-MAPPED-ADDRESS"] == ("192.0.2.1", 32853)


def test_ipv6_xor_address_uses_the_transaction_id():
    m = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, TID, {"XOR-MAPPED-ADDRESS": ("2001:db8::1", 4000)})
    data = m.encode()
    assert stun.mapped_address(stun.parse(data)) == ("2001:db8::1", 4000)
    assert aioice_stun.parse_message(data).attributes["XOR-MAPPED-ADDRESS"] == ("2001:db8::1", 4000)


def test_classic_message_keeps_its_16_byte_transaction_id():
    m = stun.parse(GOLDEN["classic change ip+port"])
    assert m.classic and m.cookie.to_bytes(4, "big") + m.transaction_id == CLASSIC_TID
    assert m.attributes["CHANGE-REQUEST"] == 6
    assert m.encode()[4:20] == CLASSIC_TID


def test_unknown_attributes_are_listed_in_order():
    m = stun.parse(GOLDEN["unknown required"])
    assert m.unknown == [0x0030, 0x7FFF] and m.unknown_required == [0x0030, 0x7FFF]
    assert stun.parse(GOLDEN["unknown optional"]).unknown_required == []


@pytest.mark.parametrize("data, why", [
    (request()[:19], "shorter than its 20-byte header"),
    (request() + b"\x00\x00\x00\x00", "does not match"),
    (b"\x80" + request()[1:], "top two bits"),
    (request()[:2] + b"\x00\x08" + request()[4:] + b"\x00\x20\x00\x14" + bytes(4), "runs past"),
    (request(attr(0x0020, b"\x00\x07" + bytes(6))), "XOR-MAPPED-ADDRESS"),
    (GOLDEN["fingerprint"][:-1] + bytes([GOLDEN["fingerprint"][-1] ^ 1]), "FINGERPRINT does not match"),
    (request(attr(0x8028, bytes(4)) + attr(0x8022, b"x")), "not the last"),
])
def test_malformed_messages_are_remote_errors_naming_the_problem(data, why):
    with pytest.raises(RemoteProtocolError, match=why):
        stun.parse(data)


def test_demultiplexing_the_main_port():
    assert stun.looks_like_stun(GOLDEN["plain"]) and stun.is_stun(GOLDEN["plain"])
    assert stun.looks_like_stun(GOLDEN["classic"]) and not stun.is_stun(GOLDEN["classic"])
    for other in (b'{"type":"login","id":"A"}', b"D2PT" + bytes(30), b"", struct.pack("!HH", 1, 8) + bytes(16)):
        assert not stun.looks_like_stun(other)


def test_mapped_address_falls_back_to_mapped_address_attribute():
    response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, attributes={"MAPPED-ADDRESS": ("198.51.100.9", 1234)})
    assert stun.mapped_address(stun.parse(bytes(response))) == ("198.51.100.9", 1234)
    with pytest.raises(RemoteProtocolError, match="no mapped address"):
        stun.mapped_address(stun.Message(stun.Method.BINDING, stun.Class.RESPONSE))
