"""Who may take the location server's resources, and how much (sans-IO; time is passed in).

:class:`Admission` caps connections (TCP) or associations (UDP) per source address and in total.  At
the total cap the oldest connection that has not logged in gives way to the new one (as a SYN cache
evicts its oldest half-open entry), so a crowd of idle connections cannot keep an honest peer out; a
connection that has logged in is never evicted.  :class:`TokenBucket` rate-limits a peer's requests.
"""

from __future__ import annotations

from collections import Counter
from typing import Hashable

Conn = Hashable

MAX_CONNS_PER_IP = 64  # TCP connections (and UDP logins) from one address, by default
LOGIN_TIMEOUT = 10.0  # seconds a TCP connection may take to log in, by default


class Admission:
    """Connection caps: ``per_ip`` from one address (0: no cap), ``total`` in all."""

    def __init__(self, total: int, per_ip: int) -> None:
        if total < 1 or per_ip < 0:
            raise ValueError(f"connection caps must be positive (total {total}, per address {per_ip})")
        self.total = total
        self.per_ip = per_ip
        self._ip: dict[Conn, str] = {}
        self._per_ip: Counter[str] = Counter()
        self._anonymous: dict[Conn, None] = {}  # not logged in yet, oldest first

    def admit(self, conn: Conn, ip: str) -> tuple[bool, Conn | None]:
        """Whether ``conn`` from ``ip`` may stay, and the connection it evicts (to be closed) if any."""
        if self.per_ip and self._per_ip[ip] >= self.per_ip:
            return False, None
        evicted = None
        if len(self._ip) >= self.total:
            if not self._anonymous:
                return False, None
            evicted = next(iter(self._anonymous))
            self.release(evicted)
        self._ip[conn] = ip
        self._per_ip[ip] += 1
        self._anonymous[conn] = None
        return True, evicted

    def logged_in(self, conn: Conn) -> None:
        """``conn`` completed its login: it is no longer evicted for newcomers."""
        self._anonymous.pop(conn, None)

    def release(self, conn: Conn) -> None:
        """``conn`` is gone (idempotent)."""
        ip = self._ip.pop(conn, None)
        if ip is None:
            return
        self._anonymous.pop(conn, None)
        self._per_ip[ip] -= 1
        if not self._per_ip[ip]:
            del self._per_ip[ip]

    def __len__(self) -> int:
        return len(self._ip)


class TokenBucket:
    """``burst`` requests at once, refilled at ``rate`` per second."""

    def __init__(self, burst: int, rate: float, now: float) -> None:
        self.burst = burst
        self.rate = rate
        self._tokens = float(burst)
        self._at = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
