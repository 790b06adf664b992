"""Location servers sharing a directory on a real redis-server (loopback): any server reaches peers
logged in at any other, ids are unique across them, a dead server's peers log in elsewhere, and what
Redis carries cannot be forged or replayed."""

import asyncio
import collections
import json
import time
from contextlib import ExitStack, contextmanager

import pytest

from dp2pt.aio.directory import Directory
from dp2pt.aio.peer import Peer, PeerConfig
from dp2pt.errors import LoginRefused, UnknownPeer
from dp2pt.proto import directory as d
from dp2pt.proto.messages import make
from lab.errors import MissingTool
from lab.world import redis
from tests.loopback import SECRET, SlowStun, directory_servers
from tests.procs import server_process
from tests.test_e2e_loopback import check_direct

try:
    redis.require()
    import redis as redis_client  # noqa: F401
except (MissingTool, ImportError) as exc:
    pytest.skip(f"needs redis-server and the redis client: {exc}", allow_module_level=True)

import redis.asyncio as aioredis  # noqa: E402

#: After a server dies its peers are back in within its heartbeat TTL plus a round of login backoff.
BACK_IN = d.SERVER_TTL + 3.0


@pytest.fixture(scope="module")
def redis_url():
    with redis.loopback() as url:
        yield url


def peer(pid, *servers, **overrides):
    cfg = {"timeout": 5.0, "punch_timeout": 1.0, "retry": 0.0, **overrides}
    first, *more = [s.addresses["tcp"] if hasattr(s, "addresses") else s for s in servers]
    return Peer(PeerConfig(id=pid, server=first, more_servers=more, **cfg))


def test_peers_on_three_servers_all_reach_each_other_directly(redis_url):
    """Listener Li and connector Ci on server i: every Ci connects to every Lj (3 local, 6 across)."""
    async def main():
        async with directory_servers(redis_url) as servers:
            results = {}
            listeners = [peer(f"L{i}", s) for i, s in enumerate(servers)]
            connectors = [peer(f"C{i}", s) for i, s in enumerate(servers)]
            for p in listeners + connectors:
                await p.login()
            try:
                heard = {i: [] for i in range(3)}
                listening = [asyncio.ensure_future(p.listen(heard[i].append, sessions=3))
                             for i, p in enumerate(listeners)]

                async def connect_all(i, c):
                    for j in range(3):
                        results[i, j] = await c.connect(f"L{j}")

                await asyncio.wait_for(asyncio.gather(*(connect_all(i, c) for i, c in enumerate(connectors))), 30)
                await asyncio.wait_for(asyncio.gather(*listening), 10)
                await asyncio.sleep(0.1)
                stats = [s.snapshot() for s in servers]
            finally:
                for p in listeners + connectors:
                    await p.close()
            return results, heard, stats

    results, heard, stats = asyncio.run(main())
    for (i, j), b in results.items():
        a = next(r for r in heard[j] if r["session"] == b["session"])
        check_direct(a, b)
        assert b["server"] != a["server"] if i != j else b["server"] == a["server"]
    assert sum(s["registry_sessions_direct"] for s in stats) == 9
    assert all(s.get("directory_rejected", 0) == 0 and s["open_sessions"] == 0 for s in stats)
    assert sum(s["directory_received"] for s in stats) > 0


def test_an_id_is_logged_in_at_one_server_only_and_free_again_at_logout(redis_url):
    async def main():
        async with directory_servers(redis_url, 2, names=["u0", "u1"]) as (s0, s1):
            first = peer("X", s0)
            await first.login()
            with pytest.raises(LoginRefused, match="logged in at another server"):
                async with peer("X", s1):
                    pass
            await first.close()
            await asyncio.sleep(0.2)  # the logout releases the entry
            async with peer("X", s1) as again:
                return again.server, s1.addresses["tcp"], s0.snapshot()

    server, expected, stats0 = asyncio.run(main())
    assert server == expected and stats0["logged_in"] == 0


def test_unknown_peer_and_the_allow_list_across_servers(redis_url):
    async def main():
        async with directory_servers(redis_url, 2, names=["v0", "v1"]) as (s0, s1):
            async with peer("A", s0, allow=["B"]) as a, peer("B", s1) as b, peer("E", s1) as e:
                listening = asyncio.ensure_future(a.listen(lambda r: None, sessions=1))
                with pytest.raises(UnknownPeer):
                    await e.connect("A")  # not allowed: A looks logged out
                with pytest.raises(UnknownPeer):
                    await e.connect("nobody")
                result = await b.connect("A")
                await asyncio.wait_for(listening, 5)
                return result

    assert asyncio.run(main())["ok"]


