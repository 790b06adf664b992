"""A node's addresses and routes as its topology declares them, set over netlink (pyroute2).

One place for every way a node comes up: the netns backend sets them on the veths it creates, the
Docker backend from the host in a container's namespace, and a compose container on itself at
start (images/node.py). ``ipr`` is any pyroute2 handle of the node's namespace (``IPRoute``,
``NetNS``), so all three use the same calls.
"""

from __future__ import annotations

from typing import Mapping

from lab.world.topology import Topology


def ifname_with(ipr, address: str) -> str | None:
    """The interface holding ``address`` in ``ipr``'s namespace (Docker keeps no interface order)."""
    for msg in ipr.get_addr(family=2):
        if msg.get_attr("IFA_ADDRESS") == address:
            return ipr.get_links(msg["index"])[0].get_attr("IFLA_IFNAME")
    return None


def set_addresses(ipr, topo: Topology, node: str, ifnames: Mapping[str, str]) -> None:
    """Add the topology's addresses of ``node`` on its interface to each segment, and bring it up."""
    for link in topo.node(node).links:
        idx = ipr.link_lookup(ifname=ifnames[link.segment])[0]
        for addr in link.addresses:
            ip, plen = addr.split("/")
            ipr.addr("add", index=idx, address=ip, prefixlen=int(plen))
        ipr.link("set", index=idx, state="up")


def set_routes(ipr, topo: Topology, node: str, ifnames: Mapping[str, str]) -> None:
    """Install the topology's explicit routes of ``node`` (on-link public subnets, default via its NAT)."""
    for route in topo.routes(node):
        idx = ipr.link_lookup(ifname=ifnames[route.segment])[0]
        if route.dst == "default":
            ipr.route("replace", dst="0.0.0.0/0", gateway=route.via, oif=idx)
        else:
            ipr.route("replace", dst=route.dst, oif=idx, scope=253)  # on-link (scope link)


def adopt(ipr, topo: Topology, node: str, given: Mapping[str, tuple[str, int]]) -> dict[str, str]:
    """Turn interfaces addressed by an engine (Docker) into the topology's; return segment -> ifname.

    ``given`` maps each of ``node``'s segments to the (address, prefix length) the engine assigned
    there: the interface is found by that address, the address removed, the topology's set, and the
    engine's default route (via the host) replaced by the topology's routes — routers and public
    hosts get no default route at all.
    """
    ifnames = {}
    for link in topo.node(node).links:
        ip, plen = given[link.segment]
        ifname = ifname_with(ipr, ip)
        if ifname is None:
            raise LookupError(f"node {node!r}: no interface holds {ip} (segment {link.segment!r})")
        ipr.addr("del", index=ipr.link_lookup(ifname=ifname)[0], address=ip, prefixlen=plen)
        ifnames[link.segment] = ifname
    set_addresses(ipr, topo, node, ifnames)
    for route in ipr.get_default_routes(family=2):
        ipr.route("del", dst="0.0.0.0/0", gateway=route.get_attr("RTA_GATEWAY"))
    set_routes(ipr, topo, node, ifnames)
    return ifnames
