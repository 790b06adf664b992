"""The location server's logic driven directly: no sockets, no clocks (after h11's tests)."""

import itertools

import pytest

from dp2pt.proto import messages
from dp2pt.proto.messages import make
from dp2pt.proto.registry import (MAX_ERROR_TEXT, Claim, Limits, LoggedIn, Lookup, Registry, Release, ToConn, ToPeer,
                                  ToServer)

STUN = [("198.51.100.10", 3478), ("198.51.100.10", 3479)]
IP = "203.0.113.1"


def registry(name="ls1", federated=False, limits=Limits()):
    ids = itertools.count()
    return Registry(name, STUN, federated=federated, limits=limits, new_key=lambda: f"{next(ids):032x}",
                    new_session_id=lambda: "00112233445566" + f"{next(ids):02d}")


def login(reg, conn, peer, ip=IP, **extra):
    logged_in, ok = reg.login(conn, make("login", id=peer, **extra), ip, 0.0)
    assert isinstance(logged_in, LoggedIn) and (logged_in.conn, logged_in.peer) == (conn, peer)
    assert isinstance(ok, ToConn) and ok.msg["type"] == "login_ok" and bytes.fromhex(ok.msg["key"]) == logged_in.key
    return ok.msg


def connect(target="A", variant="basic", k=1):
    return make("connect", target=target, variant=variant, k=k, schedule="diagram1")


def report(sid, port, delta=1, ip=IP):
    return make("report", session=sid, ip=ip, port=port, delta=delta)


def sent(actions):
    return [(a.peer, a.msg["type"], a.msg.get("step")) for a in actions]


def open_session(reg, b="cb", now=0.0):
    actions = reg.on_message(b, connect(), now)
    assert sent(actions) == [("A", "session", None), (reg.ids_by_conn[b], "session", None)]
    return actions[0].msg["session"]


def test_full_session_follows_the_spec_steps():
    reg = registry()
    login(reg, "ca", "A"), login(reg, "cb", "B")
    actions = reg.on_message("cb", connect(), 0)
    assert sent(actions) == [("A", "session", None), ("B", "session", None)]
    sid = actions[0].msg["session"]
    assert actions[0].msg["role"] == "A" and actions[1].msg["role"] == "B"
    assert sent(reg.on_message("ca", report(sid, 20001), 0)) == [("B", "peer_report", 8)]
    assert sent(reg.on_message("cb", report(sid, 30001), 0)) == [("A", "peer_report", 14), ("B", "punch", 15)]
    assert sent(reg.on_message("cb", make("punched", session=sid), 0)) == [("A", "punch", 16)]
    reg.on_message("ca", make("result", session=sid, ok=True), 0)
    reg.on_message("cb", make("result", session=sid, ok=True), 0)
    assert reg.sessions == {} and reg.stats["sessions_direct"] == 1


@pytest.mark.parametrize("first", ["A", "B"])
def test_parallel_order_relays_both_reports_once_both_are_in(first):
    reg = registry()
    login(reg, "ca", "A"), login(reg, "cb", "B")
    actions = reg.on_message("cb", make("connect", target="A", variant="basic", k=1, schedule="diagram1",
                                        order="parallel"), 0)
    assert [a.msg.get("order") for a in actions] == ["parallel", "parallel"]  # both start testing at once
    sid = actions[0].msg["session"]
    conns = {"A": ("ca", 20001), "B": ("cb", 30001)}
    second = "B" if first == "A" else "A"
    assert reg.on_message(conns[first][0], report(sid, conns[first][1]), 0) == []  # held
    both = reg.on_message(conns[second][0], report(sid, conns[second][1]), 0)
    assert sent(both) == [("B", "peer_report", 8), ("A", "peer_report", 14), ("B", "punch", 15)]
    assert both[0].msg["port"] == 20001 and both[1].msg["port"] == 30001
    assert sent(reg.on_message("cb", make("punched", session=sid), 0)) == [("A", "punch", 16)]


