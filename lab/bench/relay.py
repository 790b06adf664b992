"""Direct path vs a TURN-relayed path between the same two peers behind the same NATs (issue 6).

Why a small agent instead of ``turnutils_uclient``: uclient runs both ends of its relayed test in one
process on one host, so it cannot put the two ends behind two different NATs; this agent runs one
end in node A and one in node B and measures both paths with the same code:

* direct: each agent learns its mapping from the location server's STUN port, the bench hands each
  the other's mapping, both send hellos until one arrives (a hole punch), then A pings and B echoes;
* relay: A allocates on coturn (``turnserver`` on the server node, long-term credentials) with
  aioice's TURN client and pings B's mapping through it; B echoes to A's relayed address.

A measures echoes/s with a bounded window, and round trips one at a time.  Every loop is bounded by a
count and a deadline; traffic goes only to lab addresses handed in by the bench.

Agent protocol (JSON lines): the agent prints ``{"mapped": [ip, port], "relayed": [ip, port]|null}``,
reads ``{"peer": [ip, port]}`` on stdin, and A prints the result line at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dp2pt.proto import stun
from lab.world import services
from lab.world.services import TURN_PASSWORD, TURN_PORT, TURN_USER

COUNT = 2000  # echoes for the rate
WINDOW = 16
RTT_COUNT = 200  # one-at-a-time round trips
HELLO_INTERVAL, HELLO_TIMEOUT = 0.05, 5.0
RUN_TIMEOUT = 20.0
PAIR = ("port-restricted-cone", "port-restricted-cone")
_PING = struct.Struct("!4sId")  # tag, seq, send time
HELLO, PING = b"HELO", b"PING"


class _Endpoint(asyncio.DatagramProtocol):
    """A datagram socket (plain or TURN) whose arrivals go to a queue."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()

    def datagram_received(self, data: bytes, addr) -> None:
        self.queue.put_nowait((data, addr[:2]))


async def _stun_mapping(transport, ep: _Endpoint, server) -> tuple[str, int]:
    req = stun.binding_request()
    for _ in range(10):
        transport.sendto(bytes(req), server)
        try:
            data, _ = await asyncio.wait_for(ep.queue.get(), 0.3)
            if stun.is_stun(data):
                return stun.mapped_address(stun.parse(data))
        except asyncio.TimeoutError:
            continue
    raise RuntimeError("no STUN answer from the location server")


async def _readline() -> dict:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    return json.loads(line)


async def agent(role: str, mode: str, stun_addr, turn_addr, count: int = COUNT, rtt_count: int = RTT_COUNT,
                run_timeout: float = RUN_TIMEOUT) -> dict | None:
    loop = asyncio.get_running_loop()
    ep = _Endpoint()
    relayed = None
    if role == "A" and mode == "relay":
        from aioice.turn import create_turn_endpoint

        transport, ep = await create_turn_endpoint(_Endpoint, turn_addr, TURN_USER, TURN_PASSWORD)
        mapped, relayed = transport.get_extra_info("related_address"), transport.get_extra_info("sockname")
    else:
        transport, _ = await loop.create_datagram_endpoint(lambda: ep, local_addr=("0.0.0.0", 0))
        mapped = await _stun_mapping(transport, ep, stun_addr)
    print(json.dumps({"mapped": list(mapped), "relayed": list(relayed) if relayed else None}), flush=True)
    peer = tuple((await _readline())["peer"])
    try:
        await _hello(transport, ep, peer)
        if role == "B":
            await _echo(transport, ep, peer, run_timeout)
            return None
        return await _ping(transport, ep, peer, count, rtt_count, run_timeout)
    finally:
        transport.close()


