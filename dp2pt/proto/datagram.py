"""Direct datagrams: what crosses NAT-A's WAN and NAT-B's WAN in the direct transmission procedure.

Fixed binary layout so a capture can recognise them by the magic: ``D2PT | type | session(8) |
index(2) | seq(4) | payload``.  The session id ties a datagram to one pairing, so stray or forged
datagrams from other pairs are ignored.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from dp2pt.errors import RemoteProtocolError

MAGIC = b"D2PT"
_HEADER = struct.Struct("!4sB8sHI")
HEADER_LENGTH = _HEADER.size
MAX_PAYLOAD = 1200


class Kind(enum.IntEnum):
    PUNCH = 1  # spec steps 15 and 16: one per predicted port
    REPLY = 2  # spec step 17: B answers the punch that reached it
    DATA = 3  # the data exchange over the direct path
    DATA_ACK = 4


@dataclass(frozen=True)
class Datagram:
    kind: Kind
    session: bytes  # 8 bytes
    index: int = 0  # which punch packet (1..k) this is, or answers
    seq: int = 0
    payload: bytes = b""

    def __bytes__(self) -> bytes:
        return _HEADER.pack(MAGIC, self.kind, self.session, self.index, self.seq) + self.payload


def is_direct(data: bytes) -> bool:
    return data[:4] == MAGIC


def parse(data: bytes) -> Datagram:
    """Parse a direct datagram.

    Raises:
        RemoteProtocolError: too short, wrong magic, unknown kind or oversized payload.
    """
    if len(data) < HEADER_LENGTH:
        raise RemoteProtocolError(f"direct datagram of {len(data)} bytes is shorter than its header")
    magic, kind, session, index, seq = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise RemoteProtocolError("direct datagram has the wrong magic")
    if kind not in Kind._value2member_map_:
        raise RemoteProtocolError(f"direct datagram of unknown kind {kind}")
    payload = data[HEADER_LENGTH:]
    if len(payload) > MAX_PAYLOAD:
        raise RemoteProtocolError(f"direct datagram payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return Datagram(Kind(kind), session, index, seq, payload)


def session_bytes(session_id: str) -> bytes:
    """The 8-byte wire form of a session id (16 hex digits)."""
    try:
        raw = bytes.fromhex(session_id)
    except ValueError:
        raise RemoteProtocolError(f"session id {session_id!r} is not hex") from None
    if len(raw) != 8:
        raise RemoteProtocolError(f"session id {session_id!r} is not 8 bytes")
    return raw
