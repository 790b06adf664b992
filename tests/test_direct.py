"""The direct path driven directly (sans-IO): tags, replays, pinning, acknowledged and resent data."""

from dp2pt.proto import datagram
from dp2pt.proto.datagram import Datagram, Kind
from dp2pt.proto.direct import DirectPath

SID = bytes.fromhex("0011223344556677")
KEY = bytes(range(16))
A_ADDR, B_ADDR, THIEF = ("198.51.100.1", 40001), ("203.0.113.1", 50001), ("192.0.2.66", 6666)


def paths(count=3, rto=0.2, tries=4):
    a = DirectPath("A", SID, KEY, count, lambda s: b"a%d" % s, rto, tries)
    b = DirectPath("B", SID, KEY, count, lambda s: b"b%d" % s, rto, tries)
    return a, b


def deliver(to, sends, src, now=0.0, drop=lambda data: False):
    """Hand every datagram in ``sends`` to ``to`` as if from ``src``; returns what ``to`` answers."""
    out = []
    for data, _addr in sends:
        if not drop(data):
            out += to.receive(data, src, now)
    return out


def run_exchange(a, b, drop_a=lambda d: False, drop_b=lambda d: False):
    """B punches first (step 15), then A (16); then both answer each other until quiet; time in 0.1 s steps."""
    deliver(a, b.punches(A_ADDR[0], [A_ADDR[1]], 0), B_ADDR)  # dropped by NAT-A in the spec: here it arrives
    to_b = a.punches(B_ADDR[0], [B_ADDR[1]], 0)
    now = 0.0
    for _ in range(100):
        to_a = deliver(b, to_b, A_ADDR, now, drop_b)
        to_b = deliver(a, to_a, B_ADDR, now, drop_a)
        if not (to_a or to_b):
            now += 0.1
            to_b, to_a = a.due(now), b.due(now)
            to_b += deliver(a, to_a, B_ADDR, now, drop_a)
        if a.done and b.done:
            break
    return now


def test_an_honest_exchange_delivers_and_acknowledges_everything():
    a, b = paths()
    run_exchange(a, b)
    assert a.direct and b.direct and a.remote == B_ADDR and b.remote == A_ADDR
    assert a.received == b.received == {0, 1, 2} and a.acked == b.acked == {0, 1, 2}
    assert a.stats["forged"] == b.stats["forged"] == 0


def test_lost_data_is_resent_until_acknowledged():
    a, b = paths()
    lost = set()

    def lose_first_copy_of_data(data):
        d = datagram.parse(data)
        if d.kind == Kind.DATA and d.seq not in lost:
            lost.add(d.seq)
            return True
        return False

    run_exchange(a, b, drop_b=lose_first_copy_of_data)
    assert b.received == {0, 1, 2} and a.acked == {0, 1, 2}


def test_a_lost_ack_makes_the_resent_datum_acked_again_not_counted_twice():
    a, b = paths(count=1)
    drops = iter([True])
    run_exchange(a, b, drop_a=lambda d: datagram.parse(d).kind == Kind.DATA_ACK and next(drops, False))
    assert a.acked == {0} and b.received == {0} and b.stats["replayed"] == 1


def test_data_that_arrives_before_the_punch_brings_the_path_up():
    """The issue: data arriving before the peer considered the path direct was thrown away for good."""
    a, b = paths(count=2)
    data = b.receive(a.punches(B_ADDR[0], [B_ADDR[1]], 0)[0][0], A_ADDR, 0.0)  # B is up, sends its data at once ...
    first_data = [d for d in data if datagram.parse(d[0]).kind == Kind.DATA]
    out = a.receive(first_data[0][0], B_ADDR, 0.0)  # ... and its first datum reaches A before any reply
    assert a.direct and a.remote == B_ADDR and a.received == {0}
    assert any(datagram.parse(d).kind == Kind.DATA_ACK for d, _ in out)


