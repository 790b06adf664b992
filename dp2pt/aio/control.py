"""The peer's login session with its location server (spec steps 1-2), over TCP or UDP.

Both channels offer the same calls: ``login(msg)``, ``send(msg)``, ``recv()`` and ``close()``.  TCP is
one JSON message per line; UDP is one per datagram.  After login a :class:`ControlLink` numbers and
signs what is sent and drops what the server did not sign (over UDP it also acknowledges and
retransmits).  Over UDP the login is a small handshake: a first login padded to be no smaller than the
server's answer, the server's stateless ``cookie``, then the login that echoes it (:mod:`dp2pt.proto.auth`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from typing import Any

from dp2pt.errors import LoginRefused, RemoteProtocolError, ServerUnreachable
from dp2pt.proto import auth, messages
from dp2pt.proto.link import RTO, ControlLink

Address = tuple[str, int]
Msg = dict[str, Any]

class ControlChannel:
    def __init__(self, reliable: bool) -> None:
        self.link = ControlLink("peer", reliable)
        self.nonce = secrets.token_hex(8)
        self.rejected = 0  # server messages dropped: bad MAC, or a login answer to someone else

    async def login(self, msg: Msg, timeout: float) -> Msg:
        """Send ``login``; returns ``login_ok`` (from then on traffic is authenticated with its key).

        Raises:
            asyncio.TimeoutError: no answer in ``timeout``.
            LoginRefused: the server refused the login.
            ServerUnreachable: the server closed the connection.
        """
        raise NotImplementedError

    async def send(self, msg: Msg) -> None:
        raise NotImplementedError

    async def recv(self) -> Msg:
        """Next message from the server; raises ServerUnreachable when the session is lost."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _login_answer(self, msg: Msg) -> Msg | None:
        """A cookie, login_ok or error meant for our login (same nonce), else None (dropped)."""
        if msg["type"] not in ("cookie", "login_ok", "error") or msg.get("nonce") != self.nonce:
            self.rejected += 1
            return None
        if msg["type"] == "error":
            raise LoginRefused(f"login refused: {msg['message']}")
        if msg["type"] == "login_ok":
            key = auth.key_bytes(msg["key"])
            if key is None:
                raise RemoteProtocolError("login_ok carries no valid key")
            self.link.authenticate(key)
        return msg

    def _accept(self, msg: Msg) -> tuple[Msg | None, bytes | None]:
        try:
            return self.link.receive(msg)
        except RemoteProtocolError:
            self.rejected += 1
            return None, None


class TcpControl(ControlChannel):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(reliable=False)
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, server: Address, timeout: float) -> "TcpControl":
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(*server, limit=messages.MAX_MESSAGE_SIZE + 2), timeout
            )
        except (OSError, asyncio.TimeoutError) as exc:
            if isinstance(exc, asyncio.TimeoutError):
                reason = "timed out"
            else:
                reason = os.strerror(exc.errno).lower() if exc.errno and exc.errno > 0 else exc.strerror or str(exc)
            raise ServerUnreachable(f"cannot reach location server {server[0]}:{server[1]} over TCP: {reason}") from None
        return cls(reader, writer)

    async def login(self, msg: Msg, timeout: float) -> Msg:
        await self.send({**msg, "nonce": self.nonce})

        async def answer() -> Msg:
            while True:
                reply = self._login_answer(await self._read())
                if reply is not None and reply["type"] == "login_ok":
                    self._accept(reply)
                    return reply

        return await asyncio.wait_for(answer(), timeout)

    async def send(self, msg: Msg) -> None:
        self._writer.write(self.link.send(msg, time.monotonic()) + b"\n")
        await self._writer.drain()

    async def recv(self) -> Msg:
        while True:
            msg, _ = self._accept(await self._read())
            if msg is not None:
                return msg

    async def _read(self) -> Msg:
        while True:
            try:
                line = await self._reader.readline()
            except (ConnectionError, asyncio.LimitOverrunError, ValueError):
                line = b""
            if not line:
                raise ServerUnreachable("the location server closed the login session")
            if line.strip():
                return messages.decode(line)

    def close(self) -> None:
        self._writer.close()


class _UdpControlProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self.queue.put_nowait(None)


class UdpControl(ControlChannel):
    """Login session over UDP (the spec allows "TCP or UDP"); retransmits until acknowledged."""

    def __init__(self, transport: asyncio.DatagramTransport, protocol: _UdpControlProtocol) -> None:
        super().__init__(reliable=True)
        self._transport = transport
        self._protocol = protocol
        self._timer = asyncio.ensure_future(self._retransmit())

    @classmethod
    async def open(cls, server: Address, timeout: float) -> "UdpControl":
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.create_datagram_endpoint(_UdpControlProtocol, remote_addr=server)
        except OSError as exc:
            raise ServerUnreachable(f"cannot reach location server {server[0]}:{server[1]} over UDP: {exc}") from None
        return cls(transport, protocol)

    async def login(self, msg: Msg, timeout: float) -> Msg:
        """Login, cookie, login again; the login is retransmitted with a doubling timeout until answered."""
        request = auth.padded_login({**msg, "nonce": self.nonce})
        deadline = time.monotonic() + timeout
        rto = RTO
        while True:
            self._transport.sendto(request)
            wait_until = min(time.monotonic() + rto, deadline)
            rto *= 2
            while (left := wait_until - time.monotonic()) > 0:
                try:
                    data = await asyncio.wait_for(self._protocol.queue.get(), left)
                except asyncio.TimeoutError:
                    break
                if data is None:
                    continue  # ICMP: the server may not be up yet; keep trying until the deadline
                try:
                    reply = self._login_answer(messages.decode(data))
                except RemoteProtocolError:
                    continue
                if reply is None:
                    continue
                if reply["type"] == "cookie":
                    request = messages.encode({**msg, "nonce": self.nonce, "cookie": reply["cookie"]})
                    rto = RTO
                    break  # send the login with the cookie at once
                _, ack = self._accept(reply)
                if ack is not None:
                    self._transport.sendto(ack)
                return reply
            if time.monotonic() >= deadline:
                raise asyncio.TimeoutError

    async def _retransmit(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            resend, lost = self.link.due(time.monotonic())
            for data in resend:
                self._transport.sendto(data)
            if lost:
                self._protocol.queue.put_nowait(None)

    async def send(self, msg: Msg) -> None:
        self._transport.sendto(self.link.send(msg, time.monotonic()))

    async def recv(self) -> Msg:
        while True:
            data = await self._protocol.queue.get()
            if data is None:
                raise ServerUnreachable("the location server does not answer over UDP")
            try:
                msg = messages.decode(data)
            except RemoteProtocolError:
                continue
            deliver, ack = self._accept(msg)
            if ack is not None:
                self._transport.sendto(ack)
            if deliver is not None:
                return deliver

    def close(self) -> None:
        self._timer.cancel()
        self._transport.close()
        self._protocol.queue.put_nowait(None)  # a pending recv() learns the session is over
