"""NAT profiles after RFC 4787, and the pure translation of a profile into an nftables ruleset.

A :class:`NatProfile` is the set of behaviours RFC 4787 names for a UDP NAT:

* mapping (§4.1): endpoint-independent (EIM), address-dependent (ADM), address-and-port-dependent (APDM);
* filtering (§5): endpoint-independent (EIF), address-dependent (ADF), address-and-port-dependent (APDF);
* port assignment (§4.2): ``preserve`` the internal port when it is free, ``sequential`` with a
  step ``delta`` shared by every LAN host (the allocator the spec assumes: "consecutive and
  incremented by one"), or ``random``; optionally in *port blocks* per subscriber (RFC 7422);
* hairpinning (§6) and the UDP mapping timeout (§4.3).

:func:`render_ruleset` is a pure function (profile + router parameters -> ruleset text); the lab
loads it with ``nft -f`` inside the router's namespace, in its own table :data:`TABLE` that is
removed by name. How each behaviour is built with the kernel's own NAT (conntrack + nf_nat):

* EIM + preserve = ``masquerade`` — exactly Linux's iptables MASQUERADE: the source port is kept,
  so one internal endpoint has one mapping whatever the destination. When the kept port would
  give a reply tuple another flow already holds (a second LAN host with the same source port to
  the same remote), nf_nat draws another port at random in 1024-65535
  (``nf_nat_l4proto_unique_tuple``: a random offset for every source NAT): preservation fails
  silently, and only for that remote.
* APDM + sequential = ``snat to WAN : numgen inc mod N map {0: base, 1: base+δ, ...}``: every new
  conntrack (a new 5-tuple, i.e. a new destination) takes the next slot, for all LAN hosts
  together — so a neighbour's new flow "cuts in" (spec, improved protocol). Reloading the table
  resets the counter.
* APDM + random = ``snat to WAN : 1024-65535 random,fully-random``.
* ADM = a dynamic map ``internal ip . port . remote ip -> WAN ip . port`` filled after SNAT: a new
  flow to a remote address the internal endpoint already talks to takes that mapping's port
  (nf_nat only needs the whole reply tuple unique); a new remote address gets a new port from the
  sequential allocator.
* APDF is what conntrack does by itself: only replies of a known 5-tuple pass. An unsolicited
  packet to the WAN (the spec's step 15 punch "discarded by the first NAT-based router") is
  dropped in a *filter* chain, so its conntrack entry is never confirmed — a confirmed unreplied
  entry would later collide with the outbound mapping and make the NAT pick another port.
* EIF / ADF (full / restricted cone) add inbound DNAT from a dynamic map filled on the packet path
  after SNAT: ``mapped port -> internal ip . port`` (EIF) or ``remote ip . mapped port -> ...`` (ADF).
* Hairpinning: a LAN packet to the router's own WAN address is DNATed to whichever internal
  endpoint holds that mapped port (a map filled like the EIF one) and source-NATed to the WAN
  address with the profile's own allocator, so the receiver sees the sender's external address
  and port (RFC 4787 REQ-9). Hairpinned packets reach any live mapping whatever its filtering, as
  in VPP's NAT44 (its hairpinning looks the session up by external address and port only). Without
  ``hairpin`` such a packet is dropped silently in the input filter chain (no ICMP, no conntrack).
* Port blocks (``block=N``): nf_nat has no per-subscriber allocator, so a userspace one decides
  (:mod:`lab.world.pba`): new UDP flows are queued to it by iptables' ``NFQUEUE`` target
  (:func:`queue_rules`), it picks the port (inside the subscriber's current block, sequentially or
  at random; a new block from the pool when the current one is used up) and returns it as the
  packet mark, which the ruleset turns into the source port (``meta mark map``). It also keeps
  the mapping behaviour (EIM: one port per internal endpoint), so EIM without port preservation
  is buildable there. No allocator, no translation: unmarked flows are dropped.

Combinations this router cannot build (EIM with a non-preserving allocator outside port blocks,
ADM with port preservation, APDM with a filtering looser than APDF, ...) are refused with
:class:`~lab.errors.UnsupportedNat` rather than silently approximated.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from lab.errors import UnknownProfile, UnsupportedNat

if TYPE_CHECKING:  # pragma: no cover
    from lab.world.topology import Topology

TABLE = "dp2pt_nat"
COMMENT_PREFIX = "dp2pt profile="
#: First port of the sequential allocator, and how many slots its numgen cycles through (at most).
SEQUENTIAL_BASE = 20000
SEQUENTIAL_SLOTS = 1000
RANDOM_RANGE = (1024, 65535)
DEFAULT_UDP_TIMEOUT = 30  # seconds; kernel default of nf_conntrack_udp_timeout
DEFAULT_UDP_STREAM_TIMEOUT = 120  # seconds; kernel default of nf_conntrack_udp_timeout_stream
#: Port-block allocation (RFC 7422): the pool starts at ``base`` and holds this many ports.
PBA_POOL_PORTS = 4096
DEFAULT_BLOCK = 64
#: NFQUEUE number the port-block allocator listens on (queues are per network namespace).
PBA_QUEUE = 12
#: The iptables chain (mangle table) that queues new flows to the allocator, removed by name.
PBA_CHAIN = "DP2PT_PBA"


class Mapping(enum.Enum):
    """RFC 4787 §4.1 mapping behaviour."""

    EIM = "endpoint-independent"
    ADM = "address-dependent"
    APDM = "address-and-port-dependent"


class Filtering(enum.Enum):
    """RFC 4787 §5 filtering behaviour."""

    EIF = "endpoint-independent"
    ADF = "address-dependent"
    APDF = "address-and-port-dependent"


class Allocation(enum.Enum):
    """RFC 4787 §4.2 port assignment (inside a port block, when the profile has blocks)."""

    PRESERVE = "preserve"
    SEQUENTIAL = "sequential"
    RANDOM = "random"


@dataclass(frozen=True)
class NatProfile:
    """One NAT router's behaviour. Build with :func:`parse_profile`; ``name`` is the label.

    ``block`` > 0: ports are handed out in blocks of that many per subscriber (LAN source
    address), by the userspace allocator of :mod:`lab.world.pba`.
    """

    name: str
    mapping: Mapping
    filtering: Filtering
    allocation: Allocation
    delta: int = 1
    base: int = SEQUENTIAL_BASE
    hairpin: bool = False
    udp_timeout: int = DEFAULT_UDP_TIMEOUT
    udp_stream_timeout: int = DEFAULT_UDP_STREAM_TIMEOUT
    block: int = 0

    @property
    def spec(self) -> str:
        """The canonical string form, parseable by :func:`parse_profile`."""
        default = _BASE_PROFILES.get(self.name)
        params = []
        if self.allocation is Allocation.SEQUENTIAL and self.delta != 1:
            params.append(f"delta={self.delta}")
        if self.base != SEQUENTIAL_BASE and (self.allocation is Allocation.SEQUENTIAL or self.block):
            params.append(f"base={self.base}")
        if default is not None and self.block != default.block:
            params.append(f"block={self.block}")
        if default is not None and self.block and self.allocation is not default.allocation:
            params.append(f"order={self.allocation.value}")
        if self.hairpin:
            params.append("hairpin=1")
        if self.udp_timeout != DEFAULT_UDP_TIMEOUT:
            params.append(f"timeout={self.udp_timeout}")
        return self.name + (":" + ",".join(params) if params else "")

    def pool(self) -> range:
        """The ports a port-block allocator hands out (blocks are consecutive slices of it)."""
        return range(self.base, self.base + PBA_POOL_PORTS)


@dataclass(frozen=True)
class RouterParams:
    """Where the profile is applied: the router's interface names, WAN address, LAN subnet."""

    wan_if: str
    lan_if: str
    wan_ip: str
    lan_net: str


