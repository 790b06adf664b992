"""The compose world is generated from the topology: one definition of a world (no Docker needed)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from lab import cli
from lab.world import compose, topology

ROOT = Path(__file__).resolve().parents[2]


def test_committed_compose_yaml_is_what_the_generator_writes():
    source = topology.resolve("fig1")
    committed = (ROOT / "compose.yaml").read_text()
    assert committed == compose.render(topology.load(source), source), (
        "compose.yaml differs from the generator's output: edit lab/world/topologies/fig1.yaml "
        "(or lab/world/compose.py) and run `make compose-file`, never compose.yaml by hand")


@pytest.mark.parametrize("name", ["fig1", "fig4", "zoo"])
def test_every_node_and_segment_of_the_topology_is_in_the_compose_file(name):
    source = topology.resolve(name)
    topo = topology.load(source)
    doc = yaml.safe_load(compose.render(topo, source))
    assert set(doc["services"]) == set(topo.nodes)
    assert set(doc["networks"]) == set(topo.segments)
    plan = compose.docker_plan(topo)
    for node in topo.nodes.values():
        svc = doc["services"][node.name]
        assert svc["command"] == [node.role]
        assert svc["environment"]["DP2PT_NODE"] == node.name
        assert svc["container_name"] == compose.container(node.name)
        # The container is attached where the topology links it, at the address its entrypoint adopts.
        assert {seg: n["ipv4_address"] for seg, n in svc["networks"].items()} == \
            {seg: ip for seg, (ip, _) in plan[node.name].items()}
    for seg, net in doc["networks"].items():
        assert net["internal"] is True
        subnet = ipaddress.IPv4Network(net["ipam"]["config"][0]["subnet"])
        assert subnet.subnet_of(ipaddress.IPv4Network("198.18.0.0/15"))  # Docker's pool, never a lab subnet
        assert net["driver_opts"]["com.docker.network.bridge.name"] == compose.bridge(topo, seg)


def test_docker_addresses_are_unique_and_outside_the_topology():
    topo = topology.load("fig4")
    given = [ip for per_node in compose.docker_plan(topo).values() for ip, _ in per_node.values()]
    assert len(given) == len(set(given))
    assert not set(given) & {ip for n in topo.nodes for ip in topo.addresses(n)}


def test_routers_take_their_declared_profile_unless_the_variable_says_otherwise():
    source = topology.resolve("fig1")
    doc = yaml.safe_load(compose.render(topology.load(source), source))
    nat_a = doc["services"]["nat-a"]
    assert nat_a["environment"]["NAT_PROFILE"] == "${NAT_A:-symmetric-sequential}"
    assert nat_a["sysctls"]["net.ipv4.ip_forward"] == "1"
    assert nat_a["sysctls"]["net.netfilter.nf_conntrack_udp_timeout"] == "${NAT_A_UDP_TIMEOUT:-30}"
    assert doc["services"]["nat-b"]["environment"]["NAT_PROFILE"] == "${NAT_B:-port-restricted-cone}"


def test_a_topology_outside_the_package_is_mounted_into_the_containers(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text(topology.resolve("fig1").read_text().replace("name: fig1", "name: mine"))
    doc = yaml.safe_load(compose.render(topology.load(own), own))
    server = doc["services"]["server"]
    assert server["environment"]["DP2PT_TOPOLOGY"] == "/etc/dp2pt/topology.yaml"
    assert server["volumes"] == [f"{own.resolve()}:/etc/dp2pt/topology.yaml:ro"]


def test_dp2pt_lab_compose_prints_the_file_and_refuses_nonsense(capsys):
    assert cli.main(["compose", "fig1"]) == 0
    assert capsys.readouterr().out == (ROOT / "compose.yaml").read_text()
    assert cli.main(["compose", "nope"]) == 2
    assert "unknown topology 'nope'" in capsys.readouterr().err
    assert cli.main(["compose", "fig1", "fig4"]) == 2


def test_old_node_names_of_the_compose_lab_still_name_nodes():
    from lab.world.backends.compose import ComposeWorld

    world = ComposeWorld()
    assert [world.node_name(n) for n in ("peer-a", "peer-b", "location-server", "nat-a")] == ["a", "b", "server", "nat-a"]


def test_a_bad_declared_nat_profile_fails_when_the_topology_loads():
    from lab.errors import ConfigError

    data = yaml.safe_load(topology.resolve("fig1").read_text())
    data["nodes"]["nat-a"]["nat"] = "leaky"
    with pytest.raises(ConfigError, match="leaky"):
        topology.from_dict(data)
    data["nodes"]["nat-a"]["nat"] = "full-cone"
    data["nodes"]["a"]["nat"] = "full-cone"
    with pytest.raises(ConfigError, match="only a router"):
        topology.from_dict(data)


def test_the_compose_world_of_another_topology_runs_its_own_file():
    """``compose up --topology zoo`` must start zoo's containers, not compose.yaml's (fig1's)."""
    from lab.world.backends.compose import COMPOSE_FILE, ComposeWorld

    with ComposeWorld()._file() as file:
        assert file == COMPOSE_FILE
    zoo = ComposeWorld("zoo")
    with zoo._file() as file:
        assert file.read_text() == compose.render(zoo.topology, zoo.source)
    assert not file.exists()  # rendered for one compose command, then removed
