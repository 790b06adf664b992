"""Memory of a dp2pt location server holding N logged-in peers (issue 6: N = 10,000).

Why real logins: the cost that matters is the server's per-peer state (TCP connection, stream
buffers, registry entry), so every peer opens a real TCP connection on loopback and completes the
login procedure (spec steps 1-2).  The logins come from a separate client process with bounded
concurrency so the server sees a realistic arrival pattern and the measurement excludes the client.
Both processes raise RLIMIT_NOFILE to what they need (the hard limit bounds it).

Run the client alone: ``python3 -m lab.bench.memory clients 127.0.0.1 7000 --peers 100``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from lab.bench.stun import _stop, free_tcp_port, free_udp_port
from lab.world.backends.base import wait_for_line

PEERS = 10_000
CONCURRENCY = 200  # logins in progress at once
LOGIN_TIMEOUT = 10.0  # seconds for one login
TOTAL_TIMEOUT = 120.0  # seconds for all logins
FD_MARGIN = 1000  # the server keeps its connection cap a reserve and an accept batch below its limit


def raise_nofile(need: int) -> int:
    """Raise the soft RLIMIT_NOFILE to ``need`` (capped by the hard limit); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` (VmRSS in /proc/PID/status), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def login(host: str, port: int, peer: str, sem: asyncio.Semaphore, conns: list) -> bool:
    """One raw TCP login (spec steps 1-2) held open in ``conns``: True if the server said login_ok."""
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), LOGIN_TIMEOUT)
            writer.write(json.dumps({"type": "login", "id": peer}).encode() + b"\n")
            line = await asyncio.wait_for(reader.readline(), LOGIN_TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            return False
        conns.append(writer)
        return b'"login_ok"' in line


async def _clients(host: str, port: int, peers: int, concurrency: int) -> None:
    sem = asyncio.Semaphore(concurrency)
    conns: list = []
    t0 = time.monotonic()
    results = await asyncio.wait_for(
        asyncio.gather(*(login(host, port, f"bench-{i}", sem, conns) for i in range(peers))), TOTAL_TIMEOUT)
    print(json.dumps({"event": "ready", "ok": sum(results), "failed": peers - sum(results),
                      "login_s": round(time.monotonic() - t0, 2)}), flush=True)
    # Hold the connections (the server keeps the peers logged in) until the bench closes our stdin.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for w in conns:
        w.close()


def bench(peers: int = PEERS, concurrency: int = CONCURRENCY) -> dict:
    """Start a server, log ``peers`` peers in from a client process, read the server's RSS before and after."""
    raise_nofile(peers + FD_MARGIN)  # inherited by both children
    tcp, udp = free_tcp_port(), free_udp_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "dp2pt", "server", "--tcp", f"127.0.0.1:{tcp}", "--udp", f"127.0.0.1:{udp}",
         "--max-conns-per-ip", "0"],  # every login comes from 127.0.0.1
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    client = None
    try:
        try:
            wait_for_line(server, lambda l: '"ready"' in l, 10.0)
        except TimeoutError:
            raise RuntimeError("dp2pt server did not start within 10 s") from None
        time.sleep(0.2)
        before = rss_kib(server.pid)
        client = subprocess.Popen(
            [sys.executable, "-m", "lab.bench.memory", "clients", "127.0.0.1", str(tcp), "--peers", str(peers),
             "--concurrency", str(concurrency)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = client.stdout.readline()
        if not line:
            raise RuntimeError("login client died")
        logins = json.loads(line)
        time.sleep(0.5)  # let the server finish writing login_ok buffers
        after = rss_kib(server.pid)
        ok = logins["ok"]
        return {"peers": peers, "logged_in": ok, "failed": logins["failed"], "login_s": logins["login_s"],
                "rss_idle_kib": before, "rss_kib": after,
                "per_peer_kib": round((after - before) / ok, 2) if ok else None}
    finally:
        if client is not None:
            try:
                client.stdin.close()
            except OSError:
                pass
            _stop(client)
        _stop(server)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m lab.bench.memory")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("clients", help="log PEERS peers in and hold them until stdin closes")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("--peers", type=int, default=PEERS)
    c.add_argument("--concurrency", type=int, default=CONCURRENCY)
    r = sub.add_parser("run", help="server RSS with PEERS logged-in peers, print JSON")
    r.add_argument("--peers", type=int, default=PEERS)
    args = p.parse_args(argv)
    if args.cmd == "clients":
        if args.host not in ("127.0.0.1", "localhost"):
            raise SystemExit("bench: error: logins only go to loopback")
        raise_nofile(args.peers + FD_MARGIN)
        asyncio.run(_clients(args.host, args.port, args.peers, args.concurrency))
    else:
        print(json.dumps(bench(args.peers), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
