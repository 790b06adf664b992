"""STUN messages (RFC 8489, its predecessors RFC 5389 and RFC 3489, and RFC 5780's attributes), sans-IO.

The probes of the testing-NAT procedure (spec steps 3-6, 9-12) are STUN Binding requests, so any
STUN client can query a dp2pt location server and a dp2pt peer can test its NAT against any STUN
server (e.g. coturn).

The wire format is a table (after aioice's ``stun.py``): one row per attribute with its pack and
unpack function; adding an attribute is a row.  dp2pt keeps its own codec rather than aioice's
because a server must read what aioice drops (RFC 3489 requests without the magic cookie, the list
of unknown comprehension-required attributes for a 420 answer) and because importing aioice pulls in
its ICE stack, about 85 ms of every ``dp2pt peer`` start-up (``python3 -X importtime``).

A message without the magic cookie is an RFC 3489 ("classic") message: its 16-byte transaction id
is kept whole (the cookie field plus the 12 bytes after it) and echoed in the answer.
"""

from __future__ import annotations

import binascii
import enum
import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Any, Callable

from dp2pt.errors import LocalProtocolError, RemoteProtocolError

COOKIE = 0x2112A442
HEADER_LENGTH = 20
FINGERPRINT_XOR = 0x5354554E  # "STUN", RFC 8489 §14.7
FINGERPRINT_LENGTH = 8  # attribute header + CRC-32
IPV4, IPV6 = 0x01, 0x02
#: Attribute types below this are comprehension-required (RFC 8489 §14): an agent that does not
#: understand one must refuse the request with 420 (Unknown Attribute).
COMPREHENSION_OPTIONAL = 0x8000

_HEADER = struct.Struct("!HHI12s")
_ATTR = struct.Struct("!HH")

Address = tuple[str, int]


class Method(enum.IntEnum):
    BINDING = 0x001


class Class(enum.IntEnum):
    REQUEST = 0x000
    INDICATION = 0x010
    RESPONSE = 0x100
    ERROR = 0x110


# ---- attribute values: one pack/unpack pair per value type ---------------------------------------

def _pack_address(value: Address, _xor: bytes) -> bytes:
    v6 = ":" in value[0]
    packed = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, value[0])
    return struct.pack("!BBH", 0, IPV6 if v6 else IPV4, value[1]) + packed


def _unpack_address(data: bytes, _xor: bytes) -> Address:
    if len(data) < 4:
        raise ValueError("address shorter than 4 bytes")
    family, port = data[1], struct.unpack_from("!H", data, 2)[0]
    if (family, len(data)) == (IPV4, 8):
        return socket.inet_ntop(socket.AF_INET, data[4:]), port
    if (family, len(data)) == (IPV6, 20):
        return socket.inet_ntop(socket.AF_INET6, data[4:]), port
    raise ValueError(f"address family {family} with {len(data) - 4} address bytes")


def _xor_pad(transaction_id: bytes) -> bytes:
    """What X-Port and X-Address are XORed with (RFC 8489 §14.2): the cookie's high half, then cookie and id."""
    return struct.pack("!HI", COOKIE >> 16, COOKIE) + transaction_id


def _xor(data: bytes, pad: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, pad))


def _pack_xor_address(value: Address, xor: bytes) -> bytes:
    plain = _pack_address(value, xor)
    return plain[:2] + _xor(plain[2:], xor)


def _unpack_xor_address(data: bytes, xor: bytes) -> Address:
    return _unpack_address(data[:2] + _xor(data[2:], xor), xor)


def _pack_u32(value: int, _xor: bytes) -> bytes:
    return struct.pack("!I", value)


def _unpack_u32(data: bytes, _xor: bytes) -> int:
    if len(data) != 4:
        raise ValueError(f"{len(data)} bytes, 4 expected")
    return struct.unpack("!I", data)[0]


def _pack_bytes(value: bytes, _xor: bytes) -> bytes:
    return value


def _unpack_bytes(data: bytes, _xor: bytes) -> bytes:
    return data


def _pack_text(value: str, _xor: bytes) -> bytes:
    return value.encode()


def _unpack_text(data: bytes, _xor: bytes) -> str:
    return data.decode("utf-8", "replace")


def _pack_error(value: tuple[int, str], _xor: bytes) -> bytes:
    code, reason = value
    return struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode()


def _unpack_error(data: bytes, _xor: bytes) -> tuple[int, str]:
    if len(data) < 4:
        raise ValueError("error code shorter than 4 bytes")
    return (data[2] & 0x7) * 100 + data[3], data[4:].decode("utf-8", "replace")


def _pack_types(value: list[int], _xor: bytes) -> bytes:
    return struct.pack(f"!{len(value)}H", *value)


def _unpack_types(data: bytes, _xor: bytes) -> list[int]:
    if len(data) % 2:
        raise ValueError("odd length")
    return list(struct.unpack(f"!{len(data) // 2}H", data))


def _pack_none(value: None, _xor: bytes) -> bytes:
    return b""


