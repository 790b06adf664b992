"""The location server's logic driven directly: no sockets, no clocks (after h11's tests)."""

import itertools

from dp2pt.proto.messages import make
from dp2pt.proto.registry import Lookup, Registry, ToConn, ToServer

STUN = [("198.51.100.10", 3478), ("198.51.100.10", 3479)]


def registry(name="ls1", federated=False):
    ids = itertools.count()
    return Registry(name, STUN, federated=federated, new_token=lambda: f"tok{next(ids)}",
                    new_session_id=lambda: "00112233445566" + f"{next(ids):02d}")


def login(reg, conn, peer):
    (action,) = reg.on_message(conn, make("login", id=peer), 0.0)
    assert isinstance(action, ToConn) and action.msg["type"] == "login_ok"
    return action.msg["token"]


def report(token, sid, port, delta=1):
    return make("report", token=token, session=sid, ip="203.0.113.1", port=port, delta=delta)


def sent(actions):
    return [(a.peer, a.msg["type"], a.msg.get("step")) for a in actions]


def test_full_session_follows_the_spec_steps():
    reg = registry()
    ta, tb = login(reg, "ca", "A"), login(reg, "cb", "B")
    actions = reg.on_message("cb", make("connect", token=tb, target="A", variant="basic", k=1, schedule="diagram1"), 0)
    assert sent(actions) == [("A", "session", None), ("B", "session", None)]
    sid = actions[0].msg["session"]
    assert actions[0].msg["role"] == "A" and actions[1].msg["role"] == "B"
    assert sent(reg.on_message("ca", report(ta, sid, 20001), 0)) == [("B", "peer_report", 8)]
    assert sent(reg.on_message("cb", report(tb, sid, 30001), 0)) == [("A", "peer_report", 14), ("B", "punch", 15)]
    assert sent(reg.on_message("cb", make("punched", token=tb, session=sid), 0)) == [("A", "punch", 16)]
    reg.on_message("ca", make("result", token=ta, session=sid, ok=True), 0)
    reg.on_message("cb", make("result", token=tb, session=sid, ok=True), 0)
    assert reg.sessions == {} and reg.stats["sessions_direct"] == 1


def test_out_of_order_report_is_refused_naming_role_and_state():
    reg = registry()
    login(reg, "ca", "A")
    tb = login(reg, "cb", "B")
    sid = reg.on_message("cb", make("connect", token=tb, target="A", variant="basic", k=1, schedule="diagram1"), 0)[0].msg["session"]
    (error,) = reg.on_message("cb", report(tb, sid, 1), 0)
    assert error.msg["code"] == "out-of-order" and "role B" in error.msg["message"] and "testing-a" in error.msg["message"]


def test_a_peer_cannot_touch_another_pairs_session():
    reg = registry()
    ta, tb, tc = login(reg, "ca", "A"), login(reg, "cb", "B"), login(reg, "cc", "C")
    sid = reg.on_message("cb", make("connect", token=tb, target="A", variant="basic", k=1, schedule="diagram1"), 0)[0].msg["session"]
    (error,) = reg.on_message("cc", report(tc, sid, 1), 0)
    assert error.msg["code"] == "no-session"
    (error,) = reg.on_message("cc", report(ta, sid, 1), 0)  # A's token on C's connection
    assert error.msg["code"] == "auth"
    assert reg.sessions[sid].state == "testing-a"


def test_unknown_peer_and_bad_requests():
    reg = registry()
    tb = login(reg, "cb", "B")
    (e,) = reg.on_message("cb", make("connect", token=tb, target="Z", variant="basic", k=1, schedule="diagram1"), 0)
    assert e.msg["code"] == "unknown-peer"
    (e,) = reg.on_message("cb", make("connect", token=tb, target="B", variant="basic", k=1, schedule="diagram1"), 0)
    assert e.msg["code"] == "bad-request"
    (e,) = reg.on_message("cb", make("connect", token=tb, target="Z", variant="basic", k=0, schedule="diagram1"), 0)
    assert "k must be" in e.msg["message"]


