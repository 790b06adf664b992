"""The location server's logic, sans-IO: login, pairing, and relaying the testing-NAT reports.

Theory of operation.  A peer logs in (spec steps 1-2) and gets a token; every later message must
carry it.  ``connect`` from B pairs B with A and opens a *session*, owned by B's server.  The
session walks the table :data:`TRANSITIONS`:

    testing-a   A probes its NAT and reports x2, dx2 (steps 3-7)  -> relayed to B (step 8)
    testing-b   B probes and reports y2, dy2 (steps 9-13)          -> relayed to A (step 14),
                                                                      B is told to punch (step 15)
    punching-b  B says it punched                                  -> A is told to punch (step 16)
    punching-a  both report their results (step 17 happened, or not)
    done

In a federation (FIG. 4) A may be logged in to another server: messages for A leave as ``deliver``
to A's server, and A's messages for the session come back ``upstream`` (steps 7-1 and 13-1).  The
server never relays data: it only coordinates.  Methods take events and return :class:`Action`
lists; the asyncio layer (:mod:`dp2pt.aio.server`) moves the bytes.
"""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from dp2pt.errors import Dp2ptError
from dp2pt.proto import messages
from dp2pt.proto.messages import VARIANTS, make
from dp2pt.proto.schedules import SCHEDULES, punch_count

MAX_K = 64
UPSTREAM_TYPES = ("report", "punched", "result")  # what A's server may pass on for A (steps 7-1, ...)
SESSION_MAX_AGE = 60.0  # seconds a session may stay unfinished before it is swept
MAX_ID_LENGTH = 64

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
    """Ask the federation which server has peer ``peer_id``; answer with :meth:`Registry.lookup_done`."""

    q: int
    peer_id: str


Action = ToConn | ToPeer | ToServer | Lookup

#: (state, event, role) -> next state.  Anything else is a protocol error.
TRANSITIONS: dict[tuple[str, str, str], str] = {
    ("testing-a", "report", "A"): "testing-b",
    ("testing-b", "report", "B"): "punching-b",
    ("punching-b", "punched", "B"): "punching-a",
    ("punching-a", "result", "A"): "punching-a",
    ("punching-a", "result", "B"): "punching-a",
}


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
    state: str = "testing-a"
    results: dict[str, bool] = field(default_factory=dict)

    def role_of(self, peer: str) -> str | None:
        return "A" if peer == self.a.peer else "B" if peer == self.b.peer else None

    def participant(self, role: str) -> Participant:
        return self.a if role == "A" else self.b


@dataclass
class _Login:
    conn: Conn
    token: str


