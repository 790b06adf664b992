"""The peer's login session with its location server (spec steps 1-2), over TCP or UDP.

Both channels offer the same three calls: ``send(msg)``, ``recv()`` and ``close()``.  TCP is one
JSON message per line; UDP is one per datagram, made reliable by :class:`ReliableLink`.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from dp2pt.errors import RemoteProtocolError, ServerUnreachable
from dp2pt.proto import messages
from dp2pt.proto.reliable import ReliableLink

Address = tuple[str, int]
Msg = dict[str, Any]


class ControlChannel:
    async def send(self, msg: Msg) -> None:
        raise NotImplementedError

    async def recv(self) -> Msg:
        """Next message from the server; raises ServerUnreachable when the session is lost."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class TcpControl(ControlChannel):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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

    async def send(self, msg: Msg) -> None:
        self._writer.write(messages.encode(msg) + b"\n")
        await self._writer.drain()

    async def recv(self) -> Msg:
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
        self._transport = transport
        self._protocol = protocol
        self._link = ReliableLink()
        self._timer = asyncio.ensure_future(self._retransmit())

    @classmethod
    async def open(cls, server: Address, timeout: float) -> "UdpControl":
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.create_datagram_endpoint(_UdpControlProtocol, remote_addr=server)
        except OSError as exc:
            raise ServerUnreachable(f"cannot reach location server {server[0]}:{server[1]} over UDP: {exc}") from None
        return cls(transport, protocol)

    async def _retransmit(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            resend, lost = self._link.due(time.monotonic())
            for data in resend:
                self._transport.sendto(data)
            if lost:
                self._protocol.queue.put_nowait(None)

    async def send(self, msg: Msg) -> None:
        self._transport.sendto(self._link.send(msg, time.monotonic()))

    async def recv(self) -> Msg:
        while True:
            data = await self._protocol.queue.get()
            if data is None:
                raise ServerUnreachable("the location server does not answer over UDP")
            try:
                msg = messages.decode(data)
            except RemoteProtocolError:
                continue
            deliver, ack = self._link.receive(msg)
            if ack is not None:
                self._transport.sendto(ack)
            if deliver is not None:
                return deliver

    def close(self) -> None:
        self._timer.cancel()
        self._transport.close()
