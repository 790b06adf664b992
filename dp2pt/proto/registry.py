"""The location server's logic, sans-IO: login, pairing, and relaying the testing-NAT reports.

Theory of operation.  A peer logs in (spec steps 1-2) and gets a login key; the connection layer
(:mod:`dp2pt.proto.link`) authenticates every later message with it, so a message from a connection
is from the peer that logged in on it.  ``connect`` from B pairs B with A and opens a *session*,
owned by B's server, with a fresh session key for the pair's direct datagrams.  The session walks
the table :data:`TRANSITIONS`:

    testing-a   A consents by probing its NAT and reporting x2, dx2 (steps 3-7) -> relayed to B
                (step 8); or A declines and B is told so (A's address never reaches B)
    testing-b   B probes and reports y2, dy2 (steps 9-13)          -> relayed to A (step 14),
                                                                      B is told to punch (step 15)
    punching-b  B says it punched                                  -> A is told to punch (step 16)
    punching-a  both report their results (step 17 happened, or not)
    done

The spec's order is strictly sequential: B starts its NAT test only once A's report reached it,
which costs about three of the exchange's seven server round trips. A ``connect`` may ask for the
*parallel* order (off by default): both peers test their NATs as soon as the session opens, the
server keeps whichever report comes first (``testing-both`` -> ``awaiting-b`` / ``awaiting-a``) and
relays both at once when it has them (steps 8, 14 and 15 together); the rest is the same.

A listener may name the ids allowed to reach it (``allow`` in its login); anyone else's connect is
answered exactly as if the listener were not logged in.  A report must name the address the peer
logged in from, so nobody can aim the other side's punches at a third party.  A peer's connects are
rate-limited and its open sessions capped (:class:`Limits`).

In a federation (FIG. 4) A may be logged in to another server: messages for A leave as ``deliver``
to A's server, and A's messages for the session come back ``upstream`` (steps 7-1 and 13-1).  The
servers are linked either statically (``--peer-server``) or through a shared directory
(:mod:`dp2pt.proto.directory`); with a directory a login first *claims* its id there (no two servers
hold one id), a logout releases it, and a server that went away ends the sessions that depended on
it (``server-gone``) so that their peers try again elsewhere instead of waiting.  The
server never relays data: it only coordinates.  Methods take events and return :class:`Action`
lists; the asyncio layer (:mod:`dp2pt.aio.server`) moves the bytes.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from dp2pt.errors import Dp2ptError
from dp2pt.proto import auth, messages
from dp2pt.proto.admission import TokenBucket
from dp2pt.proto.messages import VARIANTS, make
from dp2pt.proto.nat_test import BEHAVIOURS
from dp2pt.proto.schedules import SCHEDULES, punch_count

MAX_K = 64
UPSTREAM_TYPES = ("report", "punched", "result", "decline")  # what A's server may pass on for A (steps 7-1, ...)
SESSION_MAX_AGE = 60.0  # seconds a session may stay unfinished before it is swept
MAX_ID_LENGTH = 64
MAX_ALLOW = 256  # ids in a listener's allow list
MAX_ERROR_TEXT = 200  # characters of an error message (it may quote what the remote sent)
_SESSION_ID = re.compile(r"[0-9a-f]{16}")

Conn = Hashable
Msg = dict[str, Any]


@dataclass(frozen=True)
class ToConn:
    """Send to a connection that may not be logged in (answers to login, errors)."""

    conn: Conn
    msg: Msg


@dataclass(frozen=True)
class ToPeer:
    """Send to a peer logged in to this server."""

    peer: str
    msg: Msg


@dataclass(frozen=True)
class ToServer:
    """Send to another location server of the federation."""

    server: str
    msg: Msg


@dataclass(frozen=True)
class Lookup:
    """Ask the federation which server has peer ``peer_id`` for ``requester``; answer with :meth:`Registry.lookup_done`."""

    q: int
    peer_id: str
    requester: str


@dataclass(frozen=True)
class Claim:
    """Directory mode: may ``peer`` log in here (no live server holds its id)?  Answer with
    :meth:`Registry.claim_done`."""

    conn: Conn
    peer: str


@dataclass(frozen=True)
class Release:
    """Directory mode: ``peer`` logged out here; its directory entry goes if it is still ours."""

    peer: str


@dataclass(frozen=True)
class LoggedIn:
    """``conn`` is now peer ``peer``'s: authenticate its traffic with ``key`` from here on."""

    conn: Conn
    peer: str
    key: bytes


