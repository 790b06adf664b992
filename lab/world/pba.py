"""Port-block allocation (RFC 7422 style) for a carrier-grade NAT: a userspace allocator behind NFQUEUE.

A CGN that logs every mapping drowns in logs; one that gives each subscriber *blocks* of N
consecutive ports logs one line per block. Inside a block ports go in sequence or at random; a
subscriber whose block is used up gets a new one from the pool; a block whose mappings all expired
returns to the pool. nf_nat has no per-subscriber allocator, so this module is one:

* :class:`PortBlocks` is the decision, pure (no sockets, no clock): ``decide(src, sport, dst,
  dport)`` returns the external port of a new flow, keeping the profile's mapping behaviour (EIM:
  one port per internal endpoint whatever the destination; ADM: per remote address; APDM: per
  remote endpoint), and ``expire(live)`` frees what conntrack no longer holds.
* :func:`serve` is the I/O: the router's ruleset queues the first packet of every new UDP flow of
  the LAN (iptables ``NFQUEUE``, see :func:`lab.world.nat.queue_rules`); the allocator answers
  ACCEPT with the chosen port as the packet mark, which the ``alloc`` chain turns into the source
  port (``snat ... : meta mark map``). Unmarked flows are dropped there: no allocator, no NAT.
  Every :data:`RECONCILE_EVERY` seconds it reads the router's conntrack table and expires mappings
  that no flow uses any more.

The NFQUEUE protocol (nfnetlink subsystem 3: bind a queue, receive packets, send verdicts) is
spoken with pyroute2's netlink message classes over a plain netlink socket.

Run inside the router's namespace (the lab does it, see ``Lab.configure_nat``)::

    python3 -m lab.world.pba serve --profile cgnat:block=64 --wan-ip 198.51.100.1 --pidfile F
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field

from lab.errors import ConfigError
from lab.world import nat

#: Seconds between two reads of the conntrack table (expiry of unused mappings and blocks).
RECONCILE_EVERY = 1.0
#: A mapping younger than this is kept even if conntrack does not show it yet (its flow may still
#: be on its way through the ruleset).
GRACE = 2.0
#: Bytes of each queued packet copied to userspace: an IPv4 header with options and the UDP header.
COPY_RANGE = 68

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_PACKET = 2
NF_DROP, NF_ACCEPT = 0, 1


class PoolExhausted(Exception):
    """No free block is left in the pool for a subscriber that needs one."""


@dataclass
class _Mapping:
    port: int
    subscriber: str
    internal: tuple[str, int]
    born: float


@dataclass
class _Subscriber:
    blocks: list[int] = field(default_factory=list)  # first ports of its blocks, the current one last
    cursor: int = 0  # sequential order: the next port to try in the current block


class PortBlocks:
    """Per-subscriber port blocks over a pool; the allocator's whole state. Pure and deterministic
    given ``rng``; times are passed in.

    Args:
        prof: a profile with ``block`` > 0 (its mapping, allocation order, pool and block size).
        rng: randomness of the random order (a seeded ``random.Random`` for reproducible tests).
    """

    def __init__(self, prof: nat.NatProfile, rng: random.Random | None = None) -> None:
        if not prof.block:
            raise ValueError(f"profile {prof.spec} has no port blocks")
        self.prof = prof
        self.rng = rng or random.Random()
        pool = prof.pool()
        self.free_blocks: list[int] = list(range(pool.start, pool.stop, prof.block))
        self.subscribers: dict[str, _Subscriber] = {}
        self.mappings: dict[tuple, _Mapping] = {}
        self.by_port: dict[int, _Mapping] = {}
        self.log: list[dict] = []  # block allocations and releases, as a CGN would log them (RFC 7422)

    def key(self, src: str, sport: int, dst: str, dport: int) -> tuple:
        """What one mapping stands for (RFC 4787 §4.1)."""
        if self.prof.mapping is nat.Mapping.EIM:
            return (src, sport)
        if self.prof.mapping is nat.Mapping.ADM:
            return (src, sport, dst)
        return (src, sport, dst, dport)

    def decide(self, src: str, sport: int, dst: str, dport: int, now: float) -> int:
        """The external port of a new flow from ``src:sport`` to ``dst:dport``.

        Raises:
            PoolExhausted: the subscriber needs a new block and none is free.
        """
        k = self.key(src, sport, dst, dport)
        m = self.mappings.get(k)
        if m is not None:
            return m.port
        sub = self.subscribers.setdefault(src, _Subscriber())
        port = self._next_port(src, sub, now)
        m = _Mapping(port, src, (src, sport), now)
        self.mappings[k] = m
        self.by_port[port] = m
        return port

    def _next_port(self, src: str, sub: _Subscriber, now: float) -> int:
        size = self.prof.block
        if self.prof.allocation is nat.Allocation.RANDOM:
            free = [p for b in sub.blocks for p in range(b, b + size) if p not in self.by_port]
            if free:
                return self.rng.choice(free)
            first = self._new_block(src, sub, now)
            return self.rng.randrange(first, first + size)
        while sub.blocks and sub.cursor < size:
            port = sub.blocks[-1] + sub.cursor
            sub.cursor += 1
            if port not in self.by_port:
                return port
        first = self._new_block(src, sub, now)
        sub.cursor = 1
        return first

    def _new_block(self, src: str, sub: _Subscriber, now: float) -> int:
        if not self.free_blocks:
            raise PoolExhausted(f"no free block of {self.prof.block} ports left for {src}")
        if self.prof.allocation is nat.Allocation.RANDOM:
            first = self.free_blocks.pop(self.rng.randrange(len(self.free_blocks)))
        else:
            first = self.free_blocks.pop(0)
        sub.blocks.append(first)
        self.log.append({"t": now, "event": "block", "subscriber": src, "ports": [first, first + self.prof.block - 1]})
        return first

    def expire(self, live: set[tuple[str, int, int]], now: float) -> None:
        """Forget mappings no conntrack entry uses (``live``: internal ip, port, external port), then
        return to the pool every block with no mapping left that is not a subscriber's current one."""
        for k, m in list(self.mappings.items()):
            if now - m.born >= GRACE and (*m.internal, m.port) not in live:
                del self.mappings[k]
                del self.by_port[m.port]
        used = {m.port - (m.port - self.prof.pool().start) % self.prof.block for m in self.mappings.values()}
        for src, sub in self.subscribers.items():
            for b in sub.blocks[:-1]:
                if b not in used:
                    sub.blocks.remove(b)
                    self.free_blocks.append(b)
                    self.log.append({"t": now, "event": "release", "subscriber": src,
                                     "ports": [b, b + self.prof.block - 1]})
        self.free_blocks.sort()

    def snapshot(self) -> dict:
        """Blocks per subscriber and mappings, for the allocator's state file."""
        return {
            "profile": self.prof.spec,
            "subscribers": {s: sub.blocks for s, sub in self.subscribers.items()},
            "mappings": [[*m.internal, m.port] for m in self.mappings.values()],
            "free_blocks": len(self.free_blocks),
            "log": self.log,
        }