def test_forged_and_replayed_messages_from_redis_are_dropped(redis_url):
    """Whoever can publish into Redis without the secret cannot hand a session (and its key) to a
    peer; a sealed message that really went by cannot be sent again."""
    async def main():
        async with directory_servers(redis_url, 2, names=["w0", "w1"]) as (s0, s1):
            async with peer("A", s0) as a, peer("B", s1) as b:
                client = aioredis.Redis.from_url(redis_url)
                spy = client.pubsub()
                await spy.ssubscribe(d.inbox("w0"))
                await spy.get_message(timeout=1)
                forged_session = make("deliver", to="A", msg=make(
                    "session", session="0123456789abcdef", role="A", peer="M", variant="basic", k=1,
                    schedule="diagram1", key="00" * 16))
                wrong = d.Sealer(b"not the secret of this directory", "w1", "x")
                await client.spublish(d.inbox("w0"), wrong.seal("w0", forged_session, time.time()))
                await client.spublish(d.inbox("w0"), json.dumps(forged_session))
                stale = d.Sealer(SECRET, "w1", "x").seal("w0", forged_session, time.time() - 2 * d.MAX_AGE)
                await client.spublish(d.inbox("w0"), stale)
                # A real session from B (through w1) passes w0's inbox: record it, then replay it.
                listening = asyncio.ensure_future(a.listen(lambda r: None, sessions=1))
                result = await b.connect("A")
                await asyncio.wait_for(listening, 5)
                seen = []
                while (m := await spy.get_message(timeout=0.2)) is not None:
                    if m["type"] == "smessage":
                        seen.append(m["data"])
                seen = seen[3:]  # after our three forgeries: what w1 really sent
                for data in seen:
                    await client.spublish(d.inbox("w0"), data)
                await asyncio.sleep(0.3)
                await spy.aclose()
                await client.aclose()
                stray = a._new_sessions.qsize()
                return result, seen, s0.snapshot(), stray

    result, seen, stats, stray = asyncio.run(main())
    assert result["ok"] and seen
    assert all(b'"key"' not in data and b"session" not in data for data in seen)  # sealed: nothing readable
    assert stats["directory_rejected"] == 3 + len(seen) and stray == 0


def test_a_malformed_inbox_message_is_dropped_and_the_subscription_stays(redis_url):
    """The audit: an 8,000-byte ``[[[...]]]`` raised RecursionError out of the inbox reader, counted as a
    Redis error, and the server dropped and re-made its subscription (losing what came meanwhile)."""
    async def main():
        async with directory_servers(redis_url, 1, names=["m0"]) as (server,):
            client = aioredis.Redis.from_url(redis_url)
            spy = client.pubsub()
            await spy.ssubscribe(d.inbox("m1"))
            await spy.get_message(timeout=1)
            heard = [await client.spublish(d.inbox("m0"), b"[" * 4000 + b"]" * 4000)]
            lookup = make("lookup", q=1, id="nobody", **{"from": "X"})
            lookup = d.Sealer(SECRET, "m1", "x").seal("m0", lookup, time.time())
            heard.append(await client.spublish(d.inbox("m0"), lookup))
            answer = await spy.get_message(timeout=2)
            await spy.aclose()
            await client.aclose()
            return heard, answer, server.snapshot()

    heard, answer, stats = asyncio.run(main())
    assert heard == [1, 1] and answer is not None and answer["type"] == "smessage"  # the lookup after it: answered
    assert stats["directory_rejected"] == 1 and stats.get("directory_errors", 0) == 0, stats
    assert stats.get("internal_errors", 0) == 0


def test_a_bug_met_by_an_inbox_message_is_counted_and_the_reader_goes_on():
    """Whatever opening a message raises, the inbox reader returns to its subscription."""
    class Broken:
        def open(self, data, now):
            raise RecursionError("maximum recursion depth exceeded")

    stats = collections.Counter()
    directory = Directory("redis://127.0.0.1:1", "b0", SECRET, lambda *message: None, stats)
    directory.sealer = Broken()
    directory._receive(b"[]")
    assert stats == {"internal_errors": 1}


def test_a_second_server_may_not_take_a_live_servers_name(redis_url):
    from dp2pt.errors import ConfigError

    async def main():
        async with directory_servers(redis_url, 1, names=["same"]):
            with pytest.raises(ConfigError, match="in use by another live server"):
                async with directory_servers(redis_url, 1, names=["same"]):
                    pass

    asyncio.run(main())


def test_redis_cluster_works_unchanged():
    """Three masters: entries, heartbeats and inboxes land on different nodes, and sessions cross them."""
    with redis.loopback_cluster() as url:
        async def main():
            async with directory_servers(url, names=["c0", "c1", "c2"]) as servers:
                assert all(s.directory.cluster for s in servers)
                out = []
                for i in range(3):
                    async with peer(f"A{i}", servers[i]) as a, peer(f"B{i}", servers[(i + 1) % 3]) as b:
                        listening = asyncio.ensure_future(a.listen(out.append, sessions=1))
                        out.append(await b.connect(f"A{i}"))
                        await asyncio.wait_for(listening, 5)
                return out, [s.snapshot() for s in servers]

        results, stats = asyncio.run(main())
    assert len(results) == 6 and all(r["ok"] and r["direct"] for r in results)
    assert all(s.get("directory_errors", 0) == 0 for s in stats)