Action = ToConn | ToPeer | ToServer | Lookup | LoggedIn | Claim | Release


@dataclass(frozen=True)
class Limits:
    """What one peer may ask of the server."""

    connect_burst: int = 10  # connects at once ...
    connect_rate: float = 1.0  # ... then this many per second
    sessions_per_peer: int = 4  # open sessions a peer started (role B)
    sessions_per_target: int = 16  # open sessions a listener is in (role A), whichever server owns them

#: (state, event, role) -> next state.  Anything else is a protocol error.
TRANSITIONS: dict[tuple[str, str, str], str] = {
    ("testing-a", "report", "A"): "testing-b",
    ("testing-a", "decline", "A"): "done",
    ("testing-b", "report", "B"): "punching-b",
    ("punching-b", "punched", "B"): "punching-a",
    ("punching-a", "result", "A"): "punching-a",
    ("punching-a", "result", "B"): "punching-a",
    # The parallel order: both test at once, the reports are relayed when both are in.
    ("testing-both", "report", "A"): "awaiting-b",
    ("testing-both", "report", "B"): "awaiting-a",
    ("testing-both", "decline", "A"): "done",
    ("awaiting-b", "report", "B"): "punching-b",
    ("awaiting-a", "report", "A"): "punching-b",
    ("awaiting-a", "decline", "A"): "done",
}
ORDERS = ("sequential", "parallel")


@dataclass
class Participant:
    peer: str
    server: str | None  # None: logged in here


@dataclass
class Session:
    id: str
    a: Participant
    b: Participant
    variant: str
    k: int
    schedule: str
    created: float
    key: str = ""
    state: str = "testing-a"
    results: dict[str, bool] = field(default_factory=dict)
    order: str = "sequential"
    reports: dict[str, Msg] = field(default_factory=dict)  # the parallel order's first report, held

    def role_of(self, peer: str) -> str | None:
        return "A" if peer == self.a.peer else "B" if peer == self.b.peer else None

    def participant(self, role: str) -> Participant:
        return self.a if role == "A" else self.b


@dataclass
class _Login:
    conn: Conn
    key: bytes
    ip: str
    allow: frozenset[str] | None
    connects: TokenBucket

    def allows(self, peer: str) -> bool:
        return self.allow is None or peer in self.allow


