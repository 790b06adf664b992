"""Control links driven directly (sans-IO): numbering, MACs, replay checks after authentication, retransmission."""

import pytest

from dp2pt.errors import RemoteProtocolError
from dp2pt.proto import auth, messages
from dp2pt.proto.link import ControlLink

KEY = bytes(range(16))


def pair(reliable=True, rto=0.1, max_tries=3):
    server, peer = ControlLink("server", reliable, rto, max_tries), ControlLink("peer", reliable, rto, max_tries)
    server.authenticate(KEY), peer.authenticate(KEY)
    return server, peer


def test_before_login_nothing_is_numbered_signed_or_remembered():
    link = ControlLink("server", reliable=True)
    data = link.send({"type": "cookie", "cookie": "c"}, now=0.0)
    assert messages.decode(data) == {"type": "cookie", "cookie": "c"}
    assert link.idle and link.due(100.0) == ([], [])
    assert link.receive({"type": "login", "id": "A"}) == ({"type": "login", "id": "A"}, None)


def test_retransmits_until_acked_then_stops():
    sender, receiver = pair()
    data = sender.send({"type": "pong"}, now=0.0)
    assert sender.due(0.05) == ([], [])
    resend, lost = sender.due(0.11)
    assert resend == [data] and lost == []
    msg, ack = receiver.receive(messages.decode(data))
    assert msg["type"] == "pong"
    again, ack2 = receiver.receive(messages.decode(data))
    assert again is None and ack2 == ack  # duplicate: acked, not delivered twice
    sender.receive(messages.decode(ack))
    assert sender.idle and sender.due(10.0) == ([], [])


def test_gives_up_after_max_tries():
    sender, _ = pair(max_tries=2)
    sender.send({"type": "ping"}, now=0.0)
    assert len(sender.due(0.11)[0]) == 1
    resend, lost = sender.due(1.0)
    assert resend == [] and lost[0]["type"] == "ping"


def test_tcp_links_sign_and_check_but_do_not_ack():
    server, peer = pair(reliable=False)
    msg, ack = peer.receive(messages.decode(server.send({"type": "pong"}, 0.0)))
    assert msg["type"] == "pong" and ack is None and server.idle


@pytest.mark.parametrize("forge", [
    lambda m: {k: v for k, v in m.items() if k != "mac"},  # unsigned
    lambda m: {**m, "mac": "0" * 32},  # wrong MAC
    lambda m: {**m, "mac": "\u00e9" * 32},  # not even hex (was a TypeError in the token check)
    lambda m: {**m, "n": m["n"] + 1},  # number changed after signing
    lambda m: {**m, "type": "pong"},  # type changed after signing
])
def test_forged_messages_are_refused(forge):
    server, peer = pair()
    genuine = messages.decode(peer.send({"type": "ping"}, 0.0))
    with pytest.raises(RemoteProtocolError, match="authentication"):
        server.receive(forge(genuine))


def test_a_forged_future_number_cannot_make_later_messages_duplicates():
    """The issue's attack: forged messages with future numbers made a peer's later messages look like
    duplicates.  The number is looked at only after the MAC checked out."""
    server, peer = pair()
    for n in range(1, 20):
        with pytest.raises(RemoteProtocolError):
            server.receive({"type": "pong", "n": n, "mac": "1" * 32})
    for _ in range(19):
        msg, _ = server.receive(messages.decode(peer.send({"type": "ping"}, 0.0)))
        assert msg is not None


def test_a_message_cannot_be_reflected_to_its_sender():
    server, _ = pair()
    own = messages.decode(server.send({"type": "pong"}, 0.0))
    with pytest.raises(RemoteProtocolError):
        server.receive(own)


def test_replays_are_dropped_and_old_numbers_not_even_acked():
    server, peer = pair()
    first = messages.decode(peer.send({"type": "ping"}, 0.0))
    for _ in range(auth.REPLAY_WINDOW + 1):
        server.receive(messages.decode(peer.send({"type": "ping"}, 0.0)))
    assert server.receive(first) == (None, None)  # behind the window: a replay, not a retransmission


def test_forged_acks_do_not_stop_retransmission():
    server, _ = pair()
    server.send({"type": "pong"}, 0.0)
    with pytest.raises(RemoteProtocolError):
        server.receive({"type": "ack", "n": 1})
    assert not server.idle


def test_pending_retransmissions_are_bounded():
    from dp2pt.proto.link import MAX_PENDING

    server, _ = pair()
    for _ in range(3 * MAX_PENDING):
        server.send({"type": "pong"}, 0.0)
    assert len(server.due(1.0)[0]) == MAX_PENDING
