"""What a capture of the public segment says about one exchange, step by step (spec FIG. 2, steps 1-17).

Pure classification, no drawing: :func:`classify` turns the packets seen on the "real Internet 16"
into :class:`Event` rows, each labelled with the spec's step number, so a test can assert the
order of the steps and :mod:`lab.report.draw` can draw the ladder.  Rules (docs/CONTRACT.md):

* STUN Binding requests from NAT-A's WAN: the first transaction is step 3, the second step 5 (a
  single one is step 5: the simplified protocol skips 3/4); responses are 4 / 6.  From NAT-B the
  same with 9/11 and 10/12.  Later transactions (extra probes) carry no step.
* TCP control lines (JSON): ``login``/``login_ok`` are step 1 (A's side) or 2 (B's side);
  ``report`` is 7 from A, 13 from B; ``peer_report`` and ``punch`` carry their step in a field.
* D2PT datagrams (magic ``b"D2PT"``): punch (type 1) from NAT-B is step 15, from NAT-A step 16;
  the punch reply (type 2) is step 17; data (3) and data acks (4) follow without a step.
* Drops (only the public segment is captured): when the cell names the NATs' profiles, the far
  NAT's RFC 4787 filtering decides from what that NAT sent out before; otherwise a punch is
  *dropped* when no punch reply (step 17) later travels on that same port (a step-15 punch to
  NAT-A port p unless a reply later goes to p; a step-16 punch to NAT-B port q unless a reply
  later comes from q).

Any other agent's capture (ICE, a user's program: the cell's ``agent`` in ``result.json``) is drawn
on the same lanes without the spec's steps (:func:`classify_any`): STUN transactions with a server,
TURN messages and ChannelData with the relay, connectivity checks (STUN between the NATs) and data;
a datagram between the NATs is marked dropped when the far NAT's filtering refuses it (or, with the
filtering unknown, when the far NAT had not yet sent anything on that 5-tuple).

Inputs: the pcaps of a cell directory (``*.pcap``; UDP and TCP may be in separate files, they are
merged by time) and :class:`Addresses` (NAT-A WAN, NAT-B WAN, the servers): from ``addresses.json``
in the cell or run directory if present, else from the peers' result lines (``mapped`` is the NAT's
WAN address) and the capture (servers = where the NATs send STUN and control traffic).
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dp2pt.errors import RemoteProtocolError
from dp2pt.proto import datagram
from dp2pt.proto.datagram import Kind
from dp2pt.proto.stun import is_stun
from lab.errors import LabError
from lab.world.capture import Packet, is_relayed_data, read_packets

#: How each direct-datagram kind is labelled on the ladder.
D2PT_LABELS = {Kind.PUNCH: "punch", Kind.REPLY: "reply", Kind.DATA: "data", Kind.DATA_ACK: "ack"}
STUN_BINDING_REQUEST, STUN_BINDING_SUCCESS = 0x0001, 0x0101
#: First and second STUN transaction of each side (spec steps 3/5 and 9/11), responses one step later.
PROBE_STEPS = {"A": (3, 5), "B": (9, 11)}
LOGIN_STEP = {"A": 1, "B": 2}
REPORT_STEP = {"A": 7, "B": 13}
PUNCH_STEP = {"B": 15, "A": 16}
REPLY_STEP = 17
LANES = ("A", "NAT-A", "server", "NAT-B", "B")


class ReportError(LabError):
    """The run directory lacks what a report needs (no pcap, no addresses)."""

    exit_code = 2


@dataclass(frozen=True)
class Addresses:
    """Public-segment addresses of one exchange: NAT-A's WAN, NAT-B's WAN, the location server(s)."""

    nat_a: str
    nat_b: str
    servers: tuple[str, ...] = ()
    #: side ("A"/"B") -> RFC 4787 filtering ("EIF"/"ADF"/"APDF") of that NAT, when the cell says.
    filtering: dict = field(default_factory=dict, compare=False, hash=False)

    def side(self, ip: str) -> str | None:
        return {self.nat_a: "A", self.nat_b: "B"}.get(ip)


@dataclass
class Event:
    """One arrow of the ladder."""

    t: float  # seconds since the first packet
    src_lane: str
    dst_lane: str
    step: int | None
    label: str
    kind: str  # "stun" | "control" | "punch" | "reply" | "data" | "ack" | "check" | "relay" | "other"
    src: tuple[str, int]
    dst: tuple[str, int]
    dropped_at: str | None = None  # lane where the packet died (a NAT), None if delivered

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Ladder:
    addresses: Addresses
    events: list[Event] = field(default_factory=list)
    control_captured: bool = False  # were TCP control lines in the capture?

    @property
    def steps(self) -> list[int]:
        """Step numbers in capture order, runs of the same step collapsed (retransmissions, k punches)."""
        out: list[int] = []
        for e in self.events:
            if e.step is not None and (not out or out[-1] != e.step):
                out.append(e.step)
        return out


def contains_in_order(steps: list[int], wanted) -> bool:
    """True if ``wanted`` is a subsequence of ``steps``."""
    it = iter(steps)
    return all(any(s == w for s in it) for w in wanted)


# ---- reading ---------------------------------------------------------------------------------


def load_addresses(cell_dir: Path, packets: list[Packet]) -> Addresses:
    """``addresses.json`` (cell dir, then its parent) or the peers' ``mapped`` IPs plus the capture."""
    for d in (cell_dir, cell_dir.parent):
        f = d / "addresses.json"
        if f.is_file():
            doc = json.loads(f.read_text())
            return Addresses(doc["nat_a"], doc["nat_b"], tuple(doc.get("servers", ())))
    wan = {}
    for side, name in (("A", "a.json"), ("B", "b.json")):
        try:
            mapped = json.loads((cell_dir / name).read_text()).get("mapped")
        except (OSError, ValueError):
            mapped = None
        if mapped:
            wan[side] = mapped[0]
    if len(wan) < 2:
        raise ReportError(f"{cell_dir}: no addresses.json and the peers' results name no mapped address")
    servers = sorted({p.dst[0] for p in packets if p.src[0] in wan.values() and is_stun(p.payload)
                      and p.dst[0] not in wan.values()}
                     | {p.dst[0] for p in packets if p.proto == "tcp" and p.src[0] in wan.values()})
    return Addresses(wan["A"], wan["B"], tuple(servers))


