"""Declarative lab topologies: YAML files loaded into frozen dataclasses (no I/O beyond reading).

A topology is the spec's FIG. 1 (or FIG. 4) drawn as data:

* *segments* — layer-2 networks. The ``public`` segment stands for the "real Internet 16" and
  carries TEST-NET addresses (198.51.100.0/24, 203.0.113.0/24, RFC 5737); each ``lan`` segment is a
  "virtual network" (10.x); a ``carrier`` segment is the shared address space between a
  carrier-grade NAT and its subscribers' home NATs (100.64.0.0/10, RFC 6598). A backend builds a
  segment as a bridge.
* *nodes* — hosts with a role: ``server`` (location server 20/22/24), ``sink`` (a public host that
  receives cut-in traffic and runs the RFC 5780 STUN server), ``router`` (NAT-based router 14/18:
  two links, the WAN one towards the public segment and the LAN one), ``peer`` (points A and B),
  ``noise`` (the "users of another virtual IP" who cut in), ``directory`` (the Redis that location
  servers share instead of linking to each other: ``dp2pt server --directory``).

Routers chain: a home NAT whose WAN sits on a carrier segment has a ``gateway`` (the carrier
NAT's address there), like a LAN host. A router's WAN link is the one on the segment nearest the
public one (``public`` > ``carrier`` > ``lan``), or the segment its ``wan`` key names.

Routes are explicit and computed here (:meth:`Topology.routes`): public hosts and routers know the
public subnets as on-link (they share one bridge) and *nothing else*; every node with a gateway
(LAN hosts, subscribers on a carrier segment, nested routers) has a default route via it. So the
only way from one LAN to another is through the NATs of both, and a nested NAT's traffic through
its carrier NAT.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from lab.errors import ConfigError, UnknownNode
from lab.world.links import Conditions, Regions, parse_conditions, parse_regions

TOPOLOGY_DIR = Path(__file__).parent / "topologies"
DEFAULT_TOPOLOGY = "fig1"

ROLES = ("server", "sink", "router", "peer", "noise", "directory")
#: Segment kinds, from the public segment inwards (a router's WAN is its link nearest the public one).
SEGMENT_KINDS = ("public", "carrier", "lan")
#: RFC 6598 shared address space: where a carrier segment's subnets must lie.
SHARED_ADDRESS_SPACE = ipaddress.IPv4Network("100.64.0.0/10")
#: A link target meaning every router's public (WAN) link: ``--link wan=delay=20ms``.
WAN_LINKS = "wan"
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,11}$")  # short: node names end up in interface names


@dataclass(frozen=True)
class Segment:
    """A layer-2 network (a bridge) and the IPv4 subnets on it."""

    name: str
    kind: str
    subnets: tuple[str, ...]

    def subnet_of(self, address: str) -> ipaddress.IPv4Network | None:
        ip = ipaddress.IPv4Address(address)
        for net in self.subnets:
            if ip in ipaddress.IPv4Network(net):
                return ipaddress.IPv4Network(net)
        return None


@dataclass(frozen=True)
class Link:
    """A node's interface on one segment, with its addresses (``"10.1.0.10/24"`` form)."""

    segment: str
    addresses: tuple[str, ...]

    @property
    def ips(self) -> list[str]:
        return [a.split("/")[0] for a in self.addresses]


@dataclass(frozen=True)
class Node:
    name: str
    role: str
    links: tuple[Link, ...]
    gateway: str | None = None
    nat: str | None = None  # a router's NAT profile when the world comes up (lab.world.nat)
    wan: str | None = None  # a router's WAN segment, when the segment kinds do not tell

    def link(self, segment: str) -> Link:
        for link in self.links:
            if link.segment == segment:
                return link
        raise UnknownNode(f"node {self.name!r} has no link on segment {segment!r}")


@dataclass(frozen=True)
class Route:
    """One explicit route: ``dst`` (CIDR or ``default``) on the link to ``segment``, ``via`` or on-link."""

    dst: str
    segment: str
    via: str | None = None


