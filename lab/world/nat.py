"""NAT profiles after RFC 4787, and the pure translation of a profile into an nftables ruleset.

A :class:`NatProfile` is the set of behaviours RFC 4787 names for a UDP NAT:

* mapping (§4.1): endpoint-independent (EIM), address-dependent (ADM), address-and-port-dependent (APDM);
* filtering (§5): endpoint-independent (EIF), address-dependent (ADF), address-and-port-dependent (APDF);
* port assignment (§4.2): ``preserve`` the internal port when it is free, ``sequential`` with a
  step ``delta`` shared by every LAN host (the allocator the spec assumes: "consecutive and
  incremented by one"), or ``random``;
* hairpinning (§6) and the UDP mapping timeout (§4.3).

:func:`render_ruleset` is a pure function (profile + router parameters -> ruleset text); the lab
loads it with ``nft -f`` inside the router's namespace, in its own table :data:`TABLE` that is
removed by name. How each behaviour is built with the kernel's own NAT (conntrack + nf_nat):

* EIM + preserve = ``masquerade`` — exactly Linux's iptables MASQUERADE: the source port is kept,
  so one internal endpoint has one mapping whatever the destination.
* APDM + sequential = ``snat to WAN : numgen inc mod N map {0: base, 1: base+δ, ...}``: every new
  conntrack (a new 5-tuple, i.e. a new destination) takes the next slot, for all LAN hosts
  together — so a neighbour's new flow "cuts in" (spec, improved protocol). Reloading the table
  resets the counter.
* APDM + random = ``snat to WAN : 1024-65535 random,fully-random``.
* APDF is what conntrack does by itself: only replies of a known 5-tuple pass. An unsolicited
  packet to the WAN (the spec's step 15 punch "discarded by the first NAT-based router") is
  dropped in a *filter* chain, so its conntrack entry is never confirmed — a confirmed unreplied
  entry would later collide with the outbound mapping and make the NAT pick another port.
* EIF / ADF (full / restricted cone) add inbound DNAT from a dynamic map filled on the packet path
  after SNAT: ``mapped port -> internal ip . port`` (EIF) or ``remote ip . mapped port -> ...`` (ADF).

Combinations this router cannot build (ADM, EIM with a non-preserving allocator, APDM with a
filtering looser than APDF, hairpinning) are refused with :class:`~lab.errors.UnsupportedNat`
rather than silently approximated.
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
    """RFC 4787 §4.2 port assignment."""

    PRESERVE = "preserve"
    SEQUENTIAL = "sequential"
    RANDOM = "random"


@dataclass(frozen=True)
class NatProfile:
    """One NAT router's behaviour. Build with :func:`parse_profile`; ``name`` is the label."""

    name: str
    mapping: Mapping
    filtering: Filtering
    allocation: Allocation
    delta: int = 1
    base: int = SEQUENTIAL_BASE
    hairpin: bool = False
    udp_timeout: int = DEFAULT_UDP_TIMEOUT
    udp_stream_timeout: int = DEFAULT_UDP_STREAM_TIMEOUT

    @property
    def spec(self) -> str:
        """The canonical string form, parseable by :func:`parse_profile`."""
        params = []
        if self.allocation is Allocation.SEQUENTIAL and self.delta != 1:
            params.append(f"delta={self.delta}")
        if self.allocation is Allocation.SEQUENTIAL and self.base != SEQUENTIAL_BASE:
            params.append(f"base={self.base}")
        if self.udp_timeout != DEFAULT_UDP_TIMEOUT:
            params.append(f"timeout={self.udp_timeout}")
        return self.name + (":" + ",".join(params) if params else "")


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
    )
}
#: Real devices that behave so (the label's meaning, for humans).
DESCRIPTIONS = {
    "full-cone": "EIM/EIF, port preserved: a 'DMZ-like' home router, static port forwarding per mapping",
    "restricted-cone": "EIM/ADF, port preserved: many consumer routers",
    "port-restricted-cone": "EIM/APDF, port preserved: Linux iptables MASQUERADE",
    "symmetric-sequential": "APDM/APDF, ports taken in sequence (step delta) by all LAN hosts: the spec's NAT",
    "symmetric-random": "APDM/APDF, random ports: FreeBSD pf / carrier-grade NATs",
}
PROFILE_NAMES = tuple(_BASE_PROFILES)
_ALIASES = {"masquerade": "port-restricted-cone", "symmetric": "symmetric-sequential"}


def parse_profile(text: str) -> NatProfile:
    """``"symmetric-sequential:delta=2,timeout=5"`` -> :class:`NatProfile` (validated).

    Parameters: ``delta`` (>= 1, sequential only), ``base`` (first sequential port),
    ``timeout`` (UDP mapping timeout in seconds, §4.3: both conntrack UDP timeouts),
    ``hairpin`` (on/off).

    Raises:
        UnknownProfile: unknown name or parameter, or a malformed value.
        UnsupportedNat: a valid request the router cannot build.
    """
    name, _, rest = text.strip().partition(":")
    name = _ALIASES.get(name, name)
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
                if value not in ("on", "off", "1", "0", "true", "false"):
                    raise ValueError(value)
                prof = replace(prof, hairpin=value in ("on", "1", "true"))
            else:
                raise UnknownProfile(
                    f"profile {text!r}: unknown parameter {key!r} (delta, base, timeout, hairpin)"
                )
        except ValueError:
            raise UnknownProfile(f"profile {text!r}: bad value {value!r} for {key}") from None
    validate(prof)
    return prof