def test_parallel_order_keeps_consent_and_refuses_an_unknown_order():
    reg = registry()
    login(reg, "ca", "A"), login(reg, "cb", "B")
    sid = reg.on_message("cb", make("connect", target="A", variant="basic", k=1, schedule="diagram1",
                                    order="parallel"), 0)[0].msg["session"]
    assert reg.on_message("cb", report(sid, 30001), 0) == []
    declined = reg.on_message("ca", make("decline", session=sid), 0)
    assert [(a.msg["type"], a.msg.get("code")) for a in declined] == [("error", "declined")]  # B learns nothing of A
    bad = reg.on_message("cb", make("connect", target="A", variant="basic", k=1, schedule="diagram1", order="random"), 0)
    assert bad[0].msg["code"] == "bad-request" and "order" in bad[0].msg["message"]


def test_each_login_and_each_session_gets_its_own_key():
    reg = registry()
    keys = {login(reg, "ca", "A")["key"], login(reg, "cb", "B")["key"]}
    a, b = reg.on_message("cb", connect(), 0)
    assert a.msg["key"] == b.msg["key"]  # the pair shares the session key ...
    keys.add(a.msg["key"])
    assert len(keys) == 3  # ... and it is neither login's key


def test_login_echoes_the_nonce_and_a_connection_logs_in_once():
    reg = registry()
    assert login(reg, "ca", "A", nonce="n1")["nonce"] == "n1"
    (again,) = reg.login("ca", make("login", id="A2", nonce="n2"), IP, 0)
    assert again.msg["code"] == "logged-in" and again.msg["nonce"] == "n2"
    assert reg.ids_by_conn == {"ca": "A"}  # a second login never renames the first


def test_out_of_order_report_is_refused_naming_role_and_state():
    reg = registry()
    login(reg, "ca", "A"), login(reg, "cb", "B")
    sid = open_session(reg)
    (error,) = reg.on_message("cb", report(sid, 1), 0)
    assert error.msg["code"] == "out-of-order" and "role B" in error.msg["message"] and "testing-a" in error.msg["message"]


def test_a_peer_cannot_touch_another_pairs_session():
    reg = registry()
    login(reg, "ca", "A"), login(reg, "cb", "B"), login(reg, "cc", "C")
    sid = open_session(reg)
    (error,) = reg.on_message("cc", report(sid, 1), 0)
    assert error.msg["code"] == "no-session"
    (error,) = reg.on_message("cx", report(sid, 1), 0)  # a connection that never logged in
    assert error.msg["code"] == "auth"
    assert reg.sessions[sid].state == "testing-a"


def test_a_report_must_name_the_address_the_peer_logs_in_from():
    """Else B could make A punch k datagrams at any third party (the issue's "address of the caller's choice")."""
    reg = registry()
    login(reg, "ca", "A"), login(reg, "cb", "B", ip="::ffff:" + IP)  # IPv4-mapped: the same host
    sid = open_session(reg)
    reg.on_message("ca", report(sid, 20001), 0)
    (error,) = reg.on_message("cb", report(sid, 30001, ip="192.0.2.7"), 0)
    assert error.msg["code"] == "bad-report" and reg.sessions[sid].state == "testing-b"
    assert sent(reg.on_message("cb", report(sid, 30001), 0)) == [("A", "peer_report", 14), ("B", "punch", 15)]


def test_a_discovered_mapping_travels_with_the_report():
    """--discover-nat: A's endpoint-independent mapping reaches B, which then punches A's port only."""
    reg = registry()
    login(reg, "ca", "A"), login(reg, "cb", "B")
    sid = open_session(reg)
    (relay,) = reg.on_message("ca", make("report", session=sid, ip=IP, port=20001, delta=0,
                                         mapping="endpoint-independent"), 0)
    assert relay.msg["type"] == "peer_report" and relay.msg["mapping"] == "endpoint-independent"
    relay, _punch = reg.on_message("cb", report(sid, 30001), 0)
    assert "mapping" not in relay.msg  # B discovered nothing: nothing is claimed for it


@pytest.mark.parametrize("fields", [dict(ip="not an address"), dict(port=0), dict(port=70000), dict(delta=10**6),
                                    dict(mapping="very-friendly")])
def test_malformed_reports_are_refused(fields):
    reg = registry()
    login(reg, "ca", "A"), login(reg, "cb", "B")
    sid = open_session(reg)
    (error,) = reg.on_message("ca", {**report(sid, 20001), **fields}, 0)
    assert error.msg["code"] == "bad-report" and reg.sessions[sid].state == "testing-a"