def test_forged_datagrams_do_not_take_the_path():
    a, _ = paths()
    forged = [
        bytes(Datagram(Kind.PUNCH, SID, 1)),  # right session id, no tag
        datagram.seal(Datagram(Kind.PUNCH, SID, 1), bytes(16), "B"),  # wrong key
        datagram.seal(Datagram(Kind.PUNCH, SID, 1), KEY, "A"),  # A's own datagram reflected back
        datagram.seal(Datagram(Kind.PUNCH, bytes(8), 1), KEY, "B"),  # another session
        b"D2PT\x01",  # truncated
    ]
    for data in forged:
        assert a.receive(data, THIEF, 0.0) == []
    assert not a.direct
    assert a.stats == {"malformed": 1, "other_session": 1, "forged": 3, "replayed": 0}


def test_a_replayed_punch_from_another_source_is_dropped_and_the_path_stays_pinned():
    a, b = paths()
    punch = b.punches(A_ADDR[0], [A_ADDR[1]], 0)[0][0]
    answers = a.receive(punch, B_ADDR, 0.0)
    assert a.remote == B_ADDR and all(addr == B_ADDR for _, addr in answers)
    assert a.receive(punch, THIEF, 0.1) == []  # the same datagram again, from a thief: a replay
    assert a.stats["replayed"] == 1
    # Even a fresh authentic datagram from another source (a second punch that got through) does not move it.
    answers = a.receive(b.punches(A_ADDR[0], [A_ADDR[1]], 1)[0][0], THIEF, 0.2)
    assert a.remote == B_ADDR and all(addr == B_ADDR for _, addr in answers)


def test_replayed_data_is_counted_once():
    a, b = paths(count=2)
    a.receive(b.punches(A_ADDR[0], [A_ADDR[1]], 0)[0][0], B_ADDR, 0.0)
    up = b.receive(a.punches(B_ADDR[0], [B_ADDR[1]], 0)[0][0], A_ADDR, 0.0)
    datum = next(d for d, _ in up if datagram.parse(d).kind == Kind.DATA)
    for _ in range(5):
        a.receive(datum, THIEF, 0.0)
    assert a.received == {0} and a.stats["replayed"] == 4


def test_only_an_authentic_new_datagram_is_a_sign_of_life():
    """The audit: once the path was up, forged or replayed datagrams pushed the data phase's deadline
    back; the peer now waits from ``heard``, which only the other side can move."""
    a, b = paths(count=2)
    assert a.heard is None
    punch = b.punches(A_ADDR[0], [A_ADDR[1]], 0)
    data = deliver(a, punch, B_ADDR, 1.0)  # up: A replies and sends its data
    assert a.heard == 1.0
    deliver(a, punch, THIEF, 2.0)  # replayed, by a third party ...
    deliver(a, punch, B_ADDR, 2.0)  # ... or as if from B
    a.receive(bytes(Datagram(Kind.DATA, SID, 0, 1, b"forged")), B_ADDR, 2.0)
    assert a.heard == 1.0 and a.stats["replayed"] == 2 and a.stats["forged"] == 1
    acks = [d for d in deliver(b, data, A_ADDR, 3.0) if datagram.parse(d[0]).kind == Kind.DATA_ACK]
    deliver(a, acks, B_ADDR, 3.0)
    assert a.heard == 3.0 and a.acked == {0, 1}
    deliver(a, acks, B_ADDR, 4.0)  # the same acks again tell nothing new
    assert a.heard == 3.0


def test_resends_are_bounded():
    a, b = paths(count=2, tries=3)
    a.receive(b.punches(A_ADDR[0], [A_ADDR[1]], 0)[0][0], B_ADDR, 0.0)  # up: sends its data, never acked
    resent = sum(len(a.due(t / 10)) for t in range(1, 200))
    assert resent == 2 * (3 - 1) and a.next_due() is None


def test_leaving_acknowledges_everything_received_again():
    a, b = paths(count=2, tries=1000)  # A still resending when B leaves
    assert a.farewell() == []  # no path, nothing to say
    run_exchange(a, b, drop_a=lambda d: datagram.parse(d).kind == Kind.DATA_ACK)  # a lossy link takes B's acks
    assert b.done and a.acked == set()  # B has everything and leaves; A would resend until its patience ran out
    farewell = b.farewell()
    assert sorted(datagram.parse(d).seq for d, _ in farewell) == [0, 0, 1, 1]  # two copies of each ack
    deliver(a, farewell, B_ADDR, 1.0)
    assert a.acked == {0, 1} and a.next_due() is None  # nothing left to resend: A may leave too
