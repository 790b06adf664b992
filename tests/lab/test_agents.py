"""Unit tests of the agents' pure parts: the environment contract, the rendezvous, aioice's pair accessor."""

from __future__ import annotations

import asyncio

import pytest

from lab.agents import contract, ice, rendezvous

ENV = contract.AgentEnv("A", "A1", "B1", "s1", ("198.51.100.10", 7010), ("198.51.100.10", 7000),
                        ("198.51.100.10", 3478), "10.1.0.10", 4.0)


def test_contract_round_trips_through_the_environment():
    env = ENV.to_env()
    assert env["LAB_ROLE"] == "A" and env["LAB_STUN"] == "198.51.100.10:3478" and "LAB_TURN" not in env
    assert contract.AgentEnv.from_env(env) == ENV
    turn = contract.Turn(("198.51.100.10", 3490), "u", "p")
    with_turn = contract.AgentEnv(**{**ENV.__dict__, "turn": turn})
    assert contract.AgentEnv.from_env(with_turn.to_env()).turn == turn
    assert set(with_turn.to_env()) == set(contract.NAMES)


@pytest.mark.parametrize("change,message", [
    ({"LAB_ROLE": "C"}, "LAB_ROLE must be A or B"),
    ({"LAB_STUN": "nohost"}, "LAB_STUN must be HOST:PORT"),
    ({"LAB_TIMEOUT": "soon"}, "LAB_TIMEOUT must be a number"),
    ({"LAB_SESSION": ""}, "LAB_SESSION is not set"),
    ({"LAB_TURN": "198.51.100.10:3490"}, "LAB_TURN_USER is not set"),
])
def test_contract_names_what_is_missing(change, message):
    with pytest.raises(contract.ContractError, match=message):
        contract.AgentEnv.from_env(ENV.to_env() | change)


def test_placeholders_are_replaced_and_nothing_else():
    env = ENV.to_env()
    argv = contract.substitute(["prog", "--peer", "{LAB_PEER_ID}", "{LAB_ROLE}-{LAB_ID}.log", "{x}", "{LAB_NOPE}"], env)
    assert argv == ["prog", "--peer", "B1", "A-A1.log", "{x}", "{LAB_NOPE}"]
    with pytest.raises(contract.ContractError, match="does not set LAB_TURN"):
        contract.substitute(["--turn", "{LAB_TURN}"], env)


def test_result_line_is_the_last_json_object():
    out = 'starting\n{"event": "ready"}\n[1, 2]\n{"ok": true, "n": 1}\n{broken\n'
    assert contract.result_line(out) == {"ok": True, "n": 1}
    assert contract.result_line("no json here\n") is None


# ---- the rendezvous -----------------------------------------------------------------------------


def test_store_waits_for_a_later_put_and_times_out_otherwise():
    async def main():
        store = rendezvous.Store(max_keys=2)
        waiter = asyncio.create_task(store.get("k", 1.0))
        await asyncio.sleep(0.01)
        store.put("k", "v")
        assert await waiter == "v"
        assert await store.get("missing", 0.01) is None
        assert store.events == {}  # a timed-out waiter leaves nothing behind
        store.put("a", "1"), store.put("b", "2")
        assert list(store.values) == ["a", "b"]  # the oldest ("k") was forgotten first

    asyncio.run(main())


@pytest.mark.parametrize("line,message", [
    ("PUT onlykey", "PUT needs a key and a value"),
    ("GET k soon", "GET wait must be a number"),
    ("GET k 3600", "GET wait must be 0..60"),
    ("GET " + "k" * 201, "a key is 1-200"),
    ("DEL k", "unknown command"),
    ("PUT k " + "v" * (rendezvous.MAX_VALUE + 1), "value longer than"),
])
def test_requests_are_refused_with_a_sentence(line, message):
    with pytest.raises(ValueError, match=message):
        rendezvous.parse_request(line)


def test_server_answers_put_get_and_survives_garbage():
    async def main():
        server = rendezvous.Server()
        srv = await asyncio.start_server(server.handle, "127.0.0.1", 0, limit=rendezvous.MAX_LINE)
        addr = srv.sockets[0].getsockname()[:2]
        try:
            reader, writer = await asyncio.open_connection(*addr)
            for line, want in ((b"\xff\xfe\n", b"ERR not UTF-8"), (b"HELLO\n", b"ERR unknown command 'HELLO' (PUT or GET)"),
                               (b"PUT s1/x {\"a\": 1}\n", b"OK"), (b"GET s1/x\n", b'VALUE {"a": 1}'),
                               (b"GET s1/none 0.05\n", b"TIMEOUT")):
                writer.write(line)
                assert (await reader.readline()).rstrip() == want
            writer.close()
            a, b = rendezvous.Client(addr), rendezvous.Client(addr)
            later = asyncio.create_task(b.get("s1/late", 2.0))
            await asyncio.sleep(0.05)
            await a.put("s1/late", "here")
            assert await later == "here"
            with pytest.raises(rendezvous.RendezvousError, match="nothing under 's1/never'"):
                await a.get("s1/never", 0.05)
            await a.close(), await b.close()
        finally:
            srv.close()
        return server.stats

    stats = asyncio.run(main())
    assert stats["error"] == 2 and stats["put"] == 2 and stats["timeout"] == 2


def test_client_says_when_the_rendezvous_is_unreachable():
    async def main():
        client = rendezvous.Client(("127.0.0.1", 9), connect_timeout=1.0)
        with pytest.raises(rendezvous.RendezvousError, match="unreachable"):
            await client.put("k", "v")

    asyncio.run(main())


# ---- the ICE agent's reading of aioice ----------------------------------------------------------


def test_nominated_pair_reads_aioice_and_names_the_pair_type():
    """Fails when a new aioice moves the nominated pair (the agent reads a private attribute)."""
    import aioice
    from aioice.ice import CandidatePair, StunProtocol

    async def main():
        conn = aioice.Connection(ice_controlling=True, use_ipv6=False)
        assert ice.nominated_pair(conn) is None
        protocol = StunProtocol(conn)
        protocol.local_candidate = aioice.Candidate("f1", 1, "udp", 1, "10.1.0.10", 40000, "host")
        remote = aioice.Candidate("f2", 1, "udp", 1, "203.0.113.1", 20000, "prflx")
        remote._network_host = remote.host
        conn._nominated[1] = CandidatePair(protocol, remote)
        return ice.nominated_pair(conn)

    pair = asyncio.run(main())
    assert pair == {"local": {"type": "host", "address": ["10.1.0.10", 40000]},
                    "remote": {"type": "prflx", "address": ["203.0.113.1", 20000]}}
    assert ice.pair_type(pair) == "prflx"
    pair["local"]["type"] = "relay"
    assert ice.pair_type(pair) == "relay"


def test_ice_agent_refuses_to_run_outside_the_contract(monkeypatch, capsys):
    for name in contract.NAMES:
        monkeypatch.delenv(name, raising=False)
    assert ice.main([]) == ice.EXIT_CONTRACT
    assert "ice: error: LAB_ROLE is not set" in capsys.readouterr().err