def router_params(topo: "Topology", router: str, ifnames: "dict[str, str]") -> RouterParams:
    """Where ``router`` of ``topo`` applies its NAT, given its interface name on each segment."""
    wan_seg, lan_seg = topo.router_segments(router)
    return RouterParams(wan_if=ifnames[wan_seg], lan_if=ifnames[lan_seg], wan_ip=topo.address(router, wan_seg),
                        lan_net=topo.segments[lan_seg].subnets[0])


_BASE_PROFILES: dict[str, NatProfile] = {
    p.name: p
    for p in (
        NatProfile("full-cone", Mapping.EIM, Filtering.EIF, Allocation.PRESERVE),
        NatProfile("restricted-cone", Mapping.EIM, Filtering.ADF, Allocation.PRESERVE),
        NatProfile("port-restricted-cone", Mapping.EIM, Filtering.APDF, Allocation.PRESERVE),
        NatProfile("symmetric-sequential", Mapping.APDM, Filtering.APDF, Allocation.SEQUENTIAL),
        NatProfile("symmetric-random", Mapping.APDM, Filtering.APDF, Allocation.RANDOM),
        NatProfile("address-dependent", Mapping.ADM, Filtering.ADF, Allocation.SEQUENTIAL),
        NatProfile("cgnat", Mapping.EIM, Filtering.APDF, Allocation.SEQUENTIAL, block=DEFAULT_BLOCK),
    )
}
#: Real devices that behave so (the label's meaning, for humans).
DESCRIPTIONS = {
    "full-cone": "EIM/EIF, port preserved: a 'DMZ-like' home router, static port forwarding per mapping",
    "restricted-cone": "EIM/ADF, port preserved: many consumer routers",
    "port-restricted-cone": "EIM/APDF, port preserved: Linux iptables MASQUERADE",
    "symmetric-sequential": "APDM/APDF, ports taken in sequence (step delta) by all LAN hosts: the spec's NAT",
    "symmetric-random": "APDM/APDF, random ports: FreeBSD pf / carrier-grade NATs",
    "address-dependent": "ADM/ADF, sequential: one mapping per remote address whatever its port "
                         "(RFC 4787 §4.1; rare in the field, no well-documented device)",
    "cgnat": "EIM/APDF in port blocks per subscriber (RFC 6888 + RFC 7422): carrier-grade NATs that log "
             "one block instead of every flow (e.g. Juniper MX / A10 port block allocation)",
}
#: Parameters every profile takes, and what each means (``dp2pt-lab profiles`` prints them).
PARAMETERS = {
    "hairpin": "0|1: a LAN host reaches another through the WAN address and mapped port (RFC 4787 §6)",
    "timeout": "seconds: UDP mapping timeout (RFC 4787 §4.3; both conntrack UDP timeouts)",
    "delta": "N >= 1: step of the sequential allocator",
    "base": "port: first port of the sequential allocator / the port-block pool",
    "block": f"N: ports per subscriber block (RFC 7422); pool of {PBA_POOL_PORTS} ports from base "
             "(symmetric-sequential, symmetric-random, cgnat)",
    "order": "sequential|random: port order inside a block (with block)",
}
PROFILE_NAMES = tuple(_BASE_PROFILES)
_ALIASES = {"masquerade": "port-restricted-cone", "symmetric": "symmetric-sequential"}
_BOOL = {"on": True, "1": True, "true": True, "off": False, "0": False, "false": False}