class Registry:
    """Peers logged in here, sessions owned here, and sessions proxied for other servers."""

    def __init__(
        self,
        name: str,
        stun: list[tuple[str, int]],
        federated: bool = False,
        limits: Limits = Limits(),
        directory: bool = False,
        new_key: Callable[[], str] = auth.new_key,
        new_session_id: Callable[[], str] = lambda: secrets.token_hex(8),
    ) -> None:
        self.name = name
        self.stun = stun
        self.federated = federated
        self.limits = limits
        self.directory = directory
        self._new_key = new_key
        self._new_session_id = new_session_id
        self.logins: dict[str, _Login] = {}
        self.ids_by_conn: dict[Conn, str] = {}
        self.sessions: dict[str, Session] = {}
        self.proxied: dict[str, tuple[str, str, float]] = {}  # session id -> (owning server, our peer, last seen)
        self._claims: dict[Conn, tuple[str, Msg, str]] = {}  # directory mode: conn -> (peer, login, ip)
        self._pending: dict[int, tuple[str, Msg, float]] = {}
        self._next_q = 0
        self.stats: Counter[str] = Counter()

    # ---- events from peers -------------------------------------------------------------------

    def login(self, conn: Conn, msg: Msg, ip: str, now: float) -> list[Action]:
        """Spec steps 1-2: a ``login`` from ``conn``, whose source address ``ip`` the caller has verified
        (a TCP connection, or a UDP login that echoed its cookie).  With a directory the login completes
        in :meth:`claim_done`, once the directory said no other server holds the id."""
        peer = msg["id"]
        nonce = {"nonce": msg["nonce"]} if "nonce" in msg else {}
        allow = msg.get("allow")
        problem = None
        if not peer or len(peer) > MAX_ID_LENGTH or not peer.isprintable():
            problem = "bad-id", f"peer id must be 1-{MAX_ID_LENGTH} printable characters"
        elif allow is not None and (len(allow) > MAX_ALLOW or not all(isinstance(a, str) for a in allow)):
            problem = "bad-request", f"allow must list at most {MAX_ALLOW} peer ids"
        elif conn in self.ids_by_conn or conn in self._claims:
            problem = "logged-in", "this connection is already logged in"
        elif peer in self.logins or any(p == peer for p, _, _ in self._claims.values()):
            problem = "id-in-use", f"peer id {peer!r} is already logged in"
        if problem:
            self.stats["rejected"] += 1
            return [ToConn(conn, {**_error(*problem), **nonce})]
        if self.directory:
            self._claims[conn] = (peer, msg, ip)
            return [Claim(conn, peer)]
        return self._logged_in(conn, peer, msg, ip, now)

    def claiming(self, conn: Conn) -> bool:
        """Whether ``conn``'s login waits for the directory."""
        return conn in self._claims

    def claim_done(self, conn: Conn, peer: str, granted: bool, now: float) -> list[Action]:
        """The directory answered the :class:`Claim` of ``peer`` for ``conn``."""
        pending = self._claims.pop(conn, None)
        if pending is None:  # the connection went away meanwhile
            return [Release(peer)] if granted else []
        _, msg, ip = pending
        if not granted:
            self.stats["rejected"] += 1
            nonce = {"nonce": msg["nonce"]} if "nonce" in msg else {}
            return [ToConn(conn, {**_error("id-in-use", f"peer id {peer!r} is logged in at another server"), **nonce})]
        return self._logged_in(conn, peer, msg, ip, now)

    def _logged_in(self, conn: Conn, peer: str, msg: Msg, ip: str, now: float) -> list[Action]:
        nonce = {"nonce": msg["nonce"]} if "nonce" in msg else {}
        allow = msg.get("allow")
        key = self._new_key()
        bucket = TokenBucket(self.limits.connect_burst, self.limits.connect_rate, now)
        self.logins[peer] = _Login(conn, bytes.fromhex(key), ip, None if allow is None else frozenset(allow), bucket)
        self.ids_by_conn[conn] = peer
        self.stats["logins"] += 1
        stun = [[host, port] for host, port in self.stun]
        ok = make("login_ok", key=key, server=self.name, stun=stun, **nonce)
        return [LoggedIn(conn, peer, bytes.fromhex(key)), ToConn(conn, ok)]

    def on_message(self, conn: Conn, msg: Msg, now: float) -> list[Action]:
        """An authenticated control message from a logged-in peer's connection."""
        type_ = msg["type"]
        peer = self.ids_by_conn.get(conn)
        if peer is None:
            self.stats["rejected"] += 1
            return [ToConn(conn, _error("auth", "not logged in"))]
        if type_ == "ping":
            return [ToPeer(peer, make("pong"))]
        if type_ == "connect":
            return self._connect(peer, msg, now)
        if type_ in ("report", "punched", "result", "decline"):
            return self._session_event(peer, msg, from_server=None)
        self.stats["rejected"] += 1
        return [ToPeer(peer, _error("unexpected", f"a peer does not send {type_!r}"))]

    def on_disconnect(self, conn: Conn) -> list[Action]:
        """A peer's control connection went away: its sessions end, the other side is told."""
        self._claims.pop(conn, None)
        peer = self.ids_by_conn.pop(conn, None)
        if peer is None:
            return []
        del self.logins[peer]
        for sid in [sid for sid, (_, held, _) in self.proxied.items() if held == peer]:
            del self.proxied[sid]
        actions: list[Action] = [Release(peer)] if self.directory else []
        for session in [s for s in self.sessions.values() if s.role_of(peer)]:
            if session.role_of(peer) in session.results:
                continue  # it finished its side; the other side's result may still come (else: sweep)
            other = "B" if session.role_of(peer) == "A" else "A"
            actions += self._to(session, other, _error("peer-gone", f"peer {peer} logged out", session.id))
            del self.sessions[session.id]
        return actions

    # ---- events from the federation ----------------------------------------------------------

    def on_server_message(self, server: str, msg: Msg, now: float) -> list[Action]:
        """A validated message from another location server of the federation."""
        type_ = msg["type"]
        if type_ == "lookup":
            login = self.logins.get(msg["id"])
            found = login is not None and login.allows(str(msg.get("from", "")))
            return [ToServer(server, make("lookup_result", q=msg["q"], id=msg["id"], found=found))]
        if type_ == "deliver":
            return self._deliver(server, msg["to"], msg["msg"], now)
        if type_ == "upstream":
            try:
                inner = messages.decode(messages.encode(msg["msg"]))
            except Dp2ptError:
                inner = {}
            if inner.get("type") not in UPSTREAM_TYPES:
                self.stats["malformed"] += 1
                return []
            return self._session_event(msg["from"], inner, from_server=server)
        self.stats["rejected"] += 1
        return []

    def lookup_done(self, q: int, server: str | None, now: float) -> list[Action]:
        """The federation answered lookup ``q``: ``server`` has the peer, or None of them has it."""
        pending = self._pending.pop(q, None)
        if pending is None:
            return []
        peer, msg, _ = pending
        if peer not in self.logins:
            return []
        if server is None:
            return [ToPeer(peer, _unknown_peer(msg["target"]))]
        return self._open_session(peer, msg, Participant(msg["target"], server), now)

    def sweep(self, now: float) -> None:
        """Forget sessions, proxies and lookups that outlived :data:`SESSION_MAX_AGE` (a peer vanished)."""
        for session in [s for s in self.sessions.values() if now - s.created > SESSION_MAX_AGE]:
            self.stats["sessions_expired"] += 1
            del self.sessions[session.id]
        for sid in [sid for sid, (_, _, seen) in self.proxied.items() if now - seen > SESSION_MAX_AGE]:
            del self.proxied[sid]
        for q in [q for q, (_, _, asked) in self._pending.items() if now - asked > SESSION_MAX_AGE]:
            del self._pending[q]

    def remote_servers(self) -> set[str]:
        """The other servers this server's open sessions depend on (to watch whether they are alive)."""
        names = {p.server for s in self.sessions.values() for p in (s.a, s.b) if p.server is not None}
        return names | {owner for owner, _, _ in self.proxied.values()}

    def server_gone(self, server: str) -> list[Action]:
        """Directory mode: ``server`` went away (its heartbeat lapsed, or another instance took its name).
        Sessions that needed it end with ``server-gone``, so their peers start again elsewhere at once
        rather than wait for their timeout."""
        actions: list[Action] = []
        for session in [s for s in self.sessions.values() if server in (s.a.server, s.b.server)]:
            for role, other in (("A", "B"), ("B", "A")):
                mine = session.participant(role)
                if mine.server is None and role not in session.results:
                    text = f"the location server of peer {session.participant(other).peer} went away"
                    actions += self._to(session, role, _error("server-gone", text, session.id))
            self.stats["sessions_server_gone"] += 1
            del self.sessions[session.id]
        for sid, (owner, peer, _) in list(self.proxied.items()):
            if owner == server:
                del self.proxied[sid]
                if peer in self.logins:
                    actions.append(ToPeer(peer, _error("server-gone", "the location server running this session went "
                                                       "away", sid)))
        return actions

    # ---- internals ---------------------------------------------------------------------------

    def _connect(self, peer: str, msg: Msg, now: float) -> list[Action]:
        target = msg["target"]
        problem = None
        if msg["variant"] not in VARIANTS:
            problem = f"unknown variant {msg['variant']!r}"
        elif not 1 <= msg["k"] <= MAX_K:
            problem = f"k must be 1..{MAX_K}"
        elif msg["schedule"] not in SCHEDULES:
            problem = f"unknown schedule {msg['schedule']!r}"
        elif msg.get("order", "sequential") not in ORDERS:
            problem = f"unknown order {msg['order']!r}"
        elif target == peer:
            problem = "a peer cannot connect to itself"
        if problem:
            self.stats["rejected"] += 1
            return [ToPeer(peer, _error("bad-request", problem))]
        if not self.logins[peer].connects.take(now):
            self.stats["connects_limited"] += 1
            return [ToPeer(peer, _error("busy", "too many connect requests; try again later"))]
        if self._open_count(peer, "B") >= self.limits.sessions_per_peer:
            self.stats["connects_limited"] += 1
            return [ToPeer(peer, _error("busy", f"at most {self.limits.sessions_per_peer} open sessions per peer"))]
        login = self.logins.get(target)
        if login is not None and login.allows(peer):
            if self._listener_sessions(target) >= self.limits.sessions_per_target:
                self.stats["connects_limited"] += 1
                return [ToPeer(peer, _error("busy", f"peer {target!r} has too many sessions open"))]
            return self._open_session(peer, msg, Participant(target, None), now)
        if login is not None or not self.federated:
            # Not allowed reads exactly like not logged in: the allow list hides the listener.
            return [ToPeer(peer, _unknown_peer(target))]
        self._next_q += 1
        self._pending[self._next_q] = (peer, msg, now)
        return [Lookup(self._next_q, target, peer)]

    def _open_count(self, peer: str, role: str) -> int:
        return sum(1 for s in self.sessions.values() if s.participant(role).peer == peer)

    def _listener_sessions(self, peer: str) -> int:
        """Sessions our peer ``peer`` is in as the listener (A): owned here, or by another server we relay for."""
        return self._open_count(peer, "A") + sum(1 for _, held, _ in self.proxied.values() if held == peer)

    def _deliver(self, server: str, peer: str, inner: Msg, now: float) -> list[Action]:
        """13-1: ``server`` sends our peer a message of a session it owns.  A new session past the
        listener's cap is declined for it, saying why (the owner tells the caller it is busy, as a
        local cap would); an error ends the session for our peer, so we hold it no more."""
        if peer not in self.logins:
            self.stats["undeliverable"] += 1
            return []
        sid = inner.get("session")
        if isinstance(sid, str):
            if inner.get("type") == "session" and self._listener_sessions(peer) >= self.limits.sessions_per_target:
                self.stats["connects_limited"] += 1
                declined = make("decline", session=sid, reason="busy")
                return [ToServer(server, make("upstream", **{"from": peer, "msg": declined}))]
            if inner.get("type") == "error":
                self.proxied.pop(sid, None)
            else:
                self.proxied[sid] = (server, peer, now)
        return [ToPeer(peer, inner)]

    def _open_session(self, peer: str, msg: Msg, a: Participant, now: float) -> list[Action]:
        session = Session(
            id=self._new_session_id(),
            a=a,
            b=Participant(peer, None),
            variant=msg["variant"],
            k=punch_count(msg["variant"], msg["k"]),
            schedule=msg["schedule"],
            created=now,
            key=self._new_key(),
        )
        if msg.get("order") == "parallel":
            session.order, session.state = "parallel", "testing-both"
        self.sessions[session.id] = session
        self.stats["sessions"] += 1
        common = dict(session=session.id, variant=session.variant, k=session.k, schedule=session.schedule,
                      key=session.key, **({"order": "parallel"} if session.order == "parallel" else {}))
        return self._to(session, "A", make("session", role="A", peer=session.b.peer, **common)) + self._to(
            session, "B", make("session", role="B", peer=session.a.peer, **common)
        )

    def _session_event(self, peer: str, msg: Msg, from_server: str | None) -> list[Action]:
        sid = msg["session"]
        if from_server is None and msg["type"] == "report":
            problem = _report_problem(msg, self.logins[peer].ip)
            if problem:
                self.stats["rejected"] += 1
                return [ToPeer(peer, _error("bad-report", problem, sid))]
        if from_server is None and sid in self.proxied:
            # We hold A for a session owned by another server: steps 7-1 / the punched/result path.
            owner = self.proxied[sid][0]
            if msg["type"] in ("result", "decline"):  # A's last word: it is in the session no more
                del self.proxied[sid]
            inner = {k: v for k, v in msg.items() if k not in ("n", "mac")}  # our link's, not the owner's
            return [ToServer(owner, make("upstream", **{"from": peer, "msg": inner}))]
        session = self.sessions.get(sid)
        role = session.role_of(peer) if session else None
        if session is None or role is None or session.participant(role).server != from_server:
            self.stats["rejected"] += 1
            error = _error("no-session", "no such session of yours", sid)
            return [ToPeer(peer, error)] if from_server is None else []
        event = msg["type"]
        next_state = TRANSITIONS.get((session.state, event, role))
        if next_state is None:
            self.stats["rejected"] += 1
            text = f"role {role} sent {event!r} in session state {session.state!r}"
            return self._to(session, role, _error("out-of-order", text, sid))
        session.state = next_state
        return self._after(session, role, msg)

    def _after(self, session: Session, role: str, msg: Msg) -> list[Action]:
        sid = session.id
        if msg["type"] == "report" and session.order == "parallel":
            session.reports[role] = msg
            if len(session.reports) < 2:
                return []  # held until the other side's report is in
            return self._to(session, "B", _relay(session.reports["A"], sid, step=8)) + self._to(
                session, "A", _relay(session.reports["B"], sid, step=14)) + self._to(
                session, "B", make("punch", session=sid, step=15))
        if msg["type"] == "report" and role == "A":  # step 8 (after 7, or 7-1 in a federation)
            return self._to(session, "B", _relay(msg, sid, step=8))
        if msg["type"] == "report":  # steps 14 and 15
            return self._to(session, "A", _relay(msg, sid, step=14)) + self._to(
                session, "B", make("punch", session=sid, step=15)
            )
        if msg["type"] == "punched":  # step 16
            return self._to(session, "A", make("punch", session=sid, step=16))
        if msg["type"] == "decline":  # A did not consent: B learns nothing of A's address
            self.stats["sessions_declined"] += 1
            del self.sessions[sid]
            if msg.get("reason") == "busy":  # A's server declined for A (its cap): say so, as a local cap does
                return self._to(session, "B", _error("busy", f"peer {session.a.peer!r} has too many sessions open", sid))
            return self._to(session, "B", _error("declined", f"peer {session.a.peer} declined the session", sid))
        session.results[role] = msg["ok"]
        if len(session.results) == 2:
            self.stats["sessions_direct" if all(session.results.values()) else "sessions_failed"] += 1
            del self.sessions[sid]
        return []

    def _to(self, session: Session, role: str, msg: Msg) -> list[Action]:
        who = session.participant(role)
        if who.server is None:
            return [ToPeer(who.peer, msg)] if who.peer in self.logins else []
        return [ToServer(who.server, make("deliver", to=who.peer, msg=msg))]


