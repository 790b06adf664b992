"""The location server on real sockets: TCP and UDP control, STUN on two ports (four with RFC 5780), federation links.

All decisions are made by :class:`dp2pt.proto.registry.Registry`; this module only parses bytes,
feeds events in and sends the actions out.  Any malformed, truncated or oversized input is counted
and dropped; nothing a remote sends can stop the server or touch another pair's session.

Servers federate either statically (``--peer-server`` links, spec FIG. 4) or through a shared
directory on Redis (``--directory``, :mod:`dp2pt.aio.directory`): the registry's lookups, messages
to other servers, login claims and releases go to whichever the server was started with.

STUN is answered off the event loop, by a thread (and ``--stun-workers`` processes) running
:mod:`dp2pt.aio.stun_fast`; the datagrams of the main UDP port that are not STUN come back to the
loop through a bounded backlog (:class:`_ControlBacklog`) to :meth:`LocationServer._udp_control`.

Facing the internet (README, "Security"): a UDP login is answered by a stateless cookie no larger
than the login, and only a login echoing it creates state; nothing is retransmitted to an address
before that.  After login every control message is authenticated (:mod:`dp2pt.proto.link`).  TCP
connections are capped per address and in total (:mod:`dp2pt.proto.admission`), must log in within
``login_timeout`` (blank lines do not extend it), and a reader that does not drain its replies is
read no further, then closed.  Errors are logged on one line, never as a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Container

from dp2pt.aio.directory import Directory
from dp2pt.aio.stun_fast import StunPort, serve
from dp2pt.aio.stun_workers import Workers, attach_steering
from dp2pt.errors import LocalProtocolError, RemoteProtocolError, internal_error
from dp2pt.proto import auth, messages
from dp2pt.proto.admission import LOGIN_TIMEOUT, MAX_CONNS_PER_IP, Admission
from dp2pt.proto.link import ControlLink
from dp2pt.proto.registry import Action, Claim, LoggedIn, Lookup, Registry, Release, ToConn, ToPeer, ToServer
from dp2pt.proto.stun_server import StunAddresses

log = logging.getLogger("dp2pt.server")

KEEPALIVE = 15.0  # seconds between a peer's pings; a peer silent for 3x this is logged out
LOOKUP_TIMEOUT = 2.0
SERVER_WATCH = 1.0  # seconds between checks that the servers our sessions depend on are alive
SWEEP_INTERVAL = 5.0
MAX_UDP_LINKS = 100_000
STUN_THREAD_STOP = 1.0  # seconds to wait for the STUN thread at close
FD_RESERVE = 64  # descriptors kept free for listening and STUN sockets, the STUN thread, federation links
ACCEPT_BACKLOG = 100  # the listen backlog, which is also how many connections asyncio accepts in one go
OUTPUT_HIGH_WATER = 16 * 1024  # bytes queued to a TCP connection above which we read no more from it ...
DRAIN_TIMEOUT = 5.0  # ... until it drains, for at most this long (then it is closed as a slow reader)
MAX_OUTPUT = 256 * 1024  # bytes queued to one TCP connection (others' events included) before it is closed
SOCKET_SNDBUF = 64 * 1024  # kernel send buffer of a peer's connection: control messages are small
FEDERATION_RETRY = (0.1, 2.0)  # first and largest delay between attempts to reach a peer server
CONTROL_BACKLOG = 256  # non-STUN datagrams (at most 4 KiB each) waiting for the event loop; more are dropped
CONTROL_BACKLOG_PER_SOURCE = 16  # ... of them from one address: a flood from one source leaves room for others

Address = tuple[str, int]


@dataclass
class ServerConfig:
    name: str = "ls1"
    tcp: Address = ("0.0.0.0", 7000)
    udp: Address = ("0.0.0.0", 3478)
    alt_port: int | None = None  # STUN port for the second probe; default udp port + 1
    alt_ip: str | None = None  # a second address: RFC 5780 mode (OTHER-ADDRESS, CHANGE-REQUEST)
    stun_workers: int = 0  # extra processes answering STUN on the same ports (SO_REUSEPORT)
    peer_servers: list[Address] = field(default_factory=list)
    accept_servers: list[str] = field(default_factory=list)  # more IPs allowed to link in as servers
    directory: str | None = None  # redis:// URL of a shared directory (instead of static links)
    directory_secret: bytes = b""  # shared by every server of the directory: seals what they send each other
    keepalive: float = KEEPALIVE
    login_timeout: float = LOGIN_TIMEOUT
    max_conns: int | None = None  # TCP connections in total; default: what the descriptor limit allows
    max_conns_per_ip: int = MAX_CONNS_PER_IP  # 0: no cap

    def conn_cap(self) -> int:
        """The total TCP connection cap: ``max_conns``, never more than RLIMIT_NOFILE allows with a reserve
        on top, and room for one accept batch (accepted before we can refuse them) and one batch of the
        connections they evict (closed an event-loop turn later)."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        fd_cap = max(1, soft - FD_RESERVE - 2 * ACCEPT_BACKLOG) if soft != resource.RLIM_INFINITY else 1_000_000
        return min(self.max_conns, fd_cap) if self.max_conns else fd_cap