# ---- classification --------------------------------------------------------------------------


def _lane(ip: str, addrs: Addresses, inner: bool) -> str:
    """The lane of an address; ``inner`` maps a NAT's WAN to the peer behind it (the NAT forwarded)."""
    side = addrs.side(ip)
    if side is None:
        return "server"
    return side if inner else f"NAT-{side}"


def classify(packets: list[Packet], addrs: Addresses) -> Ladder:
    """Label each packet with its spec step (see the module docstring for the rules)."""
    ladder = Ladder(addrs, control_captured=any(p.proto == "tcp" for p in packets))
    if not packets:
        return ladder
    t0 = packets[0].t
    txids: dict[str, list[bytes]] = {"A": [], "B": []}
    step_of_tx: dict[bytes, int] = {}
    for p in packets:
        s_side, d_side = addrs.side(p.src[0]), addrs.side(p.dst[0])
        src_lane, dst_lane = _lane(p.src[0], addrs, True), _lane(p.dst[0], addrs, True)
        step, label, kind = None, "", "other"
        ports = f"{p.src[1]}→{p.dst[1]}"
        if p.proto == "tcp":
            msg = _json(p.payload)
            mtype = msg.get("type", "?") if msg else "?"
            kind, label = "control", f"{mtype} (tcp {ports})"
            side = s_side or d_side
            if mtype in ("login", "login_ok") and side:
                step = LOGIN_STEP[side]
            elif mtype == "report" and s_side:
                step = REPORT_STEP[s_side]
            elif mtype in ("peer_report", "punch") and isinstance(msg.get("step"), int):
                step = msg["step"]
        elif datagram.is_direct(p.payload) and s_side and d_side:
            try:
                dgram = datagram.parse(p.payload)
                kind, index = D2PT_LABELS[dgram.kind], dgram.index
            except RemoteProtocolError:
                kind, index = "other", 0
            if kind == "punch":
                step = PUNCH_STEP[s_side]
                label = f"punch #{index} {ports}"
            elif kind == "reply":
                step, label = REPLY_STEP, f"reply #{index} {ports}"
            else:
                label = f"{kind} {ports}"
        elif is_stun(p.payload):
            mtype = struct.unpack_from("!H", p.payload, 0)[0]
            tx = p.payload[8:20]
            kind = "stun"
            if mtype == STUN_BINDING_REQUEST and s_side:
                if tx not in step_of_tx:
                    txids[s_side].append(tx)
                    n = len(txids[s_side])
                    step_of_tx[tx] = PROBE_STEPS[s_side][n - 1] if n <= 2 else 0
                step = step_of_tx[tx] or None
                label = f"binding {ports}"
            elif mtype == STUN_BINDING_SUCCESS and d_side:
                req = step_of_tx.get(tx)
                step = req + 1 if req else None
                label = f"binding ok {ports}"
            else:
                label = f"stun {ports}"
        else:
            label = f"udp {ports}"
        ladder.events.append(Event(round(p.t - t0, 6), src_lane, dst_lane, step, label, kind, p.src, p.dst))
    _relabel_single_probes(ladder, txids, step_of_tx)
    _mark_drops(ladder)
    return ladder


