"""One side of a control association (peer <-> location server), sans-IO, over TCP or UDP.

Before login nothing is numbered, signed or retransmitted: the peer retransmits its login itself,
and the server answers each one once (so the server never repeats itself to an address that has not
proved it can receive).  Once the login key is known (:meth:`ControlLink.authenticate`) every message
is numbered (``n``) and signed (``mac``, :mod:`dp2pt.proto.auth`); a received message must carry a
valid MAC *before* its number is looked at, then each number is delivered once.  Over UDP the
receiver answers ``ack`` (signed too) and the sender retransmits unacknowledged messages with a
doubling timeout (RFC 8489 §6.2.1 style), giving up after ``max_tries``.  Callers pass the time in
and send the bytes returned.
"""

from __future__ import annotations

from typing import Any

from dp2pt.errors import RemoteProtocolError
from dp2pt.proto import auth, messages
from dp2pt.proto.retransmit import Resender

RTO = 0.2  # seconds before the first retransmission
MAX_TRIES = 7
MAX_PENDING = 128  # unacknowledged messages kept for retransmission; beyond, the oldest is given up

Msg = dict[str, Any]


class ControlLink:
    """Numbers, signs, checks and (over UDP) retransmits the control messages of one login."""

    def __init__(self, side: str, reliable: bool, rto: float = RTO, max_tries: int = MAX_TRIES) -> None:
        """``side`` is "server" or "peer"; ``reliable`` adds acks and retransmission (UDP)."""
        if side not in ("server", "peer"):
            raise ValueError(f"side must be 'server' or 'peer', not {side!r}")
        self._out, self._in = (auth.TO_PEER, auth.TO_SERVER) if side == "server" else (auth.TO_SERVER, auth.TO_PEER)
        self.reliable = reliable
        self.key: bytes | None = None
        self._next_n = 0
        self._pending: Resender[int] = Resender(rto, max_tries, MAX_PENDING)
        self._sent: dict[int, Msg] = {}  # unacknowledged messages, to report those given up on
        self._window = auth.ReplayWindow()

    def authenticate(self, key: bytes) -> None:
        """From now on, sign what is sent and accept only what is signed with ``key``."""
        self.key = key

    def send(self, msg: Msg, now: float) -> bytes:
        """The bytes of ``msg``: as is before login; numbered, signed (and remembered over UDP) after."""
        if self.key is None:
            return messages.encode(msg)
        self._next_n += 1
        signed = auth.sign(self.key, self._out, {**msg, "n": self._next_n})
        data = messages.encode(signed)
        if self.reliable:
            self._pending.sent(self._next_n, data, now)
            self._sent[self._next_n] = signed
            if len(self._sent) > MAX_PENDING:
                del self._sent[next(iter(self._sent))]
        return data

    def receive(self, msg: Msg) -> tuple[Msg | None, bytes | None]:
        """Handle a decoded message: returns (message to deliver or None, ack bytes to send or None).

        Raises:
            RemoteProtocolError: after login, a message without a valid MAC or number.
        """
        if self.key is None:
            return msg, None
        if not auth.verify(self.key, self._in, msg):
            raise RemoteProtocolError(f"{msg['type']} message fails authentication")
        if msg["type"] == "ack":
            self._pending.acked(msg["n"])
            self._sent.pop(msg["n"], None)
            return None, None
        n = msg.get("n")
        if n is None:
            raise RemoteProtocolError(f"{msg['type']} message carries no number")
        verdict = self._window.check(n)
        ack = self._ack(n) if self.reliable and verdict != auth.ReplayWindow.TOO_OLD else None
        return (msg if verdict == auth.ReplayWindow.NEW else None), ack

    def _ack(self, n: int) -> bytes:
        assert self.key is not None
        return messages.encode(auth.sign(self.key, self._out, {"type": "ack", "n": n}))

    def due(self, now: float) -> tuple[list[bytes], list[Msg]]:
        """Retransmissions due at ``now``, and the messages given up on."""
        resend, lost = self._pending.due(now)
        return resend, [self._sent.pop(n) for n in lost]

    @property
    def idle(self) -> bool:
        return not self._pending