# ---- NFQUEUE over netlink (pyroute2 message classes) ---------------------------------------------


def _messages():
    """The NFQUEUE message classes (built on first use: the lab's host side needs no pyroute2 here)."""
    from pyroute2.netlink import nla
    from pyroute2.netlink.nfnetlink import nfgen_msg

    class nfq_config(nfgen_msg):
        nla_map = (("NFQA_CFG_UNSPEC", "none"), ("NFQA_CFG_CMD", "cfg_cmd"), ("NFQA_CFG_PARAMS", "cfg_params"))

        class cfg_cmd(nla):
            fields = (("command", "B"), ("pad", "B"), ("pf", ">H"))

        class cfg_params(nla):
            fields = (("copy_range", ">I"), ("copy_mode", "B"))

    class nfq_packet(nfgen_msg):
        nla_map = (
            ("NFQA_UNSPEC", "none"),
            ("NFQA_PACKET_HDR", "packet_hdr"),
            ("NFQA_VERDICT_HDR", "verdict_hdr"),
            ("NFQA_MARK", "be32"),
            ("NFQA_TIMESTAMP", "hex"),
            ("NFQA_IFINDEX_INDEV", "be32"),
            ("NFQA_IFINDEX_OUTDEV", "be32"),
            ("NFQA_IFINDEX_PHYSINDEV", "be32"),
            ("NFQA_IFINDEX_PHYSOUTDEV", "be32"),
            ("NFQA_HWADDR", "hex"),
            ("NFQA_PAYLOAD", "cdata"),
        )

        class packet_hdr(nla):
            fields = (("packet_id", ">I"), ("hw_protocol", ">H"), ("hook", "B"))

        class verdict_hdr(nla):
            fields = (("verdict", ">I"), ("id", ">I"))

    return nfq_config, nfq_packet