def classify_any(packets: list[Packet], addrs: Addresses) -> Ladder:
    """Label each packet of any agent's exchange by what it is, without spec steps (module docstring)."""
    ladder = Ladder(addrs, control_captured=any(p.proto == "tcp" for p in packets))
    if not packets:
        return ladder
    t0 = packets[0].t
    for p in packets:
        s_side, d_side = addrs.side(p.src[0]), addrs.side(p.dst[0])
        ports = f"{p.src[1]}→{p.dst[1]}"
        if p.proto == "tcp":
            kind, label = "control", f"{p.payload.split(b' ', 1)[0][:12].decode('ascii', 'replace')} (tcp {ports})"
        elif s_side and d_side:
            kind = "check" if is_stun(p.payload) else "data"
            label = f"check: {_stun_name(p.payload)} {ports}" if kind == "check" else f"data {ports}"
        elif is_relayed_data(p.payload):
            kind, label = "relay", f"relayed data {ports}"
        elif is_stun(p.payload):
            kind, label = "stun", f"{_stun_name(p.payload)} {ports}"
        else:
            kind, label = "other", f"udp {ports}"
        ladder.events.append(Event(round(p.t - t0, 6), _lane(p.src[0], addrs, True), _lane(p.dst[0], addrs, True),
                                   None, label, kind, p.src, p.dst))
    _mark_direct_drops(ladder)
    return ladder


#: STUN/TURN message types (method and class) as the ladder names them.
STUN_NAMES = {0x0001: "binding", 0x0101: "binding ok", 0x0111: "binding error", 0x0003: "allocate",
              0x0103: "allocate ok", 0x0113: "allocate error", 0x0004: "refresh", 0x0104: "refresh ok",
              0x0008: "permission", 0x0108: "permission ok", 0x0009: "channel bind", 0x0109: "channel bind ok",
              0x0119: "channel bind error", 0x0016: "send", 0x0017: "data indication"}


def _stun_name(payload: bytes) -> str:
    mtype = struct.unpack_from("!H", payload, 0)[0]
    return STUN_NAMES.get(mtype, f"stun {mtype:#06x}")


def _mark_direct_drops(ladder: Ladder) -> None:
    """Datagrams between the NATs that the far NAT refused (its filtering, or no flow back yet)."""
    events, filtering = ladder.events, ladder.addresses.filtering
    for i, e in enumerate(events):
        far = ladder.addresses.side(e.dst[0])
        if not (far and ladder.addresses.side(e.src[0])):
            continue
        rule = filtering.get(far)
        if rule:
            delivered = _filter_passes(events[:i], events, e, rule)
        else:
            delivered = any(x.src == e.dst and x.dst == e.src for x in events[:i])
        if not delivered:
            e.dropped_at, e.dst_lane = f"NAT-{far}", f"NAT-{far}"


