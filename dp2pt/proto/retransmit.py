"""Resend until acknowledged, with a doubling timeout (RFC 8489 §6.2.1 style), sans-IO.

Shared by the control link (UDP control messages) and the direct path (data datagrams): callers add
what they sent, acknowledge it by key, and ask what is due at a given time. The gap may be capped
(``max_rto``): on a lossy link a capped gap packs more tries into the time a peer waits, so a loss
costs a few hundred milliseconds, not the exchange. :func:`repeat_times` is the same schedule for
what has no acknowledgement of its own: the punch bursts, repeated until the path is up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Hashable, TypeVar

Key = TypeVar("Key", bound=Hashable)

#: Resends of data and punch bursts come at most this many RTOs apart (the ``max_rto`` they use).
MAX_RTO_FACTOR = 4


@dataclass
class _Unacked:
    data: bytes
    tries: int
    due: float
    rto: float


class Resender(Generic[Key]):
    """Unacknowledged sends, each tried at most ``max_tries`` times; at most ``limit`` kept (oldest dropped)."""

    def __init__(self, rto: float, max_tries: int, limit: int | None = None, max_rto: float | None = None) -> None:
        self.rto = rto
        self.max_tries = max_tries
        self.limit = limit
        self.max_rto = max_rto
        self._unacked: dict[Key, _Unacked] = {}

    def sent(self, key: Key, data: bytes, now: float) -> None:
        """``data`` (already sent once) waits for the ack of ``key``."""
        if self.limit is not None and len(self._unacked) >= self.limit:
            del self._unacked[next(iter(self._unacked))]
        self._unacked[key] = _Unacked(data, 1, now + self.rto, self.rto)

    def acked(self, key: Key) -> bool:
        """Forget ``key``; True if it was waiting."""
        return self._unacked.pop(key, None) is not None

    def due(self, now: float) -> tuple[list[bytes], list[Key]]:
        """What to send again at ``now``, and the keys given up on (tried ``max_tries`` times)."""
        resend, lost = [], []
        for key, u in list(self._unacked.items()):
            if u.due > now:
                continue
            if u.tries >= self.max_tries:
                del self._unacked[key]
                lost.append(key)
                continue
            u.tries += 1
            u.rto = u.rto * 2 if self.max_rto is None else min(u.rto * 2, self.max_rto)
            u.due = now + u.rto
            resend.append(u.data)
        return resend, lost

    def next_due(self) -> float | None:
        return min((u.due for u in self._unacked.values()), default=None)

    def __len__(self) -> int:
        return len(self._unacked)


def repeat_times(rto: float, max_rto: float, within: float) -> list[float]:
    """When to repeat something sent at 0 until ``within`` (exclusive): after ``rto``, then gaps
    doubling up to ``max_rto`` (0.2, 0.6, 1.4, 2.2, ... for 0.2 and 0.8)."""
    times, at, gap = [], rto, rto
    while at < within:
        times.append(at)
        gap = min(gap * 2, max_rto)
        at += gap
    return times