async def _hello(transport, ep: _Endpoint, peer) -> None:
    """Send hellos until the other side's hello (or ping) arrives: the hole punch, bounded."""
    deadline = time.monotonic() + HELLO_TIMEOUT
    while time.monotonic() < deadline:
        transport.sendto(HELLO, peer)
        try:
            data, _ = await asyncio.wait_for(ep.queue.get(), HELLO_INTERVAL)
        except asyncio.TimeoutError:
            continue
        if data[:4] in (HELLO, PING):
            for _ in range(3):  # make sure the other side hears us too
                transport.sendto(HELLO, peer)
            if data[:4] == PING:
                transport.sendto(data, peer)
            return
    raise RuntimeError("no hello from the other peer: the path did not open")


async def _echo(transport, ep: _Endpoint, peer, run_timeout: float) -> None:
    deadline = time.monotonic() + run_timeout
    while time.monotonic() < deadline:
        try:
            data, _ = await asyncio.wait_for(ep.queue.get(), 2.0)
        except asyncio.TimeoutError:
            return  # A is done
        if data[:4] == PING:
            transport.sendto(data, peer)


async def _ping(transport, ep: _Endpoint, peer, count: int, rtt_count: int, run_timeout: float) -> dict:
    """Round trips one at a time, then echoes/s with WINDOW in flight (a window is refilled when no
    echo came for three round trips: lost in flight)."""
    rtts = []
    for seq in range(rtt_count):
        transport.sendto(_PING.pack(PING, seq, time.perf_counter()), peer)
        rtt = await _await_echo(ep, seq, 0.5 + 3 * (statistics.median(rtts) / 1000 if rtts else 0.5))
        if rtt is not None:
            rtts.append(rtt)
    refill = max(0.2, 3 * statistics.median(rtts) / 1000) if rtts else 0.2
    sent = got = 0
    t0 = time.perf_counter()
    deadline = time.monotonic() + run_timeout / 2
    while got < count and time.monotonic() < deadline:
        while sent - got < WINDOW and sent < count + WINDOW:
            transport.sendto(_PING.pack(PING, rtt_count + sent, time.perf_counter()), peer)
            sent += 1
        try:
            data, _ = await asyncio.wait_for(ep.queue.get(), refill)
        except asyncio.TimeoutError:
            sent = got  # lost in flight: refill the window
            continue
        if data[:4] == PING:
            got += 1
    elapsed = time.perf_counter() - t0
    return {"count": got, "rate": round(got / elapsed, 1), "rtts": len(rtts),
            "rtt_median_ms": round(statistics.median(rtts), 3) if rtts else None,
            "rtt_p99_ms": round(sorted(rtts)[int(0.99 * (len(rtts) - 1))], 3) if rtts else None}