@contextmanager
def server_processes(url, tmp_path, names):
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    with ExitStack() as stack:
        procs = {name: stack.enter_context(server_process(extra=["--directory", url, "--directory-secret", str(secret),
                                                                 "--name", name]))
                 for name in names}
        yield {name: (proc, tcp) for name, (proc, tcp, _) in procs.items()}


def test_a_dead_servers_peers_log_in_elsewhere_and_are_reachable_again(redis_url, tmp_path):
    """k0 holds A1 and A2 and is killed (SIGKILL): both are logged in elsewhere, and reached there,
    within BACK_IN seconds."""
    with server_processes(redis_url, tmp_path, ["k0", "k1", "k2"]) as servers:
        (p0, t0), (_, t1), (_, t2) = servers["k0"], servers["k1"], servers["k2"]

        async def main():
            moved = {pid: asyncio.Event() for pid in ("A1", "A2")}
            listeners = [Peer(PeerConfig(id=pid, server=t0, more_servers=[t1, t2], retry=10.0, timeout=5.0,
                                         punch_timeout=1.0),
                              on_login=lambda addr, e=moved[pid]: addr != t0 and e.set()) for pid in moved]
            for a in listeners:
                await a.login()
            try:
                assert all(a.server == t0 for a in listeners)
                listening = [asyncio.ensure_future(a.listen(lambda r: None, sessions=1)) for a in listeners]
                p0.kill()  # no goodbye: its heartbeat and its peers' entries just stop being refreshed
                killed = time.monotonic()
                await asyncio.wait_for(asyncio.gather(*(e.wait() for e in moved.values())), BACK_IN)
                logged_in = time.monotonic() - killed
                async with peer("C", t2) as c:
                    results = [await c.connect(pid) for pid in moved]
                reachable = time.monotonic() - killed
                await asyncio.wait_for(asyncio.gather(*listening), 5)
                return [a.server for a in listeners], logged_in, reachable, results
            finally:
                for a in listeners:
                    await a.close()

        where, logged_in, reachable, results = asyncio.run(main())
    assert all(server in (t1, t2) for server in where)
    assert all(r["ok"] and r["direct"] for r in results)
    assert logged_in < BACK_IN and reachable < BACK_IN, (logged_in, reachable)


def test_a_directory_that_does_not_answer_is_a_clear_error(redis_url):
    from dp2pt.aio.directory import Directory
    from dp2pt.errors import DirectoryUnavailable

    async def main():
        with redis.loopback(password="right") as url:
            wrong = url.replace(":right@", ":wrong@")
            directory = Directory(wrong, "z0", SECRET, lambda *a: None, collections.Counter())
            with pytest.raises(DirectoryUnavailable) as err:
                await directory.start(lambda: [], timeout=0.5)
        return str(err.value)

    text = asyncio.run(main())
    assert "cannot reach the directory redis://:***@127.0.0.1" in text and "wrong" not in text


@pytest.mark.parametrize("kill", ["B's server (the session's owner)", "A's server"])
def test_a_session_in_flight_when_a_server_dies_completes_through_another(redis_url, tmp_path, kill):
    with server_processes(redis_url, tmp_path, ["m0", "m1", "m2"]) as servers:
        (pa, ta), (pb, tb), (_, tc) = servers["m0"], servers["m1"], servers["m2"]
        doomed = pb if kill.startswith("B") else pa

        async def main():
            loop = asyncio.get_running_loop()
            slow = [await loop.create_datagram_endpoint(lambda: SlowStun(0.4), local_addr=("127.0.0.1", 0))
                    for _ in range(2)]
            stun_addrs = [t.get_extra_info("sockname") for t, _ in slow]
            cfg = dict(retry=10.0, timeout=5.0, punch_timeout=1.0, stun=stun_addrs)
            a = Peer(PeerConfig(id="A", server=ta, more_servers=[tc], **cfg))
            b = Peer(PeerConfig(id="B", server=tb, more_servers=[tc], **cfg))
            results = []
            try:
                async with a, b:
                    listening = asyncio.ensure_future(a.listen(results.append, sessions=1))
                    connecting = asyncio.ensure_future(b.connect("A"))
                    await asyncio.sleep(0.6)  # A is testing its NAT (step 3-6)
                    doomed.kill()
                    started = time.monotonic()
                    result = await asyncio.wait_for(connecting, 20)
                    await asyncio.wait_for(listening, 5)
                    return result, results[0], time.monotonic() - started
            finally:
                for t, _ in slow:
                    t.close()

        b_result, a_result, took = asyncio.run(main())
    check_direct(a_result, b_result)
    assert tuple(b_result["server"] if kill.startswith("B") else a_result["server"]) == tc
    assert took < BACK_IN + 5.0  # one session's worth after the peers are back