def parse_profile(text: str) -> NatProfile:
    """``"symmetric-sequential:delta=2,timeout=5"`` -> :class:`NatProfile` (validated).

    Parameters: see :data:`PARAMETERS`.

    Raises:
        UnknownProfile: unknown name or parameter, or a malformed value.
        UnsupportedNat: a valid request the router cannot build.
    """
    name, _, rest = text.strip().partition(":")
    name = _ALIASES.get(name, name)
    ordered = False
    if name not in _BASE_PROFILES:
        raise UnknownProfile(f"unknown NAT profile {name!r}; known: {', '.join(PROFILE_NAMES)}")
    prof = _BASE_PROFILES[name]
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise UnknownProfile(f"profile {text!r}: parameter {item!r} needs a value (key=value)")
        try:
            if key == "delta":
                prof = replace(prof, delta=int(value))
            elif key == "base":
                prof = replace(prof, base=int(value))
            elif key == "timeout":
                t = int(value)
                prof = replace(prof, udp_timeout=t, udp_stream_timeout=t)
            elif key == "hairpin":
                prof = replace(prof, hairpin=_BOOL[value])
            elif key == "block":
                prof = replace(prof, block=int(value))
            elif key == "order":
                if value not in ("sequential", "random"):
                    raise ValueError(value)
                prof = replace(prof, allocation=Allocation(value))
                ordered = True
            else:
                raise UnknownProfile(
                    f"profile {text!r}: unknown parameter {key!r} ({', '.join(PARAMETERS)})"
                )
        except (ValueError, KeyError):
            raise UnknownProfile(f"profile {text!r}: bad value {value!r} for {key}") from None
    if ordered and not prof.block:
        raise UnknownProfile(f"profile {text!r}: order is a parameter of port blocks (block=N)")
    validate(prof)
    return prof


