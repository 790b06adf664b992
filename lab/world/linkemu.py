"""The userspace link emulator: delay, jitter, loss and rate where the kernel has no netem.

This kernel (like CI's, WSL2's and Docker Desktop's) has no ``sch_netem``, so the lab builds the
same behaviour (:mod:`lab.world.links`) in a process of its own. Where it sits: a link's wire is the
veth between a node and its segment's bridge. For each conditioned link the emulator takes the
bridge-side end of that veth off the bridge and puts a TAP device on the bridge in its place, then
relays frames between the two — node -> segment ("up": read from the veth end with an AF_PACKET
socket, written into the TAP) and segment -> node ("down": read from the TAP, sent out of the veth
end). Every frame is held until its link releases it, so the node (a NAT) and the segment see
frames in the order and at the times the link delivers them. Nothing changes inside the node.

Frames keep their virtio-net header on both sides (``PACKET_VNET_HDR``, ``IFF_VNET_HDR``), so a
frame whose checksum the sending stack left to the "hardware" (veth's offload) is still finished
by the kernel after the relay, and the frames stay byte-for-byte what the node sent. A TCP GSO
super-frame counts as one frame for loss and rate (the lab's control messages are far smaller).

Timing: one process serves every link of a lab, single-threaded: ``select`` with a microsecond
timeout on every socket and the next release time of one heap, batched reads, timer slack of 1 ns,
the garbage collector off, and — when allowed — ``SCHED_FIFO`` so that it does not queue behind
other jobs of a shared machine (a kernel qdisc would not either). ``make bench`` measures how many
frames per second it relays before the added delay leaves its tolerance.

The lab drives it through a Unix socket, one JSON request per connection (:mod:`lab.world.linkctl`
is the client): ``apply`` (the full set of conditioned links: new ones are wired in, changed ones
updated in place, missing ones wired back to the bridge), ``stats`` and ``stop``. SIGTERM also
wires every link back and exits.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import gc
import heapq
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from lab.world.links import Conditions

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
VNET_HDR_LEN = 10  # struct virtio_net_hdr, the same on a packet socket and a TAP
CLONE_NEWNET = 0x40000000
PR_SET_TIMERSLACK = 29
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # root may exceed the sysctl maximum (not in Python's socket)
#: Largest frame read (a GSO super-frame plus its virtio-net header).
FRAME_MAX = 65536 + VNET_HDR_LEN
#: Frames read from one socket per wake-up before the loop looks at the clock again.
BATCH = 32
#: Socket buffers: frames wait here while the loop is busy, instead of being dropped.
SOCKET_BUFFER = 4 * 1024 * 1024
#: The loop stops sleeping this long before a frame is due and polls its sockets until then.
SPIN_S = 200e-6
IDLE_WAKE_S = 1.0
REALTIME_PRIORITY = 10
CONTROL_TIMEOUT_S = 5.0

_libc = ctypes.CDLL(None, use_errno=True)


class WiringError(Exception):
    """A link could not be wired through the emulator (no such interface, bridge, namespace)."""


# ---- one direction of one link (pure: time and randomness are passed in) ------------------------


class Direction:
    """Decides each frame's fate on one direction of a link, after netem: loss, queue limit, rate
    (serialisation behind the previous frame), then delay ± uniform jitter."""

    def __init__(self, conditions: Conditions, rng: random.Random) -> None:
        self.conditions = conditions
        self.rng = rng
        self.busy_until = 0.0
        self.waiting = 0
        self.frames = self.lost = self.overflow = self.delivered = self.send_errors = 0
        self.bytes = 0

    def admit(self, now: float, size: int, extra_s: float = 0.0) -> float | None:
        """The time a frame of ``size`` bytes arriving at ``now`` leaves the link, or None if dropped.

        ``extra_s`` is a per-destination delay on top (regions).
        """
        c = self.conditions
        self.frames += 1
        if self.waiting >= c.limit:
            self.overflow += 1
            return None
        if c.loss and self.rng.random() < c.loss:
            self.lost += 1
            return None
        delay = c.delay_ms / 1000 + extra_s
        if c.jitter_ms:
            delay = max(0.0, delay + self.rng.uniform(-c.jitter_ms, c.jitter_ms) / 1000)
        depart = now
        if c.rate_bit:
            depart = max(now, self.busy_until) + size * 8 / c.rate_bit
            self.busy_until = depart
        self.waiting += 1
        self.bytes += size
        return depart + delay

    def released(self) -> None:
        self.waiting -= 1
        self.delivered += 1

    def stats(self) -> dict[str, int]:
        return {"frames": self.frames, "bytes": self.bytes, "lost": self.lost, "overflow": self.overflow,
                "delivered": self.delivered, "waiting": self.waiting, "send_errors": self.send_errors}


class Lateness:
    """How late frames leave against their release time: the emulator's own error, measured."""

    #: Upper bounds (microseconds) of the histogram's buckets; the last one catches the rest.
    BUCKETS_US = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.worst = 0.0
        self.histogram = [0] * (len(self.BUCKETS_US) + 1)

    def add(self, late_s: float) -> None:
        self.count += 1
        self.total += late_s
        self.worst = max(self.worst, late_s)
        us = late_s * 1e6
        for i, bound in enumerate(self.BUCKETS_US):
            if us <= bound:
                self.histogram[i] += 1
                return
        self.histogram[-1] += 1

    def quantile_us(self, q: float) -> float | None:
        """Upper bound of the bucket holding the q-quantile (inf when beyond the last bucket)."""
        if not self.count:
            return None
        need, seen = q * self.count, 0
        for i, n in enumerate(self.histogram):
            seen += n
            if seen >= need:
                return float(self.BUCKETS_US[i]) if i < len(self.BUCKETS_US) else float("inf")
        return float("inf")

    def stats(self) -> dict[str, Any]:
        return {"frames": self.count, "mean_us": round(self.total / self.count * 1e6, 1) if self.count else None,
                "p99_us_at_most": self.quantile_us(0.99), "worst_us": round(self.worst * 1e6, 1),
                "histogram_us": dict(zip([*map(str, self.BUCKETS_US), "more"], self.histogram))}


