"""The peer agent on real sockets: login, testing NAT, and direct transmission (spec steps 1-17).

One UDP socket per session carries the probes *and* the data, so the NAT mapping the probes
measure is the one the punches extend.  Peer A is the one that listens, B the one that connects
(the spec's naming); the location server decides who does what when.  A listener runs its sessions
concurrently (up to ``concurrent``) and consents to each by reporting its address, or declines it
(a peer not in ``allow``, or too many sessions already).

Failover: a peer knows one or more location servers (a DNS name may stand for several addresses)
and logs in to the first that answers, retrying with backoff for ``retry`` seconds, so it may start
before its server does.  When its server goes away (the connection closes, or pings stay unanswered)
it logs in again at the next one; the sessions that were running end at once (``ServerLost``), and a
connect runs its session again through the new server, so it completes or fails with a clear error
within its time budget, never hangs.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from dp2pt.aio.control import ControlChannel, TcpControl, UdpControl
from dp2pt.errors import (
    ConfigError,
    Dp2ptError,
    LoginRefused,
    RemoteProtocolError,
    ServerLost,
    ServerUnreachable,
    TransactionTimeout,
    TraversalFailed,
    TraversalTimeout,
    UnknownPeer,
)
from dp2pt.proto import auth, datagram, messages, retransmit, stun
from dp2pt.proto.direct import DirectPath
from dp2pt.proto.nat_test import (filtering_behaviour, mapping_behaviour, probe_count, punch_plan,
                                  report_from_probes)
from dp2pt.proto.schedules import get_schedule, punch_count, punch_ports
from dp2pt.transaction import StunClient

log = logging.getLogger("dp2pt.peer")

#: Sends of one STUN probe at most (gaps capped at 4 RTOs: 10 sends span 6.2 s at the default RTO).
PROBE_TRIES = 10

Address = tuple[str, int]
Msg = dict[str, Any]

_SESSION_ID = re.compile(r"[0-9a-f]{16}")
MAX_QUEUED = 1024  # direct datagrams waiting to be read; beyond, a flood is dropped at the socket
FILTERING_TRIES = 2  # sends of each CHANGE-REQUEST of --discover-nat's filtering test (rto, then 2·rto)
LOGIN_WAIT = 5.0  # seconds one server may take to accept the connection and answer the login
RETRY_DELAY = (0.1, 2.0)  # first and largest wait between rounds of login attempts (then doubling, ±25%)
SILENT_PINGS = 2.5  # a server that said nothing for this many keepalive periods is taken for gone
LOST = ("lost", "server-gone")  # error codes that mean a server went away, not that the session failed


@dataclass
class PeerConfig:
    id: str
    server: Address  # the first location server to try (a host name may stand for several addresses)
    more_servers: list[Address] = field(default_factory=list)  # tried after it, in order
    retry: float = 10.0  # seconds to keep trying the servers, at start and after losing one
    udp_control: bool = False
    bind: Address = ("0.0.0.0", 0)
    stun: list[Address] = field(default_factory=list)  # empty: the location server's STUN ports
    timeout: float = 10.0  # the whole session, from pairing to the last data datagram
    punch_timeout: float = 2.0  # after punching, how long to wait for the other side's datagram
    count: int = 5  # data datagrams each way over the direct path
    rto: float = 0.2  # initial retransmission timeout of probes, punch bursts and data
    probe_burst: bool = False  # send probe 2 without waiting for probe 1's answer (not the spec's order)
    order: str = "sequential"  # connect: "parallel" asks that both peers test their NATs at once
    discover_nat: bool = False  # classify the NAT (RFC 5780, needs a server with a second address); see nat_test
    keepalive: float = 15.0
    allow: list[str] | None = None  # listener: only these peer ids may connect (None: anyone)
    concurrent: int = 8  # listener: sessions served at once; more are declined

    @property
    def servers(self) -> list[Address]:
        return [self.server, *self.more_servers]


class _DataSocket(asyncio.DatagramProtocol):
    """The probe/punch/data socket: STUN answers go to the STUN client, direct datagrams to a queue."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.stun = StunClient(self.sendto)
        self.direct: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue(MAX_QUEUED)
        self.ignored = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def sendto(self, data: bytes, addr: Address) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        try:
            if stun.is_stun(data):
                message = stun.parse(data)
                if stun.is_binding_response(message) and self.stun.response_received(message):
                    return
            elif datagram.is_direct(data) and not self.direct.full():
                self.direct.put_nowait((data, addr[:2]))
                return
        except RemoteProtocolError:
            pass
        self.ignored += 1

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a NAT that dropped a punch: expected, not fatal.
        log.debug("socket error: %s", exc)