class _TcpConn:
    """A TCP control connection (a peer's login session, or a federation link)."""

    def __init__(self, writer: asyncio.StreamWriter, stats: Counter[str], clock: Callable[[], float]) -> None:
        self.writer = writer
        self.peername = writer.get_extra_info("peername")
        self.link = ControlLink("server", reliable=False)
        self.deadline: float | None = None  # when the connection is closed unless it logs in / speaks again
        self.deadline_stat = "login_timeouts"
        self._stats = stats
        self._clock = clock

    @property
    def ip(self) -> str:
        return str(self.peername[0]) if self.peername else "?"

    def send(self, msg: dict[str, Any]) -> None:
        if self.writer.is_closing():
            return
        try:
            data = self.link.send(msg, self._clock())
        except LocalProtocolError:  # e.g. a delivered message too large once signed
            self._stats["unsendable"] += 1
            return
        self.writer.write(data + b"\n")
        if self.writer.transport.get_write_buffer_size() > MAX_OUTPUT:
            self._stats["slow_readers"] += 1
            self.writer.transport.abort()

    def __repr__(self) -> str:
        return f"tcp:{self.peername}"


class _UdpConn:
    """A UDP control association, keyed by the peer's address, made only once the address is verified."""

    def __init__(self, transport: "_UdpSender", addr: Address, nonce: Any, stats: Counter[str],
                 clock: Callable[[], float]) -> None:
        self.transport = transport
        self.addr = addr
        self.nonce = nonce  # of the login that made it: a repeat of that login is a retransmission
        self.link = ControlLink("server", reliable=True)
        self.last_seen = clock()
        self._stats = stats
        self._clock = clock

    def send(self, msg: dict[str, Any]) -> None:
        try:
            self.transport.sendto(self.link.send(msg, self._clock()), self.addr)
        except LocalProtocolError:
            self._stats["unsendable"] += 1

    def __repr__(self) -> str:
        return f"udp:{self.addr}"


class _UdpSender:
    """Sends control datagrams from the main UDP socket; a full send buffer drops (the link resends)."""

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


