"""Full ICE (RFC 8445) between the two peers of a cell, with aioice: the baseline dp2pt is measured against.

Started in a peer node under the lab's agent contract (:mod:`lab.agents.contract`): A is
controlling, B controlled. Each side gathers host and server-reflexive candidates (STUN Binding to
``LAB_STUN``, the location server's port) and, when the cell has one, a relayed candidate from
coturn (``LAB_TURN``), swaps ``ufrag``/``pwd``/candidates with the other side through the lab's
rendezvous (``<session>/ice/A`` and ``<session>/ice/B``), signals end-of-candidates, runs the
connectivity checks (aioice nominates aggressively: the first pair to succeed both ways wins),
then sends ``--count`` datagrams on the nominated pair and counts what arrives.

It prints ``{"event": "ready"}`` once its candidates are published, then one result line::

    {"agent": "ice", "role", "ok": bool, "connected": bool, "direct": bool,
     "pair_type": "host" | "srflx" | "prflx" | "relay",
     "nominated": {"local": {"type", "address"}, "remote": {"type", "address"}},
     "gather_ms", "signal_ms", "checks_ms", "time_to_connected_ms", "data_sent", "data_received",
     "candidates": {"local": [...], "remote": [...]}, "error": str | null}

``pair_type`` is ``relay`` if either end of the nominated pair is relayed, else the type of its
remote end (aioice pairs a server-reflexive candidate through its base, so the local end of a
direct pair is always ``host``; the remote end says how the path was found: the peer's advertised
``srflx`` address or a ``prflx`` address learned from its checks). ``time_to_connected_ms`` runs
from the start of gathering to the nomination, so B's (started once A's candidates are
published) is comparable with dp2pt's ``time_to_direct_ms``. Exit status: 0 connected, 6 not
connected, 3 the rendezvous or the STUN server unreachable, 2 the contract is not met.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time

from lab.agents import contract
from lab.agents.rendezvous import Client, RendezvousError

DEFAULT_COUNT = 3
DATA_GAP = 0.005  # seconds between data datagrams
DATA_WAIT = 1.0  # how long to wait for the other side's data after sending ours
CLOSE_TIMEOUT = 2.0
#: Exit codes, as dp2pt's CLI uses them (docs/CONTRACT.md).
EXIT_CONTRACT, EXIT_UNREACHABLE, EXIT_NO_PATH = 2, 3, 6


class IceFailed(Exception):
    """ICE could not connect (one line: why)."""


def nominated_pair(conn) -> dict | None:
    """The nominated pair of component 1 as ``{"local": {...}, "remote": {...}}``.

    aioice exposes no accessor for the selected pair; ``Connection._nominated`` is read here only
    (tests/lab/test_agents.py fails if a new aioice moves it).
    """
    pair = conn._nominated.get(1)
    if pair is None:
        return None
    return {end: {"type": cand.type, "address": [cand.host, cand.port]}
            for end, cand in (("local", pair.local_candidate), ("remote", pair.remote_candidate))}


def pair_type(nominated: dict) -> str:
    """``relay`` if either end is relayed, else the remote end's type (see the module docstring)."""
    if "relay" in (nominated["local"]["type"], nominated["remote"]["type"]):
        return "relay"
    return nominated["remote"]["type"]