def validate(prof: NatProfile) -> None:
    """Refuse what the router cannot build, naming the RFC 4787 behaviour at fault."""
    if prof.mapping is Mapping.ADM:
        raise UnsupportedNat("address-dependent mapping (RFC 4787 §4.1) cannot be built with nf_nat; refused")
    if prof.mapping is Mapping.EIM and prof.allocation is not Allocation.PRESERVE:
        raise UnsupportedNat(
            f"endpoint-independent mapping with {prof.allocation.value} allocation is not buildable here "
            "(nf_nat allocates per connection); use port preservation"
        )
    if prof.mapping is Mapping.APDM and prof.allocation is Allocation.PRESERVE:
        raise UnsupportedNat("port preservation makes Linux NAT endpoint-independent; APDM needs sequential or random")
    if prof.mapping is Mapping.APDM and prof.filtering is not Filtering.APDF:
        raise UnsupportedNat("APDM with a filtering looser than APDF is not buildable here; refused")
    if prof.hairpin:
        raise UnsupportedNat("hairpinning (RFC 4787 §6) is not implemented by this router; refused")
    if prof.delta < 1:
        raise UnknownProfile(f"delta must be >= 1, not {prof.delta}")
    if prof.allocation is Allocation.SEQUENTIAL:
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
    wan, lan_net, wan_ip = f'"{r.wan_if}"', r.lan_net, r.wan_ip
    out_match = f"oifname {wan} ip saddr {lan_net}"
    timeout = f"{prof.udp_stream_timeout}s"
    sets: list[str] = []
    prerouting: list[str] = []
    record: list[str] = []
    postrouting: list[str] = []

    if prof.allocation is Allocation.SEQUENTIAL:
        slots = ", ".join(f"{i} : {p}" for i, p in enumerate(sequential_slots(prof)))
        n = len(sequential_slots(prof))
        postrouting.append(
            f"{out_match} meta l4proto udp snat ip to {wan_ip} : numgen inc mod {n} map {{ {slots} }}"
        )
    elif prof.allocation is Allocation.RANDOM:
        lo, hi = RANDOM_RANGE
        postrouting.append(f"{out_match} meta l4proto udp snat ip to {wan_ip} : {lo}-{hi} random,fully-random")
    postrouting.append(f"{out_match} masquerade")

    inbound_dnat = prof.filtering in (Filtering.EIF, Filtering.ADF)
    if prof.filtering is Filtering.EIF:
        sets.append(
            f"map eif {{ type inet_service : ipv4_addr . inet_service; flags dynamic,timeout; timeout {timeout}; }}"
        )
        record.append(
            f"oifname {wan} ct direction original meta l4proto udp "
            "update @eif { ct reply proto-dst : ct original ip saddr . ct original proto-src }"
        )
        prerouting.append(f"iifname {wan} meta l4proto udp dnat ip to udp dport map @eif")
    elif prof.filtering is Filtering.ADF:
        sets.append(
            "map adf { type ipv4_addr . inet_service : ipv4_addr . inet_service; "
            f"flags dynamic,timeout; timeout {timeout}; }}"
        )
        record.append(
            f"oifname {wan} ct direction original meta l4proto udp "
            "update @adf { ip daddr . ct reply proto-dst : ct original ip saddr . ct original proto-src }"
        )
        prerouting.append(f"iifname {wan} meta l4proto udp dnat ip to ip saddr . udp dport map @adf")

    forward = []
    if inbound_dnat:
        forward.append(f"iifname {wan} ct state new ct status dnat accept")
    forward.append(f"iifname {wan} ct state new counter drop")

    lines = [
        f"# dp2pt lab NAT: {prof.spec} ({prof.mapping.name}/{prof.filtering.name}, {prof.allocation.value})",
        # Declare (so the delete cannot fail), delete, re-create: one atomic transaction that drops
        # the previous profile's chains, maps and numgen counter together.
        f"table ip {TABLE} {{}}",
        f"delete table ip {TABLE}",
        f"table ip {TABLE} {{",
    ]
    lines.append(f'  comment "{COMMENT_PREFIX}{prof.spec}"')  # read back by Lab.nat_profile (status)
    lines += [f"  {s}" for s in sets]
    lines += _chain("prerouting", "type nat hook prerouting priority dstnat; policy accept;", prerouting)
    lines += _chain("postrouting", "type nat hook postrouting priority srcnat; policy accept;", postrouting)
    # After SNAT (srcnat + 10) the reply tuple holds the mapped port: record it for inbound DNAT.
    lines += _chain("record", "type filter hook postrouting priority srcnat + 10; policy accept;", record)
    # Unsolicited inbound to the router itself: drop before conntrack confirms it (spec step 15).
    lines += _chain(
        "input", "type filter hook input priority filter; policy accept;",
        [f"iifname {wan} ct state new counter drop"],
    )
    lines += _chain("forward", "type filter hook forward priority filter; policy accept;", forward)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _chain(name: str, header: str, rules: list[str]) -> list[str]:
    if not rules:
        return []
    return [f"  chain {name} {{", f"    {header}"] + [f"    {r}" for r in rules] + ["  }"]


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