def _unpack_none(data: bytes, _xor: bytes) -> None:
    return None


Packer = Callable[[Any, bytes], bytes]
Unpacker = Callable[[bytes, bytes], Any]

#: (type, name, pack, unpack).  RFC 8489 unless noted; RFC 3489's ones are read in classic requests
#: and written in classic answers, RFC 5780's ones by a server that has a second address.
ATTRIBUTES: list[tuple[int, str, Packer, Unpacker]] = [
    (0x0001, "MAPPED-ADDRESS", _pack_address, _unpack_address),
    (0x0002, "RESPONSE-ADDRESS", _pack_address, _unpack_address),  # RFC 3489, never honoured (reflection)
    (0x0003, "CHANGE-REQUEST", _pack_u32, _unpack_u32),  # RFC 5780 §7.2 (RFC 3489 §11.2.4)
    (0x0004, "SOURCE-ADDRESS", _pack_address, _unpack_address),  # RFC 3489 §11.2.5
    (0x0005, "CHANGED-ADDRESS", _pack_address, _unpack_address),  # RFC 3489 §11.2.3
    (0x0006, "USERNAME", _pack_bytes, _unpack_bytes),
    (0x0008, "MESSAGE-INTEGRITY", _pack_bytes, _unpack_bytes),
    (0x0009, "ERROR-CODE", _pack_error, _unpack_error),
    (0x000A, "UNKNOWN-ATTRIBUTES", _pack_types, _unpack_types),
    (0x0014, "REALM", _pack_bytes, _unpack_bytes),
    (0x0015, "NONCE", _pack_bytes, _unpack_bytes),
    (0x001C, "MESSAGE-INTEGRITY-SHA256", _pack_bytes, _unpack_bytes),
    (0x0020, "XOR-MAPPED-ADDRESS", _pack_xor_address, _unpack_xor_address),
    (0x0024, "PRIORITY", _pack_u32, _unpack_u32),  # RFC 8445 (ICE connectivity checks)
    (0x0025, "USE-CANDIDATE", _pack_none, _unpack_none),  # RFC 8445
    (0x0026, "PADDING", _pack_bytes, _unpack_bytes),  # RFC 5780 §7.6
    (0x0027, "RESPONSE-PORT", _pack_u32, _unpack_u32),  # RFC 5780 §7.5
    (0x8022, "SOFTWARE", _pack_text, _unpack_text),
    (0x8028, "FINGERPRINT", _pack_u32, _unpack_u32),
    (0x8029, "ICE-CONTROLLED", _pack_bytes, _unpack_bytes),
    (0x802A, "ICE-CONTROLLING", _pack_bytes, _unpack_bytes),
    (0x802B, "RESPONSE-ORIGIN", _pack_address, _unpack_address),  # RFC 5780 §7.3
    (0x802C, "OTHER-ADDRESS", _pack_address, _unpack_address),  # RFC 5780 §7.4
]
BY_TYPE = {row[0]: row for row in ATTRIBUTES}
BY_NAME = {row[1]: row for row in ATTRIBUTES}

#: CHANGE-REQUEST flags (RFC 5780 §7.2).
CHANGE_IP, CHANGE_PORT = 0x4, 0x2


@dataclass
class Message:
    """A STUN message: method, class, transaction id and attributes by name (first of each kept).

    ``cookie`` is the second header word: the magic cookie, or the first four bytes of an RFC 3489
    transaction id.  ``unknown`` lists the attribute types the table does not know, in order.
    """

    method: int
    cls: int
    transaction_id: bytes = field(default_factory=lambda: os.urandom(12))
    attributes: dict[str, Any] = field(default_factory=dict)
    cookie: int = COOKIE
    unknown: list[int] = field(default_factory=list)

    @property
    def classic(self) -> bool:
        """An RFC 3489 message (no magic cookie): answer it the RFC 3489 way (RFC 5389 §12.2)."""
        return self.cookie != COOKIE

    @property
    def unknown_required(self) -> list[int]:
        """Unknown comprehension-required attribute types (RFC 8489 §14): reason for a 420."""
        return [t for t in self.unknown if t < COMPREHENSION_OPTIONAL]

    def encode(self, fingerprint: bool = False) -> bytes:
        """The message on the wire; ``fingerprint`` appends FINGERPRINT (RFC 8489 §14.7) last.

        Raises:
            LocalProtocolError: an attribute name the table does not know.
        """
        xor = _xor_pad(self.transaction_id)
        body = bytearray()
        for name, value in self.attributes.items():
            if name == "FINGERPRINT":
                continue
            row = BY_NAME.get(name)
            if row is None:
                raise LocalProtocolError(f"unknown STUN attribute {name!r}")
            data = row[2](value, xor)
            body += _ATTR.pack(row[0], len(data)) + data + bytes(-len(data) % 4)
        header = _HEADER.pack(self.method | self.cls, len(body) + (FINGERPRINT_LENGTH if fingerprint else 0),
                              self.cookie, self.transaction_id)
        out = header + bytes(body)
        if fingerprint:
            out += _ATTR.pack(0x8028, 4) + struct.pack("!I", fingerprint_of(out))
        return out

    def __bytes__(self) -> bytes:
        return self.encode()