def validate(prof: NatProfile) -> None:
    """Refuse what the router cannot build, naming the RFC 4787 behaviour at fault."""
    if prof.block:
        if prof.allocation is Allocation.PRESERVE:
            raise UnsupportedNat("port blocks replace port preservation; use sequential or random order")
        if not 1 <= prof.block <= PBA_POOL_PORTS // 2 or PBA_POOL_PORTS % prof.block:
            raise UnknownProfile(f"block must divide the pool of {PBA_POOL_PORTS} ports into at least two "
                                 f"blocks, not {prof.block}")
        if prof.delta != 1:
            raise UnsupportedNat("delta is a property of the shared sequential allocator, not of port blocks")
        if not 1024 <= prof.base <= 65536 - PBA_POOL_PORTS:
            raise UnknownProfile(f"base port {prof.base} leaves no room for a pool of {PBA_POOL_PORTS} ports")
    elif prof.mapping is Mapping.EIM and prof.allocation is not Allocation.PRESERVE:
        raise UnsupportedNat(
            f"endpoint-independent mapping with {prof.allocation.value} allocation is not buildable with "
            "nf_nat alone (it allocates per connection); use port preservation or port blocks (block=N)"
        )
    if prof.mapping is Mapping.ADM and prof.allocation is Allocation.PRESERVE:
        raise UnsupportedNat("port preservation makes Linux NAT endpoint-independent; ADM needs sequential")
    if prof.mapping is Mapping.ADM and not prof.block and prof.allocation is not Allocation.SEQUENTIAL:
        raise UnsupportedNat("address-dependent mapping is built on the sequential allocator only")
    if prof.mapping is Mapping.ADM and prof.filtering is Filtering.EIF:
        raise UnsupportedNat("ADM with endpoint-independent filtering is not buildable here; refused")
    if prof.mapping is Mapping.APDM and prof.allocation is Allocation.PRESERVE:
        raise UnsupportedNat("port preservation makes Linux NAT endpoint-independent; APDM needs sequential or random")
    if prof.mapping is Mapping.APDM and prof.filtering is not Filtering.APDF:
        raise UnsupportedNat("APDM with a filtering looser than APDF is not buildable here; refused")
    if prof.delta < 1:
        raise UnknownProfile(f"delta must be >= 1, not {prof.delta}")
    if prof.allocation is Allocation.SEQUENTIAL and not prof.block:
        if not 1024 <= prof.base <= 65535 - prof.delta:
            raise UnknownProfile(f"base port {prof.base} leaves no room for the sequential allocator")
    if not 1 <= prof.udp_timeout <= 86400:
        raise UnknownProfile(f"UDP timeout must be 1..86400 s, not {prof.udp_timeout}")