def test_unknown_peer_and_bad_requests():
    reg = registry()
    login(reg, "cb", "B")
    (e,) = reg.on_message("cb", connect("Z"), 0)
    assert e.msg["code"] == "unknown-peer"
    (e,) = reg.on_message("cb", connect("B"), 0)
    assert e.msg["code"] == "bad-request"
    (e,) = reg.on_message("cb", connect("Z", k=0), 0)
    assert "k must be" in e.msg["message"]


def test_errors_quoting_long_fields_stay_short_enough_to_send():
    reg = registry()
    login(reg, "cb", "B")
    (e,) = reg.on_message("cb", connect("Z" * 3000), 0)
    assert len(e.msg["message"]) <= MAX_ERROR_TEXT
    (e,) = reg.on_message("cb", make("punched", session="s" * 3000), 0)
    assert "session" not in e.msg  # a malformed session id is not echoed
    messages.encode({**e.msg, "n": 1, "mac": "0" * 32})  # fits, signed


def test_the_allow_list_hides_the_listener_from_everyone_else():
    reg = registry()
    login(reg, "ca", "A", allow=["B"])
    login(reg, "cb", "B"), login(reg, "cc", "C")
    (e,) = reg.on_message("cc", connect(), 0)
    assert e.msg == {"type": "error", "code": "unknown-peer", "message": "no peer 'A' is logged in"}
    assert sent(reg.on_message("cb", connect(), 0)) == [("A", "session", None), ("B", "session", None)]
    (answer,) = reg.on_server_message("ls2", make("lookup", q=1, id="A", **{"from": "C"}), 0)
    assert answer.msg["found"] is False
    (answer,) = reg.on_server_message("ls2", make("lookup", q=2, id="A", **{"from": "B"}), 0)
    assert answer.msg["found"] is True


def test_a_declined_session_tells_b_nothing_of_a():
    reg = registry()
    login(reg, "ca", "A"), login(reg, "cb", "B")
    sid = open_session(reg)
    (told,) = reg.on_message("ca", make("decline", session=sid), 0)
    assert (told.peer, told.msg["code"]) == ("B", "declined") and "ip" not in told.msg
    assert reg.sessions == {} and reg.stats["sessions_declined"] == 1
    (e,) = reg.on_message("ca", make("decline", session=sid), 0)
    assert e.msg["code"] == "no-session"


def test_only_a_may_decline_and_only_before_it_reported():
    reg = registry()
    login(reg, "ca", "A"), login(reg, "cb", "B")
    sid = open_session(reg)
    (e,) = reg.on_message("cb", make("decline", session=sid), 0)
    assert e.msg["code"] == "out-of-order"
    reg.on_message("ca", report(sid, 20001), 0)
    (e,) = reg.on_message("ca", make("decline", session=sid), 0)
    assert e.msg["code"] == "out-of-order"


def test_connects_are_rate_limited_per_peer():
    reg = registry(limits=Limits(connect_burst=3, connect_rate=1.0, sessions_per_peer=100, sessions_per_target=100))
    login(reg, "cb", "B")
    codes = [reg.on_message("cb", connect("Z"), 0.0)[0].msg["code"] for _ in range(5)]
    assert codes == ["unknown-peer"] * 3 + ["busy"] * 2
    assert reg.on_message("cb", connect("Z"), 1.0)[0].msg["code"] == "unknown-peer"  # refilled


def test_open_sessions_are_capped_per_peer_and_per_target():
    reg = registry(limits=Limits(connect_burst=100, sessions_per_peer=2, sessions_per_target=3))
    login(reg, "ca", "A")
    for i in range(4):
        login(reg, f"c{i}", f"B{i}")
    open_session(reg, "c0"), open_session(reg, "c0")
    (e,) = reg.on_message("c0", connect(), 0)
    assert e.msg["code"] == "busy" and "per peer" in e.msg["message"]
    open_session(reg, "c1")
    (e,) = reg.on_message("c2", connect(), 0)
    assert e.msg["code"] == "busy" and "'A'" in e.msg["message"]


