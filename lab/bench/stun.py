"""STUN Binding throughput of a location server on one core, next to coturn (issue 6).

Why a home-made load generator: the same generator must drive both servers in the same run, so the
ratio dp2pt/coturn compares servers, not tools.  It is bounded in every dimension: a fixed duration,
a fixed number of sockets and a fixed in-flight window per socket, and it only talks to loopback.
A socket whose answers stop (a datagram dropped in a full buffer) has its window refilled after
``STALL`` seconds so one loss cannot stall the run; such requests count as lost.

Run the generator alone: ``python3 -m lab.bench.stun gen 127.0.0.1 3478 --duration 3`` (prints JSON).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from dp2pt.proto import stun

DURATION = 3.0  # seconds counted
WARMUP = 0.3  # seconds sent but not counted (server caches, socket buffers)
SOCKETS = 8
WINDOW = 16  # requests in flight per socket
STALL = 0.1  # seconds without an answer before a socket's window is refilled
POOL = 256  # distinct pre-built requests (transaction ids), reused round-robin
SERVER_CORE, GEN_CORE = "0", "1"
START_TIMEOUT = 10.0
START_ATTEMPTS = 3


def _loopback(host: str) -> str:
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"bench: error: STUN load only goes to loopback, not {host}")
    return host


def generate(target: tuple[str, int], duration: float = DURATION, sockets: int = SOCKETS,
             window: int = WINDOW) -> dict:
    """Pipeline Binding requests at ``target`` and count the Binding responses (one process, epoll).

    Returns:
        {"sent", "answered", "lost", "duration_s", "rate", "gen_cpu_s"} for the counted interval.
    """
    _loopback(target[0])
    pool = [bytes(stun.binding_request()) for _ in range(POOL)]
    socks = []
    ep = select.epoll()
    try:
        for _ in range(sockets):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            s.connect(target)
            socks.append(s)
            ep.register(s.fileno(), select.EPOLLIN)
        by_fd = {s.fileno(): s for s in socks}
        inflight = {s.fileno(): 0 for s in socks}
        last = {s.fileno(): 0.0 for s in socks}
        n = sent = answered = lost = 0
        counting = False
        t0 = time.monotonic()
        start, end = t0 + WARMUP, t0 + WARMUP + duration
        cpu0 = 0.0

        def fill(fd: int, now: float) -> None:
            nonlocal n, sent
            s = by_fd[fd]
            while inflight[fd] < window:
                try:
                    s.send(pool[n % POOL])
                except BlockingIOError:
                    break
                except ConnectionRefusedError:  # ICMP from a closed port: count it as lost
                    break
                n += 1
                inflight[fd] += 1
                if counting:
                    sent += 1
            last[fd] = now

        now = time.monotonic()
        for fd in by_fd:
            fill(fd, now)
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if not counting and now >= start:
                counting, cpu0 = True, _cpu()
            for fd, _ev in ep.poll(0.01):
                s = by_fd[fd]
                for _ in range(window):
                    try:
                        data = s.recv(2048)
                    except (BlockingIOError, ConnectionRefusedError):
                        break
                    inflight[fd] = max(0, inflight[fd] - 1)
                    if counting and stun.is_stun(data):
                        answered += 1
                fill(fd, now)
            for fd in by_fd:
                if now - last[fd] > STALL:
                    if counting:
                        lost += inflight[fd]
                    inflight[fd] = 0
                    fill(fd, now)
        return {"sent": sent, "answered": answered, "lost": lost, "duration_s": duration,
                "rate": round(answered / duration, 1), "gen_cpu_s": round(_cpu() - cpu0, 3)}
    finally:
        ep.close()
        for s in socks:
            s.close()


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def proc_cpu_seconds(pid: int) -> float:
    """utime+stime of a process (all its threads) from /proc, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_udp_port(span: int = 2) -> int:
    """A loopback UDP port with ``span`` consecutive free ports (dp2pt's alt port is PORT+1)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            held = []
            for i in range(span):
                h = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(h)
                h.bind(("127.0.0.1", port + i))
            return port
        except OSError:
            continue
        finally:
            for h in held:
                h.close()
    raise RuntimeError("no free UDP port on loopback")


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(addr: tuple[str, int], within: float) -> bool:
    """True once ``addr`` answers a Binding request (one try per 0.1 s, bounded by ``within``)."""
    deadline = time.monotonic() + within
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.1)
        while time.monotonic() < deadline:
            try:
                s.sendto(bytes(stun.binding_request()), addr)
                if stun.is_stun(s.recv(2048)):
                    return True
            except OSError:
                time.sleep(0.05)
    return False


def _taskset(core: str | None) -> list[str]:
    """Pin to ``core``; None: run anywhere (the all-cores figures)."""
    return ["taskset", "-c", core] if core is not None and shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


@contextmanager
def dp2pt_server(core: str | None = SERVER_CORE, tcp_port: int | None = None, extra: tuple[str, ...] = ()):
    """A dp2pt location server on loopback pinned to ``core`` (TCP control on ``tcp_port`` if given, more
    ``dp2pt server`` arguments in ``extra``); yields (process, STUN address)."""
    udp, tcp = free_udp_port(), tcp_port or free_tcp_port()
    proc = subprocess.Popen(
        _taskset(core) + [sys.executable, "-m", "dp2pt", "server", "--tcp", f"127.0.0.1:{tcp}",
                          "--udp", f"127.0.0.1:{udp}", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        if not answers(("127.0.0.1", udp), START_TIMEOUT):
            raise RuntimeError("dp2pt server did not answer STUN")
        yield proc, ("127.0.0.1", udp)
    finally:
        _stop(proc)


@contextmanager
def coturn_server(core: str | None = SERVER_CORE):
    """coturn ``turnserver --stun-only`` on loopback pinned to ``core`` (None: its default threads on
    every core); yields (process, address).

    UDP only (``--no-tcp``); a port taken between our probe and coturn's bind is retried on a new port.
    """
    if not shutil.which("turnserver"):
        raise FileNotFoundError("turnserver (apt-get install coturn)")
    with tempfile.TemporaryDirectory(prefix="dp2pt-bench-") as tmp:
        for _attempt in range(START_ATTEMPTS):
            port = free_udp_port(1)
            proc = subprocess.Popen(
                _taskset(core) + ["turnserver", "-n", "--listening-ip", "127.0.0.1", "--listening-port",
                                  str(port), "--stun-only", "--no-tcp", "--no-tls", "--no-dtls", "--no-cli",
                                  "--log-file", "stdout", "--simple-log", "--pidfile", f"{tmp}/pid"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                if answers(("127.0.0.1", port), START_TIMEOUT / START_ATTEMPTS):
                    yield proc, ("127.0.0.1", port)
                    return
            finally:
                _stop(proc)
        raise RuntimeError("turnserver did not answer STUN")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def run_generator(addr: tuple[str, int], duration: float, core: str | None = GEN_CORE) -> dict:
    """The generator in its own process on ``core`` (by default not the server's)."""
    out = subprocess.run(
        _taskset(core) + [sys.executable, "-m", "lab.bench.stun", "gen", addr[0], str(addr[1]),
                              "--duration", str(duration)],
        capture_output=True, text=True, timeout=duration + 30, check=True)
    return json.loads(out.stdout)


def tree_cpu_seconds(pid: int) -> float:
    """utime+stime of a process and all its descendants (a server's STUN workers), in seconds."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += proc_cpu_seconds(p)
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # it exited meanwhile
            continue
    return total


def measure(server, duration: float = DURATION, gen_core: str | None = GEN_CORE) -> dict:
    """Load one server (a context manager from above) and add its CPU use to the generator's figures."""
    with server() as (proc, addr):
        cpu0 = tree_cpu_seconds(proc.pid)
        result = run_generator(addr, duration, gen_core)
        # The server's CPU over the whole generator run (warm-up included): ~1.0 means one core saturated.
        result["server_cpu_per_s"] = round((tree_cpu_seconds(proc.pid) - cpu0) / (duration + WARMUP), 2)
    result["per_cpu_s"] = per_cpu(result)
    return result


def per_cpu(r: dict) -> float | None:
    """Answers per CPU-second the server actually got: comparable even when the core was shared."""
    cpu = r.get("server_cpu_per_s")
    return round(r["rate"] / cpu, 1) if r.get("rate") and cpu else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def bench(duration: float = DURATION) -> dict:
    """dp2pt and coturn under the same generator in the same run: each on one core (the generator on
    another), then each on every core (dp2pt with one STUN worker per core, coturn with its default
    threads, the generator unpinned beside them).  Ratios of answers/s and of answers per CPU-second."""
    workers = os.cpu_count() or 1
    out: dict = {"duration_s": duration, "sockets": SOCKETS, "window": WINDOW,
                 "server_core": SERVER_CORE, "generator_core": GEN_CORE, "workers": workers}
    out["dp2pt"] = measure(dp2pt_server, duration)
    out["dp2pt_all_cores"] = measure(partial(dp2pt_server, core=None, extra=("--stun-workers", str(workers))),
                                     duration, gen_core=None)
    try:
        out["coturn"] = measure(coturn_server, duration)
        out["coturn_all_cores"] = measure(partial(coturn_server, core=None), duration, gen_core=None)
    except (FileNotFoundError, RuntimeError) as exc:
        out["coturn"] = out["coturn_all_cores"] = {"error": str(exc)}
    for suffix in ("", "_all_cores"):
        d, c = out["dp2pt" + suffix], out["coturn" + suffix]
        out["ratio" + suffix] = _ratio(d.get("rate"), c.get("rate"))
        out["per_cpu_ratio" + suffix] = _ratio(d.get("per_cpu_s"), c.get("per_cpu_s"))
    return out


def markdown_rows(s: dict) -> list[str]:
    """The README table's STUN rows (see :func:`lab.bench.suite.markdown`)."""
    rows = []
    for suffix, where in (("", "one core each, generator on the other"),
                          ("_all_cores", f"all cores: dp2pt --stun-workers {s.get('workers', '?')}, coturn's "
                                         "default threads, generator beside them")):
        d, c = s.get("dp2pt" + suffix), s.get("coturn" + suffix)
        if not d:
            continue
        c = c or {}
        rows.append(
            f"| STUN Binding answered/s, {where} | {_fmt(d.get('rate'))} | {_fmt(c.get('rate'))} "
            f"(coturn --stun-only) | {_fmt(s.get('ratio' + suffix))} | same generator, {s['duration_s']:g} s, "
            f"{s['sockets']}x{s['window']} in flight; server CPU {_fmt(d.get('server_cpu_per_s'))} vs "
            f"{_fmt(c.get('server_cpu_per_s'))} cores |")
        rows.append(
            f"| STUN Binding answered per server CPU-second, {where} | {_fmt(d.get('per_cpu_s'))} | "
            f"{_fmt(c.get('per_cpu_s'))} (coturn) | {_fmt(s.get('per_cpu_ratio' + suffix))} | the same run "
            "normalised by the CPU each server got (robust to a busy machine) |")
    return rows


def _fmt(v) -> str:
    from lab.bench.suite import _fmt as fmt

    return fmt(v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m lab.bench.stun")
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen", help="run the load generator against HOST PORT and print JSON")
    g.add_argument("host")
    g.add_argument("port", type=int)
    g.add_argument("--duration", type=float, default=DURATION)
    b = sub.add_parser("run", help="dp2pt vs coturn, print JSON")
    b.add_argument("--duration", type=float, default=DURATION)
    args = p.parse_args(argv)
    if args.cmd == "gen":
        print(json.dumps(generate((_loopback(args.host), args.port), args.duration)))
    else:
        print(json.dumps(bench(args.duration), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
