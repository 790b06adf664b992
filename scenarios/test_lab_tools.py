"""The lab's own tools on a real lab: cut-in modes seen by the NAT, clear errors, NAT reset."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lab.world import nat, traffic
from lab.errors import PortInUse
from lab.scenarios.run import Runner


def _mapped_ports(lab, router: str, sink: str) -> list[int]:
    out = lab.conntrack_dump(router)
    ports = []
    for line in out.splitlines():
        if f"dst={sink}" in line and "dport=9 " in line:
            ports.append(int(line.rsplit("dport=", 1)[1].split()[0]))
    return sorted(ports)


@pytest.mark.parametrize("mode, flows", [("count", 5), ("rate", 10), ("poisson", 10)])
def test_cut_in_flows_each_take_the_next_sequential_port(lab_fig1, mode, flows):
    lab = lab_fig1
    prof = lab.configure_nat("nat-a", "symmetric-sequential:delta=2")
    agent = traffic.TrafficAgent(lab, "noise-a").start()
    try:
        agent.arm(traffic.plan_for(lab, "noise-a", flows, mode=mode, rate=200.0, seed=1))
        rep = agent.result(10)
    finally:
        agent.stop()
    assert rep["event"] == "done" and rep["sent"] == flows
    if mode != "count":
        assert rep["flows"][-1]["t"] > 0  # spread in time, not a burst
    sink = lab.topology.address("sink")
    assert _mapped_ports(lab, "nat-a", sink) == nat.sequential_slots(prof)[:flows]


def test_nat_reload_resets_the_allocator(lab_fig1):
    lab = lab_fig1
    sink = lab.topology.address("sink")
    for _ in range(2):
        lab.configure_nat("nat-a", "symmetric-sequential")
        agent = traffic.TrafficAgent(lab, "noise-a").start()
        try:
            agent.arm(traffic.plan_for(lab, "noise-a", 2))
            agent.result(5)
        finally:
            agent.stop()
        assert _mapped_ports(lab, "nat-a", sink) == [20000, 20001]


def test_port_in_use_is_a_clear_error(lab_fig1, run_dir):
    lab = lab_fig1
    hog = lab.popen("server", [lab.python, "-c",
                               "import socket,time; s=socket.socket(); s.bind(('198.51.100.10',7000)); s.listen();"
                               " print('bound', flush=True); time.sleep(30)"])
    try:
        assert hog.stdout.readline().strip() == "bound"
        with pytest.raises(PortInUse, match="already in use"):
            Runner(lab, run_dir / "port-in-use").start()
        out = subprocess.run([sys.executable, "-m", "lab.cli", "--backend", lab.backend_name, "run",
                              "--lab", lab.prefix, "--nat-a", "full-cone", "--nat-b", "full-cone",
                              "--run-dir", str(run_dir / "cli")],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 4
        assert out.stderr.strip().startswith("dp2pt-lab: error:") and "in use" in out.stderr
        assert "Traceback" not in out.stderr
    finally:
        lab.stop(hog)


def test_exec_unknown_node_is_a_clear_error(lab_fig1):
    out = subprocess.run([sys.executable, "-m", "lab.cli", "--backend", lab_fig1.backend_name, "exec", "--lab",
                          lab_fig1.prefix, "c", "--", "true"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "unknown node 'c'" in out.stderr


def test_exec_runs_inside_the_node(lab_fig1):
    out = subprocess.run([sys.executable, "-m", "lab.cli", "--backend", lab_fig1.backend_name, "exec", "--lab",
                          lab_fig1.prefix, "nat-a", "--", lab_fig1.python, "-c",
                          "import socket; print(sorted(n for _, n in socket.if_nameindex()))"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "['eth0', 'eth1', 'lo']"


@pytest.mark.parametrize("timeout, second_port", [(1, 20001), (30, 20000)])
def test_udp_mapping_timeout_is_the_profile_s(lab_fig1, timeout, second_port):
    """RFC 4787 §4.3: after the mapping timeout the same flow gets a new mapping (next port)."""
    import time

    lab = lab_fig1
    sink = lab.topology.address("sink")
    lab.configure_nat("nat-a", f"symmetric-sequential:timeout={timeout}")
    agent = traffic.TrafficAgent(lab, "noise-a").start()
    try:
        seen = []
        for _ in range(2):
            agent.arm(traffic.plan_for(lab, "noise-a", 1, seed=5))  # same seed: the same 5-tuple
            assert agent.result(5)["sent"] == 1
            seen.append(_mapped_ports(lab, "nat-a", sink))
            time.sleep(1.6)
    finally:
        agent.stop()
    assert seen[0] == [20000]
    assert second_port in seen[1]


def test_two_labs_side_by_side_with_the_same_addresses(backend, lab_fig1):
    """A second lab reuses every address of the first; each NAT only sees its own lab's flows."""
    from lab.world import topology

    other = backend.up(topology.load("fig1"))
    try:
        assert other.prefix != lab_fig1.prefix
        lab_fig1.configure_nat("nat-a", "symmetric-sequential")
        other.configure_nat("nat-a", "symmetric-sequential:base=30000")
        for lab, flows in ((lab_fig1, 2), (other, 3)):
            agent = traffic.TrafficAgent(lab, "noise-a").start()
            try:
                agent.arm(traffic.plan_for(lab, "noise-a", flows))
                assert agent.result(5)["sent"] == flows
            finally:
                agent.stop()
        sink = lab_fig1.topology.address("sink")
        assert _mapped_ports(lab_fig1, "nat-a", sink) == [20000, 20001]
        assert _mapped_ports(other, "nat-a", sink) == [30000, 30001, 30002]
    finally:
        other.down()


def test_router_reports_its_profile(lab_fig1):
    for spec in ("full-cone", "symmetric-sequential:delta=3,timeout=7"):
        prof = lab_fig1.configure_nat("nat-b", spec)
        assert lab_fig1.nat_profile("nat-b") == prof.spec
    lab_fig1.clear_nat("nat-b")
    assert lab_fig1.nat_profile("nat-b") is None


def test_an_abandoned_plan_is_cancelled_by_the_next(lab_fig1):
    """A cell that dies before its trigger must not leave the agent deaf for the next cell."""
    lab = lab_fig1
    lab.configure_nat("nat-a", "symmetric-sequential")
    agent = traffic.TrafficAgent(lab, "noise-a").start()
    try:
        never = traffic.Trigger(src="10.1.0.99", dport=1)
        agent.arm(traffic.plan_for(lab, "noise-a", 1, never, timeout=20))
        agent.arm(traffic.plan_for(lab, "noise-a", 2))  # within 5 s, not after the 20 s wait
        rep = agent.result(5)
    finally:
        agent.stop()
    assert rep["event"] == "done" and rep["sent"] == 2
