"""The Docker lab on a real engine: backend bring-up, its traps, and that nothing is left behind.

Skipped (with the reason) when no Docker engine answers, when not root, or when the images are
missing; the node image is rebuilt first when the working tree changed (cheap when it did not).
"""
from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lab.world import capture, topology
from lab.world.backends import docker as dockerlab
from lab.world.backends.base import started, wait_for_line

ROOT = Path(__file__).resolve().parent.parent


def _engine_reason() -> str | None:
    return dockerlab.unavailable_reason(image=None)


pytestmark = pytest.mark.skipif(_engine_reason() is not None, reason=f"Docker lab: {_engine_reason()}")


@pytest.fixture(scope="session")
def node_image() -> str:
    """The node image, rebuilt from the working tree when it changed (skip if it cannot be built)."""
    base = subprocess.run(["docker", "image", "inspect", "dp2pt/base:bookworm"], capture_output=True)
    if base.returncode != 0:
        pytest.skip("Docker lab: no base image dp2pt/base:bookworm (make base-image)")
    done = subprocess.run(["bash", str(ROOT / "images" / "build-node.sh")], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"make lab-image failed: {done.stderr.strip()[-300:]}")
    return dockerlab.IMAGE


@pytest.fixture(scope="module")
def lab(node_image):
    """One fig1 lab for the module's tests; removed (and checked removed) at the end."""
    backend = dockerlab.DockerBackend()
    lab = backend.up(topology.load("fig1"))
    yield lab
    lab.down()
    assert leftovers(lab.prefix) == []


def leftovers(prefix: str) -> list[str]:
    """Everything of lab ``prefix`` still on the machine: containers, networks, bridges, host rules."""
    api = dockerlab._client().api
    flt = {"label": f"{dockerlab.LABEL}={prefix}"}
    found = [c["Names"][0] for c in api.containers(all=True, filters=flt)]
    found += [n["Name"] for n in api.networks(filters=flt)]
    found += dockerlab.host_rules(prefix)
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    found += [line.split(":")[1].strip() for line in links.splitlines() if f" {prefix}." in line]
    return found


def test_interfaces_are_found_by_address_not_by_order(lab):
    for router in lab.topology.by_role("router"):
        for segment in lab.topology.router_segments(router):
            ifname = lab.interface(router, segment)
            shown = lab.exec(router, ["ip", "-o", "-4", "addr", "show", "dev", ifname]).stdout
            assert f" {lab.address(router, segment)}/" in shown


def test_routes_follow_the_topology_not_docker(lab):
    """Docker routes every container via the host's bridge; the lab replaces that."""
    for node in ("nat-a", "server", "sink"):
        assert "default" not in lab.exec(node, ["ip", "route"]).stdout, node
    assert lab.exec("a", ["ip", "route", "show", "default"]).stdout.startswith("default via 10.1.0.1 ")
    # the second public subnet (Docker's bridge carries one) is on-link for every public host
    assert "203.0.113.0/24 dev" in lab.exec("server", ["ip", "route"]).stdout
    assert lab.exec("server", ["ping", "-c1", "-W2", "203.0.113.1"], check=False).returncode == 0
    # nothing outside the lab is reachable: no default route anywhere but to a NAT, internal networks
    for node in ("nat-a", "server", "a"):
        assert lab.exec(node, ["ping", "-c1", "-W1", "192.0.2.1"], check=False).returncode != 0, node


def test_host_is_no_bypass_between_bridges(lab):
    """Sent to the host's side of the LAN bridge, a LAN host's packet must not reach the public segment."""
    net = dockerlab._client().api.inspect_network(lab.network("lan-a"))
    host_side = net["IPAM"]["Config"][0].get("Gateway") or str(
        next(ipaddress.IPv4Network(net["IPAM"]["Config"][0]["Subnet"]).hosts()))
    dev = lab.interface("noise-a", "lan-a")
    lab.exec("noise-a", ["ip", "route", "replace", "198.51.100.10/32", "via", host_side, "dev", dev, "onlink"])
    try:
        assert lab.exec("noise-a", ["ping", "-c1", "-W1", "198.51.100.10"], check=False).returncode != 0
    finally:
        lab.exec("noise-a", ["ip", "route", "del", "198.51.100.10/32"], check=False)
    # and the host itself has no route into any lab subnet (its bridges sit in DOCKER_POOL only)
    routes = subprocess.run(["ip", "-4", "route", "show", "dev", lab.bridge("public")], capture_output=True, text=True)
    assert "198.51.100." not in routes.stdout and "203.0.113." not in routes.stdout


