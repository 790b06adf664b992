"""Direct datagrams: what crosses NAT-A's WAN and NAT-B's WAN in the direct transmission procedure.

Fixed binary layout so a capture can recognise them by the magic: ``D2PT | type | session(8) |
index(2) | seq(4) | tag(16) | payload``.  The tag is an HMAC of the rest under the session key, which
only the two peers of the session received (over their authenticated control channels), with the
sender's role mixed in so a datagram cannot be reflected back to its sender: a datagram from anyone
else, or for another session, does not verify.  :func:`parse` reads a datagram without the key (as a
capture reader does); :func:`seal` and :func:`verify` need it.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
from dataclasses import dataclass

from dp2pt.errors import RemoteProtocolError

MAGIC = b"D2PT"
_FIELDS = struct.Struct("!4sB8sHI")
TAG_LENGTH = 16
HEADER_LENGTH = _FIELDS.size + TAG_LENGTH
MAX_PAYLOAD = 1200
_NO_TAG = bytes(TAG_LENGTH)


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
    seq: int = 0  # punch round, or data sequence number
    payload: bytes = b""
    tag: bytes = _NO_TAG

    def __bytes__(self) -> bytes:
        return self._fields() + self.tag + self.payload

    def _fields(self) -> bytes:
        return _FIELDS.pack(MAGIC, self.kind, self.session, self.index, self.seq)


def is_direct(data: bytes) -> bool:
    return data[:4] == MAGIC


def parse(data: bytes) -> Datagram:
    """Parse a direct datagram (the tag is read, not checked).

    Raises:
        RemoteProtocolError: too short, wrong magic, unknown kind or oversized payload.
    """
    if len(data) < HEADER_LENGTH:
        raise RemoteProtocolError(f"direct datagram of {len(data)} bytes is shorter than its header")
    magic, kind, session, index, seq = _FIELDS.unpack_from(data)
    if magic != MAGIC:
        raise RemoteProtocolError("direct datagram has the wrong magic")
    if kind not in Kind._value2member_map_:
        raise RemoteProtocolError(f"direct datagram of unknown kind {kind}")
    payload = data[HEADER_LENGTH:]
    if len(payload) > MAX_PAYLOAD:
        raise RemoteProtocolError(f"direct datagram payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return Datagram(Kind(kind), session, index, seq, payload, data[_FIELDS.size:HEADER_LENGTH])


def seal(dgram: Datagram, key: bytes, sender: str) -> bytes:
    """The bytes of ``dgram`` sent by role ``sender`` ("A" or "B"), tagged with the session key."""
    return bytes(Datagram(dgram.kind, dgram.session, dgram.index, dgram.seq, dgram.payload, _tag(dgram, key, sender)))


def verify(dgram: Datagram, key: bytes, sender: str) -> bool:
    """Whether ``dgram`` was sealed with ``key`` by role ``sender``."""
    return hmac.compare_digest(dgram.tag, _tag(dgram, key, sender))


def _tag(dgram: Datagram, key: bytes, sender: str) -> bytes:
    return hmac.new(key, sender.encode() + dgram._fields() + dgram.payload, hashlib.sha256).digest()[:TAG_LENGTH]


def session_bytes(session_id: str) -> bytes:
    """The 8-byte wire form of a session id (16 hex digits)."""
    try:
        raw = bytes.fromhex(session_id)
    except ValueError:
        raise RemoteProtocolError(f"session id {session_id!r} is not hex") from None
    if len(raw) != 8:
        raise RemoteProtocolError(f"session id {session_id!r} is not 8 bytes")
    return raw