def fingerprint_of(data: bytes) -> int:
    """CRC-32 of everything before the FINGERPRINT attribute, XORed with 0x5354554E (RFC 8489 §14.7).

    ``data``'s length field must already count the FINGERPRINT attribute.
    """
    return binascii.crc32(data) ^ FINGERPRINT_XOR


def looks_like_stun(data: bytes) -> bool:
    """Any STUN message, RFC 3489 ones included: top two bits zero and a length field that fits.

    This is how the server splits its UDP port between STUN and the control protocol: control
    messages are JSON (``{``, 0x7B) and direct datagrams start ``D2PT`` (0x44), both with a top bit set.
    """
    return (len(data) >= HEADER_LENGTH and data[0] < 0x40
            and (data[2] << 8 | data[3]) == len(data) - HEADER_LENGTH and not data[3] & 3)


def is_stun(data: bytes) -> bool:
    """An RFC 5389/8489 message (RFC 8489 §6 demultiplexing): top two bits zero and the magic cookie."""
    return len(data) >= HEADER_LENGTH and data[0] < 0x40 and struct.unpack_from("!I", data, 4)[0] == COOKIE


def parse(data: bytes) -> Message:
    """Parse a STUN message, checking every length before trusting it and FINGERPRINT when present.

    Raises:
        RemoteProtocolError: not STUN, a length that does not fit, an attribute whose value cannot
            be read, or a FINGERPRINT that does not match (RFC 8489 §7.3: such a message is dropped).
    """
    if len(data) < HEADER_LENGTH:
        raise RemoteProtocolError(f"STUN message of {len(data)} bytes is shorter than its 20-byte header")
    mtype, length, cookie, tid = _HEADER.unpack_from(data)
    if mtype & 0xC000:
        raise RemoteProtocolError("not a STUN message: the top two bits are not zero")
    if length != len(data) - HEADER_LENGTH or length % 4:
        raise RemoteProtocolError(f"STUN length field {length} does not match the {len(data) - HEADER_LENGTH} bytes after the header")
    message = Message(mtype & 0x3EEF, mtype & 0x0110, tid, {}, cookie)
    xor = _xor_pad(tid)
    pos = HEADER_LENGTH
    while pos < len(data):
        if pos + 4 > len(data):
            raise RemoteProtocolError("STUN attribute header truncated")
        atype, alen = _ATTR.unpack_from(data, pos)
        end = pos + 4 + alen
        if end > len(data):
            raise RemoteProtocolError(f"STUN attribute 0x{atype:04x} of {alen} bytes runs past the message")
        row = BY_TYPE.get(atype)
        if row is None:
            message.unknown.append(atype)
        elif row[1] not in message.attributes:
            try:
                message.attributes[row[1]] = row[3](data[pos + 4:end], xor)
            except (ValueError, struct.error) as exc:
                raise RemoteProtocolError(f"STUN {row[1]}: {exc}") from None
            if row[1] == "FINGERPRINT":
                if end + (-alen % 4) != len(data):
                    raise RemoteProtocolError("STUN FINGERPRINT is not the last attribute")
                if message.attributes["FINGERPRINT"] != fingerprint_of(data[:pos]):
                    raise RemoteProtocolError("STUN FINGERPRINT does not match")
        pos = end + (-alen % 4)
    return message


# ---- the client side: probes and what a peer reads in the answers ---------------------------------

def binding_request() -> Message:
    """A fresh Binding request with a random transaction id."""
    return Message(Method.BINDING, Class.REQUEST)


def binding_response(request: Message, source: Address) -> bytes:
    """The plainest success answer (XOR-MAPPED-ADDRESS = ``source``): a stand-in STUN server's reply.

    The location server's answers are :func:`dp2pt.proto.stun_server.answer`'s.
    """
    return Message(Method.BINDING, Class.RESPONSE, request.transaction_id, {"XOR-MAPPED-ADDRESS": source},
                   request.cookie).encode()


def is_binding_request(message: Message) -> bool:
    return message.method == Method.BINDING and message.cls == Class.REQUEST


def is_binding_response(message: Message) -> bool:
    return message.method == Method.BINDING and message.cls == Class.RESPONSE


def mapped_address(response: Message) -> Address:
    """The reflexive address of a Binding response (XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS).

    Raises:
        RemoteProtocolError: the response carries neither attribute.
    """
    for name in ("XOR-MAPPED-ADDRESS", "MAPPED-ADDRESS"):
        if name in response.attributes:
            host, port = response.attributes[name]
            return host, port
    raise RemoteProtocolError("STUN Binding response carries no mapped address")


def other_address(response: Message) -> Address | None:
    """The server's alternate address (RFC 5780 §7.4 OTHER-ADDRESS, RFC 3489 CHANGED-ADDRESS), if given."""
    return response.attributes.get("OTHER-ADDRESS") or response.attributes.get("CHANGED-ADDRESS")