def test_the_listener_cap_counts_sessions_other_servers_own_too():
    """The audit: the cap counted only sessions owned by the listener's own server, so sessions that
    other servers opened with it (FIG. 4, 13-1) came on top, without limit."""
    ls1 = registry("ls1", federated=True, limits=Limits(connect_burst=100, sessions_per_target=3))
    ls2 = registry("ls2", federated=True, limits=Limits(connect_burst=100))
    login(ls1, "ca", "A"), login(ls1, "c0", "C0"), login(ls1, "c1", "C1")
    open_session(ls1, "c0")

    def remote_session(conn):
        """B<i> on ls2 connects to A on ls1: what ls1 does with the session ls2 delivers."""
        login(ls2, conn, conn.upper())
        (lookup,) = ls2.on_message(conn, connect(), 0)
        (deliver, _) = ls2.lookup_done(lookup.q, "ls1", 0)
        return deliver.msg["msg"]["session"], ls1.on_server_message("ls2", deliver.msg, 0)

    sid1, (told,) = remote_session("b1")
    assert (told.peer, told.msg["type"]) == ("A", "session")
    sid2, _ = remote_session("b2")  # the third session A is in
    sid3, (declined,) = remote_session("b3")
    assert isinstance(declined, ToServer) and declined.msg["msg"] == make("decline", session=sid3, reason="busy")
    (refusal,) = ls2.on_server_message("ls1", declined.msg, 0)  # the owner tells the caller A is busy
    assert (refusal.peer, refusal.msg["code"]) == ("B3", "busy") and sid3 not in ls2.sessions
    (busy,) = ls1.on_message("c1", connect(), 0)  # and a local caller finds A busy too
    assert busy.msg["code"] == "busy" and ls1.stats["connects_limited"] == 2
    ls1.on_message("ca", make("result", session=sid1, ok=False), 0)  # A is done with one of them
    open_session(ls1, "c1")
    gone = make("deliver", to="A", msg=make("error", code="peer-gone", message="peer B2 logged out", session=sid2))
    ls1.on_server_message("ls2", gone, 0)  # an error ends a session for A too
    assert list(ls1.proxied) == []
    remote_session("b4")
    ls1.on_disconnect("ca")  # and so does A's logout
    assert list(ls1.proxied) == []


def test_id_in_use_and_logout_tells_the_other_side():
    reg = registry()
    login(reg, "ca", "A")
    (e,) = reg.login("cx", make("login", id="A"), IP, 0)
    assert e.msg["code"] == "id-in-use"
    login(reg, "cb", "B")
    reg.on_message("cb", connect(), 0)
    (told,) = reg.on_disconnect("ca")
    assert (told.peer, told.msg["code"]) == ("B", "peer-gone") and reg.sessions == {}


@pytest.mark.parametrize("extra, code", [({"id": ""}, "bad-id"), ({"id": "x\n"}, "bad-id"),
                                         ({"id": "A", "allow": ["B", 3]}, "bad-request")])
def test_bad_logins_are_refused(extra, code):
    reg = registry()
    (e,) = reg.login("c", {"type": "login", **extra}, IP, 0)
    assert e.msg["code"] == code and reg.logins == {}


def test_stale_sessions_are_swept():
    reg = registry()
    login(reg, "ca", "A"), login(reg, "cb", "B")
    reg.on_message("cb", connect(), 0.0)
    reg.sweep(1000.0)
    assert reg.sessions == {}


def test_federation_relays_reports_across_servers():
    """FIG. 4: A on ls1, B on ls2; steps 7-1 and 13-1 cross between the servers."""
    ls1, ls2 = registry("ls1", federated=True), registry("ls2", federated=True)
    login(ls1, "ca", "A"), login(ls2, "cb", "B")

    def wire(actions, dest, src_name):
        """Deliver ToServer actions to ``dest``, return what it does."""
        out = []
        for a in actions:
            assert isinstance(a, ToServer)
            out += dest.on_server_message(src_name, a.msg, 0)
        return out

    (lookup,) = ls2.on_message("cb", connect(variant="improved", k=4), 0)
    assert isinstance(lookup, Lookup) and lookup.requester == "B"
    (answer,) = ls1.on_server_message("ls2", make("lookup", q=lookup.q, id="A", **{"from": "B"}), 0)
    assert answer.msg["found"] is True
    opened = ls2.lookup_done(lookup.q, "ls1", 0)
    to_a = [a for a in opened if isinstance(a, ToServer)]
    assert [a.msg["to"] for a in to_a] == ["A"]
    (session_a,) = wire(to_a, ls1, "ls2")
    sid = session_a.msg["session"]
    assert session_a.peer == "A" and session_a.msg["k"] == 4 and session_a.msg["key"] == ls2.sessions[sid].key
    # A's server checks A's report address before passing it upstream (step 7, then 7-1).
    (bad,) = ls1.on_message("ca", report(sid, 20001, ip="192.0.2.7"), 0)
    assert isinstance(bad, ToPeer) and bad.msg["code"] == "bad-report"
    upstream = ls1.on_message("ca", {**report(sid, 20001), "n": 3, "mac": "0" * 32}, 0)
    assert upstream[0].msg["type"] == "upstream" and "mac" not in upstream[0].msg["msg"]
    assert sent(wire(upstream, ls2, "ls1")) == [("B", "peer_report", 8)]
    down = ls2.on_message("cb", report(sid, 30001), 0)  # step 13, then 13-1
    assert [type(a).__name__ for a in down] == ["ToServer", "ToPeer"]
    assert sent(wire(down[:1], ls1, "ls2")) == [("A", "peer_report", 14)]
    # A server cannot forge upstream messages for a session it does not hold A for.
    assert ls2.on_server_message("ls3", make("upstream", **{"from": "A", "msg": report(sid, 1)}), 0) == []