def _relay(report: Msg, sid: str, step: int) -> Msg:
    mapping = {"mapping": report["mapping"]} if "mapping" in report else {}
    return make("peer_report", session=sid, ip=report["ip"], port=report["port"], delta=report["delta"], step=step,
                **mapping)


def _unknown_peer(target: str) -> Msg:
    return _error("unknown-peer", f"no peer {target!r} is logged in")


def _error(code: str, text: str, session: str | None = None) -> Msg:
    """An error message, short whatever it quotes; names the session only if it is a well-formed id."""
    if len(text) > MAX_ERROR_TEXT:
        text = text[: MAX_ERROR_TEXT - 3] + "..."
    msg = make("error", code=code, message=text)
    if session is not None and _SESSION_ID.fullmatch(session):
        msg["session"] = session
    return msg


def _report_problem(report: Msg, login_ip: str) -> str | None:
    """What is wrong with a peer's report (steps 7, 13), checked where the peer logged in (also for a
    proxied session): the address must be its own, or the other side would punch at a third party."""
    if not 1 <= report["port"] <= 65535 or not -65535 <= report["delta"] <= 65535:
        return "the report's port or delta is out of range"
    if report.get("mapping", BEHAVIOURS[0]) not in BEHAVIOURS:
        return f"the report's mapping {report['mapping'][:40]!r} is not one of {', '.join(BEHAVIOURS)}"
    if not _same_host(report["ip"], login_ip):
        return f"the report names {report['ip']} but you log in from {login_ip}"
    return None


def _same_host(a: str, b: str) -> bool:
    """Whether two textual IP addresses are one host (an IPv4-mapped IPv6 address equals its IPv4)."""
    try:
        x, y = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return False
    x = getattr(x, "ipv4_mapped", None) or x
    y = getattr(y, "ipv4_mapped", None) or y
    return x == y
