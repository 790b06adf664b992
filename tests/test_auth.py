"""Cookies, MACs and replay windows of the control channel (dp2pt.proto.auth), without sockets."""

from dp2pt.proto import auth

ADDR = ("198.51.100.7", 40000)


def test_a_cookie_is_valid_from_its_address_for_its_lifetime_only():
    jar = auth.Cookies(secret=b"s" * 32, lifetime=30)
    cookie = jar.issue(ADDR, now=1000.0)
    assert jar.valid(cookie, ADDR, 1000.0) and jar.valid(cookie, ADDR, 1030.0)
    assert not jar.valid(cookie, ADDR, 1031.0)  # expired
    assert not jar.valid(cookie, ADDR, 999.0)  # from the future
    assert not jar.valid(cookie, ("198.51.100.7", 40001), 1000.0)  # another port
    assert not jar.valid(cookie, ("198.51.100.8", 40000), 1000.0)  # another host
    assert not auth.Cookies(secret=b"t" * 32).valid(cookie, ADDR, 1000.0)  # another server secret
    for bad in (None, 3, "", "zz" * 20, cookie[:-1], cookie.upper()):
        assert not jar.valid(bad, ADDR, 1000.0)


def test_a_stamp_cannot_be_moved_forward():
    jar = auth.Cookies(secret=b"s" * 32, lifetime=30)
    cookie = jar.issue(ADDR, now=1000.0)
    later = f"{1100:08x}" + cookie[8:]
    assert not jar.valid(later, ADDR, 1100.0)


def test_macs_depend_on_key_direction_and_content():
    key = bytes(16)
    msg = {"type": "ping", "n": 1}
    signed = auth.sign(key, auth.TO_SERVER, msg)
    assert auth.verify(key, auth.TO_SERVER, signed)
    assert auth.verify(key, auth.TO_SERVER, dict(reversed(list(signed.items()))))  # field order is irrelevant
    assert not auth.verify(bytes(15) + b"\x01", auth.TO_SERVER, signed)
    assert not auth.verify(key, auth.TO_PEER, signed)
    assert not auth.verify(key, auth.TO_SERVER, {**signed, "n": 2})


def test_replay_window():
    w = auth.ReplayWindow(size=4)
    assert [w.check(n) for n in (1, 3, 2, 3)] == ["new", "new", "new", "duplicate"]
    assert w.check(10) == "new"
    assert w.check(6) == ("too-old")  # 10 - 4
    assert w.check(7) == "new" and w.check(0) == "too-old"
    for n in range(11, 1000):
        w.check(n)
    assert len(w._seen) <= 2 * w.size + 1  # bounded however long the login lives


def test_key_bytes_accepts_only_well_formed_keys():
    key = auth.new_key()
    assert auth.key_bytes(key) == bytes.fromhex(key)
    for bad in (None, 7, key[:-1], key.upper(), "g" * 32):
        assert auth.key_bytes(bad) is None