def _relabel_single_probes(ladder: Ladder, txids: dict, step_of_tx: dict) -> None:
    """One probe on a side is the simplified protocol (FIG. 3): steps 3/4 skipped, so it is 5/6 (11/12)."""
    for side, txs in txids.items():
        if len(txs) == 1:
            first, second = PROBE_STEPS[side]
            for e in ladder.events:
                if e.kind == "stun" and e.step in (first, first + 1) and _side_of(e, ladder.addresses) == side:
                    e.step += second - first


def _side_of(e: Event, addrs: Addresses) -> str | None:
    return addrs.side(e.src[0]) or addrs.side(e.dst[0])


def _mark_drops(ladder: Ladder) -> None:
    """Mark the punches that died at the far NAT.

    With the far NAT's filtering known (RFC 4787 §5, from the cell's profile) the NAT's own rule is
    applied: a punch to (NAT, p) passes if NAT has a mapping at p (something left it from p) and the
    filter lets the sender in (EIF: anyone; ADF: NAT sent to the sender's IP before; APDF: NAT sent
    from p to the sender's IP and port before).  Unknown filtering: the public-segment-only rule —
    delivered only if a punch reply (step 17) later travels on that same port.
    """
    events = ladder.events
    filtering = ladder.addresses.filtering
    for i, e in enumerate(events):
        if e.kind != "punch":
            continue
        far = "NAT-A" if e.step == PUNCH_STEP["B"] else "NAT-B"
        rule = filtering.get(far[-1])
        if rule:
            delivered = _filter_passes(events[:i], events, e, rule)
        else:
            later = [r for r in events[i + 1:] if r.kind == "reply"]
            delivered = (any(r.dst == e.dst for r in later) if far == "NAT-A"
                         else any(r.src == e.dst for r in later))
        if not delivered:
            e.dropped_at, e.dst_lane = far, far


def _filter_passes(before: list[Event], events: list[Event], punch: Event, rule: str) -> bool:
    """RFC 4787 filtering of ``punch`` at its destination NAT, from what that NAT sent out."""
    far_ip, port = punch.dst
    if not any(e.src == (far_ip, port) for e in events):
        return False  # no mapping on that port: nothing behind it to deliver to
    if rule == "EIF":
        return True
    if rule == "ADF":
        return any(e.src[0] == far_ip and e.dst[0] == punch.src[0] for e in before)
    return any(e.src == (far_ip, port) and e.dst == punch.src for e in before)


def _json(line: bytes) -> dict | None:
    try:
        msg = json.loads(line)
    except (UnicodeDecodeError, ValueError):
        return None
    return msg if isinstance(msg, dict) else None


def ladder_of(cell_dir: Path) -> Ladder:
    """Read a cell directory (pcaps + peer results or addresses.json) and classify its exchange.

    Raises:
        ReportError: no pcap in the directory, or no way to know the NATs' WAN addresses.
    """
    cell_dir = Path(cell_dir)
    pcaps = sorted(cell_dir.glob("*.pcap"))
    if not pcaps:
        raise ReportError(f"{cell_dir}: no .pcap file")
    packets = read_packets(pcaps)
    addrs = load_addresses(cell_dir, packets)
    cell = _cell_of(cell_dir)
    addrs.filtering.update(_filtering_of(cell))
    return (classify if cell.get("agent", "dp2pt") == "dp2pt" else classify_any)(packets, addrs)


def _cell_of(cell_dir: Path) -> dict:
    """The cell of result.json ({} when there is none: a pcap alone is read as dp2pt's)."""
    try:
        return json.loads((cell_dir / "result.json").read_text()).get("cell") or {}
    except (OSError, ValueError):
        return {}


def _filtering_of(cell: dict) -> dict:
    """The NATs' filtering from the cell's profiles ({} when unknown)."""
    from lab.world import nat

    try:
        return {side: nat.parse_profile(cell[key]).filtering.name
                for side, key in (("A", "nat_a"), ("B", "nat_b")) if cell.get(key)}
    except (KeyError, LabError):
        return {}
