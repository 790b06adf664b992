"""The location server under abuse (issue 13): what each request kind gets back, and memory under a
client that never reads.

* **Reply/request bytes per request kind.**  Every kind of request a remote can send — the UDP ones
  before its address is verified, the UDP and TCP ones after — goes to a real ``dp2pt server`` on
  loopback from its own socket, and everything that comes back within a quiet second (so
  retransmissions count) is added up.  Before verification a ratio above 1 would make the server a
  reflector; STUN Binding is the one exception (RFC 8489: anyone may ask; one small fixed answer).
* **RSS under a non-reading client.**  A client floods lines that are each answered (an error 3.5x
  the line's size) and never reads; the server's RSS before and after, and how much the client got to
  send before the server stopped reading it.

Both are bounded: one request per kind, a flood of a few seconds.  Run alone:
``python3 -m lab.bench.abuse``.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import sys
import time

from dp2pt.proto import auth, messages, stun
from dp2pt.proto.auth import padded_login
from dp2pt.proto.link import ControlLink
from lab.bench.memory import rss_kib
from lab.bench.stun import dp2pt_server, free_tcp_port

QUIET = 1.0  # seconds without an answer after which a request is done (the first retransmission is at 0.2 s)
FLOOD_SECONDS = 5.0
FLOOD_LINE = b'{"type":"ping"}\n'  # before login each is answered "log in first"
NONCE = "0123456789abcdef"

Address = tuple[str, int]


def unverified_udp_requests() -> dict[str, bytes]:
    """What anyone can send over UDP without having proved its address (spoofable, so reflectable)."""
    login = {"type": "login", "id": "bench", "nonce": NONCE}
    return {
        "UDP login, padded, no cookie": padded_login(login),
        "UDP login, 25 bytes (the issue's reflector)": b'{"type":"login","id":"A"}',
        "UDP login, forged cookie": padded_login({**login, "cookie": "0" * 40}),
        "UDP control message, not logged in": messages.encode({"type": "ping", "n": 1, "mac": "0" * 32}),
        "UDP garbage": os.urandom(200),
        "UDP deeply nested JSON": b'{"type":"login","id":' + b"[" * 2000 + b"]" * 2000 + b"}",
    }


async def collect(sock: socket.socket, quiet: float = QUIET, most: int = 50) -> list[bytes]:
    """Datagrams (or TCP chunks) arriving on ``sock`` until ``quiet`` seconds pass without one."""
    loop = asyncio.get_running_loop()
    got: list[bytes] = []
    while len(got) < most:
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 65535), quiet)
        except asyncio.TimeoutError:
            break
        if not data:
            break
        got.append(data)
    return got


def _socket(kind: int = socket.SOCK_DGRAM) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def _row(kind: str, sent: int, got: list[bytes], verified: bool) -> dict:
    back = sum(map(len, got))
    return {"kind": kind, "verified": verified, "request_bytes": sent, "reply_bytes": back,
            "replies": len(got), "ratio": round(back / sent, 2) if sent else None}


async def _unverified(udp: Address, kind: str, request: bytes) -> dict:
    with _socket() as sock:
        sock.sendto(request, udp)
        return _row(kind, len(request), await collect(sock), verified=False)


async def _udp_logged_in(udp: Address) -> list[dict]:
    """The UDP handshake as an honest peer does it, then a ping; every answer is acknowledged."""
    loop = asyncio.get_running_loop()
    link = ControlLink("peer", reliable=True)
    with _socket() as sock:
        sock.sendto(padded_login({"type": "login", "id": "bench-udp", "nonce": NONCE}), udp)
        (cookie,) = await collect(sock, quiet=0.5, most=1)
        login = messages.encode({"type": "login", "id": "bench-udp", "nonce": NONCE,
                                 "cookie": json.loads(cookie)["cookie"]})
        rows = []
        for kind, request in (("UDP login echoing its cookie", login), ("UDP ping, logged in", None)):
            if request is None:
                request = link.send({"type": "ping"}, time.monotonic())
            sock.sendto(request, udp)
            sent, got = len(request), []
            while (data := await collect(sock, most=1)):
                got += data
                msg = messages.decode(data[0])
                if msg["type"] == "login_ok":
                    link.authenticate(auth.key_bytes(msg["key"]))  # type: ignore[arg-type]
                _, ack = link.receive(msg)
                if ack is not None:
                    await loop.sock_sendto(sock, ack, udp)
                    sent += len(ack)
            rows.append(_row(kind, sent, got, verified=True))
        return rows


async def _tcp(tcp: Address) -> list[dict]:
    loop = asyncio.get_running_loop()
    link = ControlLink("peer", reliable=False)
    rows = []
    with _socket(socket.SOCK_STREAM) as sock:
        await loop.sock_connect(sock, tcp)
        steps = (("TCP line before login", FLOOD_LINE),
                 ("TCP login", messages.encode({"type": "login", "id": "bench-tcp", "nonce": NONCE}) + b"\n"),
                 ("TCP ping, logged in", None))
        for kind, request in steps:
            if request is None:
                request = link.send({"type": "ping"}, 0.0) + b"\n"
            await loop.sock_sendall(sock, request)
            got = await collect(sock, quiet=0.3)
            for line in b"".join(got).splitlines():
                msg = messages.decode(line)
                if msg["type"] == "login_ok":
                    link.authenticate(auth.key_bytes(msg["key"]))  # type: ignore[arg-type]
            rows.append(_row(kind, len(request), got, verified=True))
    return rows


async def _ratios(udp: Address, tcp: Address) -> list[dict]:
    probe = bytes(stun.binding_request())
    jobs = [_unverified(udp, kind, req) for kind, req in unverified_udp_requests().items()]
    jobs.append(_unverified(udp, "STUN Binding request (RFC 8489: answered to anyone)", probe))
    unverified = await asyncio.gather(*jobs)
    return [*unverified, *await _udp_logged_in(udp), *await _tcp(tcp)]


def reply_ratios() -> list[dict]:
    """One row per request kind: bytes in, bytes (and datagrams) back, their ratio."""
    tcp = free_tcp_port()
    with dp2pt_server(tcp_port=tcp) as (_proc, udp):
        return asyncio.run(_ratios(udp, ("127.0.0.1", tcp)))


def flood(addr: Address, seconds: float, line: bytes = FLOOD_LINE) -> int:
    """Write ``line`` to ``addr`` as fast as the server takes it for ``seconds``, never reading; bytes sent."""
    chunk = line * 4096
    sent = 0
    with socket.socket() as hog:
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.connect(addr)
        hog.setblocking(False)
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if select.select([], [hog], [], left)[1]:
                try:
                    sent += hog.send(chunk)
                except BlockingIOError:
                    pass
                except ConnectionError:
                    break
    return sent


def slow_reader_rss(seconds: float = FLOOD_SECONDS) -> dict:
    """Server RSS before and after ``seconds`` of a flood from a client that never reads."""
    tcp = free_tcp_port()
    with dp2pt_server(tcp_port=tcp, extra=("--login-timeout", str(seconds + 30))) as (proc, _udp):
        time.sleep(0.3)
        before = rss_kib(proc.pid)
        sent = flood(("127.0.0.1", tcp), seconds)
        after = rss_kib(proc.pid)
    return {"seconds": seconds, "client_sent_bytes": sent, "rss_before_kib": before, "rss_after_kib": after}


def bench() -> dict:
    return {"reply_ratios": reply_ratios(), "slow_reader": slow_reader_rss()}


def markdown_rows(result: dict) -> list[str]:
    """Rows for the bench table (lab.bench.suite.markdown)."""
    rows = []
    for r in result["reply_ratios"]:
        when = "address verified (cookie or TCP handshake)" if r["verified"] else "address not verified"
        rows.append(f"| Reply/request bytes: {r['kind']} | {r['ratio']} | | | {r['request_bytes']} B in, "
                    f"{r['reply_bytes']} B back in {r['replies']} repl{'y' if r['replies'] == 1 else 'ies'}; {when} |")
    s = result["slow_reader"]
    rows.append(f"| Server RSS under a client that never reads ({s['seconds']:g} s flood) | "
                f"{s['rss_after_kib'] / 1024:.1f} MiB | {s['rss_before_kib'] / 1024:.1f} MiB before | | "
                f"the client got {s['client_sent_bytes'] / 2**20:.1f} MiB of lines in (each answered, see 'TCP line "
                f"before login') before the server stopped reading it |")
    return rows


if __name__ == "__main__":
    print(json.dumps(bench(), indent=1))
    sys.exit(0)