class Peer:
    """A logged-in peer.  Use ``async with Peer(config) as peer:`` then listen() or connect().

    ``on_login(address)`` (optional) is called each time the peer logs in, first and after a failover.
    """

    def __init__(self, config: PeerConfig, clock: Callable[[], float] = time.monotonic,
                 on_login: Callable[[Address], None] | None = None) -> None:
        self.config = config
        self.clock = clock
        self.on_login = on_login
        self.server: Address | None = None  # the address logged in to
        self.stun_servers: list[Address] = []
        self._control: ControlChannel | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._online = asyncio.Event()
        self._last_heard = 0.0
        self._new_sessions: asyncio.Queue[Msg] = asyncio.Queue()
        self._on_session: Callable[[Msg], None] | None = None  # a listener takes sessions as they come
        self._session_queues: dict[str, asyncio.Queue[Msg]] = {}
        self._runs: dict[str, _SessionRun] = {}
        self._errors: asyncio.Queue[Msg] = asyncio.Queue()
        self._lost: Exception | None = None

    async def __aenter__(self) -> "Peer":
        try:
            await self.login()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- login procedure ---------------------------------------------------------------------

    async def login(self) -> None:
        """Spec step 1 (A) / step 2 (B): open and keep a session with a location server.

        Raises:
            LoginRefused: a server refused the login (e.g. the id is in use).
            ServerUnreachable: no server answered within ``retry`` seconds.
        """
        await self._log_in_anywhere(after=None, refusal_is_final=True)
        self._reader = asyncio.ensure_future(self._read_control())
        self._pinger = asyncio.ensure_future(self._keepalive())

    async def _log_in_anywhere(self, after: Address | None, refusal_is_final: bool) -> None:
        """Try the servers in turn (starting after ``after``, the one just lost) until one takes the login."""
        cfg = self.config
        deadline = self.clock() + cfg.retry
        delay = RETRY_DELAY[0]
        while True:
            candidates, problems = await self._candidates()
            if after in candidates:
                i = candidates.index(after) + 1
                candidates = candidates[i:] + candidates[:i]
            for address in candidates:
                try:
                    await self._login_at(address)
                    return
                except LoginRefused as exc:
                    if refusal_is_final:
                        raise
                    problems.append(str(exc))
                except ServerUnreachable as exc:
                    problems.append(str(exc))
            left = deadline - self.clock()
            if left <= 0:
                raise ServerUnreachable(_unreachable(cfg.servers, problems, cfg.retry))
            await asyncio.sleep(min(delay * random.uniform(0.75, 1.25), left))
            delay = min(2 * delay, RETRY_DELAY[1])

    async def _candidates(self) -> tuple[list[Address], list[str]]:
        """Every address of every configured server, in order, without repeats; and what failed to resolve."""
        loop = asyncio.get_running_loop()
        kind = socket.SOCK_DGRAM if self.config.udp_control else socket.SOCK_STREAM
        out: list[Address] = []
        problems: list[str] = []
        for host, port in self.config.servers:
            try:
                infos = await loop.getaddrinfo(host, port, type=kind)
            except (socket.gaierror, UnicodeError) as exc:
                problems.append(f"cannot resolve {host}: {getattr(exc, 'strerror', None) or exc}")
                continue
            for *_, sockaddr in infos:
                address = (str(sockaddr[0]), int(sockaddr[1]))
                if address not in out:
                    out.append(address)
        return out, problems

    async def _login_at(self, address: Address) -> None:
        cfg = self.config
        opener = UdpControl if cfg.udp_control else TcpControl
        wait = min(cfg.timeout, LOGIN_WAIT)
        control = await opener.open(address, timeout=wait)
        login = messages.make("login", id=cfg.id)
        if cfg.allow is not None:
            login["allow"] = list(cfg.allow)
        try:
            reply = await control.login(login, wait)
        except asyncio.TimeoutError:
            control.close()
            raise ServerUnreachable(f"location server {address[0]}:{address[1]} did not answer the login") from None
        except BaseException:
            control.close()
            raise
        self._control = control
        self.server = address
        self.stun_servers = self._stun_addresses(reply["stun"], address)
        self._last_heard = self.clock()
        self._online.set()
        if self.on_login is not None:
            self.on_login(address)

    def _stun_addresses(self, advertised: list[Any], server: Address) -> list[Address]:
        if self.config.stun:
            return list(self.config.stun)
        # A server bound to the wildcard address advertises it: use the address we reached it at.
        return [(server[0] if host in ("0.0.0.0", "::") else host, int(port)) for host, port in advertised]

    async def _read_control(self) -> None:
        """Read the server's messages; when the server goes away, end the running sessions and log in
        again elsewhere (or, out of servers, tell everyone waiting that the peer is offline)."""
        while True:
            assert self._control is not None and self.server is not None
            try:
                while True:
                    msg = await self._control.recv()
                    self._last_heard = self.clock()
                    await self._dispatch(msg)
            except (Dp2ptError, OSError) as exc:
                reason = f"lost the location server {self.server[0]}:{self.server[1]}: {exc}"
            self._control.close()
            self._online.clear()
            log.warning("%s; logging in again", reason)
            for run in list(self._runs.values()):
                run.abort(reason)
            await self._errors.put(messages.make("error", code="lost", message=reason))
            try:
                await self._log_in_anywhere(after=self.server, refusal_is_final=False)
            except Dp2ptError as exc:
                self._lost = exc
                final = messages.make("error", code="lost", message=str(exc))
                if self._on_session is not None:
                    self._on_session(final)
                await self._new_sessions.put(final)
                await self._errors.put(final)
                return

    async def _dispatch(self, msg: Msg) -> None:
        sid = msg.get("session")
        if msg["type"] == "session":
            if auth.key_bytes(msg["key"]) is None or not _SESSION_ID.fullmatch(sid):
                log.warning("ignoring a session message without a valid id and key")
                return
            self._session_queues[sid] = asyncio.Queue()
            if self._on_session is not None:
                self._on_session(msg)
            else:
                await self._new_sessions.put(msg)
        elif isinstance(sid, str):
            if sid in self._session_queues:
                await self._session_queues[sid].put(msg)
            # else: about a session that is over here (a late error, a second result): nothing to do
        elif msg["type"] == "error":
            await self._errors.put(msg)

    async def _keepalive(self) -> None:
        """Ping every ``keepalive``; a server silent for SILENT_PINGS periods is closed (and replaced)."""
        while True:
            await asyncio.sleep(self.config.keepalive)
            if not self._online.is_set() or self._control is None:
                continue
            if self.clock() - self._last_heard > SILENT_PINGS * self.config.keepalive:
                self._control.close()  # the reader sees the session end and fails over
                continue
            try:
                await self._control.send(messages.make("ping"))
            except (OSError, Dp2ptError):
                pass  # the reader will see it too

    async def close(self) -> None:
        for task in (self._reader, self._pinger):
            if task is not None:
                task.cancel()
        if self._control is not None:
            self._control.close()

    # ---- the two roles -----------------------------------------------------------------------

    async def listen(self, on_result: Callable[[Msg], None], sessions: int = 1) -> None:
        """Wait for other peers to connect (role A) and run their sessions concurrently; return after
        ``sessions`` results (0 = never).  A session from a peer not in ``allow``, or beyond
        ``concurrent`` running ones, is declined: the server then tells the caller nothing of us.  A
        session that ended because a server went away is not a result: the caller tries again.

        Raises:
            ServerUnreachable: the peer lost its server and no other took its login in time.
        """
        results: asyncio.Queue[Msg | tuple[Msg, bool]] = asyncio.Queue()
        running: set[asyncio.Future[Any]] = set()

        def start(msg: Msg) -> None:  # called by the control reader: no queue hop before the session runs
            running.difference_update([t for t in running if t.done()])
            if msg["type"] == "error":
                results.put_nowait(msg)
            elif not self._consents(msg, len(running)):
                running.add(asyncio.ensure_future(self._decline(msg)))
            else:
                task = asyncio.ensure_future(self._run_session(msg))
                running.add(task)
                task.add_done_callback(lambda t: t.cancelled() or results.put_nowait(t.result()))

        while not self._new_sessions.empty():  # sessions that came before we listened
            start(self._new_sessions.get_nowait())
        self._on_session = start
        served = 0
        try:
            while sessions == 0 or served < sessions:
                item = await results.get()
                if isinstance(item, dict):  # the peer lost its server, and no other took it back
                    raise ServerUnreachable(f"lost the location server: {item['message']}")
                result, lost = item
                if lost:
                    log.warning("session %s with %s ended with a server: %s", result["session"], result["peer"],
                                result["error"])
                    continue
                on_result(result)
                served += 1
        finally:
            self._on_session = None
            for task in running:
                task.cancel()

    def _consents(self, msg: Msg, running: int) -> bool:
        allow = self.config.allow
        return msg["role"] == "A" and (allow is None or msg["peer"] in allow) and running < self.config.concurrent

    async def _decline(self, msg: Msg) -> None:
        log.info("declining session %s from %s", msg["session"], msg["peer"])
        self._session_queues.pop(msg["session"], None)
        try:
            await self.send_control(messages.make("decline", session=msg["session"]))
        except ServerLost:
            pass  # the server that asked is gone, and the session with it

    async def connect(self, target: str, variant: str = "basic", k: int = 1, schedule: str = "diagram1") -> Msg:
        """Ask the location server for a direct path to ``target`` (role B) and run the session.

        If a server the session depends on goes away, the session runs again through the server the
        peers log in to next, for up to ``retry`` seconds (the other peer may take that long to log
        in again).

        Raises:
            UnknownPeer: no such peer is logged in (here or in the federation).
            TraversalTimeout: the server did not start the session in time.
            ServerUnreachable: the server refused the connect, or every server went away.
        """
        probe_count(variant)
        get_schedule(schedule).first(punch_count(variant, k))
        deadline: float | None = None  # set once a server went away: how long we try again
        delay = RETRY_DELAY[0]
        while True:
            try:
                result, lost = await self._connect_once(target, variant, k, schedule)
                if not lost:
                    return result
                failure: Exception | Msg = result
            except (ServerLost, UnknownPeer) as exc:
                if deadline is None and isinstance(exc, UnknownPeer):
                    raise
                failure = exc
            now = self.clock()
            deadline = deadline if deadline is not None else now + self.config.retry
            if now >= deadline or self._lost is not None:
                if isinstance(failure, Exception):
                    raise failure
                return failure
            log.warning("connect to %s: %s; trying again", target,
                        failure if isinstance(failure, Exception) else failure["error"])
            await asyncio.sleep(min(delay * random.uniform(0.75, 1.25), deadline - now))
            delay = min(2 * delay, RETRY_DELAY[1])
            try:
                await asyncio.wait_for(self._online.wait(), max(deadline - self.clock(), 0.0))
            except asyncio.TimeoutError:
                pass  # _connect_once fails at once and we give up above

    async def _connect_once(self, target: str, variant: str, k: int, schedule: str) -> tuple[Msg, bool]:
        if self._control is None or not self._online.is_set():
            raise ServerLost(str(self._lost or "not logged in to any location server"))
        while not self._errors.empty():  # what was said before this connect is not its answer
            self._errors.get_nowait()
        try:
            order = {"order": "parallel"} if self.config.order == "parallel" else {}
            await self._control.send(messages.make("connect", target=target, variant=variant, k=k, schedule=schedule,
                                                   **order))
        except (OSError, Dp2ptError) as exc:
            raise ServerLost(f"cannot send the connect: {exc}") from None
        waiting = {
            asyncio.ensure_future(self._new_sessions.get()): "session",
            asyncio.ensure_future(self._errors.get()): "error",
        }
        done, pending = await asyncio.wait(waiting, timeout=self.config.timeout, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if not done:
            raise TraversalTimeout(f"the location server did not pair us with {target!r} in time")
        msg = done.pop().result()
        if msg["type"] == "error":
            if msg["code"] == "unknown-peer":
                raise UnknownPeer(msg["message"])
            if msg["code"] in LOST:
                raise ServerLost(msg["message"])
            raise ServerUnreachable(f"connect refused: {msg['message']}")
        return await self._run_session(msg)

    async def _run_session(self, msg: Msg) -> tuple[Msg, bool]:
        """Run one session; returns its result and whether it ended because a server went away."""
        run = _SessionRun(self, msg)
        self._runs[run.sid] = run
        task = asyncio.ensure_future(run.run())
        run.task = task
        try:
            await asyncio.wait_for(task, self.config.timeout)
        except asyncio.TimeoutError:
            run.result["error"] = f"session timed out after {self.config.timeout:g}s in {run.phase}"
            run.result["error_code"] = TraversalTimeout.exit_code
        except asyncio.CancelledError:
            if run.lost is None:
                raise  # we are being cancelled, not the session
            run.result["error"] = run.lost
            run.result["error_code"] = ServerLost.exit_code
        except Dp2ptError as exc:
            run.result["error"] = str(exc)
            run.result["error_code"] = exc.exit_code
            if isinstance(exc, ServerLost) and run.lost is None:
                run.lost = str(exc)  # it could not reach its server
        except OSError as exc:  # the data socket failed under us
            run.result["error"] = f"data socket: {exc.strerror or exc}"
            run.result["error_code"] = TraversalFailed.exit_code
        finally:
            run.close()
            self._runs.pop(run.sid, None)
            self._session_queues.pop(msg["session"], None)
        if run.lost is None and run.orphaned is not None and not run.result["ok"]:
            run.lost = run.orphaned  # the far side was never told to punch: run it again elsewhere
        if run.lost is None:
            await self._report_result(run.result)
        return run.result, run.lost is not None

    async def _report_result(self, result: Msg) -> None:
        if self._control is not None and self._online.is_set():
            try:
                await self._control.send(messages.make("result", session=result["session"], ok=result["ok"]))
            except (OSError, Dp2ptError):
                pass

    async def send_control(self, msg: Msg) -> None:
        """Send a control message to the server.

        Raises:
            ServerLost: not logged in (the server went away).
        """
        if self._control is None or not self._online.is_set():
            raise ServerLost("not logged in to any location server")
        await self._control.send(msg)


def _unreachable(servers: list[Address], problems: list[str], retry: float) -> str:
    """One line saying which servers were tried, for how long, and the last thing that went wrong."""
    last = problems[-1] if problems else "no address to try"
    if len(servers) == 1:
        return last if retry <= 0 else f"{last} (kept trying for {retry:g} s)"
    return f"no location server of {len(servers)} answered in {retry:g} s; last: {last}"


class _SessionRun:
    """One pairing as seen by one peer: testing NAT, then direct transmission."""

    def __init__(self, peer: Peer, msg: Msg) -> None:
        self.peer = peer
        self.cfg = peer.config
        self.role: str = msg["role"]
        self.sid: str = msg["session"]
        self.wire_sid = datagram.session_bytes(self.sid)
        self.path = DirectPath(self.role, self.wire_sid, bytes.fromhex(msg["key"]), self.cfg.count,
                               lambda seq: f"{self.cfg.id}:{seq}".encode(), rto=self.cfg.rto)
        self.variant: str = msg["variant"]
        self.k: int = msg["k"]
        self.schedule: str = msg["schedule"]
        self.order: str = msg.get("order", "sequential")
        self.queue = peer._session_queues[self.sid]
        self.t0 = peer.clock()
        self.phase = "start"
        self.sock: _DataSocket | None = None
        self._filter_server: Address | None = None  # --discover-nat: where the filtering test asks, after the session
        self._filter_sock: _DataSocket | None = None  # the filtering test's own socket
        self.task: asyncio.Task[Msg] | None = None
        self.lost: str | None = None  # why the session ended with a server
        self.on_its_own = False  # both sides punched (as far as this side can know): the rest needs no server
        self.punched = False  # this side has punched and waits for the other's datagram
        self.orphaned: str | None = None  # the server went away while this side waited after its punch
        self.result: Msg = {
            "ok": False,
            "role": self.role,
            "id": self.cfg.id,
            "peer": msg["peer"],
            "session": self.sid,
            "server": list(peer.server) if peer.server else None,
            "variant": self.variant,
            "k": self.k,
            "schedule": self.schedule,
            "order": self.order,
            "direct": False,
            "local": None,
            "probes": [],
            "mapped": None,
            "delta": None,
            "remote": None,
            "punch_ports": [],
            "remote_endpoint": None,
            "hit": None,
            "time_to_direct_ms": None,
            "timeline_ms": {"session": 0.0},
            "punches_sent": 0,
            "data_sent": 0,
            "data_received": 0,
            "data_acked": 0,
            "packets_sent": 0,
            "error": None,
            "error_code": 0,
        }

    def abort(self, reason: str) -> None:
        """A server went away: end the session now, unless it no longer needs one (both punched).

        B waiting for A's datagram after its own punch cannot know whether the server ordered A's
        punch before it died: the wait goes on (the path may still come up) and only its failure
        counts as the server's loss, so that B then runs the session again elsewhere.
        """
        if self.on_its_own or self.task is None or self.task.done():
            return
        if self.punched:
            self.orphaned = reason
            return
        self.lost = reason
        self.task.cancel()

    def _mark(self, event: str) -> float:
        ms = round((self.peer.clock() - self.t0) * 1000, 3)
        self.result["timeline_ms"][event] = ms
        return ms

    def close(self) -> None:
        self.result["rejected_datagrams"] = {k: v for k, v in self.path.stats.items() if v}
        if self.sock is not None:
            self.result["packets_sent"] = self.path.sent + self.sock.stun.sent
            if self.sock.transport is not None:
                self.sock.transport.close()
        if self._filter_sock is not None and self._filter_sock.transport is not None:
            self.result["packets_sent"] += self._filter_sock.stun.sent
            self._filter_sock.transport.close()

    async def run(self) -> Msg:
        loop = asyncio.get_running_loop()
        self.phase = "opening the data socket"
        try:
            _, self.sock = await loop.create_datagram_endpoint(_DataSocket, local_addr=self.cfg.bind)
        except OSError as exc:
            host, port = self.cfg.bind
            raise ConfigError(f"cannot bind the data socket to {host}:{port}: {exc.strerror or exc}") from None
        assert self.sock.transport is not None
        self.result["local"] = list(self.sock.transport.get_extra_info("sockname")[:2])
        if self.role == "A":
            await self._test_nat()  # steps 3-7
            remote = await self._expect("peer_report")  # step 14
            await self._expect("punch")  # B has punched (step 15); our turn (step 16)
            await self._punch(remote)
        else:
            if self.order == "parallel":
                await self._test_nat()  # steps 9-13 at once with A's 3-7
                remote = await self._expect("peer_report")  # step 8, relayed with 14 once both reports are in
            else:
                remote = await self._expect("peer_report")  # step 8
                await self._test_nat()  # steps 9-13
            await self._expect("punch")  # step 15
            await self._punch(remote)
            await self.peer.send_control(messages.make("punched", session=self.sid))
        await self._direct()
        if self._filter_server is not None:
            self.phase = "the filtering test of --discover-nat"
            await self._discover_filtering(self._filter_server)
        return self.result

    async def _expect(self, type_: str) -> Msg:
        self.phase = f"waiting for {type_}"
        while True:
            msg = await self.queue.get()
            if msg["type"] == type_:
                if type_ == "peer_report":
                    self.result["remote"] = {"ip": msg["ip"], "port": msg["port"], "delta": msg["delta"],
                                             **({"mapping": msg["mapping"]} if "mapping" in msg else {})}
                return msg
            if msg["type"] == "error" and msg["code"] in LOST:
                self.lost = msg["message"]
                raise ServerLost(msg["message"])
            if msg["type"] == "error":
                raise TraversalFailed(f"location server: {msg['message']}")

    async def _test_nat(self) -> None:
        """Steps 3-6 (or 9-12): probe the location server's two STUN ports; step 7 (13): report."""
        assert self.sock is not None
        count = probe_count(self.variant)
        servers = list(self.peer.stun_servers)
        if self.cfg.probe_burst and count == 2 and len(servers) >= 2:
            responses = await self._probe_burst(servers)
        else:
            responses = await self._probe_in_turn(servers, count)
        mapped = [stun.mapped_address(r) for r in responses]
        report = report_from_probes(self.variant, mapped)
        self.result.update(probes=[list(m) for m in mapped], mapped=[report.ip, report.port], delta=report.delta)
        discovered = {}
        if self.cfg.discover_nat:
            other = stun.other_address(responses[0])
            mapping = await self._discover_mapping(mapped, other)
            self.result["nat"] = {"mapping": mapping, "filtering": None}
            discovered = {"mapping": mapping} if mapping else {}
            if other is not None:
                self._filter_server = servers[0]
        await self.peer.send_control(
            messages.make("report", session=self.sid, ip=report.ip, port=report.port, delta=report.delta, **discovered)
        )
        self._mark("report")

    async def _discover_mapping(self, mapped: list[Address], other: Address | None) -> str | None:
        """RFC 5780 §4.3 (``--discover-nat``): when the spec's probes got one mapping, one more probe to
        the server's OTHER-ADDRESS tells an endpoint-independent mapping from an address-dependent one."""
        x2 = mapped[1] if len(mapped) > 1 else None
        x3 = None
        if other is not None and (x2 is None or x2 == mapped[0]):
            self.phase = "probe 3 (mapping behaviour)"
            x3 = stun.mapped_address(await self._probe(other, "probe3"))
        return mapping_behaviour(mapped[0], x2, x3)

    async def _discover_filtering(self, server: Address) -> None:
        """RFC 5780 §4.4, once the session is over: CHANGE-REQUESTs asking for an answer from the other IP
        and port, and from the other port; which ones cross our NAT.  From a socket of its own, because
        the data socket has sent to the server's other port and address (probes 2 and 3), which a
        port-restricted NAT would then let in; and after the session, because that socket's new
        mapping would take the port a sequential NAT's prediction counts on."""
        loop = asyncio.get_running_loop()
        _, sock = await loop.create_datagram_endpoint(_DataSocket, local_addr=(self.cfg.bind[0], 0))
        self._filter_sock = sock  # closed (and its packets counted) by close()

        async def answered(flags: int) -> bool:
            request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, attributes={"CHANGE-REQUEST": flags})
            try:
                await sock.stun.request(request, server, rto=self.cfg.rto, max_tries=FILTERING_TRIES)
                return True
            except TransactionTimeout:
                return False

        both, port = await asyncio.gather(answered(stun.CHANGE_IP | stun.CHANGE_PORT), answered(stun.CHANGE_PORT))
        self.result["nat"]["filtering"] = filtering_behaviour(both, port)

    async def _probe(self, server: Address, label: str) -> Any:
        assert self.sock is not None
        try:
            # Capped gaps (not RFC 8489's plain doubling): a probe a lossy link lost costs ~1 s, not 6.
            response = await self.sock.stun.request(stun.binding_request(), server, rto=self.cfg.rto,
                                                    max_tries=PROBE_TRIES,
                                                    max_rto=retransmit.MAX_RTO_FACTOR * self.cfg.rto)
        except TransactionTimeout as exc:
            raise TraversalTimeout(f"NAT test: {exc}") from None
        self._mark(label)
        return response

    async def _probe_in_turn(self, servers: list[Address], count: int) -> list[stun.Message]:
        """The spec's order: probe 2 (step 5) only after the answer to probe 1 (step 4)."""
        responses = []
        for i in range(count):
            self.phase = f"probe {i + 1}"
            response = await self._probe(servers[i], f"probe{i + 1}")
            responses.append(response)
            if len(servers) == 1:
                # One STUN server given: the second probe goes to its RFC 5780 OTHER-ADDRESS (a new
                # destination, so a symmetric NAT opens a new mapping), else to the same address.
                servers.append(stun.other_address(response) or servers[0])
        return responses

    async def _probe_burst(self, servers: list[Address]) -> list[stun.Message]:
        """Both probes back to back (``--probe-burst``): a neighbour's flow is far less likely to
        land between them and inflate dx2, which would spoil every prediction."""
        self.phase = "probes 1 and 2"
        first = asyncio.ensure_future(self._probe(servers[0], "probe1"))
        await asyncio.sleep(0)  # let probe 1 leave first, so x1 < x2 on a sequential NAT
        return list(await asyncio.gather(first, self._probe(servers[1], "probe2")))

    async def _punch(self, remote: Msg) -> None:
        """Step 15 (B) or 16 (A): one punch per predicted port of the other side's NAT."""
        assert self.sock is not None
        hypotheses = get_schedule(self.schedule).first(self.k)
        predicted = punch_ports(self.role, remote["port"], remote["delta"], hypotheses)  # type: ignore[arg-type]
        ports = punch_plan(remote["port"], remote.get("mapping"), predicted)
        self.result["punch_ports"] = ports
        self.phase = "punching"
        self._mark("punch")
        self._burst(remote["ip"], ports, 0)

    def _burst(self, ip: str, ports: list[int], round_: int) -> None:
        self._send(self.path.punches(ip, ports, round_))
        self.result["punches_sent"] += len(ports)

    def _send(self, datagrams: list[tuple[bytes, Address]]) -> None:
        assert self.sock is not None
        for data, addr in datagrams:
            self.sock.sendto(data, addr)

    async def _direct(self) -> None:
        """Wait for the other side's punch (B) or reply (A), answer (step 17), then exchange data."""
        assert self.sock is not None
        # A punches only once the server said B has (step 16 follows 15): from here both have. B has
        # punched, but whether A was told to is the server's to say: a server lost now makes B's
        # wait an orphan's (abort), until A's datagram arrives.
        self.on_its_own = self.role == "A"
        self.punched = True
        self.phase = "waiting for a direct datagram"
        remote_ip = self.result["remote"]["ip"]
        ports = self.result["punch_ports"]
        path = self.path
        start = self.peer.clock()
        deadline = start + self.cfg.punch_timeout
        # Both sides repeat their burst (same destinations: no new NAT mapping) until the path is up:
        # a punch the far NAT dropped before its own side punched (step 15 on an address-restricted
        # NAT) gets a second chance once the far side has opened its filter, and a punch a lossy link
        # lost is sent again.
        repeats = retransmit.repeat_times(self.cfg.rto, retransmit.MAX_RTO_FACTOR * self.cfg.rto,
                                           self.cfg.punch_timeout)
        round_ = 0
        data_done_by: float | None = None
        while True:
            now = self.peer.clock()
            if path.direct:
                assert data_done_by is not None
                if path.done or now >= data_done_by:
                    break
                self._send(path.due(now))
                wait = min(data_done_by, path.next_due() or data_done_by) - now
            else:
                if now >= deadline:
                    raise TraversalFailed(
                        f"no direct datagram from {self.result['peer']} within {self.cfg.punch_timeout:g}s of punching"
                    )
                if round_ < len(repeats) and now >= start + repeats[round_]:
                    round_ += 1
                    self._burst(remote_ip, ports, round_)
                wait = min(deadline, start + repeats[round_] if round_ < len(repeats) else deadline) - now
            try:
                data, addr = await asyncio.wait_for(self.sock.direct.get(), max(wait, 0.001))
            except asyncio.TimeoutError:
                continue
            was_direct = path.direct
            answers = path.receive(data, addr, self.peer.clock())
            if path.direct and not was_direct:
                self._direct_up()
            if path.heard is not None:
                # Patience counts from the last datagram from the other side: on a lossy link it may
                # come up (and start its data) seconds after us, and it is still sending.  Only an
                # authentic, new datagram counts: forged and replayed ones could keep us waiting forever.
                data_done_by = path.heard + self.cfg.punch_timeout
            self._send(answers)
            self.result["data_received"] = len(path.received)
            self.result["data_acked"] = len(path.acked)
        self._send(path.farewell())
        self.result["ok"] = len(path.received) >= self.cfg.count
        if not self.result["ok"]:
            raise TraversalFailed(f"direct path up but only {len(path.received)}/{self.cfg.count} data datagrams arrived")

    def _direct_up(self) -> None:
        assert self.path.remote is not None
        self.on_its_own = True
        self.result["direct"] = True
        self.result["remote_endpoint"] = list(self.path.remote)
        self.result["hit"] = self.path.hit
        self.result["time_to_direct_ms"] = self._mark("direct")
        self.phase = "exchanging data"
        self.result["data_sent"] = self.cfg.count