def sequential_slots(prof: NatProfile) -> list[int]:
    """The ports the sequential allocator hands out, in order (then it wraps around)."""
    n = min(SEQUENTIAL_SLOTS, (65535 - prof.base) // prof.delta + 1)
    return [prof.base + i * prof.delta for i in range(n)]


def render_ruleset(prof: NatProfile, r: RouterParams) -> str:
    """The nftables ruleset (``nft -f`` input) that makes a router behave as ``prof``.

    Pure: no I/O. The table is deleted and re-created in one transaction, so loading it again
    atomically replaces the previous NAT and resets the sequential allocator's counter.
    """
    validate(prof)
    wan, lan, lan_net, wan_ip = f'"{r.wan_if}"', f'"{r.lan_if}"', r.lan_net, r.wan_ip
    out_match = f"oifname {wan} ip saddr {lan_net}"
    # A hairpinned flow: from the LAN, DNATed back to the LAN (postrouting has no input interface).
    hairpin_match = f"oifname {lan} ip saddr {lan_net} ct status dnat"
    timeout = f"{prof.udp_stream_timeout}s"
    dyn = f"flags dynamic,timeout; timeout {timeout};"
    sets: list[str] = []
    prerouting: list[str] = []
    record: list[str] = []
    postrouting: list[str] = []
    alloc: list[str] = []
    # Which flows create mappings, as the record chain sees them after SNAT (the packet's source is
    # the WAN address by then: match the conntrack's original source): outbound, and hairpinned.
    made_here = [f"oifname {wan} ct original ip saddr {lan_net}"]
    if prof.hairpin:
        made_here.append(f"oifname {lan} ct original ip saddr {lan_net} ct status dnat")
    new_mapping = "ct direction original meta l4proto udp"
    internal = "ct original ip saddr . ct original proto-src"

    if prof.block:
        ports = ", ".join(f"{p} : {p}" for p in prof.pool())
        lo, hi = prof.pool()[0], prof.pool()[-1]
        # The allocator's decision arrives as the packet mark; no decision, no translation.
        alloc.append(f"meta l4proto udp meta mark {lo}-{hi} snat ip to {wan_ip} : meta mark map {{ {ports} }}")
        alloc.append("counter drop")
    else:
        if prof.mapping is Mapping.ADM:
            sets.append("map adm { type ipv4_addr . inet_service . ipv4_addr : ipv4_addr . inet_service; "
                        f"{dyn} }}")
            alloc.append("meta l4proto udp snat ip to ip saddr . udp sport . ct original ip daddr map @adm")
            record += [f"{m} {new_mapping} update @adm {{ {internal} . ct original ip daddr : "
                       "ct reply ip daddr . ct reply proto-dst }" for m in made_here]
        if prof.allocation is Allocation.SEQUENTIAL:
            slots = ", ".join(f"{i} : {p}" for i, p in enumerate(sequential_slots(prof)))
            n = len(sequential_slots(prof))
            alloc.append(f"meta l4proto udp snat ip to {wan_ip} : numgen inc mod {n} map {{ {slots} }}")
        elif prof.allocation is Allocation.RANDOM:
            lo, hi = RANDOM_RANGE
            alloc.append(f"meta l4proto udp snat ip to {wan_ip} : {lo}-{hi} random,fully-random")
        else:
            alloc.append(f"meta l4proto udp snat ip to {wan_ip}")  # keeps the port when free, as masquerade
    # Outbound UDP through the allocator (preserving profiles: masquerade below does it).
    if prof.allocation is not Allocation.PRESERVE:
        postrouting.append(f"{out_match} meta l4proto udp jump alloc")
    if prof.hairpin:
        postrouting.append(f"{hairpin_match} meta l4proto udp jump alloc")
    postrouting.append(f"{out_match} masquerade")

    inbound_dnat = prof.filtering in (Filtering.EIF, Filtering.ADF)
    by_port = "eif" if prof.filtering is Filtering.EIF else "hairpin"  # mapped port -> internal endpoint
    if prof.filtering is Filtering.EIF or prof.hairpin:
        sets.append(f"map {by_port} {{ type inet_service : ipv4_addr . inet_service; {dyn} }}")
        record += [f"{m} {new_mapping} update @{by_port} {{ ct reply proto-dst : {internal} }}" for m in made_here]
    if prof.filtering is Filtering.EIF:
        prerouting.append(f"iifname {wan} meta l4proto udp dnat ip to udp dport map @eif")
    elif prof.filtering is Filtering.ADF:
        sets.append(f"map adf {{ type ipv4_addr . inet_service : ipv4_addr . inet_service; {dyn} }}")
        record.append(f"oifname {wan} {new_mapping} update @adf {{ ip daddr . ct reply proto-dst : {internal} }}")
        prerouting.append(f"iifname {wan} meta l4proto udp dnat ip to ip saddr . udp dport map @adf")
    if prof.hairpin:
        prerouting.append(f"iifname {lan} ip daddr {wan_ip} meta l4proto udp dnat ip to udp dport map @{by_port}")

    forward = []
    if inbound_dnat:
        forward.append(f"iifname {wan} ct state new ct status dnat accept")
    forward.append(f"iifname {wan} ct state new counter drop")

    lines = [
        f"# dp2pt lab NAT: {prof.spec} ({prof.mapping.name}/{prof.filtering.name}, {prof.allocation.value}"
        + (f" in blocks of {prof.block}" if prof.block else "") + (", hairpin" if prof.hairpin else "") + ")",
        # Declare (so the delete cannot fail), delete, re-create: one atomic transaction that drops
        # the previous profile's chains, maps and numgen counter together.
        f"table ip {TABLE} {{}}",
        f"delete table ip {TABLE}",
        f"table ip {TABLE} {{",
    ]
    lines.append(f'  comment "{COMMENT_PREFIX}{prof.spec}"')  # read back by Lab.nat_profile (status)
    lines += [f"  {s}" for s in sets]
    lines += _chain("prerouting", "type nat hook prerouting priority dstnat; policy accept;", prerouting)
    lines += _chain("alloc", "", alloc if any("jump alloc" in rule for rule in postrouting) else [])
    lines += _chain("postrouting", "type nat hook postrouting priority srcnat; policy accept;", postrouting)
    # After SNAT (srcnat + 10) the reply tuple holds the mapped port: record it for inbound DNAT.
    lines += _chain("record", "type filter hook postrouting priority srcnat + 10; policy accept;", record)
    # Unsolicited inbound to the router itself: drop before conntrack confirms it (spec step 15);
    # so is a LAN packet to the WAN address that no hairpin DNAT took (no ICMP, no conntrack).
    lines += _chain(
        "input", "type filter hook input priority filter; policy accept;",
        [f"iifname {wan} ct state new counter drop",
         f"iifname {lan} ip daddr {wan_ip} meta l4proto udp ct state new counter drop"],
    )
    lines += _chain("forward", "type filter hook forward priority filter; policy accept;", forward)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _chain(name: str, header: str, rules: list[str]) -> list[str]:
    if not rules:
        return []
    return [f"  chain {name} {{"] + ([f"    {header}"] if header else []) + [f"    {r}" for r in rules] + ["  }"]


def queue_rules(prof: NatProfile | None, r: RouterParams) -> list[list[str]]:
    """``iptables`` argument lists that (re)build :data:`PBA_CHAIN`, queueing new UDP flows to the
    port-block allocator (outbound and, with hairpinning, hairpinned ones); for a profile without
    port blocks (or ``None``), the ones that remove the chain. Each command may fail harmlessly
    when what it removes is absent (the caller ignores those); the building ones must succeed.
    """
    t = ["-w", "-t", "mangle"]
    teardown = [[*t, "-D", "FORWARD", "-j", PBA_CHAIN], [*t, "-F", PBA_CHAIN], [*t, "-X", PBA_CHAIN]]
    if prof is None or not prof.block:
        return teardown
    new = ["-p", "udp", "-s", r.lan_net, "-m", "conntrack", "--ctstate", "NEW"]
    queue = ["-j", "NFQUEUE", "--queue-num", str(PBA_QUEUE)]
    rules = [[*t, "-N", PBA_CHAIN], [*t, "-A", PBA_CHAIN, "-o", r.wan_if, *new, *queue]]
    if prof.hairpin:
        rules.append([*t, "-A", PBA_CHAIN, "-i", r.lan_if, "-o", r.lan_if, *new, "-m", "conntrack",
                      "--ctstate", "DNAT", *queue])
    rules.append([*t, "-A", "FORWARD", "-j", PBA_CHAIN])
    return teardown + rules


def conntrack_sysctls(prof: NatProfile) -> dict[str, str]:
    """Per-namespace conntrack UDP timeouts = the NAT's mapping timeout (RFC 4787 §4.3)."""
    return {
        "net.netfilter.nf_conntrack_udp_timeout": str(prof.udp_timeout),
        "net.netfilter.nf_conntrack_udp_timeout_stream": str(prof.udp_stream_timeout),
    }


#: One UDP line of ``conntrack -L``: original tuple, then the reply tuple whose dport is the mapped port.
_CONNTRACK_UDP = re.compile(
    r"\budp\b.*?src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+) .*?src=\S+ dst=\S+ sport=\d+ dport=(\d+)"
)


@dataclass(frozen=True)
class UdpFlow:
    """A UDP mapping of a NAT as conntrack shows it: internal src:sport to dst:dport, mapped to ``mapped``."""

    src: str
    sport: int
    dst: str
    dport: int
    mapped: int


def conntrack_udp_flows(conntrack_text: str) -> list[UdpFlow]:
    """Every UDP flow in ``conntrack -L`` output, with the WAN port the NAT mapped it to."""
    flows = []
    for line in conntrack_text.splitlines():
        m = _CONNTRACK_UDP.search(line)
        if m:
            src, dst, sport, dport, mapped = m.groups()
            flows.append(UdpFlow(src, int(sport), dst, int(dport), int(mapped)))
    return flows