@dataclass(frozen=True)
class Topology:
    name: str
    segments: dict[str, Segment]
    nodes: dict[str, Node]
    description: str = ""
    source: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: (node, segment) -> what that link does to frames; links not listed are clear.
    conditions: dict[tuple[str, str], Conditions] = field(default_factory=dict)
    regions: Regions | None = None
    link_seed: int = 0

    # ---- queries ------------------------------------------------------------------------------

    def node(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            raise UnknownNode(f"unknown node {name!r}; nodes: {', '.join(self.nodes)}") from None

    def by_role(self, role: str) -> list[str]:
        return [n.name for n in self.nodes.values() if n.role == role]

    @property
    def public(self) -> str:
        """Name of the public segment (exactly one per topology)."""
        return next(s.name for s in self.segments.values() if s.kind == "public")

    def address(self, node: str, segment: str | None = None) -> str:
        """First IPv4 address of ``node`` (on ``segment`` if given), without prefix length."""
        n = self.node(node)
        link = n.link(segment) if segment else n.links[0]
        return link.ips[0]

    def addresses(self, node: str, segment: str | None = None) -> list[str]:
        n = self.node(node)
        links = [n.link(segment)] if segment else list(n.links)
        return [ip for link in links for ip in link.ips]

    def router_segments(self, router: str) -> tuple[str, str]:
        """(WAN segment, LAN segment) of a router node."""
        n = self.node(router)
        if n.role != "router":
            raise UnknownNode(f"node {router!r} is a {n.role}, not a router")
        return _wan_lan(n, self.segments)

    def upstream_segment(self, node: str) -> str:
        """The segment a node reaches the world through: a router's WAN, any other node's only link."""
        n = self.node(node)
        return self.router_segments(node)[0] if n.role == "router" else n.links[0].segment

    def router_of(self, node: str) -> str:
        """The NAT router in front of a node (``a`` -> ``nat-a``; a nested NAT -> its carrier NAT)."""
        seg = self.upstream_segment(node)
        for r in self.by_role("router"):
            if self.router_segments(r)[1] == seg:
                return r
        raise UnknownNode(f"node {node!r} is not behind a router")

    def nat_chain(self, node: str) -> list[str]:
        """Every NAT a node's traffic crosses to the public segment, nearest first (double NAT: 2)."""
        chain: list[str] = []
        while self.segments[self.upstream_segment(chain[-1] if chain else node)].kind != "public":
            chain.append(self.router_of(chain[-1] if chain else node))
        return chain

    def lan_hosts(self, router: str, role: str | None = None) -> list[str]:
        """Nodes on ``router``'s LAN side (nested routers included, by their WAN link)."""
        lan = self.router_segments(router)[1]
        return [
            n.name for n in self.nodes.values()
            if n.name != router and self.upstream_segment(n.name) == lan and (role is None or n.role == role)
        ]

    def link_key(self, target: str) -> tuple[str, str]:
        """``"NODE[:SEGMENT]"`` -> (node, segment). Without a segment: the node's public link (a
        router's WAN), else its only link.

        Raises:
            UnknownNode: no such node, or it has no link there.
        """
        name, _, segment = str(target).partition(":")
        node = self.node(name)
        if segment:
            node.link(segment)  # raises UnknownNode
            return name, segment
        public = [l.segment for l in node.links if self.segments[l.segment].kind == "public"]
        return name, (public or [node.links[0].segment])[0]

    def link_keys(self, target: str) -> list[tuple[str, str]]:
        """:meth:`link_key`, or for :data:`WAN_LINKS` every router's public link: where a world meets
        the internet, one link per path out (a NAT behind a carrier NAT reaches it through the
        carrier's), so "20 ms on every WAN link" is one option whatever the world.

        Raises:
            UnknownNode: as :meth:`link_key`.  ConfigError: ``wan`` in a world without such a link.
        """
        if target != WAN_LINKS:
            return [self.link_key(target)]
        keys = [(n.name, l.segment) for n in self.nodes.values() if n.role == "router"
                for l in n.links if self.segments[l.segment].kind == "public"]
        if not keys:
            raise ConfigError(f"{self.name}: no router has a link on the public segment, so 'wan' names no link")
        return keys

    def with_links(self, overrides: dict[str, Conditions], seed: int | None = None) -> "Topology":
        """A copy with some links' conditions replaced (``"NODE[:SEGMENT]"`` or ``wan`` -> conditions;
        clear conditions remove a link's entry), its ``source`` updated so backends that store it keep them."""
        conditions = dict(self.conditions)
        for target, cond in overrides.items():
            for key in self.link_keys(target):
                if cond.is_clear:
                    conditions.pop(key, None)
                else:
                    conditions[key] = cond
        link_seed = self.link_seed if seed is None else seed
        source = dict(self.source)
        source["conditions"] = {f"{n}:{s}": c.spec for (n, s), c in conditions.items()}
        source["link_seed"] = link_seed
        return replace(self, conditions=conditions, link_seed=link_seed, source=source)

    def check_regions(self, regions: Regions) -> None:
        """Raise UnknownNode / ConfigError unless every node placed in a region is a public node here."""
        for node in regions.of:
            n = self.node(node)
            if not any(self.segments[l.segment].kind == "public" for l in n.links):
                raise ConfigError(f"regions: {node!r} has no public link (regions place public nodes)")

    def routes(self, node: str) -> list[Route]:
        """The explicit routes of ``node`` (besides the connected routes of its own addresses).

        Public links get every public subnet on-link (one bridge carries both TEST-NETs); a node
        with a gateway (LAN host, nested router) gets a default route via it; routers on the
        public segment get no default route at all, so a packet for another LAN has nowhere to go
        but is dropped (no bypass of the NATs).
        """
        n = self.node(node)
        routes: list[Route] = []
        for link in n.links:
            seg = self.segments[link.segment]
            if seg.kind != "public":
                continue
            own = {str(seg.subnet_of(ip)) for ip in link.ips}
            routes += [Route(net, seg.name) for net in seg.subnets if net not in own]
        if n.gateway:
            routes.append(Route("default", self.upstream_segment(node), n.gateway))
        return routes


# ---- loading -----------------------------------------------------------------------------------


def resolve(name_or_path: str | Path | None) -> Path:
    """A topology name (``fig1``) or a path to a YAML file -> the file's path."""
    if name_or_path is None:
        name_or_path = DEFAULT_TOPOLOGY
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    candidate = TOPOLOGY_DIR / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    known = sorted(f.stem for f in TOPOLOGY_DIR.glob("*.yaml"))
    raise ConfigError(f"unknown topology {str(name_or_path)!r}; known: {', '.join(known)} (or a .yaml path)")


def load(name_or_path: str | Path | None = None) -> Topology:
    """Load and validate a topology by name or path.

    Raises:
        ConfigError: the file is not valid YAML or describes an impossible network.
    """
    path = resolve(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return from_dict(data, default_name=path.stem)


def from_dict(data: Any, default_name: str = "topology") -> Topology:
    """Build a :class:`Topology` from its dict form (the YAML document), validating it."""
    if not isinstance(data, dict):
        raise ConfigError("a topology must be a mapping with 'segments' and 'nodes'")
    name = str(data.get("name", default_name))
    segments: dict[str, Segment] = {}
    for sname, sdef in (data.get("segments") or {}).items():
        sdef = sdef or {}
        kind = sdef.get("kind", "lan")
        if kind not in SEGMENT_KINDS:
            raise ConfigError(f"segment {sname!r}: kind must be one of {SEGMENT_KINDS}, not {kind!r}")
        _check_name(sname, "segment")
        subnets = sdef.get("subnets") or ([sdef["subnet"]] if "subnet" in sdef else [])
        if not subnets:
            raise ConfigError(f"segment {sname!r}: needs 'subnets'")
        try:
            nets = tuple(str(ipaddress.IPv4Network(s)) for s in subnets)
        except ValueError as exc:
            raise ConfigError(f"segment {sname!r}: {exc}") from None
        if kind == "carrier" and not all(ipaddress.IPv4Network(n).subnet_of(SHARED_ADDRESS_SPACE) for n in nets):
            raise ConfigError(f"segment {sname!r}: a carrier segment lives in {SHARED_ADDRESS_SPACE} (RFC 6598)")
        segments[sname] = Segment(sname, kind, nets)
    if sum(1 for s in segments.values() if s.kind == "public") != 1:
        raise ConfigError("a topology needs exactly one segment of kind 'public'")

    nodes: dict[str, Node] = {}
    for nname, ndef in (data.get("nodes") or {}).items():
        _check_name(nname, "node")
        ndef = ndef or {}
        role = ndef.get("role")
        if role not in ROLES:
            raise ConfigError(f"node {nname!r}: role must be one of {ROLES}, not {role!r}")
        links = []
        for seg, addrs in (ndef.get("links") or {}).items():
            if seg not in segments:
                raise ConfigError(f"node {nname!r}: unknown segment {seg!r}")
            addrs = [addrs] if isinstance(addrs, str) else list(addrs or [])
            if not addrs:
                raise ConfigError(f"node {nname!r}: no address on segment {seg!r}")
            full = []
            for a in addrs:
                ip = str(a).split("/")[0]
                net = _subnet_or_none(segments[seg], ip, nname)
                full.append(f"{ip}/{net.prefixlen}")
            links.append(Link(seg, tuple(full)))
        if not links:
            raise ConfigError(f"node {nname!r}: needs at least one link")
        gateway = ndef.get("gateway")
        wan = ndef.get("wan")
        if wan is not None and (role != "router" or wan not in (l.segment for l in links)):
            raise ConfigError(f"node {nname!r}: 'wan' names one of a router's own segments")
        node = Node(nname, role, tuple(links), str(gateway) if gateway else None,
                    _nat_of(nname, role, ndef.get("nat")), wan)
        _check_role_links(node, segments)
        nodes[nname] = node
    if not nodes:
        raise ConfigError("a topology needs nodes")
    topo = Topology(name, segments, nodes, str(data.get("description", "")), data)
    _check_unique_addresses(topo)
    _check_gateways(topo)
    _check_chains(topo)
    return _with_link_section(topo, data)


def _with_link_section(topo: Topology, data: dict) -> Topology:
    """Read ``conditions``, ``regions`` and ``link_seed`` (validated against the nodes)."""
    conditions: dict[tuple[str, str], Conditions] = {}
    raw = data.get("conditions") or {}
    if not isinstance(raw, dict):
        raise ConfigError("conditions: must map NODE[:SEGMENT] to conditions (e.g. nat-a: continental)")
    for target, spec in raw.items():
        cond = parse_conditions(spec if isinstance(spec, dict) else str(spec))
        if not cond.is_clear:
            conditions.update({key: cond for key in topo.link_keys(str(target))})
    regions = None
    if data.get("regions") is not None:
        regions = parse_regions(data["regions"])
        topo.check_regions(regions)
    seed = data.get("link_seed", 0)
    if not isinstance(seed, int):
        raise ConfigError(f"link_seed must be a whole number, not {seed!r}")
    return replace(topo, conditions=conditions, regions=regions, link_seed=seed)


def _nat_of(node: str, role: str, profile: Any) -> str | None:
    """A router's declared NAT profile, validated here so a bad one fails at load, not at bring-up."""
    if profile is None:
        return None
    if role != "router":
        raise ConfigError(f"node {node!r}: only a router has a NAT profile ('nat:')")
    from lab.world import nat

    return nat.parse_profile(str(profile)).spec


def _check_name(name: str, what: str) -> None:
    if not _NAME_RE.match(str(name)):
        raise ConfigError(f"{what} name {name!r}: use 1-12 characters [a-z0-9-], starting with a letter")
    if what == "node" and name == WAN_LINKS:
        raise ConfigError(f"node name {name!r} is reserved: it names every router's WAN link (--link wan=...)")


def _subnet_or_none(seg: Segment, ip: str, node: str) -> ipaddress.IPv4Network:
    try:
        net = seg.subnet_of(ip)
    except ValueError:
        raise ConfigError(f"node {node!r}: {ip!r} is not an IPv4 address") from None
    if net is None:
        raise ConfigError(f"node {node!r}: {ip} is in no subnet of segment {seg.name!r} {seg.subnets}")
    return net


def _wan_lan(node: Node, segments: dict[str, Segment]) -> tuple[str, str]:
    """A router's (WAN, LAN) segments: ``wan`` if given, else the link nearest the public segment."""
    segs = [l.segment for l in node.links]
    if node.wan:
        wan = node.wan
    else:
        rank = {s: SEGMENT_KINDS.index(segments[s].kind) for s in segs}
        wan = min(segs, key=rank.__getitem__)
        if sorted(rank.values()).count(rank[wan]) > 1:
            raise ConfigError(f"router {node.name!r}: both links on {segments[wan].kind} segments; "
                              "say which is the WAN with 'wan: SEGMENT'")
    return wan, next(s for s in segs if s != wan)


def _check_role_links(node: Node, segments: dict[str, Segment]) -> None:
    kinds = [segments[l.segment].kind for l in node.links]
    if node.role == "router":
        if len(kinds) != 2 or "public" in kinds and kinds.count("public") != 1:
            raise ConfigError(f"router {node.name!r}: needs exactly two links, one WAN (towards the public "
                              "segment) and one LAN")
        wan, _ = _wan_lan(node, segments)
        if segments[wan].kind == "public" and node.gateway:
            raise ConfigError(f"router {node.name!r}: a router on the public segment has no gateway")
        if segments[wan].kind != "public" and not node.gateway:
            raise ConfigError(f"router {node.name!r}: its WAN is not public, so it needs a gateway "
                              "(the upstream NAT's address on its WAN segment)")
    elif node.role in ("server", "sink", "directory"):
        if kinds != ["public"]:
            raise ConfigError(f"{node.role} {node.name!r}: must sit on the public segment only")
    else:
        if len(kinds) != 1 or kinds[0] == "public":
            raise ConfigError(f"{node.role} {node.name!r}: must sit on exactly one lan segment (or carrier segment)")
        if not node.gateway:
            raise ConfigError(f"{node.role} {node.name!r}: needs a gateway (its router's LAN address)")


def _check_unique_addresses(topo: Topology) -> None:
    seen: dict[str, str] = {}
    for n in topo.nodes.values():
        for link in n.links:
            for ip in link.ips:
                if ip in seen:
                    raise ConfigError(f"address {ip} used by both {seen[ip]!r} and {n.name!r}")
                seen[ip] = n.name


def _check_gateways(topo: Topology) -> None:
    for n in topo.nodes.values():
        if not n.gateway:
            continue
        seg = topo.upstream_segment(n.name)
        owners = [
            r for r in topo.by_role("router")
            if r != n.name and topo.router_segments(r)[1] == seg and n.gateway in topo.addresses(r, seg)
        ]
        if not owners:
            raise ConfigError(f"node {n.name!r}: gateway {n.gateway} is no router's LAN address on {seg!r}")


def _check_chains(topo: Topology) -> None:
    """Every router leads to the public segment (no loop of NATs behind each other)."""
    for r in topo.by_role("router"):
        seen = {r}
        node = r
        while topo.segments[topo.upstream_segment(node)].kind != "public":
            node = topo.router_of(node)
            if node in seen:
                raise ConfigError(f"router {r!r}: its chain of NATs loops back ({', '.join(sorted(seen))})")
            seen.add(node)
