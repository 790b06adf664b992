"""The direct transmission procedure as one peer sees it (spec steps 15-17, then the data), sans-IO.

Every datagram is sealed with the session key (:mod:`dp2pt.proto.datagram`); a datagram that does
not verify (forged, another session, reflected) or that was seen before (a replay: each punch round,
reply and data number is sent once) is dropped and counted.  The first authentic punch, reply or
data datagram brings the path up and *pins* it to its source: every later datagram is sent there and
nothing moves it.  Authentic datagrams from another source (a second punch that also got through)
still count, but the path stays.  Data is acknowledged (``DATA_ACK``) and resent with a doubling
timeout until acknowledged.  Methods take the time and return ``(bytes, address)`` pairs to send.
"""

from __future__ import annotations

from typing import Callable

from dp2pt.errors import RemoteProtocolError
from dp2pt.proto import datagram
from dp2pt.proto.datagram import Datagram, Kind
from dp2pt.proto.retransmit import MAX_RTO_FACTOR, Resender

DATA_RTO = 0.2  # seconds before the first resend of an unacknowledged data datagram
FAREWELL_COPIES = 2  # each ack of the farewell is sent this often (a lossy link loses copies independently)
DATA_TRIES = 8  # sends of one data datagram at most (capped gaps: all within 4.6 s at the default RTO)

Address = tuple[str, int]
Send = tuple[bytes, Address]


class DirectPath:
    """One side (``role`` "A" or "B") of a session's direct path."""

    def __init__(self, role: str, session: bytes, key: bytes, count: int, payload: Callable[[int], bytes],
                 rto: float = DATA_RTO, tries: int = DATA_TRIES) -> None:
        """``count`` data datagrams go each way; ``payload(seq)`` is the content of ours."""
        self.role = role
        self.other = "B" if role == "A" else "A"
        self.session = session
        self.key = key
        self.count = count
        self.payload = payload
        self.remote: Address | None = None
        self.heard: float | None = None  # when an authentic datagram last told us something new (no forger can)
        self.hit: int | None = None  # index of the punch (or reply) that brought the path up
        self.received: set[int] = set()
        self.acked: set[int] = set()
        self.sent = 0
        self.stats = {"malformed": 0, "other_session": 0, "forged": 0, "replayed": 0}
        self._seen: set[tuple[int, int, int]] = set()
        self._unacked: Resender[int] = Resender(rto, tries, max_rto=MAX_RTO_FACTOR * rto)

    @property
    def direct(self) -> bool:
        return self.remote is not None

    @property
    def done(self) -> bool:
        """All data received and all ours acknowledged."""
        return self.direct and len(self.received) >= self.count and len(self.acked) >= self.count

    def punches(self, ip: str, ports: list[int], round_: int) -> list[Send]:
        """Step 15 (B) or 16 (A): punch ``i`` of burst ``round_`` to each predicted port."""
        return [self._out(Kind.PUNCH, index, round_, b"", (ip, port)) for index, port in enumerate(ports, start=1)]

    def receive(self, data: bytes, addr: Address, now: float) -> list[Send]:
        """A datagram from ``addr``: what to send in answer (reply, ack, and our data once the path is up)."""
        try:
            dgram = datagram.parse(data)
        except RemoteProtocolError:
            self.stats["malformed"] += 1
            return []
        if dgram.session != self.session:
            self.stats["other_session"] += 1
            return []
        if not datagram.verify(dgram, self.key, self.other):
            self.stats["forged"] += 1
            return []
        if dgram.kind == Kind.DATA_ACK:
            if self._unacked.acked(dgram.seq):
                self.acked.add(dgram.seq)
                self.heard = now
            return []
        if (dgram.kind, dgram.index, dgram.seq) in self._seen:
            self.stats["replayed"] += 1
            # A resent data datagram means our ack was lost: ack again, on the pinned path only.
            return [self._ack(dgram.seq)] if dgram.kind == Kind.DATA and self.remote else []
        self._seen.add((dgram.kind, dgram.index, dgram.seq))
        self.heard = now
        out: list[Send] = []
        up = self.remote is None
        if up:
            self.remote = addr
            self.hit = dgram.index
        if dgram.kind == Kind.PUNCH:
            out.append(self._out(Kind.REPLY, dgram.index, dgram.seq, b"", self.remote))  # step 17
        elif dgram.kind == Kind.DATA:
            if dgram.seq < self.count:
                self.received.add(dgram.seq)
            out.append(self._ack(dgram.seq))
        if up:
            out += self._start_data(now)
        return out

    def due(self, now: float) -> list[Send]:
        """Data datagrams whose ack is overdue; each is sent at most ``tries`` times."""
        resend, _ = self._unacked.due(now)
        self.sent += len(resend)
        return [(data, self.remote) for data in resend]  # type: ignore[misc]

    def farewell(self) -> list[Send]:
        """Acks of every datum received, once more, to send when leaving: the other side resends a
        datum whose ack a lossy link lost until its patience runs out, long after we are gone."""
        if self.remote is None:
            return []
        return [self._ack(seq) for seq in sorted(self.received)] * FAREWELL_COPIES

    def next_due(self) -> float | None:
        return self._unacked.next_due()

    def _start_data(self, now: float) -> list[Send]:
        out = []
        for seq in range(self.count):
            send = self._out(Kind.DATA, 0, seq, self.payload(seq), self.remote)  # type: ignore[arg-type]
            self._unacked.sent(seq, send[0], now)
            out.append(send)
        return out

    def _ack(self, seq: int) -> Send:
        return self._out(Kind.DATA_ACK, 0, seq, b"", self.remote)  # type: ignore[arg-type]

    def _out(self, kind: Kind, index: int, seq: int, payload: bytes, addr: Address) -> Send:
        self.sent += 1
        return datagram.seal(Datagram(kind, self.session, index, seq, payload), self.key, self.role), addr