async def run(env: contract.AgentEnv, count: int, emit) -> dict:
    """One ICE session under ``env``; ``emit(dict)`` prints a line (ready, then the result)."""
    import aioice

    other = "B" if env.role == "A" else "A"
    turn = env.turn
    conn = aioice.Connection(
        ice_controlling=env.role == "A", components=1, stun_server=env.stun, use_ipv6=False,
        turn_server=turn.address if turn else None, turn_username=turn.user if turn else None,
        turn_password=turn.password if turn else None,
    )
    result: dict = {"agent": "ice", "role": env.role, "id": env.id, "peer": env.peer_id, "ok": False,
                    "connected": False, "direct": False, "pair_type": None, "nominated": None, "turn": bool(turn),
                    "gather_ms": None, "signal_ms": None, "checks_ms": None, "time_to_connected_ms": None,
                    "data_sent": 0, "data_received": 0, "candidates": {"local": [], "remote": []}, "error": None}
    deadline = time.monotonic() + env.timeout
    rv = Client(env.rendezvous)
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(conn.gather_candidates(), max(deadline - time.monotonic(), 0.1))
        t_gathered = time.monotonic()
        result["gather_ms"] = _ms(t_gathered - t0)
        local = [c.to_sdp() for c in conn.local_candidates]
        result["candidates"]["local"] = local
        if not any(c.type == "srflx" for c in conn.local_candidates) and not turn:
            result["unreachable"] = True
            raise IceFailed(f"no server-reflexive candidate: STUN {env.stun[0]}:{env.stun[1]} did not answer")
        await rv.put(f"{env.session}/ice/{env.role}",
                     json.dumps({"ufrag": conn.local_username, "pwd": conn.local_password, "candidates": local}))
        emit({"event": "ready", "agent": "ice", "role": env.role})
        theirs = json.loads(await rv.get(f"{env.session}/ice/{other}", max(deadline - time.monotonic(), 0.1)))
        conn.remote_username, conn.remote_password = theirs["ufrag"], theirs["pwd"]
        for sdp in theirs["candidates"]:
            await conn.add_remote_candidate(aioice.Candidate.from_sdp(sdp))
        await conn.add_remote_candidate(None)  # end-of-candidates: connect() may now report failure
        result["candidates"]["remote"] = theirs["candidates"]
        t_checks = time.monotonic()
        result["signal_ms"] = _ms(t_checks - t_gathered)
        try:
            await asyncio.wait_for(conn.connect(), max(deadline - time.monotonic(), 0.1))
        except asyncio.TimeoutError:
            raise IceFailed(f"no candidate pair nominated within {env.timeout:g} s") from None
        except ConnectionError as exc:
            raise IceFailed(f"ICE failed: {exc}") from None
        t_connected = time.monotonic()
        result["checks_ms"] = _ms(t_connected - t_checks)
        result["time_to_connected_ms"] = _ms(t_connected - t0)
        result["connected"] = True
        result["nominated"] = nominated_pair(conn)
        result["pair_type"] = pair_type(result["nominated"])
        result["direct"] = result["pair_type"] != "relay"
        result["data_sent"], result["data_received"] = await _exchange(conn, env.role, count, deadline)
        result["ok"] = True
    except IceFailed as exc:
        result["error"] = str(exc)
    except RendezvousError as exc:
        result["error"] = str(exc)
        result["unreachable"] = True
    except asyncio.TimeoutError:
        result["error"] = f"timed out after {env.timeout:g} s (gathering or signalling)"
    finally:
        await rv.close()
        try:
            await asyncio.wait_for(conn.close(), CLOSE_TIMEOUT)
        except (asyncio.TimeoutError, OSError):
            pass
    return result


async def _exchange(conn, role: str, count: int, deadline: float) -> tuple[int, int]:
    """Send ``count`` datagrams on the nominated pair; count the other side's (bounded in time)."""
    received = 0

    async def receive() -> None:
        nonlocal received
        while received < count:
            data = await conn.recv()
            if data.startswith(b"ICE-DATA "):
                received += 1

    reader = asyncio.create_task(receive())
    for i in range(count):
        await conn.send(f"ICE-DATA {role} {i}".encode())
        await asyncio.sleep(DATA_GAP)
    try:
        await asyncio.wait_for(asyncio.shield(reader), max(min(DATA_WAIT, deadline - time.monotonic()), 0.05))
    except (asyncio.TimeoutError, ConnectionError):
        pass
    reader.cancel()
    return count, received


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m lab.agents.ice",
                                description="one side of an ICE (RFC 8445) session under the lab's agent contract")
    p.add_argument("--count", type=int, default=DEFAULT_COUNT, help="data datagrams to send once connected")
    args = p.parse_args(argv)
    if not 0 <= args.count <= 1000:
        print("ice: error: --count must be 0..1000", file=sys.stderr)
        return EXIT_CONTRACT
    try:
        env = contract.AgentEnv.from_env(dict(os.environ))
    except contract.ContractError as exc:
        print(f"ice: error: {exc}", file=sys.stderr)
        return EXIT_CONTRACT
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(relativeCreated)8.1f %(name)s %(message)s")

    def emit(doc: dict) -> None:
        print(json.dumps(doc), flush=True)

    result = asyncio.run(run(env, args.count, emit))
    emit(result)
    if result["ok"]:
        return 0
    return EXIT_UNREACHABLE if result.get("unreachable") else EXIT_NO_PATH


if __name__ == "__main__":
    sys.exit(main())