def test_nat_traffic_crosses_the_bridges_with_br_netfilter(lab, tmp_path):
    """The DOCKER-USER rules let NATed frames through; the capture shows only the NATs' WAN addresses."""
    assert len(dockerlab.host_rules(lab.prefix)) == len(lab.topology.segments)
    lab.configure_nat("nat-a", "symmetric-sequential")
    lab.configure_nat("nat-b", "port-restricted-cone")
    assert "30" == lab.exec("nat-a", ["cat", "/proc/sys/net/netfilter/nf_conntrack_udp_timeout"]).stdout.strip()
    srv = "198.51.100.10:7000"
    with started(lab, "server", ["dp2pt", "server", "--tcp", srv, "--udp", "198.51.100.10:3478", "--json"]) as s:
        wait_for_line(s, lambda l: '"ready"' in l, 10)
        with lab.capture("public", tmp_path / "public.pcap") as cap, \
                started(lab, "a", ["dp2pt", "peer", "--id", "a", "--server", srv, "--json", "listen"]) as a:
            wait_for_line(a, lambda l: '"ready"' in l, 10)
            b = lab.exec("b", ["dp2pt", "peer", "--id", "b", "--server", srv, "--json", "connect", "a"],
                         timeout=30, check=False)
            result_a = json.loads(wait_for_line(a, lambda l: '"ok"' in l, 10))
        result_b = json.loads(b.stdout.strip().splitlines()[-1])
    assert result_a["ok"] and result_b["ok"], (result_a, result_b)
    report = capture.read_d2pt(cap.path)
    capture.assert_direct(report, "198.51.100.1", "203.0.113.1", ["198.51.100.10"])


def test_stop_ends_the_process_inside_the_container(lab):
    proc = lab.popen("a", ["sleep", "300"])
    lab.stop(proc)
    assert "sleep 300" not in lab.exec("a", ["ps", "-eo", "args"]).stdout


def test_attach_and_list_find_the_lab_from_labels(lab):
    backend = dockerlab.DockerBackend()
    assert lab.prefix in [info.prefix for info in backend.list()]
    again = backend.attach(lab.prefix)
    assert again.topology.nodes.keys() == lab.topology.nodes.keys()
    assert again.interface("nat-b", "public") == lab.interface("nat-b", "public")


def test_down_all_cleans_a_crashed_lab(node_image):
    """A lab whose handle is lost (the run crashed) is found by label and removed with its host rules."""
    backend = dockerlab.DockerBackend()
    prefix = backend.up(topology.load("fig1")).prefix  # handle dropped on purpose
    assert leftovers(prefix)
    assert prefix in [info.prefix for info in backend.list()]
    backend.down(prefix)  # what down_all does per lab (down_all itself would also end other labs)
    assert leftovers(prefix) == []


def test_up_refuses_a_prefix_in_use_and_bad_prefixes(lab):
    from lab.errors import LabStateError

    backend = dockerlab.DockerBackend()
    with pytest.raises(LabStateError, match="already up"):
        backend.up(lab.topology, prefix=lab.prefix)
    with pytest.raises(LabStateError, match="invalid lab prefix"):
        backend.up(lab.topology, prefix="Bad!")


@pytest.fixture
def compose_lab_free():
    """The compose lab has fixed names: never tear down a user's lab, serialise concurrent runs."""
    import fcntl

    from lab.world import compose

    with open("/tmp/dp2pt-compose-lab.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if leftovers(compose.PROJECT):
            pytest.skip("a compose lab (make lab-up) is running here; make lab-down to run this test")
        yield


def test_make_lab_up_goes_direct_in_the_topology_world_and_lab_down_leaves_nothing(node_image, compose_lab_free,
                                                                                     tmp_path):
    """make lab-up: the committed compose.yaml gives every node fig1's addresses, runs one traversal
    through the scenario runner (the capture proves the path), and make lab-down leaves nothing."""
    from lab.world import compose

    lab_cli = [sys.executable, "-m", "lab.cli", "compose"]
    topo = topology.load("fig1")
    try:
        up = subprocess.run([*lab_cli, "up", "--run-dir", str(tmp_path)], capture_output=True, text=True,
                            timeout=180, cwd=ROOT)
        assert up.returncode == 0, up.stderr
        result = json.loads(next(line for line in up.stdout.splitlines() if line.startswith("{")))
        assert result["ok"] and result["direct"]
        assert result["mapped"][0] == topo.address("nat-b", "public")  # the topology's NAT-B, not another world's
        assert "all between the NATs' WAN addresses" in up.stdout
        assert list(tmp_path.glob("*/*/result.json")), "the traversal's artifacts are the runner's"
        for node in topo.nodes:
            shown = subprocess.run(["docker", "exec", compose.container(node), "ip", "-4", "-o", "addr", "show"],
                                   capture_output=True, text=True, check=True).stdout
            held = {field.split("/")[0] for line in shown.splitlines() for field in line.split() if "/" in field}
            assert held - {"127.0.0.1"} == set(topo.addresses(node)), node
    finally:
        down = subprocess.run([*lab_cli, "down"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert down.returncode == 0, down.stderr
    assert leftovers(compose.PROJECT) == []