def one_session(a_id, a_server, b_id, b_server, spare, **overrides):
    """A (on ``a_server``) listens for one session and B (on ``b_server``) connects to it, both with
    ``spare`` to fail over to: (B's result, A's)."""
    async def main():
        a = peer(a_id, a_server, spare, retry=10.0, **overrides)
        b = peer(b_id, b_server, spare, retry=10.0, **overrides)
        results = []
        async with a, b:
            listening = asyncio.ensure_future(a.listen(results.append, sessions=1))
            result = await asyncio.wait_for(b.connect(a_id), 20)
            await asyncio.wait_for(listening, 5)
            return result, results[0]

    return asyncio.run(main())


def test_a_connector_that_punched_runs_again_when_its_server_dies_before_a_punches(redis_url, tmp_path,
                                                                                   monkeypatch):
    """B has punched (step 15) but its server, the session's owner, dies before A is told to (16):
    A will never punch, so B must not wait on its own for a datagram that cannot come; it runs the
    session again through the server it logs in at next (the lab caught B waiting out its punch
    timeout and failing when a kill landed just after B's punch)."""
    from dp2pt.aio import peer as peer_module

    with server_processes(redis_url, tmp_path, ["m0", "m1", "m2"]) as servers:
        (_, ta), (pb, tb), (_, tc) = servers["m0"], servers["m1"], servers["m2"]
        punch = peer_module._SessionRun._punch
        kills = []

        async def punch_then_lose_the_server(run, remote):
            await punch(run, remote)
            if run.role == "B" and not kills:
                pb.kill()  # before B tells it "punched": nobody will order A's punch
                kills.append(await asyncio.get_running_loop().run_in_executor(None, pb.wait))

        monkeypatch.setattr(peer_module._SessionRun, "_punch", punch_then_lose_the_server)

        b_result, a_result = one_session("A-punched", ta, "B-punched", tb, tc, punch_timeout=1.0)
    assert kills, "B never punched"
    check_direct(a_result, b_result)
    assert tuple(b_result["server"]) == tc


def test_a_session_whose_owner_dies_after_ordering_both_punches_still_goes_direct(redis_url, tmp_path,
                                                                                   monkeypatch):
    """The owner told A to punch (step 16), then died before A's punch reached B: B, waiting after its
    own punch, must not give the session up (A is punching at it), so the path comes up in it."""
    from dp2pt.aio import peer as peer_module

    with server_processes(redis_url, tmp_path, ["m0", "m1", "m2"]) as servers:
        (_, ta), (pb, tb), (_, tc) = servers["m0"], servers["m1"], servers["m2"]
        punch = peer_module._SessionRun._punch
        kills = []

        async def lose_the_owner_then_punch(run, remote):
            if run.role == "A" and not kills:
                pb.kill()
                kills.append(await asyncio.get_running_loop().run_in_executor(None, pb.wait))
                await asyncio.sleep(0.3)  # B notices: its control connection closes
            await punch(run, remote)

        monkeypatch.setattr(peer_module._SessionRun, "_punch", lose_the_owner_then_punch)

        b_result, a_result = one_session("A-ordered", ta, "B-ordered", tb, tc, punch_timeout=2.0)
    assert kills, "A was never told to punch"
    check_direct(a_result, b_result)
    assert b_result["session"] == a_result["session"] and tuple(b_result["server"]) == tb  # the first session


def test_udp_logins_claim_their_ids_too(redis_url):
    """Over UDP control (cookie, then login) the claim works the same: a pair across servers goes
    direct, and a second login of a held id is refused without leaving an association behind."""
    async def main():
        async with directory_servers(redis_url, 2, names=["p0", "p1"]) as (s0, s1):
            udp = lambda pid, s: Peer(PeerConfig(id=pid, server=s.addresses["udp"], udp_control=True, retry=0.0,  # noqa: E731
                                                 timeout=5.0, punch_timeout=1.0))
            async with udp("A", s0) as a, udp("B", s1) as b:
                with pytest.raises(LoginRefused, match="another server"):
                    async with udp("A", s1):
                        pass
                heard = []
                listening = asyncio.ensure_future(a.listen(heard.append, sessions=1))
                result = await b.connect("A")
                await asyncio.wait_for(listening, 5)
                return heard[0], result, len(s1._udp_conns)

    result_a, result_b, associations = asyncio.run(main())
    check_direct(result_a, result_b)
    assert associations == 1  # B's; the refused login kept nothing
