"""At-least-once, de-duplicated delivery of control messages over UDP (login over UDP, spec step 1).

Each message gets a number ``n``; the receiver answers ``ack`` and drops numbers it has seen; the
sender retransmits unacknowledged messages with a doubling timeout (RFC 8489 §6.2.1 style) and gives
up after ``max_tries``.  Sans-IO: callers pass the time in and send the bytes returned.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from dp2pt.proto import messages

RTO = 0.2  # seconds before the first retransmission
MAX_TRIES = 7
SEEN_WINDOW = 512


@dataclass
class _Pending:
    data: bytes
    msg: dict[str, Any]
    tries: int
    due: float
    rto: float


class ReliableLink:
    """One side of a UDP control association."""

    def __init__(self, rto: float = RTO, max_tries: int = MAX_TRIES) -> None:
        self.rto = rto
        self.max_tries = max_tries
        self._next_n = 0
        self._pending: dict[int, _Pending] = {}
        self._seen: set[int] = set()
        self._seen_order: deque[int] = deque()

    def send(self, msg: dict[str, Any], now: float) -> bytes:
        """Number a message, remember it until acknowledged, and return its bytes."""
        self._next_n += 1
        numbered = {**msg, "n": self._next_n}
        data = messages.encode(numbered)
        self._pending[self._next_n] = _Pending(data, numbered, 1, now + self.rto, self.rto)
        return data

    def receive(self, msg: dict[str, Any]) -> tuple[dict[str, Any] | None, bytes | None]:
        """Handle a decoded datagram: returns (message to deliver or None, ack bytes to send or None)."""
        if msg["type"] == "ack":
            self._pending.pop(msg["n"], None)
            return None, None
        n = msg.get("n")
        if n is None:
            return msg, None
        ack = messages.encode({"type": "ack", "n": n})
        if n in self._seen:
            return None, ack
        self._seen.add(n)
        self._seen_order.append(n)
        if len(self._seen_order) > SEEN_WINDOW:
            self._seen.discard(self._seen_order.popleft())
        return msg, ack

    def due(self, now: float) -> tuple[list[bytes], list[dict[str, Any]]]:
        """Retransmissions due at ``now``, and the messages given up on."""
        resend, lost = [], []
        for n, p in list(self._pending.items()):
            if p.due > now:
                continue
            if p.tries >= self.max_tries:
                del self._pending[n]
                lost.append(p.msg)
                continue
            p.tries += 1
            p.rto *= 2
            p.due = now + p.rto
            resend.append(p.data)
        return resend, lost

    @property
    def idle(self) -> bool:
        return not self._pending
