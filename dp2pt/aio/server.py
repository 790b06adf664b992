"""The location server on real sockets: TCP and UDP control, STUN on two ports (four with RFC 5780), federation links.

All decisions are made by :class:`dp2pt.proto.registry.Registry`; this module only parses bytes,
feeds events in and sends the actions out.  Any malformed, truncated or oversized input is counted
and dropped; nothing a remote sends can stop the server or touch another pair's session.

STUN is answered off the event loop, by a thread (and ``--stun-workers`` processes) running
:mod:`dp2pt.aio.stun_fast`; the datagrams of the main UDP port that are not STUN come back to the
loop through :meth:`LocationServer._udp_control`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from dp2pt.aio.stun_fast import StunPort, serve
from dp2pt.aio.stun_workers import Workers, attach_steering
from dp2pt.errors import RemoteProtocolError
from dp2pt.proto import messages
from dp2pt.proto.stun_server import StunAddresses
from dp2pt.proto.registry import Action, Lookup, Registry, ToConn, ToPeer, ToServer
from dp2pt.proto.reliable import ReliableLink

log = logging.getLogger("dp2pt.server")

KEEPALIVE = 15.0  # seconds between a peer's pings; a peer silent for 3x this is logged out
LOOKUP_TIMEOUT = 2.0
SWEEP_INTERVAL = 5.0
MAX_UDP_LINKS = 100_000
STUN_THREAD_STOP = 1.0  # seconds to wait for the STUN thread at close
FEDERATION_RETRY = (0.1, 2.0)  # first and largest delay between attempts to reach a peer server

Address = tuple[str, int]


@dataclass
class ServerConfig:
    name: str = "ls1"
    tcp: Address = ("0.0.0.0", 7000)
    udp: Address = ("0.0.0.0", 3478)
    alt_port: int | None = None  # STUN port for the second probe; default udp port + 1
    alt_ip: str | None = None  # a second address: RFC 5780 mode (OTHER-ADDRESS, CHANGE-REQUEST)
    stun_workers: int = 0  # extra processes answering STUN on the same ports (SO_REUSEPORT)
    stun_batch: bool = True  # recvmmsg/sendmmsg and in-place answers; False: the sans-IO path only
    peer_servers: list[Address] = field(default_factory=list)
    accept_servers: list[str] = field(default_factory=list)  # more IPs allowed to link in as servers
    keepalive: float = KEEPALIVE


class _TcpConn:
    """A TCP control connection (a peer's login session, or a federation link)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.peername = writer.get_extra_info("peername")

    def send(self, msg: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(messages.encode(msg) + b"\n")

    def __repr__(self) -> str:
        return f"tcp:{self.peername}"


class _UdpConn:
    """A UDP control association, keyed by the peer's address; reliable via ReliableLink."""

    def __init__(self, transport: "_UdpSender", addr: Address, clock: Callable[[], float]) -> None:
        self.transport = transport
        self.addr = addr
        self.link = ReliableLink()
        self.last_seen = clock()
        self._clock = clock

    def send(self, msg: dict[str, Any]) -> None:
        self.transport.sendto(self.link.send(msg, self._clock()), self.addr)

    def __hash__(self) -> int:
        return hash(("udp", self.addr))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _UdpConn) and other.addr == self.addr

    def __repr__(self) -> str:
        return f"udp:{self.addr}"


class _UdpSender:
    """Sends control datagrams from the main UDP socket; a full send buffer drops (ReliableLink resends)."""

    def __init__(self, sock: socket.socket, stats: Counter[str]) -> None:
        self.sock = sock
        self.stats = stats

    def sendto(self, data: bytes, addr: Address) -> None:
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self.stats["udp_send_dropped"] += 1
        except OSError:
            self.stats["udp_errors"] += 1


class LocationServer:
    """Spec's location server 20 (or 22/24 of a federation)."""

    def __init__(self, config: ServerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.stats: Counter[str] = Counter()
        self.registry: Registry | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._udp_socks: list[socket.socket] = []
        self._workers: Workers | None = None
        self.stun_addresses: StunAddresses | None = None
        self.stun_stats: Counter[str] = Counter()  # written by the STUN thread only
        self._stun_thread: threading.Thread | None = None
        self._stun_stop = -1
        self._udp_conns: dict[Address, _UdpConn] = {}
        self._links: dict[str, _TcpConn] = {}
        self._lookups: dict[int, set[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.addresses: dict[str, Address] = {}
        self._trusted_ips = {host for host, _ in config.peer_servers} | set(config.accept_servers)

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every socket; raises OSError (e.g. address in use) before anything is served."""
        cfg = self.config
        try:
            tcp = await asyncio.start_server(
                self._tcp_client, cfg.tcp[0], cfg.tcp[1], limit=messages.MAX_MESSAGE_SIZE + 2
            )
            self._servers.append(tcp)
            self.addresses["tcp"] = tcp.sockets[0].getsockname()[:2]
            self._open_stun()
        except BaseException:
            self._close_udp()
            raise
        stun_addrs = [self.addresses["udp"], self.addresses["alt"]]
        # Federated even without --peer-server: another server may link to us; lookups with no link
        # answer "unknown peer" at once.
        self.registry = Registry(cfg.name, stun_addrs, federated=True)
        for addr in cfg.peer_servers:
            self._spawn(self._federation_link(addr))
        self._spawn(self._housekeeping())

    def _open_stun(self) -> None:
        """Bind the STUN sockets (two ports; four in RFC 5780 mode) and serve them from the event loop.

        The main one also carries UDP control: its StunPort hands every non-STUN datagram to
        :meth:`_udp_control`.  With workers, each address is a SO_REUSEPORT group whose first
        socket is ours (see :mod:`dp2pt.aio.stun_workers`).
        """
        cfg = self.config
        workers = cfg.stun_workers
        host = cfg.udp[0]
        main = self._bind((host, cfg.udp[1]), workers)
        port = main.getsockname()[1]
        alt = self._bind((host, cfg.alt_port if cfg.alt_port is not None else cfg.udp[1] + 1), workers)
        alt_port = alt.getsockname()[1]
        self.stun_addresses = addrs = StunAddresses(host, port, alt_port, cfg.alt_ip)
        socks = {(host, port): main, (host, alt_port): alt}
        if cfg.alt_ip is not None:
            for p in (port, alt_port):
                socks[(cfg.alt_ip, p)] = self._bind((cfg.alt_ip, p), workers)
        self.addresses["udp"], self.addresses["alt"] = main.getsockname()[:2], alt.getsockname()[:2]
        if cfg.alt_ip is not None:
            self.addresses["other"] = addrs.other((host, port))
        sender = _UdpSender(main, self.stats)
        loop = asyncio.get_running_loop()

        def to_control(data: bytes, addr: Address) -> None:  # from the STUN thread to the event loop
            loop.call_soon_threadsafe(self._udp_control, sender, data, addr)

        ports = [StunPort(sock, local, addrs, socks, self.stun_stats, to_control if sock is main else None,
                          batch=cfg.stun_batch) for local, sock in socks.items()]
        stop, self._stun_stop = os.pipe()
        self._stun_thread = threading.Thread(target=self._serve_stun, args=(ports, stop), name="dp2pt-stun",
                                             daemon=True)
        self._stun_thread.start()
        if workers:
            attach_steering(main, workers)
            groups = {local: [self._bind(local, workers) for _ in range(workers)] for local in socks}
            self._workers = Workers(addrs, groups)

    def _bind(self, addr: Address, reuseport: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        self._udp_socks.append(sock)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setblocking(False)
        sock.bind(addr)
        return sock

    def _serve_stun(self, ports: list[StunPort], stop: int) -> None:
        try:
            serve(ports, stop)
        finally:
            os.close(stop)

    def _close_udp(self) -> None:
        if self._stun_thread is not None:
            os.close(self._stun_stop)
            self._stun_thread.join(STUN_THREAD_STOP)
            self._stun_thread = None
        for sock in self._udp_socks:
            if sock.fileno() >= 0:
                sock.close()
        self._udp_socks.clear()
        if self._workers is not None:
            self.stun_stats.update(self._workers.stop())
            self._workers = None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for server in self._servers:
            server.close()
        self._close_udp()
        for link in list(self._links.values()):
            link.writer.close()
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 1.0)
            except asyncio.TimeoutError:
                pass

    def snapshot(self) -> dict[str, Any]:
        """Counters for the stats line and the tests."""
        assert self.registry is not None
        counters = Counter(dict(self.stun_stats))  # one C-level copy: the STUN thread may be adding a key
        counters.update(self.stats)
        return {
            **counters,
            **{f"registry_{k}": v for k, v in self.registry.stats.items()},
            "logged_in": len(self.registry.logins),
            "open_sessions": len(self.registry.sessions),
        }

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- UDP control (STUN is answered by dp2pt.aio.stun_fast) ----------------------------------

    def _udp_control(self, transport: _UdpSender, data: bytes, addr: Address) -> None:
        """A datagram on the main UDP port that is not STUN: the UDP control protocol."""
        assert self.registry is not None
        try:
            msg = messages.decode(data)
        except RemoteProtocolError:
            self.stats["malformed_udp"] += 1
            return
        conn = self._udp_conns.get(addr)
        if conn is None:
            if msg["type"] != "login" or len(self._udp_conns) >= MAX_UDP_LINKS:
                self.stats["rejected_udp"] += 1
                return
            conn = self._udp_conns[addr] = _UdpConn(transport, addr, self.clock)
        conn.last_seen = self.clock()
        deliver, ack = conn.link.receive(msg)
        if ack is not None:
            transport.sendto(ack, addr)
        if deliver is not None:
            self._run(self.registry.on_message(conn, deliver, self.clock()))

    # ---- TCP: peers and federation links -----------------------------------------------------

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._serve_link(_TcpConn(writer), reader, timeout=3 * self.config.keepalive, outbound=False)

    async def _federation_link(self, addr: Address) -> None:
        """Keep a link to another location server of the federation (FIG. 4), reconnecting if it drops."""
        delay = FEDERATION_RETRY[0]
        while True:
            try:
                reader, writer = await asyncio.open_connection(*addr, limit=messages.MAX_MESSAGE_SIZE + 2)
            except OSError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, FEDERATION_RETRY[1])
                continue
            delay = FEDERATION_RETRY[0]
            conn = _TcpConn(writer)
            conn.send(messages.make("hello", server=self.config.name))
            await self._serve_link(conn, reader, timeout=None, outbound=True)
            await asyncio.sleep(delay)

    async def _serve_link(self, conn: _TcpConn, reader: asyncio.StreamReader, timeout: float | None,
                          outbound: bool) -> None:
        """Serve one TCP connection: a peer's login session, or a federation link once ``hello`` is seen.

        Only the addresses of ``--peer-server`` (and ``accept_servers``) may say ``hello``: anyone
        else claiming to be a server could deliver forged sessions to our peers.
        """
        assert self.registry is not None
        server_name: str | None = None
        try:
            async for msg in self._lines(reader, timeout):
                try:
                    if msg["type"] == "hello" and server_name is None:
                        if conn.peername is None or conn.peername[0] not in self._trusted_ips:
                            self.stats["rejected_hello"] += 1
                            return
                        server_name = msg["server"]
                        self._links.setdefault(server_name, conn)
                        if not outbound:
                            conn.send(messages.make("hello", server=self.config.name))
                    elif server_name is not None:
                        self._from_server(server_name, msg)
                    else:
                        self._run(self.registry.on_message(conn, msg, self.clock()))
                except Exception:  # one bad message never ends the server, nor this link
                    self.stats["internal_errors"] += 1
                    log.exception("message from %s", conn)
        finally:
            if server_name is not None:
                if self._links.get(server_name) is conn:
                    del self._links[server_name]
            else:
                self._run(self.registry.on_disconnect(conn))
            conn.writer.close()

    async def _lines(self, reader: asyncio.StreamReader, timeout: float | None):  # type: ignore[no-untyped-def]
        """Yield validated messages; malformed lines are counted and skipped, oversized ones end the link."""
        while True:
            try:
                line = await asyncio.wait_for(reader.readline(), timeout)
            except (asyncio.TimeoutError, ConnectionError):
                self.stats["tcp_timeouts"] += 1
                return
            except (asyncio.LimitOverrunError, ValueError):
                self.stats["oversized_tcp"] += 1
                return
            if not line:
                return
            if not line.strip():
                continue
            try:
                yield messages.decode(line)
            except RemoteProtocolError:
                self.stats["malformed_tcp"] += 1

    def _from_server(self, server: str, msg: dict[str, Any]) -> None:
        assert self.registry is not None
        if msg["type"] == "lookup_result":
            self._lookup_answer(msg["q"], server, msg["found"])
            return
        self._run(self.registry.on_server_message(server, msg, self.clock()))

    # ---- actions -----------------------------------------------------------------------------

    def _run(self, actions: list[Action]) -> None:
        assert self.registry is not None
        for action in actions:
            if isinstance(action, ToConn):
                action.conn.send(action.msg)  # type: ignore[attr-defined]
            elif isinstance(action, ToPeer):
                login = self.registry.logins.get(action.peer)
                if login is not None:
                    login.conn.send(action.msg)  # type: ignore[attr-defined]
            elif isinstance(action, ToServer):
                link = self._links.get(action.server)
                if link is None:
                    self.stats["federation_unreachable"] += 1
                else:
                    link.send(action.msg)
            elif isinstance(action, Lookup):
                self._lookup(action)

    def _lookup(self, action: Lookup) -> None:
        if not self._links:
            self._run(self.registry.lookup_done(action.q, None, self.clock()))  # type: ignore[union-attr]
            return
        self._lookups[action.q] = set(self._links)
        for link in self._links.values():
            link.send(messages.make("lookup", q=action.q, id=action.peer_id))
        asyncio.get_running_loop().call_later(LOOKUP_TIMEOUT, self._lookup_expired, action.q)

    def _lookup_answer(self, q: int, server: str, found: bool) -> None:
        waiting = self._lookups.get(q)
        if waiting is None:
            return
        waiting.discard(server)
        if found or not waiting:
            del self._lookups[q]
            self._run(self.registry.lookup_done(q, server if found else None, self.clock()))  # type: ignore[union-attr]

    def _lookup_expired(self, q: int) -> None:
        if self._lookups.pop(q, None) is not None:
            self._run(self.registry.lookup_done(q, None, self.clock()))  # type: ignore[union-attr]

    async def _housekeeping(self) -> None:
        """Retransmit UDP control messages, log out silent UDP peers, sweep stale sessions."""
        assert self.registry is not None
        last_sweep = self.clock()
        while True:
            await asyncio.sleep(0.05)
            now = self.clock()
            for addr, conn in list(self._udp_conns.items()):
                if conn.link.idle:
                    continue
                resend, _lost = conn.link.due(now)
                for data in resend:
                    conn.transport.sendto(data, addr)
            if now - last_sweep > SWEEP_INTERVAL:
                for addr, conn in list(self._udp_conns.items()):
                    if now - conn.last_seen > 3 * self.config.keepalive:
                        del self._udp_conns[addr]
                        self._run(self.registry.on_disconnect(conn))
                self.registry.sweep(now)
                last_sweep = now