class Registry:
    """Peers logged in here, sessions owned here, and sessions proxied for other servers."""

    def __init__(
        self,
        name: str,
        stun: list[tuple[str, int]],
        federated: bool = False,
        new_token: Callable[[], str] = lambda: secrets.token_hex(16),
        new_session_id: Callable[[], str] = lambda: secrets.token_hex(8),
    ) -> None:
        self.name = name
        self.stun = stun
        self.federated = federated
        self._new_token = new_token
        self._new_session_id = new_session_id
        self.logins: dict[str, _Login] = {}
        self.ids_by_conn: dict[Conn, str] = {}
        self.sessions: dict[str, Session] = {}
        self.proxied: dict[str, tuple[str, float]] = {}  # session id -> (owning server, last seen)
        self._pending: dict[int, tuple[str, Msg, float]] = {}
        self._next_q = 0
        self.stats: Counter[str] = Counter()

    # ---- events from peers -------------------------------------------------------------------

    def on_message(self, conn: Conn, msg: Msg, now: float) -> list[Action]:
        """A validated control message from a peer connection."""
        type_ = msg["type"]
        if type_ == "login":
            return self._login(conn, msg["id"])
        peer = self._authenticate(conn, msg)
        if peer is None:
            self.stats["rejected"] += 1
            return [ToConn(conn, _error("auth", "not logged in, or wrong token"))]
        if type_ == "ping":
            return [ToPeer(peer, make("pong"))]
        if type_ == "connect":
            return self._connect(peer, msg, now)
        if type_ in ("report", "punched", "result"):
            return self._session_event(peer, msg, from_server=None)
        self.stats["rejected"] += 1
        return [ToPeer(peer, _error("unexpected", f"a peer does not send {type_!r}"))]

    def on_disconnect(self, conn: Conn) -> list[Action]:
        """A peer's control connection went away: its sessions end, the other side is told."""
        peer = self.ids_by_conn.pop(conn, None)
        if peer is None:
            return []
        del self.logins[peer]
        actions: list[Action] = []
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
            found = msg["id"] in self.logins
            return [ToServer(server, make("lookup_result", q=msg["q"], id=msg["id"], found=found))]
        if type_ == "deliver":
            inner = msg["msg"]
            if msg["to"] not in self.logins:
                self.stats["undeliverable"] += 1
                return []
            if isinstance(inner.get("session"), str):
                self.proxied[inner["session"]] = (server, now)
            return [ToPeer(msg["to"], inner)]
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
            return [ToPeer(peer, _error("unknown-peer", f"no peer {msg['target']!r} is logged in"))]
        return self._open_session(peer, msg, Participant(msg["target"], server), now)

    def sweep(self, now: float) -> None:
        """Forget sessions, proxies and lookups that outlived :data:`SESSION_MAX_AGE` (a peer vanished)."""
        for session in [s for s in self.sessions.values() if now - s.created > SESSION_MAX_AGE]:
            self.stats["sessions_expired"] += 1
            del self.sessions[session.id]
        for sid in [sid for sid, (_, seen) in self.proxied.items() if now - seen > SESSION_MAX_AGE]:
            del self.proxied[sid]
        for q in [q for q, (_, _, asked) in self._pending.items() if now - asked > SESSION_MAX_AGE]:
            del self._pending[q]

    # ---- internals ---------------------------------------------------------------------------

    def _login(self, conn: Conn, peer: str) -> list[Action]:
        """Spec steps 1-2: register the id, issue a token."""
        if not peer or len(peer) > MAX_ID_LENGTH or not peer.isprintable():
            self.stats["rejected"] += 1
            return [ToConn(conn, _error("bad-id", f"peer id must be 1-{MAX_ID_LENGTH} printable characters"))]
        current = self.logins.get(peer)
        if current is not None and current.conn != conn:
            self.stats["rejected"] += 1
            return [ToConn(conn, _error("id-in-use", f"peer id {peer!r} is already logged in"))]
        old = self.ids_by_conn.get(conn)
        if old is not None and old != peer:
            self.logins.pop(old, None)
        token = self._new_token()
        self.logins[peer] = _Login(conn, token)
        self.ids_by_conn[conn] = peer
        self.stats["logins"] += 1
        stun = [[host, port] for host, port in self.stun]
        return [ToConn(conn, make("login_ok", token=token, server=self.name, stun=stun))]

    def _authenticate(self, conn: Conn, msg: Msg) -> str | None:
        peer = self.ids_by_conn.get(conn)
        if peer is None or not secrets.compare_digest(str(msg.get("token", "")), self.logins[peer].token):
            return None
        return peer

    def _connect(self, peer: str, msg: Msg, now: float) -> list[Action]:
        target = msg["target"]
        problem = None
        if msg["variant"] not in VARIANTS:
            problem = f"unknown variant {msg['variant']!r}"
        elif not 1 <= msg["k"] <= MAX_K:
            problem = f"k must be 1..{MAX_K}"
        elif msg["schedule"] not in SCHEDULES:
            problem = f"unknown schedule {msg['schedule']!r}"
        elif target == peer:
            problem = "a peer cannot connect to itself"
        if problem:
            self.stats["rejected"] += 1
            return [ToPeer(peer, _error("bad-request", problem))]
        if target in self.logins:
            return self._open_session(peer, msg, Participant(target, None), now)
        if not self.federated:
            return [ToPeer(peer, _error("unknown-peer", f"no peer {target!r} is logged in"))]
        self._next_q += 1
        self._pending[self._next_q] = (peer, msg, now)
        return [Lookup(self._next_q, target)]

    def _open_session(self, peer: str, msg: Msg, a: Participant, now: float) -> list[Action]:
        session = Session(
            id=self._new_session_id(),
            a=a,
            b=Participant(peer, None),
            variant=msg["variant"],
            k=punch_count(msg["variant"], msg["k"]),
            schedule=msg["schedule"],
            created=now,
        )
        self.sessions[session.id] = session
        self.stats["sessions"] += 1
        common = dict(session=session.id, variant=session.variant, k=session.k, schedule=session.schedule)
        return self._to(session, "A", make("session", role="A", peer=session.b.peer, **common)) + self._to(
            session, "B", make("session", role="B", peer=session.a.peer, **common)
        )

    def _session_event(self, peer: str, msg: Msg, from_server: str | None) -> list[Action]:
        sid = msg["session"]
        if from_server is None and sid in self.proxied:
            # We hold A for a session owned by another server: steps 7-1 / the punched/result path.
            inner = {**msg, "token": ""}  # the token is ours to check, not the owner's
            return [ToServer(self.proxied[sid][0], make("upstream", **{"from": peer, "msg": inner}))]
        session = self.sessions.get(sid)
        role = session.role_of(peer) if session else None
        if session is None or role is None or session.participant(role).server != from_server:
            self.stats["rejected"] += 1
            error = _error("no-session", f"no session {sid!r} of yours", sid)
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
        if msg["type"] == "report" and role == "A":  # step 8 (after 7, or 7-1 in a federation)
            return self._to(session, "B", _relay(msg, sid, step=8))
        if msg["type"] == "report":  # steps 14 and 15
            return self._to(session, "A", _relay(msg, sid, step=14)) + self._to(
                session, "B", make("punch", session=sid, step=15)
            )
        if msg["type"] == "punched":  # step 16
            return self._to(session, "A", make("punch", session=sid, step=16))
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
    return make("peer_report", session=sid, ip=report["ip"], port=report["port"], delta=report["delta"], step=step)


def _error(code: str, text: str, session: str | None = None) -> Msg:
    msg = make("error", code=code, message=text)
    if session is not None:
        msg["session"] = session
    return msg
