"""Servers sharing a directory on Redis under load (issue 15): logins/s, connects/s and memory per
logged-in peer for 1, 2 and 4 location servers sharing one Redis, next to one server without a
directory (the reference), in one run.

How: every configuration gets a fresh ``redis-server`` and its ``dp2pt server --directory``
processes on loopback; a load generator in its own process logs ``PEERS`` peers in (raw TCP logins,
spread round robin over the servers, held open), then runs ``PAIRS`` sessions between real dp2pt
peers (``dp2pt.aio.peer``, as a user's program would: listener A on server i, connector B on server
i + 1, so with several servers every session crosses servers through Redis), each to a direct path on
loopback (no NAT).  A connect counts when both peers report the direct path and its data.

What the numbers mean: on a small machine the servers, Redis and the generator share the cores, so
the rates are the machine's.  What carries over to a bigger one is what each operation costs each
process, read from /proc and Redis's ``INFO``: server CPU per login and per connect, Redis CPU and
commands per login and per connect.  Redis runs commands on one thread, so one second over its CPU
per operation is the rate at which Redis is the limit however many servers share it (``redis_bound_*``).
Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from lab.bench.memory import FD_MARGIN, login, raise_nofile, rss_kib
from lab.bench.stun import _stop, dp2pt_server, free_tcp_port, proc_cpu_seconds
from lab.errors import MissingTool
from lab.world import redis
from lab.world.backends.base import wait_for_line

SERVERS = (1, 2, 4)  # servers sharing one Redis; 0 stands for the reference, one server without Redis
PEERS = 4000  # logged-in peers per configuration (memory per peer, logins/s)
PAIRS = 400  # sessions per configuration (connects/s)
LOGIN_CONCURRENCY = 200
CONNECT_CONCURRENCY = 32
STEP_TIMEOUT = 120.0  # seconds for one phase of the load generator
IDLE = 1.0  # seconds the servers and Redis are watched idle, to take their idle CPU off each phase
SECRET = b"dp2pt bench directory secret, loopback only"


def bench(servers: tuple[int, ...] = SERVERS, peers: int = PEERS, pairs: int = PAIRS) -> dict:
    """Measure each configuration in turn; returns ``{"configs": [...], "peers", "pairs"}``.

    Raises:
        RuntimeError: redis-server is missing, or a server or the generator failed.
    """
    try:
        redis.require()
    except MissingTool as exc:
        raise RuntimeError(str(exc)) from None
    raise_nofile(peers + 4 * pairs + FD_MARGIN)  # inherited by the servers and the generator
    configs = [_measure(n, peers, pairs) for n in (0, *servers)]
    return {"peers": peers, "pairs": pairs, "configs": configs}


def _measure(n: int, peers: int, pairs: int) -> dict:
    """One configuration: ``n`` servers sharing a fresh Redis (0: one server, no directory)."""
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="dp2pt-bench-dir-") as tmp:
        url = stack.enter_context(redis.loopback()) if n else None
        secret = Path(tmp) / "secret"
        secret.write_bytes(SECRET)
        procs, addrs = [], []
        for i in range(max(n, 1)):
            tcp = free_tcp_port()
            extra = ("--max-conns-per-ip", "0", "--name", f"b{i}")
            if url:
                extra += ("--directory", url, "--directory-secret", str(secret))
            proc, _ = stack.enter_context(dp2pt_server(core=None, tcp_port=tcp, extra=extra))
            try:
                wait_for_line(proc, lambda line: '"ready"' in line, 15.0)
            except TimeoutError:
                raise RuntimeError(f"dp2pt server b{i} did not start") from None
            procs.append(proc)
            addrs.append(f"127.0.0.1:{tcp}")
        rds = _RedisProbe(url) if url else None
        client = subprocess.Popen([sys.executable, "-m", "lab.bench.directory", "load", ",".join(addrs),
                                   "--peers", str(peers), "--pairs", str(pairs)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        stack.callback(_stop, client)
        try:
            return _drive(n, procs, client, rds, peers, pairs)
        finally:
            if rds is not None:
                rds.close()


def _drive(n: int, procs: list[subprocess.Popen], client: subprocess.Popen, rds: "_RedisProbe | None",
           peers: int, pairs: int) -> dict:
    """Step the generator through its phases, reading every process's CPU and memory between them.  The
    CPU the servers and Redis spend idle (timers, heartbeats), measured first, is taken off each phase."""
    time.sleep(0.3)
    idle = _Sample(procs, rds)
    time.sleep(IDLE)
    rss0 = [rss_kib(p.pid) for p in procs]
    s0 = _Sample(procs, rds)
    idle_cpu, idle_redis = (s0.cpu - idle.cpu) / (s0.t - idle.t), (s0.redis_cpu - idle.redis_cpu) / (s0.t - idle.t)
    logins = _step(client, "go", "logins")
    s1 = _Sample(procs, rds)
    time.sleep(0.5)  # the servers finish writing their answers
    rss1 = [rss_kib(p.pid) for p in procs]
    _step(client, "go", "pairs")  # 2 * pairs peers logged in, not counted
    s2 = _Sample(procs, rds)
    client_cpu = proc_cpu_seconds(client.pid)
    connects = _step(client, "go", "connects")
    s3 = _Sample(procs, rds)
    client_cpu = proc_cpu_seconds(client.pid) - client_cpu

    def busy(a: _Sample, b: _Sample) -> tuple[float, float]:
        """(servers' CPU, Redis's CPU) between two samples, less what they spend idle."""
        return (max(b.cpu - a.cpu - idle_cpu * (b.t - a.t), 0.0),
                max(b.redis_cpu - a.redis_cpu - idle_redis * (b.t - a.t), 0.0))

    (login_cpu, login_redis), (connect_cpu, connect_redis) = busy(s0, s1), busy(s2, s3)
    out: dict[str, Any] = {
        "servers": n, "directory": bool(n),
        "logins": logins["ok"], "login_failures": logins["failed"], "login_s": logins["s"],
        "logins_per_s": _rate(logins["ok"], logins["s"]),
        "connects": connects["ok"], "connect_failures": connects["failed"], "connect_s": connects["s"],
        "connects_per_s": _rate(connects["ok"], connects["s"]),
        "server_kib_per_peer": round((sum(rss1) - sum(rss0)) / max(logins["ok"], 1), 2),
        "server_cpu_ms_per_login": _per(login_cpu, logins["ok"], 1000),
        "server_cpu_ms_per_connect": _per(connect_cpu, connects["ok"], 1000),
        "servers_idle_cpu_percent": round(100 * idle_cpu, 2),
        "generator_cpu_ms_per_connect": _per(client_cpu, connects["ok"], 1000),
    }
    if rds is not None:
        out.update({
            "redis_bytes_per_peer": round((s1.redis_memory - s0.redis_memory) / max(logins["ok"], 1), 1),
            "redis_cpu_us_per_login": _per(login_redis, logins["ok"], 1e6),
            "redis_cpu_us_per_connect": _per(connect_redis, connects["ok"], 1e6),
            "redis_commands_per_login": _per(s1.redis_calls - s0.redis_calls, logins["ok"], 1),
            "redis_commands_per_connect": _per(s3.redis_calls - s2.redis_calls, connects["ok"], 1),
            "redis_idle_cpu_percent": round(100 * idle_redis, 2),
        })
        out["redis_bound_logins_per_s"] = _bound(out["redis_cpu_us_per_login"])
        out["redis_bound_connects_per_s"] = _bound(out["redis_cpu_us_per_connect"])
    return out


def _step(client: subprocess.Popen, say: str, event: str) -> dict:
    assert client.stdin and client.stdout
    client.stdin.write(say + "\n")
    client.stdin.flush()
    line = wait_for_line(client, lambda l: l.startswith("{"), STEP_TIMEOUT)
    msg = json.loads(line)
    if msg.get("event") != event:
        raise RuntimeError(f"load generator: expected {event}, got {line.strip()[:200]}")
    return msg


class _Sample:
    """The servers' CPU seconds and Redis's memory, CPU seconds and command count, now."""

    def __init__(self, procs: list[subprocess.Popen], rds: "_RedisProbe | None") -> None:
        self.t = time.monotonic()
        self.cpu = sum(proc_cpu_seconds(p.pid) for p in procs)
        info = rds.sample() if rds else {"memory": 0, "cpu": 0.0, "calls": 0}
        self.redis_memory, self.redis_cpu, self.redis_calls = info["memory"], info["cpu"], info["calls"]


def _rate(count: int, seconds: float) -> float | None:
    return round(count / seconds, 1) if seconds > 0 and count else None


def _per(total: float, count: int, scale: float) -> float | None:
    return round(total * scale / count, 2) if count else None


def _bound(us_per_op: float | None) -> float | None:
    return round(1e6 / us_per_op) if us_per_op else None


class _RedisProbe:
    """Redis's memory, CPU seconds and command count, from ``INFO`` (the bench's own connection)."""

    def __init__(self, url: str) -> None:
        import redis as redis_client

        self._client = redis_client.Redis.from_url(url)

    def sample(self) -> dict:
        info = self._client.info("all")
        calls = sum(v["calls"] for k, v in info.items() if k.startswith("cmdstat_"))
        return {"memory": info["used_memory"], "cpu": info["used_cpu_sys"] + info["used_cpu_user"],
                "calls": calls - 1}  # minus this INFO

    def close(self) -> None:
        self._client.close()


def markdown_rows(r: dict) -> list[str]:
    """The README table's rows: one per measure, the configurations side by side (see lab.bench.suite)."""
    configs = {c["servers"]: c for c in r["configs"]}
    ref = configs.get(0, {})
    shared = [n for n in sorted(configs) if n]

    def side(key: str, unit: str = "") -> str:
        return " / ".join(_fmt(configs[n].get(key)) for n in shared) + unit

    names = "/".join(str(n) for n in shared)
    return [
        f"| Logins/s, {names} servers sharing one Redis ({r['peers']:,} peers, raw TCP logins) | {side('logins_per_s')} "
        f"| {_fmt(ref.get('logins_per_s'))} (one server, no Redis) | | servers and generator share the machine's cores |",
        f"| Connects/s to a direct path, {names} servers ({r['pairs']} pairs, loopback, A on server i, B on i + 1) | "
        f"{side('connects_per_s')} | {_fmt(ref.get('connects_per_s'))} (one server, no Redis) | | generator CPU per "
        f"connect {side('generator_cpu_ms_per_connect', ' ms')} |",
        f"| Server CPU per login / per connect, {names} servers | {side('server_cpu_ms_per_login', ' ms')} / "
        f"{side('server_cpu_ms_per_connect', ' ms')} | {_fmt(ref.get('server_cpu_ms_per_login'))} / "
        f"{_fmt(ref.get('server_cpu_ms_per_connect'))} ms | | all servers' CPU over the operations done |",
        f"| Server memory per logged-in peer, {names} servers | {side('server_kib_per_peer', ' KiB')} | "
        f"{_fmt(ref.get('server_kib_per_peer'))} KiB (no Redis) | | RSS growth over the logins |",
        f"| Redis per logged-in peer: memory, CPU and commands per login | {side('redis_bytes_per_peer', ' B')}; "
        f"{side('redis_cpu_us_per_login', ' µs')}; {side('redis_commands_per_login')} | | | Redis is the limit at "
        f"{side('redis_bound_logins_per_s')} logins/s (one core over its CPU per login) |",
        f"| Redis per connect: CPU and commands | {side('redis_cpu_us_per_connect', ' µs')}; "
        f"{side('redis_commands_per_connect')} | | | Redis is the limit at {side('redis_bound_connects_per_s')} "
        "connects/s |",
    ]


