"""Connection caps and connect rate limits (dp2pt.proto.admission), without sockets."""

from dp2pt.proto.admission import Admission, TokenBucket


def test_per_address_cap():
    adm = Admission(total=100, per_ip=2)
    assert adm.admit("c1", "10.0.0.1") == (True, None)
    assert adm.admit("c2", "10.0.0.1") == (True, None)
    assert adm.admit("c3", "10.0.0.1") == (False, None)
    assert adm.admit("c4", "10.0.0.2") == (True, None)
    adm.release("c1")
    adm.release("c1")  # idempotent
    assert adm.admit("c5", "10.0.0.1") == (True, None)


def test_at_the_total_cap_the_oldest_anonymous_connection_gives_way():
    adm = Admission(total=3, per_ip=0)
    for c in ("old", "mid", "new"):
        adm.admit(c, f"10.0.0.{c}")
    adm.logged_in("old")
    assert adm.admit("late", "10.0.1.1") == (True, "mid")  # "old" logged in: never evicted
    assert len(adm) == 3
    adm.logged_in("new")
    adm.logged_in("late")
    assert adm.admit("later", "10.0.1.2") == (False, None)  # everyone logged in: refuse


def test_token_bucket():
    bucket = TokenBucket(burst=2, rate=1.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [True, True, False]
    assert bucket.take(0.5) is False and bucket.take(1.0) is True
    assert [bucket.take(100.0) for _ in range(3)] == [True, True, False]  # never more than the burst
