"""Several processes answering STUN on the server's ports (``dp2pt server --stun-workers N``).

Each STUN address is a SO_REUSEPORT group: the server's own socket first, then one socket per
worker, all bound by the server (so their order in the group is known) and handed to the worker
processes.  On the main port a classic BPF program steers each datagram (Linux
SO_ATTACH_REUSEPORT_CBPF): STUN (first byte below 0x40) to a worker chosen by the source address,
anything else to index 0, the server's socket, so the control protocol never leaves the server's
event loop.  A worker that dies takes its sockets out of the groups; the kernel then hashes STUN over
the sockets left, and control still goes to index 0.

A worker is ``python3 -m dp2pt.aio.stun_workers CONFIG`` serving :class:`StunPort` s; it stops when
its stdin closes (the server closed it, or died) and prints its counters as one JSON line.
"""

from __future__ import annotations

import ctypes
import json
import socket
import struct
import subprocess
import sys
from collections import Counter

from dp2pt.aio.stun_fast import StunPort, serve
from dp2pt.errors import ConfigError
from dp2pt.proto.stun_server import StunAddresses

Address = tuple[str, int]

SO_ATTACH_REUSEPORT_CBPF = 51
SKF_NET_OFF = -0x100000
STOP_TIMEOUT = 2.0  # seconds a worker gets to report its counters after its stdin closes

# Classic BPF opcodes (linux/filter.h).
_LDB_ABS, _LDW_ABS, _LDH_ABS = 0x30, 0x20, 0x28
_JGE_K, _TAX, _XOR_X, _MOD_K, _ADD_K, _RET_A, _RET_K = 0x35, 0x07, 0xAC, 0x94, 0x04, 0x16, 0x06


def steering_program(workers: int) -> list[tuple[int, int, int, int]]:
    """cBPF for the main port's group: non-STUN -> 0 (the server), STUN -> 1 + hash(source) % workers.

    The program sees the UDP payload at offset 0 and the IP header at SKF_NET_OFF; the source
    address word and the IPv4 source port make the hash (for IPv6 two words of the source address).
    An empty datagram fails the first load, which returns 0: the server counts it.
    """
    net = SKF_NET_OFF & 0xFFFFFFFF
    return [
        (_LDB_ABS, 0, 0, 0),  # A = first payload byte
        (_JGE_K, 7, 0, 0x40),  # top bits set: not STUN -> control
        (_LDW_ABS, 0, 0, net + 12),  # A = source address (IPv4)
        (_TAX, 0, 0, 0),
        (_LDH_ABS, 0, 0, net + 20),  # A = source port (IPv4 without options)
        (_XOR_X, 0, 0, 0),
        (_MOD_K, 0, 0, workers),
        (_ADD_K, 0, 0, 1),
        (_RET_A, 0, 0, 0),
        (_RET_K, 0, 0, 0),  # control: the server's socket
    ]


class _FProg(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def attach_steering(sock: socket.socket, workers: int) -> None:
    """Attach :func:`steering_program` to ``sock``'s reuseport group.

    Raises:
        ConfigError: the kernel refuses it (not Linux >= 4.5).
    """
    program = steering_program(workers)
    code = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *insn) for insn in program))
    fprog = _FProg(len(program), ctypes.addressof(code))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, bytes(fprog))
    except OSError as exc:
        raise ConfigError(f"--stun-workers needs SO_ATTACH_REUSEPORT_CBPF (Linux >= 4.5): {exc.strerror}") from None


class Workers:
    """The worker processes of one server, each given one socket of every STUN address's group."""

    def __init__(self, addrs: StunAddresses, groups: dict[Address, list[socket.socket]]) -> None:
        count = len(next(iter(groups.values())))
        self.procs: list[subprocess.Popen[str]] = []
        for w in range(count):
            socks = [(local, groups[local][w]) for local in addrs.sockets()]
            config = {"addrs": [addrs.ip, addrs.port, addrs.alt_port, addrs.alt_ip],
                      "sockets": [[local[0], local[1], s.fileno()] for local, s in socks]}
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "dp2pt.aio.stun_workers", json.dumps(config)],
                pass_fds=[s.fileno() for _, s in socks], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for group in groups.values():  # the workers hold them now; a dead worker's sockets leave the group
            for s in group:
                s.close()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> Counter[str]:
        """Close every worker's stdin and add up the counters they print."""
        total: Counter[str] = Counter()
        for proc in self.procs:
            try:
                out, _ = proc.communicate(timeout=STOP_TIMEOUT)  # closes its stdin first
                total.update(json.loads(out or "{}"))
            except (subprocess.TimeoutExpired, ValueError):
                proc.kill()
                proc.wait()
                total["stun_worker_lost"] += 1
        return total


def run(config: dict) -> Counter[str]:
    """A worker's life: serve its sockets until stdin closes; returns its counters."""
    ip, port, alt_port, alt_ip = config["addrs"]
    addrs = StunAddresses(ip, port, alt_port, alt_ip)
    stats: Counter[str] = Counter()
    sockets = {(h, p): socket.socket(fileno=fd) for h, p, fd in config["sockets"]}
    for sock in sockets.values():
        sock.setblocking(False)
    serve([StunPort(sock, local, addrs, sockets, stats) for local, sock in sockets.items()], sys.stdin.fileno())
    stats["stun_binding_by_workers"] = stats["stun_binding"]
    return stats


def main(argv: list[str]) -> int:
    stats = run(json.loads(argv[0]))
    print(json.dumps(stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
