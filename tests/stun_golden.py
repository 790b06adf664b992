"""Golden STUN requests: what real clients send, and the corner cases of RFC 8489, RFC 3489 and RFC 5780.

Each request is sent to the sans-IO responder and to the fast path; both must give the same bytes.
"""

from __future__ import annotations

import struct

COOKIE = b"\x21\x12\xa4\x42"
TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")
CLASSIC_TID = bytes.fromhex("0a0b0c0d") + TID  # RFC 3489: 16 bytes, no magic cookie


def request(attrs: bytes = b"", tid: bytes = COOKIE + TID, method: int = 0x0001) -> bytes:
    return struct.pack("!HH", method, len(attrs)) + tid + attrs


def attr(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + bytes(-len(value) % 4)


def change(flags: int) -> bytes:
    return attr(0x0003, struct.pack("!I", flags))


#: RFC 5769 §2.1: an ICE connectivity check (SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME,
#: MESSAGE-INTEGRITY, FINGERPRINT): every kind of attribute a server must read past.
RFC5769_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae802200105354554e207465737420636c69656e74"
    "002400046e0001ff80290008932ff9b151263b36000600096576746a3a68367659202020"
    "000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf")
#: RFC 5769 §2.2: the sample IPv4 response (XOR-MAPPED-ADDRESS 192.0.2.1:32853).
RFC5769_RESPONSE = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d780280004c07d4c96")

GOLDEN: dict[str, bytes] = {
    "plain": request(),  # dp2pt's probes, turnutils_stunclient, most clients
    "classic": request(tid=CLASSIC_TID),  # RFC 3489 (pystun3)
    "classic change 0": request(change(0), CLASSIC_TID),  # Debian's stun client, test I
    "classic change ip+port": request(change(6), CLASSIC_TID),  # test II
    "classic change port": request(change(2), CLASSIC_TID),  # test III
    "change ip+port": request(change(6)),  # turnutils_natdiscovery's filtering test
    "change port": request(change(2)),
    "rfc5769": RFC5769_REQUEST,
    "fingerprint": None,  # filled below: a plain request with FINGERPRINT
    "unknown required": request(attr(0x0030, b"\x00" * 4) + attr(0x7FFF, b"")),
    "unknown optional": request(attr(0xC001, b"abc")),  # comprehension-optional: ignored
    "classic unknown": request(attr(0x0030, b"\x00" * 4), CLASSIC_TID),
    "response-port": request(attr(0x0027, b"\x13\x88\x00\x00")),
    "padding": request(attr(0x0026, bytes(64))),
    "response-address": request(attr(0x0002, b"\x00\x01\x13\x88\x7f\x00\x00\x01"), CLASSIC_TID),
    "allocate": request(method=0x0003),  # a TURN request: not ours, no answer
    "indication": request(method=0x0011),
}


def _with_fingerprint(data: bytes) -> bytes:
    import zlib

    data = data[:2] + struct.pack("!H", len(data) - 20 + 8) + data[4:]
    return data + struct.pack("!HHI", 0x8028, 4, zlib.crc32(data) ^ 0x5354554E)


GOLDEN["fingerprint"] = _with_fingerprint(request())