def test_id_in_use_and_logout_tells_the_other_side():
    reg = registry()
    login(reg, "ca", "A")
    (e,) = reg.on_message("cx", make("login", id="A"), 0)
    assert e.msg["code"] == "id-in-use"
    tb = login(reg, "cb", "B")
    reg.on_message("cb", make("connect", token=tb, target="A", variant="basic", k=1, schedule="diagram1"), 0)
    (told,) = reg.on_disconnect("ca")
    assert (told.peer, told.msg["code"]) == ("B", "peer-gone") and reg.sessions == {}


def test_stale_sessions_are_swept():
    reg = registry()
    login(reg, "ca", "A")
    tb = login(reg, "cb", "B")
    reg.on_message("cb", make("connect", token=tb, target="A", variant="basic", k=1, schedule="diagram1"), 0.0)
    reg.sweep(1000.0)
    assert reg.sessions == {}


def test_federation_relays_reports_across_servers():
    """FIG. 4: A on ls1, B on ls2; steps 7-1 and 13-1 cross between the servers."""
    ls1, ls2 = registry("ls1", federated=True), registry("ls2", federated=True)
    ta, tb = login(ls1, "ca", "A"), login(ls2, "cb", "B")

    def wire(actions, dest, src_name):
        """Deliver ToServer actions to ``dest``, return what it does."""
        out = []
        for a in actions:
            assert isinstance(a, ToServer)
            out += dest.on_server_message(src_name, a.msg, 0)
        return out

    (lookup,) = ls2.on_message("cb", make("connect", token=tb, target="A", variant="improved", k=4, schedule="diagram1"), 0)
    assert isinstance(lookup, Lookup)
    (answer,) = ls1.on_server_message("ls2", make("lookup", q=lookup.q, id="A"), 0)
    assert answer.msg["found"] is True
    opened = ls2.lookup_done(lookup.q, "ls1", 0)
    to_a = [a for a in opened if isinstance(a, ToServer)]
    assert [a.msg["to"] for a in to_a] == ["A"]
    (session_a,) = wire(to_a, ls1, "ls2")
    sid = session_a.msg["session"]
    assert session_a.peer == "A" and session_a.msg["k"] == 4
    upstream = ls1.on_message("ca", report(ta, sid, 20001), 0)  # step 7, then 7-1
    assert upstream[0].msg["type"] == "upstream"
    assert sent(wire(upstream, ls2, "ls1")) == [("B", "peer_report", 8)]
    down = ls2.on_message("cb", report(tb, sid, 30001), 0)  # step 13, then 13-1
    assert [type(a).__name__ for a in down] == ["ToServer", "ToPeer"]
    assert sent(wire(down[:1], ls1, "ls2")) == [("A", "peer_report", 14)]
    # A server cannot forge upstream messages for a session it does not hold A for.
    assert ls2.on_server_message("ls3", make("upstream", **{"from": "A", "msg": report("", sid, 1)}), 0) == []


def test_a_peer_leaving_after_its_result_does_not_void_the_others():
    reg = registry()
    ta, tb = login(reg, "ca", "A"), login(reg, "cb", "B")
    sid = reg.on_message("cb", make("connect", token=tb, target="A", variant="basic", k=1, schedule="diagram1"), 0)[0].msg["session"]
    reg.on_message("ca", report(ta, sid, 20001), 0)
    reg.on_message("cb", report(tb, sid, 30001), 0)
    reg.on_message("cb", make("punched", token=tb, session=sid), 0)
    reg.on_message("ca", make("result", token=ta, session=sid, ok=True), 0)
    assert reg.on_disconnect("ca") == []  # B is not told "peer-gone"
    assert reg.on_message("cb", make("result", token=tb, session=sid, ok=True), 0) == []
    assert reg.stats["sessions_direct"] == 1 and reg.sessions == {}