def _fmt(v: Any) -> str:
    from lab.bench.suite import _fmt as fmt

    return fmt(v)


# ---- the load generator (its own process) ----------------------------------------------------


async def _load(servers: list[tuple[str, int]], peers: int, pairs: int) -> None:
    from dp2pt.aio.peer import Peer, PeerConfig

    def say(**msg: Any) -> None:
        print(json.dumps(msg), flush=True)

    loop = asyncio.get_running_loop()
    go = lambda: loop.run_in_executor(None, sys.stdin.readline)  # noqa: E731
    sem = asyncio.Semaphore(LOGIN_CONCURRENCY)
    held: list = []
    await go()
    t0 = time.monotonic()
    ok = await asyncio.wait_for(asyncio.gather(*(
        login(*servers[i % len(servers)], f"load-{i}", sem, held) for i in range(peers))), STEP_TIMEOUT)
    say(event="logins", ok=sum(ok), failed=peers - sum(ok), s=round(time.monotonic() - t0, 3))
    await go()

    cfg = dict(timeout=20.0, punch_timeout=2.0, count=1, retry=0.0)
    listeners = [Peer(PeerConfig(id=f"A{i}", server=servers[i % len(servers)], **cfg)) for i in range(pairs)]
    connectors = [Peer(PeerConfig(id=f"B{i}", server=servers[(i + 1) % len(servers)], **cfg)) for i in range(pairs)]
    sem = asyncio.Semaphore(LOGIN_CONCURRENCY)

    async def log_in(peer: Any) -> None:
        async with sem:
            await peer.login()

    await asyncio.wait_for(asyncio.gather(*(log_in(p) for p in listeners + connectors)), STEP_TIMEOUT)
    heard: list[dict] = []
    listening = [asyncio.ensure_future(a.listen(heard.append, sessions=1)) for a in listeners]
    say(event="pairs")
    await go()

    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def connect(i: int) -> bool:
        async with sem:
            try:
                result = await connectors[i].connect(f"A{i}")
            except Exception:  # a refused or timed-out connect is a failure of this measurement, not a crash
                return False
            return bool(result["ok"] and result["direct"])

    t0 = time.monotonic()
    done = await asyncio.wait_for(asyncio.gather(*(connect(i) for i in range(pairs))), STEP_TIMEOUT)
    await asyncio.wait(listening, timeout=5.0)
    took = time.monotonic() - t0
    both = sum(1 for i, ok in enumerate(done) if ok and any(r["peer"] == f"B{i}" and r["ok"] for r in heard))
    say(event="connects", ok=both, failed=pairs - both, s=round(took, 3))
    await go()
    for p in listeners + connectors:
        await p.close()
    for w in held:
        w.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m lab.bench.directory")
    sub = p.add_subparsers(dest="cmd", required=True)
    load = sub.add_parser("load", help="the load generator: log PEERS in, then run PAIRS sessions (stdin steps it)")
    load.add_argument("servers", help="comma-separated 127.0.0.1:PORT of the servers")
    load.add_argument("--peers", type=int, default=PEERS)
    load.add_argument("--pairs", type=int, default=PAIRS)
    r = sub.add_parser("run", help="measure 1, 2 and 4 servers sharing one Redis next to one without; print JSON")
    r.add_argument("--peers", type=int, default=PEERS)
    r.add_argument("--pairs", type=int, default=PAIRS)
    args = p.parse_args(argv)
    if args.cmd == "load":
        servers = []
        for text in args.servers.split(","):
            host, _, port = text.rpartition(":")
            if host not in ("127.0.0.1", "localhost"):
                raise SystemExit("bench: error: the load only goes to loopback")
            servers.append((host, int(port)))
        raise_nofile(args.peers + 4 * args.pairs + FD_MARGIN)
        asyncio.run(_load(servers, args.peers, args.pairs))
    else:
        print(json.dumps(bench(peers=args.peers, pairs=args.pairs), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
