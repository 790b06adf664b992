"""A STUN client transaction with retransmission (RFC 8489 §6.2.1), with tunables passed in.

aioice has a Transaction too, but its timeout is a module global; the lab needs a short RTO on a
lossless LAN and the default on real networks, per call.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from dp2pt.errors import TransactionTimeout
from dp2pt.proto.stun import Message

RTO = 0.5  # RFC 8489 default initial retransmission timeout
MAX_TRIES = 7  # RFC 8489 Rc


class StunClient:
    """Matches Binding responses to requests by transaction id; owned by one UDP socket."""

    def __init__(self, send: Callable[[bytes, tuple[str, int]], None]) -> None:
        self._send = send
        self._waiting: dict[bytes, asyncio.Future[Message]] = {}
        self.sent = 0

    def response_received(self, message: Message) -> bool:
        """Deliver a response; False if no transaction waits for it."""
        future = self._waiting.get(message.transaction_id)
        if future is None or future.done():
            return False
        future.set_result(message)
        return True

    async def request(
        self, message: Message, addr: tuple[str, int], rto: float = RTO, max_tries: int = MAX_TRIES,
        max_rto: float | None = None,
    ) -> Message:
        """Send ``message`` to ``addr`` until answered, the gap doubling from ``rto`` (up to ``max_rto``).

        Raises:
            TransactionTimeout: no answer after ``max_tries`` sends.
        """
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting[message.transaction_id] = future
        data = bytes(message)
        try:
            for _ in range(max_tries):
                self._send(data, addr)
                self.sent += 1
                try:
                    return await asyncio.wait_for(asyncio.shield(future), rto)
                except asyncio.TimeoutError:
                    rto = rto * 2 if max_rto is None else min(rto * 2, max_rto)
            raise TransactionTimeout(f"no STUN answer from {addr[0]}:{addr[1]} after {max_tries} tries")
        finally:
            del self._waiting[message.transaction_id]