class _ControlBacklog:
    """The main port's non-STUN datagrams on their way from the STUN thread to the event loop.

    Bounded, because the thread reads faster than the loop serves control: one callback per datagram
    and no bound grew the server by 115 MiB in 6 s of a flood from one address.  At most ``limit``
    datagrams wait, ``per_source`` of them from one address, so one flooding source cannot crowd the
    others out; addresses with a verified UDP association (``known``) have as much room again, so
    a flood from many forged sources cannot cut the logged-in peers' keepalives.  What does not fit
    is dropped and counted (``udp_control_dropped``; the UDP control link resends).  The thread wakes
    the loop only when it is not already due to drain, so a burst costs one wake-up.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, serve: Callable[[bytes, Address], None],
                 stats: Counter[str], known: Container[Address], limit: int = CONTROL_BACKLOG,
                 per_source: int = CONTROL_BACKLOG_PER_SOURCE) -> None:
        self._loop = loop
        self._serve = serve
        self._stats = stats  # the STUN thread's counters
        self._known = known  # read from the STUN thread: a membership test is atomic
        self._limit, self._per_source = limit, per_source
        self._lock = threading.Lock()  # the STUN thread fills, the event loop drains
        self._waiting: list[tuple[bytes, Address]] = []
        self._by_source: Counter[Address] = Counter()
        self._due = False

    def put(self, data: bytes, addr: Address) -> None:
        """From the STUN thread: queue one datagram, or drop it if its source or the backlog is full."""
        with self._lock:
            room = 2 * self._limit if addr in self._known else self._limit
            if len(self._waiting) >= room or self._by_source[addr] >= self._per_source:
                self._stats["udp_control_dropped"] += 1
                return
            self._by_source[addr] += 1
            self._waiting.append((data, addr))
            wake, self._due = not self._due, True
        if wake:
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        """On the event loop: serve what was waiting (what arrives meanwhile wakes it again)."""
        with self._lock:
            batch, self._waiting = self._waiting, []
            self._by_source.clear()
            self._due = False
        for data, addr in batch:
            self._serve(data, addr)


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
        self._cookies = auth.Cookies()
        self._tcp_admission = Admission(config.conn_cap(), config.max_conns_per_ip)
        self._udp_admission = Admission(MAX_UDP_LINKS, config.max_conns_per_ip)
        self._links: dict[str, _TcpConn] = {}
        self._conns: set[_TcpConn] = set()  # every TCP connection being served (closed with the server)
        self._lookups: dict[int, set[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.addresses: dict[str, Address] = {}
        self.directory: Directory | None = None
        self._trusted_ips = {host for host, _ in config.peer_servers} | set(config.accept_servers)

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every socket; raises OSError (e.g. address in use) before anything is served."""
        cfg = self.config
        try:
            tcp = await asyncio.start_server(
                self._tcp_client, cfg.tcp[0], cfg.tcp[1], limit=messages.MAX_MESSAGE_SIZE + 2,
                backlog=ACCEPT_BACKLOG,
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
        self.registry = Registry(cfg.name, stun_addrs, federated=True, directory=cfg.directory is not None)
        if cfg.directory is not None:
            registry = self.registry
            try:
                self.directory = Directory(cfg.directory, cfg.name, cfg.directory_secret, self._from_directory,
                                           self.stats)
                await self.directory.start(lambda: list(registry.logins))
            except BaseException:
                self.directory = None
                await self.close()
                raise
            self._spawn(self._watch_servers())
        for addr in cfg.peer_servers:
            self._spawn(self._federation_link(addr))
        self._spawn(self._housekeeping())

    def _open_stun(self) -> None:
        """Bind the STUN sockets (two ports; four in RFC 5780 mode) and serve them from the event loop.

        The main one also carries UDP control: its StunPort hands every non-STUN datagram to
        :meth:`_udp_control`, through a bounded backlog.  With workers, each address is a SO_REUSEPORT group whose first
        socket is ours (see :mod:`dp2pt.aio.stun_workers`).
        """
        cfg = self.config
        workers = cfg.stun_workers
        host = cfg.udp[0]
        main = self._bind((host, cfg.udp[1]), workers)
        port = main.getsockname()[1]
        alt = self._bind((host, cfg.alt_port if cfg.alt_port is not None else cfg.udp[1] and cfg.udp[1] + 1), workers)
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
        backlog = _ControlBacklog(asyncio.get_running_loop(), lambda data, addr: self._udp_datagram(sender, data, addr),
                                  self.stun_stats, self._udp_conns)
        ports = [StunPort(sock, local, addrs, socks, self.stun_stats, backlog.put if sock is main else None)
                 for local, sock in socks.items()]
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
        for conn in list(self._conns):  # peers learn at once that this server is gone
            conn.writer.transport.abort()
        if self.directory is not None:
            await self.directory.close()
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
            "tcp_connections": len(self._tcp_admission),
        }

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _internal_error(self, where: str, exc: Exception) -> None:
        internal_error(self.stats, log, where, exc)

    # ---- UDP control (STUN is answered by dp2pt.aio.stun_fast) ----------------------------------

    def _udp_datagram(self, transport: _UdpSender, data: bytes, addr: Address) -> None:
        """A datagram on the main UDP port that is not STUN; a bad one never crashes the server."""
        try:
            self._udp_control(transport, data, addr)
        except Exception as exc:
            self._internal_error(f"datagram from {addr[0]}:{addr[1]}", exc)

    def _udp_control(self, transport: _UdpSender, data: bytes, addr: Address) -> None:
        """UDP control: a login (cookie first), or an authenticated message of an existing association."""
        assert self.registry is not None
        try:
            msg = messages.decode(data)
        except RemoteProtocolError:
            self.stats["malformed_udp"] += 1
            return
        now = self.clock()
        conn = self._udp_conns.get(addr)
        if msg["type"] == "login":
            self._udp_login(transport, conn, msg, len(data), addr, now)
            return
        if conn is None:
            self.stats["rejected_udp"] += 1
            return
        try:
            deliver, ack = conn.link.receive(msg)
        except RemoteProtocolError:
            self.stats["unauthenticated_udp"] += 1
            return
        conn.last_seen = now
        if ack is not None:
            transport.sendto(ack, addr)
        if deliver is not None:
            self._run(self.registry.on_message(conn, deliver, now))

    def _udp_login(self, transport: _UdpSender, conn: _UdpConn | None, msg: dict[str, Any],
                   size: int, addr: Address, now: float) -> None:
        """Spec steps 1-2 over UDP, after a return-routability check (a stateless cookie)."""
        assert self.registry is not None
        nonce = {"nonce": msg["nonce"]} if "nonce" in msg else {}
        if not self._cookies.valid(msg.get("cookie"), addr, now):
            # Unverified source: one answer, no state, no larger than the login.
            reply = messages.encode(messages.make("cookie", cookie=self._cookies.issue(addr, now), **nonce))
            if len(reply) > size:
                self.stats["udp_login_too_small"] += 1
                return
            transport.sendto(reply, addr)
            self.stats["cookies_sent"] += 1
            return
        if conn is not None:
            if msg.get("nonce") == conn.nonce:
                self.stats["udp_login_repeated"] += 1  # login_ok is on its way (retransmitted until acked)
                return
            self._udp_gone(conn)  # the address proved itself anew: a restarted peer replaces the old login
        new = _UdpConn(transport, addr, msg.get("nonce"), self.stats, self.clock)
        admitted, _ = self._udp_admission.admit(addr, addr[0])
        if not admitted:
            self.stats["refused_udp_logins"] += 1
            new.send({**messages.make("error", code="busy", message="too many logins from your address"), **nonce})
            return
        self._run(self.registry.login(new, msg, addr[0], now))
        if new in self.registry.ids_by_conn or self.registry.claiming(new):
            self._udp_conns[addr] = new
        else:
            self._udp_admission.release(addr)

    def _udp_gone(self, conn: _UdpConn) -> None:
        assert self.registry is not None
        del self._udp_conns[conn.addr]
        self._udp_admission.release(conn.addr)
        self._run(self.registry.on_disconnect(conn))

    # ---- TCP: peers and federation links -----------------------------------------------------

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _TcpConn(writer, self.stats, self.clock)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_SNDBUF)
        writer.transport.set_write_buffer_limits(high=OUTPUT_HIGH_WATER)
        admitted, evicted = self._tcp_admission.admit(conn, conn.ip)
        if evicted is not None:
            self.stats["evicted_anonymous"] += 1
            evicted.writer.transport.abort()  # type: ignore[attr-defined]
        if not admitted:
            self.stats["refused_connections"] += 1
            writer.transport.abort()
            return
        self._conns.add(conn)
        try:
            await self._serve_link(conn, reader, outbound=False)
        except asyncio.CancelledError:
            pass  # the server is closing: end quietly (asyncio would log a cancelled handler as an error)
        except Exception as exc:  # never an "Unhandled exception in client_connected_cb"
            self._internal_error(f"connection {conn}", exc)
        finally:
            self._conns.discard(conn)
            self._tcp_admission.release(conn)
            writer.close()

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
            conn = _TcpConn(writer, self.stats, self.clock)
            conn.send(messages.make("hello", server=self.config.name))
            self._conns.add(conn)
            try:
                await self._serve_link(conn, reader, outbound=True)
            except Exception as exc:
                self._internal_error(f"federation link {conn}", exc)
            finally:
                self._conns.discard(conn)
                writer.close()
            await asyncio.sleep(delay)

    async def _serve_link(self, conn: _TcpConn, reader: asyncio.StreamReader, outbound: bool) -> None:
        """Serve one TCP connection: a peer's login session, or a federation link once ``hello`` is seen.

        A peer connection must log in within ``login_timeout``; after that it stays while it sends an
        authenticated message at least every 3 keepalives (blank or rejected lines extend nothing).
        Only the addresses of ``--peer-server`` (and ``accept_servers``) may say ``hello``: anyone
        else claiming to be a server could deliver forged sessions to our peers.
        """
        assert self.registry is not None
        server_name: str | None = None
        if not outbound:
            self._expire_at(conn, self.clock() + self.config.login_timeout, "login_timeouts")
        try:
            while True:
                line = await self._read_line(reader)
                if line is None:
                    return
                try:
                    msg = messages.decode(line)
                except RemoteProtocolError:
                    self.stats["malformed_tcp"] += 1
                    continue
                try:
                    if server_name is not None:
                        self._from_server(server_name, msg)
                    elif conn in self.registry.ids_by_conn:
                        if self._peer_message(conn, msg):
                            conn.deadline = self.clock() + 3 * self.config.keepalive
                    elif msg["type"] == "hello":
                        if conn.peername is None or conn.peername[0] not in self._trusted_ips:
                            self.stats["rejected_hello"] += 1
                            return
                        server_name = msg["server"]
                        conn.deadline = None
                        self._tcp_admission.logged_in(conn)
                        self._links.setdefault(server_name, conn)
                        if not outbound:
                            conn.send(messages.make("hello", server=self.config.name))
                    elif msg["type"] == "login":
                        self._run(self.registry.login(conn, msg, conn.ip, self.clock()))
                    else:
                        self.stats["not_logged_in"] += 1
                        conn.send(messages.make("error", code="auth", message="log in first"))
                except Exception as exc:  # one bad message never ends the server, nor this link
                    self._internal_error(f"message from {conn}", exc)
                if conn.writer.transport.get_write_buffer_size() > OUTPUT_HIGH_WATER:
                    try:  # read no more from a client that does not read what we answer
                        await asyncio.wait_for(conn.writer.drain(), DRAIN_TIMEOUT)
                    except asyncio.TimeoutError:
                        self.stats["slow_readers"] += 1
                        return
                    except ConnectionError:
                        return
        finally:
            conn.deadline = None
            if server_name is not None:
                if self._links.get(server_name) is conn:
                    del self._links[server_name]
            else:
                self._run(self.registry.on_disconnect(conn))

    def _expire_at(self, conn: _TcpConn, deadline: float, stat: str) -> None:
        """Close ``conn`` at its deadline; moving ``conn.deadline`` later (a login, an authentic message)
        postpones it, ``None`` cancels it.  One timer per connection, re-armed only when it fires."""
        conn.deadline, conn.deadline_stat = deadline, stat
        loop = asyncio.get_running_loop()

        def check() -> None:
            if conn.deadline is None:
                return
            left = conn.deadline - self.clock()
            if left > 0:
                loop.call_later(left, check)
                return
            self.stats[conn.deadline_stat] += 1
            conn.writer.transport.abort()

        loop.call_later(max(deadline - self.clock(), 0.0), check)

    def _peer_message(self, conn: _TcpConn, msg: dict[str, Any]) -> bool:
        """A logged-in peer's message: True if it was authentic (it keeps the connection alive)."""
        assert self.registry is not None
        try:
            deliver, _ = conn.link.receive(msg)
        except RemoteProtocolError:
            self.stats["unauthenticated_tcp"] += 1
            return False
        if deliver is not None:
            self._run(self.registry.on_message(conn, deliver, self.clock()))
        return True

    async def _read_line(self, reader: asyncio.StreamReader) -> bytes | None:
        """The next non-blank line, or None: closed (also by its deadline) or oversized."""
        while True:
            try:
                line = await reader.readline()
            except ConnectionError:
                return None
            except (asyncio.LimitOverrunError, ValueError):
                self.stats["oversized_tcp"] += 1
                return None
            if not line:
                return None
            if line.strip():
                return line

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
            elif isinstance(action, ToServer) and self.directory is not None:
                self.directory.send(action.server, action.msg)
            elif isinstance(action, ToServer):
                link = self._links.get(action.server)
                if link is None:
                    self.stats["federation_unreachable"] += 1
                else:
                    link.send(action.msg)
            elif isinstance(action, Lookup):
                self._lookup(action)
            elif isinstance(action, LoggedIn):
                action.conn.link.authenticate(action.key)  # type: ignore[attr-defined]
                if isinstance(action.conn, _TcpConn):
                    self._tcp_admission.logged_in(action.conn)
                    action.conn.deadline = self.clock() + 3 * self.config.keepalive
                    action.conn.deadline_stat = "idle_timeouts"
            elif isinstance(action, Claim):
                self._spawn(self._claim(action))
            elif isinstance(action, Release):
                self._spawn(self._release(action.peer))

    def _lookup(self, action: Lookup) -> None:
        if self.directory is not None:
            self._spawn(self._directory_lookup(action))
            return
        if not self._links:
            self._run(self.registry.lookup_done(action.q, None, self.clock()))  # type: ignore[union-attr]
            return
        self._lookups[action.q] = set(self._links)
        for link in self._links.values():
            link.send(messages.make("lookup", q=action.q, id=action.peer_id, **{"from": action.requester}))
        asyncio.get_running_loop().call_later(LOOKUP_TIMEOUT, self._lookup_expired, action.q)

    # ---- the shared directory ----------------------------------------------------------------

    async def _directory_lookup(self, action: Lookup) -> None:
        """Which server holds the peer, from its entry; then that server's sealed answer (its allow list)."""
        assert self.directory is not None
        server = await self.directory.locate(action.peer_id)
        if server is None:
            self._run(self.registry.lookup_done(action.q, None, self.clock()))  # type: ignore[union-attr]
            return
        self._lookups[action.q] = {server}
        ask = messages.make("lookup", q=action.q, id=action.peer_id, **{"from": action.requester})
        heard = self.directory.send(server, ask, receivers=True)
        assert heard is not None
        if await heard:
            asyncio.get_running_loop().call_later(LOOKUP_TIMEOUT, self._lookup_expired, action.q)
        else:  # nobody listens on that name: the entry outlived its server
            self._lookup_expired(action.q)

    async def _claim(self, action: Claim) -> None:
        assert self.directory is not None and self.registry is not None
        granted = await self.directory.claim(action.peer)
        self._run(self.registry.claim_done(action.conn, action.peer, granted, self.clock()))
        conn = action.conn
        if isinstance(conn, _UdpConn) and conn not in self.registry.ids_by_conn and self._udp_conns.get(conn.addr) is conn:
            del self._udp_conns[conn.addr]
            self._udp_admission.release(conn.addr)

    async def _release(self, peer: str) -> None:
        assert self.directory is not None and self.registry is not None
        if peer not in self.registry.logins:  # not back already (a new login keeps the entry)
            await self.directory.release(peer)

    def _from_directory(self, sender: str, instance: str, msg: dict[str, Any]) -> None:
        """A sealed message from another server of the directory (opened: it is authentic and fresh)."""
        try:
            self._from_server(sender, msg)
        except Exception as exc:
            self._internal_error(f"directory message from {sender}", exc)

    async def _watch_servers(self) -> None:
        """End the sessions that depend on a server that went away (its heartbeat lapsed)."""
        assert self.directory is not None and self.registry is not None
        while True:
            await asyncio.sleep(SERVER_WATCH)
            try:
                for server in self.registry.remote_servers():
                    if await self.directory.gone(server):
                        self.stats["servers_gone"] += 1
                        self._run(self.registry.server_gone(server))
            except Exception as exc:
                self._internal_error("server watch", exc)

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
            try:
                now = self.clock()
                for addr, conn in list(self._udp_conns.items()):
                    if conn.link.idle:
                        continue
                    resend, _lost = conn.link.due(now)
                    for data in resend:
                        conn.transport.sendto(data, addr)
                if now - last_sweep > SWEEP_INTERVAL:
                    for conn in list(self._udp_conns.values()):
                        if now - conn.last_seen > 3 * self.config.keepalive:
                            self._udp_gone(conn)
                    self.registry.sweep(now)
                    last_sweep = now
            except Exception as exc:  # housekeeping must outlive any bug it meets
                self._internal_error("housekeeping", exc)