class NfQueue:
    """One bound NFQUEUE: packets in (``read``), verdicts out (``verdict``)."""

    def __init__(self, queue: int) -> None:
        self.queue = queue
        self.config_cls, self.packet_cls = _messages()
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        self._seq = 0
        self._send_config(("NFQA_CFG_CMD", {"command": NFQNL_CFG_CMD_BIND, "pad": 0, "pf": socket.AF_INET}))
        self._send_config(("NFQA_CFG_PARAMS", {"copy_range": COPY_RANGE, "copy_mode": NFQNL_COPY_PACKET}))

    def _send(self, msg, kind: int, ack: bool = False) -> None:
        from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST

        self._seq += 1
        msg["header"]["type"] = (NFNL_SUBSYS_QUEUE << 8) | kind
        msg["header"]["flags"] = NLM_F_REQUEST | (NLM_F_ACK if ack else 0)
        msg["header"]["sequence_number"] = self._seq
        msg["nfgen_family"] = socket.AF_UNSPEC
        msg["res_id"] = self.queue
        msg.encode()
        self.sock.send(msg.data)

    def _send_config(self, attr: tuple) -> None:
        msg = self.config_cls()
        msg["attrs"] = [attr]
        self._send(msg, NFQNL_MSG_CONFIG, ack=True)
        reply = self.sock.recv(4096)
        # An ack is an NLMSG_ERROR (type 2) whose error code is 0.
        (kind,), (error,) = struct.unpack_from("=H", reply, 4), struct.unpack_from("=i", reply, 16)
        if kind == 2 and error:
            raise OSError(-error, f"NFQUEUE {self.queue}: {os.strerror(-error)} (is another allocator bound?)")

    def read(self) -> list[tuple[int, bytes]]:
        """The packets of one netlink read: (packet id, first bytes of the IP packet)."""
        data = self.sock.recv(65536)
        out, offset = [], 0
        while offset + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, offset)
            if length < 16:
                break
            if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                msg = self.packet_cls(data[offset : offset + length])
                msg.decode()
                out.append((msg.get_attr("NFQA_PACKET_HDR")["packet_id"], msg.get_attr("NFQA_PAYLOAD")))
            offset += (length + 3) & ~3
        return out

    def verdict(self, packet_id: int, accept: bool, mark: int | None = None) -> None:
        msg = self.packet_cls()
        msg["attrs"] = [("NFQA_VERDICT_HDR", {"verdict": NF_ACCEPT if accept else NF_DROP, "id": packet_id})]
        if mark is not None:
            msg["attrs"].append(("NFQA_MARK", mark))
        self._send(msg, NFQNL_MSG_VERDICT)

    def close(self) -> None:
        self.sock.close()


def parse_udp(packet: bytes) -> tuple[str, int, str, int] | None:
    """(src, sport, dst, dport) of an IPv4/UDP packet's first bytes, or None."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_UDP:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 4:
        return None
    sport, dport = struct.unpack_from("!HH", packet, ihl)
    return socket.inet_ntoa(packet[12:16]), sport, socket.inet_ntoa(packet[16:20]), dport


def live_mappings(wan_ip: str) -> set[tuple[str, int, int]]:
    """(internal ip, internal port, external port) of every UDP flow conntrack holds on ``wan_ip``."""
    out = subprocess.run(["conntrack", "-L", "-p", "udp", "--reply-dst", wan_ip],
                         capture_output=True, text=True).stdout
    return {(f.src, f.sport, f.mapped) for f in nat.conntrack_udp_flows(out)}


def _replace_previous(pidfile: str) -> None:
    """Stop the allocator this router ran before (its pid in ``pidfile``), then record ours."""
    try:
        old = int(open(pidfile).read().strip())
    except (OSError, ValueError):
        old = 0
    if old and old != os.getpid():
        try:
            os.kill(old, signal.SIGTERM)
            for _ in range(100):
                os.kill(old, 0)
                time.sleep(0.02)
        except ProcessLookupError:
            pass
    with open(pidfile, "w") as f:
        f.write(str(os.getpid()))


def serve(prof: nat.NatProfile, wan_ip: str, pidfile: str | None, state: str | None, emit=print) -> int:
    """Allocate ports for queued flows until SIGTERM; prints one ``ready`` JSON line once bound."""
    if pidfile:
        _replace_previous(pidfile)
    blocks = PortBlocks(prof)
    stop = False

    def on_term(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    q = NfQueue(nat.PBA_QUEUE)
    emit(json.dumps({"event": "ready", "queue": nat.PBA_QUEUE, "profile": prof.spec}))
    sys.stdout.flush()
    next_reconcile = time.monotonic() + RECONCILE_EVERY
    try:
        while not stop:
            ready, _, _ = select.select([q.sock], [], [], max(0.0, next_reconcile - time.monotonic()))
            now = time.monotonic()
            if ready:
                for packet_id, packet in q.read():
                    flow = parse_udp(packet)
                    try:
                        port = blocks.decide(*flow, now) if flow else None
                    except PoolExhausted:
                        port = None
                    q.verdict(packet_id, accept=port is not None, mark=port)
            if now >= next_reconcile:
                blocks.expire(live_mappings(wan_ip), now)
                if state:
                    tmp = state + ".tmp"
                    with open(tmp, "w") as f:
                        json.dump(blocks.snapshot(), f)
                    os.replace(tmp, state)
                next_reconcile = now + RECONCILE_EVERY
    finally:
        q.close()
        if pidfile:
            try:
                if int(open(pidfile).read().strip()) == os.getpid():
                    os.unlink(pidfile)
            except (OSError, ValueError):
                pass
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m lab.world.pba", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="allocate ports for the router's queued flows (inside its namespace)")
    s.add_argument("--profile", required=True, help="a NAT profile with block=N")
    s.add_argument("--wan-ip", required=True)
    s.add_argument("--pidfile", help="stop the allocator recorded here first, then record this one")
    s.add_argument("--state", help="write blocks and mappings here (JSON) after every reconciliation")
    args = p.parse_args(argv)
    try:
        prof = nat.parse_profile(args.profile)
        if not prof.block:
            raise ConfigError(f"profile {prof.spec} has no port blocks (block=N)")
        return serve(prof, args.wan_ip, args.pidfile, args.state)
    except (ConfigError, OSError) as exc:
        print(f"lab.world.pba: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