def test_a_peer_leaving_after_its_result_does_not_void_the_others():
    reg = registry()
    login(reg, "ca", "A"), login(reg, "cb", "B")
    sid = open_session(reg)
    reg.on_message("ca", report(sid, 20001), 0)
    reg.on_message("cb", report(sid, 30001), 0)
    reg.on_message("cb", make("punched", session=sid), 0)
    reg.on_message("ca", make("result", session=sid, ok=True), 0)
    assert reg.on_disconnect("ca") == []  # B is not told "peer-gone"
    assert reg.on_message("cb", make("result", session=sid, ok=True), 0) == []
    assert reg.stats["sessions_direct"] == 1 and reg.sessions == {}


def test_with_a_directory_a_login_completes_once_its_claim_is_granted():
    reg = Registry("ls1", STUN, federated=True, directory=True)
    (claim,) = reg.login("ca", make("login", id="A", nonce="n1"), IP, 0)
    assert isinstance(claim, Claim) and (claim.conn, claim.peer) == ("ca", "A") and reg.logins == {}
    (busy,) = reg.login("cx", make("login", id="A"), IP, 0)  # a second login while the first is claiming
    assert busy.msg["code"] == "id-in-use"
    logged_in, ok = reg.claim_done("ca", "A", True, 0)
    assert isinstance(logged_in, LoggedIn) and ok.msg["type"] == "login_ok" and ok.msg["nonce"] == "n1"
    (claim,) = reg.login("cb", make("login", id="B", nonce="n2"), IP, 0)
    (refused,) = reg.claim_done("cb", "B", False, 0)
    assert refused.msg["code"] == "id-in-use" and refused.msg["nonce"] == "n2" and "B" not in reg.logins
    assert reg.on_disconnect("ca") == [Release("A")]


def test_a_connection_gone_while_claiming_gives_its_claim_back():
    reg = Registry("ls1", STUN, federated=True, directory=True)
    reg.login("ca", make("login", id="A"), IP, 0)
    assert reg.on_disconnect("ca") == []
    assert reg.claim_done("ca", "A", True, 0) == [Release("A")] and reg.logins == {}
    assert reg.claim_done("cb", "B", False, 0) == []


def test_a_server_gone_ends_the_sessions_that_needed_it():
    """B's server owns a session with A on ls1, and holds C for a session owned by ls3: when ls1
    goes, B hears it at once; when ls3 goes, C does."""
    reg = registry("ls2", federated=True)
    login(reg, "cb", "B"), login(reg, "cc", "C")
    (lookup,) = reg.on_message("cb", connect(), 0)
    reg.lookup_done(lookup.q, "ls1", 0)
    (sid,) = reg.sessions
    reg.on_server_message("ls3", make("deliver", to="C", msg=make("punch", session="ffeeddccbbaa9988", step=16)), 0)
    assert reg.remote_servers() == {"ls1", "ls3"}
    (told,) = reg.server_gone("ls1")
    assert (told.peer, told.msg["code"], told.msg["session"]) == ("B", "server-gone", sid) and reg.sessions == {}
    (told,) = reg.server_gone("ls3")
    assert (told.peer, told.msg["code"]) == ("C", "server-gone") and reg.proxied == {}
    assert reg.remote_servers() == set() and reg.server_gone("ls1") == []