async def _await_echo(ep: _Endpoint, seq: int, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            data, _ = await asyncio.wait_for(ep.queue.get(), left)
        except asyncio.TimeoutError:
            return None
        if data[:4] == PING and len(data) >= _PING.size:
            _, s, t = _PING.unpack_from(data)
            if s == seq:
                return (time.perf_counter() - t) * 1000
    return None


# ---- bench side (root, in the lab) -----------------------------------------------------------


def _measure(lab, mode: str, count: int = COUNT, rtt_count: int = RTT_COUNT, run_timeout: float = RUN_TIMEOUT) -> dict:
    """One run of both agents in ``mode`` ("direct" | "relay"); returns A's result line."""
    from lab.world.backends.base import wait_for_line
    from lab.world.services import STUN_PORT

    topo = lab.topology
    server = topo.by_role("server")[0]
    sip = topo.address(server)
    a, b = topo.by_role("peer")[:2]
    common = ["--mode", mode, "--stun", f"{sip}:{STUN_PORT}", "--turn", f"{sip}:{TURN_PORT}", "--count", str(count),
              "--rtt-count", str(rtt_count), "--run-timeout", str(run_timeout)]
    procs = {}
    try:
        for node, role in ((a, "A"), (b, "B")):
            procs[role] = lab.popen(node, [sys.executable, "-m", "lab.bench.relay", "agent", "--role", role, *common],
                                    stdin=subprocess.PIPE)
        hello = {r: json.loads(wait_for_line(p, lambda l: l.startswith("{"), 10.0)) for r, p in procs.items()}
        a_addr = hello["A"]["relayed"] or hello["A"]["mapped"]
        for role, peer in (("A", hello["B"]["mapped"]), ("B", a_addr)):
            procs[role].stdin.write(json.dumps({"peer": peer}) + "\n")
            procs[role].stdin.flush()
        out, err = procs["A"].communicate(timeout=run_timeout + 10)
        lines = [l for l in out.splitlines() if l.startswith("{")]
        if procs["A"].returncode != 0 or not lines:
            raise RuntimeError(f"{mode} path agent failed: {err.strip().splitlines()[-1:] or out}")
        return json.loads(lines[-1])
    finally:
        for p in procs.values():
            lab.stop(p)


def bench(lab, count: int = COUNT, rtt_count: int = RTT_COUNT, run_timeout: float = RUN_TIMEOUT) -> dict:
    """Direct and relayed echo rate and round trip between A and B, default NAT pair; ratios direct/relay
    (fewer echoes and a longer timeout on links with delay: ``lab.study.clock``)."""
    import shutil

    if not shutil.which("turnserver"):
        raise RuntimeError("coturn is not installed (apt-get install coturn)")
    from lab.scenarios.run import Runner

    topo = lab.topology
    server = topo.by_role("server")[0]
    routers = [topo.router_of(p) for p in topo.by_role("peer")[:2]]
    for router, profile in zip(routers, PAIR):
        lab.configure_nat(router, profile)
    turn = lab.popen(server, services.turn_server_argv(topo, server, services.turn_pidfile(lab.prefix, "bench-turn")),
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with Runner(lab, Path(tempfile.gettempdir()) / f"dp2pt-bench-path-{lab.prefix}"):
            # The Runner keeps the location server (STUN on STUN_PORT) up for the agents' mapping probes.
            direct = _measure(lab, "direct", count, rtt_count, run_timeout)
            for router, profile in zip(routers, PAIR):  # fresh mappings for the relayed run
                lab.configure_nat(router, profile)
            relay = _measure(lab, "relay", count, rtt_count, run_timeout)
    finally:
        lab.stop(turn)
        services.remove_turn_pidfile(lab.prefix, "bench-turn")
    return {"pair": "/".join(PAIR), "window": WINDOW, "direct": direct, "relay": relay,
            "rate_ratio": round(direct["rate"] / relay["rate"], 2) if relay["rate"] else None,
            "rtt_ratio": round(direct["rtt_median_ms"] / relay["rtt_median_ms"], 3)
            if direct["rtt_median_ms"] and relay["rtt_median_ms"] else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m lab.bench.relay")
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("agent", help="one end of the path measurement (run inside a lab node)")
    g.add_argument("--role", choices=("A", "B"), required=True)
    g.add_argument("--mode", choices=("direct", "relay"), required=True)
    g.add_argument("--stun", required=True, help="HOST:PORT of the location server's STUN")
    g.add_argument("--turn", required=True, help="HOST:PORT of coturn")
    g.add_argument("--count", type=int, default=COUNT, help="echoes for the rate")
    g.add_argument("--rtt-count", type=int, default=RTT_COUNT, help="round trips one at a time")
    g.add_argument("--run-timeout", type=float, default=RUN_TIMEOUT)
    args = p.parse_args(argv)

    def addr(s: str):
        host, port = s.rsplit(":", 1)
        return host, int(port)

    try:
        result = asyncio.run(asyncio.wait_for(agent(args.role, args.mode, addr(args.stun), addr(args.turn),
                                                    args.count, args.rtt_count, args.run_timeout),
                                              args.run_timeout + 10))
    except (RuntimeError, OSError, asyncio.TimeoutError) as exc:
        print(f"bench_path: error: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    if result is not None:
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
