"""Measuring what a lab link does: round-trip time, one-way loss, throughput (run inside nodes).

Link conditions are claims until measured (:mod:`lab.world.links`). Three small tools, each run
in a node with ``python -m lab.world.measure ...`` and printing one JSON line:

* ``rtt DST``: ICMP echo requests (the far node's kernel answers: no process there to wait for),
  receive times from the kernel's timestamp of each reply (``SO_TIMESTAMPNS``), so this side's
  scheduling does not count as link delay;
* ``send DST:PORT`` / ``recv PORT``: numbered UDP datagrams at a paced rate, and their receiver's
  count (one-way loss) and arrival times (throughput of link-layer bytes, as ``rate`` counts them).

Everything is bounded in count and time, and only to lab addresses (the lab's own TEST-NET and
private segments).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import select
import socket
import statistics
import struct
import sys
import time

from lab.errors import ConfigError

MAX_COUNT = 100_000
MAX_DURATION = 120.0
MAX_RATE = 50_000.0  # datagrams per second
#: Ethernet (14) + IPv4 (20) + UDP (8) around each datagram's payload: what a link's rate counts.
UDP_FRAME_OVERHEAD = 42
ALLOWED = tuple(ipaddress.IPv4Network(n) for n in ("198.51.100.0/24", "203.0.113.0/24", "10.0.0.0/8",
                                                    "100.64.0.0/10", "127.0.0.0/8"))
SO_TIMESTAMPNS = 35
SO_TIMESTAMPING = 37
#: Software timestamps on transmit and receive, transmit ones without the packet (TSONLY).
TIMESTAMPING_FLAGS = (1 << 1) | (1 << 3) | (1 << 4) | (1 << 11)
_HEADER = struct.Struct("!IQ")  # datagram number, send time (ns)


def _check_destination(ip: str) -> None:
    if not any(ipaddress.IPv4Address(ip) in net for net in ALLOWED):
        raise ConfigError(f"{ip} is not a lab address")


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _echo_request(ident: int, seq: int) -> bytes:
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"dp2pt-rtt" * 4
    return body[:2] + struct.pack("!H", _checksum(body)) + body[4:]


def rtt(dst: str, count: int, interval: float, timeout: float = 2.0) -> dict:
    """ICMP echo round trips to ``dst``: every sample in ms (None for a lost one), one at a time.

    Both ends of a sample are the kernel's timestamps (``SO_TIMESTAMPING``: when the request left
    the socket layer, when the reply arrived), so this process being scheduled late costs nothing.
    """
    _check_destination(dst)
    if not 1 <= count <= MAX_COUNT or count * interval > MAX_DURATION:
        raise ConfigError(f"rtt: count must be 1..{MAX_COUNT} and count x interval <= {MAX_DURATION:g} s")
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, TIMESTAMPING_FLAGS)
    ident = os.getpid() & 0xFFFF
    samples: list[float | None] = []
    try:
        for seq in range(count):
            started = time.time_ns()
            sock.sendto(_echo_request(ident, seq), (dst, 0))
            sent = _sent_at(sock) or started
            samples.append(_await_reply(sock, ident, seq, sent, timeout))
            left = interval - (time.time_ns() - started) / 1e9
            if left > 0:
                time.sleep(left)
    finally:
        sock.close()
    got = sorted(s for s in samples if s is not None)
    return {"dst": dst, "sent": count, "received": len(got), "samples_ms": samples,
            "median_ms": statistics.median(got) if got else None,
            "stdev_ms": statistics.stdev(got) if len(got) > 1 else None,
            "min_ms": got[0] if got else None, "max_ms": got[-1] if got else None}


def _kernel_time(ancillary) -> int | None:
    """The software timestamp (ns, CLOCK_REALTIME) of an SCM_TIMESTAMPING message, if any."""
    for level, ctype, value in ancillary:
        if level == socket.SOL_SOCKET and ctype == SO_TIMESTAMPING and len(value) >= 16:
            sec, nsec = struct.unpack("qq", value[:16])
            if sec or nsec:
                return sec * 10**9 + nsec
    return None


def _sent_at(sock: socket.socket) -> int | None:
    """The kernel's transmit timestamp of the datagram just sent (from the error queue)."""
    deadline = time.monotonic() + 0.05
    while time.monotonic() < deadline:
        try:
            _, ancillary, _, _ = sock.recvmsg(1, 256, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except BlockingIOError:
            select.select([], [], [sock], 0.001)
            continue
        return _kernel_time(ancillary)
    return None


def _await_reply(sock: socket.socket, ident: int, seq: int, started: int, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            return None
        data, ancillary, _, _ = sock.recvmsg(2048, 256)
        ihl = (data[0] & 0x0F) * 4
        kind, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
        if kind != 0 or rid != ident or rseq != seq:
            continue
        received = _kernel_time(ancillary) or time.time_ns()
        return (received - started) / 1e6
    return None


def send(dst: str, port: int, count: int, rate: float, size: int) -> dict:
    """``count`` numbered datagrams of ``size`` payload bytes to ``dst:port``, paced at ``rate`` per second."""
    _check_destination(dst)
    if not 1 <= count <= MAX_COUNT or not 0 < rate <= MAX_RATE or count / rate > MAX_DURATION:
        raise ConfigError(f"send: count 1..{MAX_COUNT}, rate up to {MAX_RATE:g}/s, at most {MAX_DURATION:g} s")
    if not _HEADER.size <= size <= 1472:
        raise ConfigError(f"send: size must be {_HEADER.size}..1472 bytes")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    pad = b"\0" * (size - _HEADER.size)
    start = time.monotonic()
    errors = 0
    for n in range(count):
        due = start + n / rate
        while (left := due - time.monotonic()) > 0:
            time.sleep(min(left, 0.001) if left > 0.002 else 0)
        try:
            sock.sendto(_HEADER.pack(n, time.time_ns()) + pad, (dst, port))
        except OSError:
            errors += 1
    took = time.monotonic() - start
    sock.close()
    return {"sent": count, "errors": errors, "seconds": round(took, 4), "rate_sent": round(count / took, 1)}


def recv(port: int, expect: int, duration: float, ready_line: bool = True) -> dict:
    """Count numbered datagrams on ``port`` until ``expect`` arrived or ``duration`` passed (idle 1 s
    after the first ends it too); arrival times from the kernel."""
    if not 0 < duration <= MAX_DURATION:
        raise ConfigError(f"recv: duration must be within {MAX_DURATION:g} s")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind(("0.0.0.0", port))
    if ready_line:
        print(json.dumps({"event": "ready", "port": port}), flush=True)
    seen: set[int] = set()
    duplicates = 0
    first = last = None
    first_bytes = total_bytes = 0
    one_way = []
    deadline = time.monotonic() + duration
    while len(seen) < expect and (left := deadline - time.monotonic()) > 0:
        wait = min(left, 1.0) if seen else left
        if not select.select([sock], [], [], wait)[0]:
            if seen:
                break
            continue
        data, ancillary, _, _ = sock.recvmsg(65536, 64)
        at = time.time_ns()
        for level, ctype, value in ancillary:
            if level == socket.SOL_SOCKET and ctype == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", value[:16])
                at = sec * 10**9 + nsec
        if len(data) < _HEADER.size:
            continue
        n, sent_ns = _HEADER.unpack(data[:_HEADER.size])
        if n in seen:
            duplicates += 1
            continue
        seen.add(n)
        frame = len(data) + UDP_FRAME_OVERHEAD
        if first is None:
            first, first_bytes = at, frame
        last = at
        total_bytes += frame
        one_way.append((at - sent_ns) / 1e6)
    sock.close()
    span = (last - first) / 1e9 if first is not None and last != first else 0.0
    return {"received": len(seen), "duplicates": duplicates, "span_s": span,
            "rate_bit": (total_bytes - first_bytes) * 8 / span if span else None,
            "one_way_median_ms": statistics.median(one_way) if one_way else None,
            "one_way_p99_ms": sorted(one_way)[int(0.99 * (len(one_way) - 1))] if one_way else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.world.measure", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("rtt", help="ICMP echo round trips")
    r.add_argument("dst")
    r.add_argument("--count", type=int, default=100)
    r.add_argument("--interval", type=float, default=0.01)
    s = sub.add_parser("send", help="numbered UDP datagrams, paced")
    s.add_argument("dst", help="IP:PORT")
    s.add_argument("--count", type=int, default=1000)
    s.add_argument("--rate", type=float, default=1000.0, help="datagrams per second")
    s.add_argument("--size", type=int, default=100, help="payload bytes")
    v = sub.add_parser("recv", help="count numbered UDP datagrams")
    v.add_argument("port", type=int)
    v.add_argument("--expect", type=int, default=MAX_COUNT)
    v.add_argument("--duration", type=float, default=30.0)
    args = p.parse_args(argv)
    try:
        if args.command == "rtt":
            out = rtt(args.dst, args.count, args.interval)
        elif args.command == "send":
            host, _, port = args.dst.rpartition(":")
            out = send(host, int(port), args.count, args.rate, args.size)
        else:
            out = recv(args.port, args.expect, args.duration)
    except (ConfigError, OSError) as exc:
        print(f"measure: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