def direction_rng(seed: int | str, key: str, direction: str) -> random.Random:
    """An independent, reproducible stream per (lab seed, link, direction)."""
    return random.Random(f"{seed}/{key}/{direction}")


# ---- namespaces and devices ---------------------------------------------------------------------


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class _InNamespace:
    """``with _InNamespace(path):`` runs the block in another network namespace, then comes back
    (an empty path: the process's own, the host's for a Docker lab)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> None:
        if not self.path:
            return
        self.home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            target = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            os.close(self.home)
            raise WiringError(f"network namespace {self.path} is gone ({exc.strerror})") from None
        try:
            _setns(target)
        finally:
            os.close(target)

    def __exit__(self, *exc: object) -> None:
        if not self.path:
            return
        _setns(self.home)
        os.close(self.home)


def _open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
    except OSError:
        os.close(fd)
        raise
    return fd


def _open_packet_socket(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)  # never read back what we send
        for opt in (SO_RCVBUFFORCE, SO_SNDBUFFORCE):
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        sock.bind((ifname, ETH_P_ALL))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


# ---- one link -----------------------------------------------------------------------------------


@dataclass
class LinkSpec:
    """What the lab tells the emulator about one link (JSON on the control socket).

    ``netns``: where the wire is (a namespace path); ``wire``: the bridge-side end of the node's
    veth; ``bridge``: the segment's bridge; ``tap``: the name to give the TAP put in its place;
    ``by_destination``: destination IPv4 -> extra one-way delay in ms, node -> segment (regions).
    """

    key: str
    netns: str
    wire: str
    bridge: str
    tap: str
    conditions: Conditions
    seed: int | str = 0
    by_destination: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LinkSpec":
        return cls(d["key"], d["netns"], d["wire"], d["bridge"], d["tap"], Conditions.from_dict(d["conditions"]),
                   d.get("seed", 0), {str(k): float(v) for k, v in (d.get("by_destination") or {}).items()})

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "netns": self.netns, "wire": self.wire, "bridge": self.bridge, "tap": self.tap,
                "conditions": self.conditions.to_dict(), "seed": self.seed, "by_destination": self.by_destination}

    @property
    def place(self) -> tuple[str, str, str, str]:
        return self.netns, self.wire, self.bridge, self.tap


class Relay:
    """One conditioned link: the veth end toward the node and the TAP on the bridge, two directions."""

    def __init__(self, spec: LinkSpec) -> None:
        self.spec = spec
        self.up = Direction(spec.conditions, direction_rng(spec.seed, spec.key, "up"))
        self.down = Direction(spec.conditions, direction_rng(spec.seed, spec.key, "down"))
        self.extra = _destination_table(spec.by_destination)
        self.tap_fd = -1
        self.sock: socket.socket | None = None

    def update(self, spec: LinkSpec) -> None:
        """New conditions in place: frames already held keep their release times."""
        self.spec = spec
        self.up.conditions = self.down.conditions = spec.conditions
        self.extra = _destination_table(spec.by_destination)

    def open(self) -> None:
        """Put the TAP on the bridge in place of the veth end, and open both sides.

        Raises:
            WiringError: the namespace, bridge or veth end does not exist (one line, for the lab).
        """
        from pyroute2 import IPRoute

        netns, wire, bridge, tap = self.spec.place
        with _InNamespace(netns):
            try:
                self.tap_fd = _open_tap(tap)
                with IPRoute() as ipr:
                    br, wire_idx, tap_idx = (_index(ipr, name) for name in (bridge, wire, tap))
                    ipr.link("set", index=tap_idx, master=br)
                    ipr.link("set", index=wire_idx, master=0)
                    ipr.link("set", index=tap_idx, state="up")
                self.sock = _open_packet_socket(wire)
            except Exception as exc:  # OSError, pyroute2's NetlinkError: one line for the lab
                self.close()
                raise WiringError(f"{self.spec.key}: cannot wire {wire} through the emulator: {exc}") from None

    def close(self) -> None:
        """Put the veth end back on the bridge (when both still exist) and close both sides."""
        from pyroute2 import IPRoute

        netns, wire, bridge, _ = self.spec.place
        try:
            with _InNamespace(netns), IPRoute() as ipr:
                ipr.link("set", index=_index(ipr, wire), master=_index(ipr, bridge))
        except Exception:  # the lab may be gone already (namespace, veth): nothing to restore
            pass
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.tap_fd >= 0:
            os.close(self.tap_fd)  # a TAP without its file descriptor disappears
            self.tap_fd = -1

    def extra_delay(self, frame: bytes) -> float:
        """Per-destination delay (s) of a node -> segment frame: IPv4 destinations only."""
        if not self.extra or frame[VNET_HDR_LEN + 12:VNET_HDR_LEN + 14] != b"\x08\x00":
            return 0.0
        at = VNET_HDR_LEN + 14 + 16
        return self.extra.get(frame[at:at + 4], 0.0)

    def stats(self) -> dict[str, Any]:
        return {"conditions": self.spec.conditions.spec, "up": self.up.stats(), "down": self.down.stats(),
                "by_destination": self.spec.by_destination}


def _index(ipr, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise WiringError(f"no interface {name}")
    return found[0]


def _destination_table(by_destination: dict[str, float]) -> dict[bytes, float]:
    return {socket.inet_aton(ip): ms / 1000 for ip, ms in by_destination.items() if ms}


# ---- the process --------------------------------------------------------------------------------


class Emulator:
    """Every conditioned link of one lab, one event loop."""

    def __init__(self, control_path: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.relays: dict[str, Relay] = {}
        self.heap: list[tuple[float, int, Callable[[bytes], None], Direction, bytes]] = []
        self.seq = 0
        self.running = True
        self.realtime = False
        self.handlers: dict[int, Callable[[float], None]] = {}
        self.lateness = Lateness()
        self.control_path = control_path
        self.control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.unlink(control_path)
        except FileNotFoundError:
            pass
        self.control.bind(control_path)
        os.chmod(control_path, 0o600)
        self.control.listen(8)
        self.handlers[self.control.fileno()] = lambda now: self._serve_control()

    # ---- links ---------------------------------------------------------------------------------

    def apply(self, specs: list[LinkSpec]) -> None:
        """Make the set of relays equal ``specs``: wire new links in, update, wire removed ones back."""
        wanted = {s.key: s for s in specs}
        for key in [k for k in self.relays if k not in wanted or self.relays[k].spec.place != wanted[k].place]:
            self._remove(key)
        for key, spec in wanted.items():
            if key in self.relays:
                self.relays[key].update(spec)
                continue
            relay = Relay(spec)
            relay.open()
            self.relays[key] = relay
            assert relay.sock is not None
            self.handlers[relay.sock.fileno()] = lambda now, r=relay: self._read_up(r, now)
            self.handlers[relay.tap_fd] = lambda now, r=relay: self._read_down(r, now)

    def _remove(self, key: str) -> None:
        relay = self.relays.pop(key)
        if relay.sock is not None:
            self.handlers.pop(relay.sock.fileno(), None)
        self.handlers.pop(relay.tap_fd, None)
        # Frames it still holds are dropped with it.
        self.heap = [e for e in self.heap if e[3] not in (relay.up, relay.down)]
        heapq.heapify(self.heap)
        relay.close()

    def close(self) -> None:
        for key in list(self.relays):
            self._remove(key)
        self.control.close()
        try:
            os.unlink(self.control_path)
        except FileNotFoundError:
            pass

    # ---- the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        clock = self.clock
        while self.running:
            now = clock()
            heap = self.heap  # apply() may have rebuilt it
            while heap and heap[0][0] <= now:
                due, _, send, direction, frame = heapq.heappop(heap)
                self.lateness.add(clock() - due)
                try:
                    send(frame)
                    direction.released()
                except OSError:
                    direction.waiting -= 1
                    direction.send_errors += 1
            if heap:
                # Sleep until shortly before the next release, then poll until it is due: a timer
                # wake-up (of a virtual CPU especially) is late by tens of microseconds.
                timeout = max(0.0, heap[0][0] - clock() - SPIN_S)
            else:
                timeout = IDLE_WAKE_S
            try:
                ready = select.select(list(self.handlers), [], [], timeout)[0]
            except InterruptedError:
                continue
            now = clock()
            for fd in ready:
                handler = self.handlers.get(fd)
                if handler is not None:
                    handler(now)

    def _hold(self, now: float, frame: bytes, direction: Direction, send: Callable[[bytes], None],
              extra: float = 0.0) -> None:
        at = direction.admit(now, len(frame) - VNET_HDR_LEN, extra)
        if at is None:
            return
        self.seq += 1
        heapq.heappush(self.heap, (at, self.seq, send, direction, frame))

    def _read_up(self, relay: Relay, now: float) -> None:
        """Node -> segment: from the veth end into the TAP."""
        sock, tap = relay.sock, relay.tap_fd
        assert sock is not None
        send = lambda frame: os.write(tap, frame)  # noqa: E731
        for _ in range(BATCH):
            try:
                frame = sock.recv(FRAME_MAX)
            except BlockingIOError:
                return
            except OSError:  # the interface went away (the lab is going down)
                return
            self._hold(now, frame, relay.up, send, relay.extra_delay(frame))

    def _read_down(self, relay: Relay, now: float) -> None:
        """Segment -> node: from the TAP out of the veth end."""
        sock = relay.sock
        assert sock is not None
        for _ in range(BATCH):
            try:
                frame = os.read(relay.tap_fd, FRAME_MAX)
            except BlockingIOError:
                return
            except OSError:
                return
            self._hold(now, frame, relay.down, sock.send)

    # ---- control -------------------------------------------------------------------------------

    def _serve_control(self) -> None:
        try:
            conn, _ = self.control.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(CONTROL_TIMEOUT_S)
            try:
                request = json.loads(read_line(conn))
                reply = self.handle(request)
            except (OSError, ValueError) as exc:
                reply = {"ok": False, "error": f"bad request: {exc}"}
            try:
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                pass

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """One control request -> its answer (``ok`` and either the stats or a one-line ``error``)."""
        op = request.get("op")
        try:
            if op == "apply":
                self.apply([LinkSpec.from_dict(d) for d in request.get("links", [])])
            elif op == "stop":
                self.running = False
            elif op != "stats":
                return {"ok": False, "error": f"unknown op {op!r}"}
        except (WiringError, KeyError, TypeError, ValueError) as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True, "pid": os.getpid(), "realtime": self.realtime, "lateness": self.lateness.stats(),
                "links": {k: r.stats() for k, r in self.relays.items()}}


def read_line(conn: socket.socket) -> bytes:
    """One JSON line of the control protocol (at most 1 MiB)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > 1 << 20:
            raise ValueError("request too large")
    return data


def tune_for_timing(realtime: bool) -> bool:
    """Timer slack 1 ns, no garbage collector pauses, SCHED_FIFO if asked and allowed; True if realtime."""
    _libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
    gc.collect()
    gc.freeze()
    gc.disable()
    if not realtime:
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
        return True
    except (OSError, AttributeError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.world.linkemu", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the emulator of one lab (started by lab.world.linkctl)")
    serve.add_argument("--lab", required=True, help="the lab's prefix (names this process for down --all)")
    serve.add_argument("--socket", required=True, help="path of the control socket")
    serve.add_argument("--no-realtime", dest="realtime", action="store_false", help="stay a normal process")
    args = parser.parse_args(argv)
    emulator = Emulator(args.socket)
    emulator.realtime = tune_for_timing(args.realtime)

    def stop(signum, frame) -> None:  # noqa: ARG001
        emulator.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(json.dumps({"event": "ready", "pid": os.getpid(), "realtime": emulator.realtime}), flush=True)
    try:
        emulator.run()
    finally:
        emulator.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
