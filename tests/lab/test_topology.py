"""Unit tests of lab.topology: loading, validation, explicit routes (no namespaces needed)."""

import pytest

from lab.world import topology
from lab.errors import ConfigError, UnknownNode


def test_fig1_has_the_spec_roles():
    t = topology.load("fig1")
    assert t.by_role("server") == ["server"]
    assert set(t.by_role("router")) == {"nat-a", "nat-b"}
    assert t.router_of("a") == "nat-a" and t.router_of("b") == "nat-b"
    assert t.router_segments("nat-a") == ("public", "lan-a")
    assert t.lan_hosts("nat-a", "noise") == ["noise-a"]
    assert t.address("sink") == "203.0.113.50" and len(t.addresses("sink")) == 2


def test_fig4_has_two_servers():
    assert topology.load("fig4").by_role("server") == ["server1", "server2"]


def test_routes_leave_no_path_between_lans():
    t = topology.load("fig1")
    for r in ("nat-a", "nat-b"):
        assert all(route.dst != "default" for route in t.routes(r))
        assert all(not route.dst.startswith("10.") for route in t.routes(r))
    assert [(r.dst, r.via) for r in t.routes("a")] == [("default", "10.1.0.1")]
    assert [r.dst for r in t.routes("server")] == ["203.0.113.0/24"]


def test_zoo_chains_nats_behind_a_carrier_nat():
    t = topology.load("zoo")
    assert t.nat_chain("a") == ["nat-a", "cgn"] and t.nat_chain("b") == ["nat-b"]
    assert t.nat_chain("subs") == ["cgn"] and t.nat_chain("c") == ["nat-c", "cgn"]
    assert t.router_segments("nat-a") == ("carrier", "lan-a") and t.router_of("nat-a") == "cgn"
    # A nested NAT routes through its carrier NAT; the carrier NAT has no route into any home LAN.
    assert [(r.dst, r.via) for r in t.routes("nat-a")] == [("default", "100.64.0.1")]
    assert all(not r.dst.startswith(("10.", "100.")) and r.dst != "default" for r in t.routes("cgn"))
    assert t.lan_hosts("cgn") == ["nat-a", "nat-c", "subs"]


def _base():
    return {
        "segments": {"public": {"kind": "public", "subnets": ["198.51.100.0/24"]},
                     "lan": {"kind": "lan", "subnets": ["10.9.0.0/24"]}},
        "nodes": {"r": {"role": "router", "links": {"public": ["198.51.100.1"], "lan": ["10.9.0.1"]}},
                  "p": {"role": "peer", "links": {"lan": ["10.9.0.2"]}, "gateway": "10.9.0.1"}},
    }


def test_valid_minimal_topology():
    t = topology.from_dict(_base())
    assert t.node("p").links[0].addresses == ("10.9.0.2/24",)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["nodes"]["p"].update(gateway="10.9.0.99"), "gateway"),
        (lambda d: d["nodes"]["p"].update(links={"lan": ["10.8.0.2"]}), "no subnet"),
        (lambda d: d["nodes"]["p"].update(links={"public": ["198.51.100.7"]}), "lan segment"),
        (lambda d: d["nodes"]["r"].update(links={"public": ["198.51.100.1"]}), "WAN"),
        (lambda d: d["nodes"].update(q={"role": "peer", "links": {"lan": ["10.9.0.2"]}, "gateway": "10.9.0.1"}),
         "both"),
        (lambda d: d["nodes"].update(Bad={"role": "sink", "links": {"public": ["198.51.100.9"]}}), "name"),
        (lambda d: d["segments"]["lan"].update(kind="public"), "exactly one"),
        (lambda d: d["nodes"]["p"].update(role="wizard"), "role"),
        (lambda d: d["segments"].update(cgn={"kind": "carrier", "subnets": ["10.64.0.0/24"]}), "RFC 6598"),
        (lambda d: d["nodes"]["r"].update(links={"lan": ["10.9.0.1"], "other": ["10.9.1.1"]})
         or d["segments"].update(other={"kind": "lan", "subnets": ["10.9.1.0/24"]}), "wan: SEGMENT"),
        (lambda d: d["nodes"]["r"].update(wan="public", links={"public": ["198.51.100.1"], "lan": ["10.9.0.1"]},
                                           gateway="198.51.100.9"), "no gateway"),
        (lambda d: d["nodes"]["p"].update(wan="lan"), "'wan'"),
    ],
)
def test_invalid_topologies_are_refused(mutate, message):
    d = _base()
    mutate(d)
    with pytest.raises(ConfigError, match=message):
        topology.from_dict(d)


def test_unknown_node_and_topology():
    with pytest.raises(UnknownNode):
        topology.load("fig1").node("c")
    with pytest.raises(ConfigError, match="unknown topology"):
        topology.load("fig99")


def test_a_nested_router_needs_its_carrier_nats_address():
    d = _base()
    d["segments"]["carrier"] = {"kind": "carrier", "subnets": ["100.64.0.0/24"]}
    d["nodes"]["r"]["links"] = {"public": ["198.51.100.1"], "carrier": ["100.64.0.1"]}
    d["nodes"]["home"] = {"role": "router", "links": {"carrier": ["100.64.0.2"], "lan": ["10.9.0.1"]}}
    d["nodes"]["p"]["gateway"] = "10.9.0.1"
    with pytest.raises(ConfigError, match="needs a gateway"):
        topology.from_dict(d)
    d["nodes"]["home"]["gateway"] = "100.64.0.1"
    assert topology.from_dict(d).nat_chain("p") == ["home", "r"]
