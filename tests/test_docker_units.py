"""Unit tests of the Docker lab's pure parts: no engine, no root needed.

The mirror finder (base image without a hard-coded host), the pcap reader of ``make lab-up``'s
bypass check, the backend's address planning (Docker's bridge address and scratch addresses must
never collide with the topology's) and the preflight's message for the br_netfilter trap.
"""
from __future__ import annotations

import importlib.util
import ipaddress
from pathlib import Path

import pytest

from lab.world import topology
from lab.world.backends import docker as dockerlab
from lab.errors import EnvironmentProblem

IMAGES = Path(__file__).resolve().parent.parent / "images"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"images_{name}", IMAGES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- images/debian_mirror.py ----------------------------------------------------------------------


def test_mirror_from_deb822_skips_security_and_other_suites(tmp_path):
    mirror = _load("debian_mirror")
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n"
    )
    assert mirror.find_mirror("bookworm", tmp_path) == "http://mirror.example/debian"


def test_mirror_from_one_line_format_with_options(tmp_path):
    mirror = _load("debian_mirror")
    (tmp_path / "sources.list").write_text(
        "# deb http://old.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main\n"
    )
    assert mirror.find_mirror("bookworm", tmp_path) == "http://m.example/debian"
    assert mirror.find_mirror("trixie", tmp_path) is None


def test_mirror_cli_says_what_is_missing(tmp_path, capsys, monkeypatch):
    mirror = _load("debian_mirror")
    monkeypatch.setattr(mirror, "APT_DIR", tmp_path)
    monkeypatch.setattr(mirror, "find_mirror", lambda suite: None)
    assert mirror.main(["debian_mirror", "bookworm"]) == 1
    assert "no APT source for suite 'bookworm'" in capsys.readouterr().err


# ---- lab/world/backends/docker.py: address planning and preflight ---------------------------------------


def test_docker_subnets_come_from_the_private_pool_and_skip_used_ones():
    class Api:
        def networks(self):
            return [{"IPAM": {"Config": [{"Subnet": "172.17.0.0/16"}]}},
                    {"IPAM": {"Config": [{"Subnet": "198.18.0.0/24"}, {"Subnet": "fd00::/64"}]}},
                    {"IPAM": None}]

    class Client:
        api = Api()

    assert dockerlab._free_pool(Client()) == "198.18.1.0/24"
    topo = topology.load("fig1")
    lab_nets = [ipaddress.IPv4Network(n) for seg in topo.segments.values() for n in seg.subnets]
    assert not any(dockerlab.DOCKER_POOL.overlaps(n) for n in lab_nets)


def test_bridge_names_fit_ifnamsiz():
    lab = dockerlab.DockerLab.__new__(dockerlab.DockerLab)
    lab.topology, lab.prefix = topology.load("fig4"), "d2d12345678"
    assert all(len(lab.bridge(s)) <= 15 for s in lab.topology.segments)


def test_preflight_names_the_br_netfilter_trap(monkeypatch, tmp_path):
    flag = tmp_path / "bridge-nf-call-iptables"
    flag.write_text("1\n")
    monkeypatch.setattr(dockerlab, "BR_NETFILTER", flag)

    class Missing:
        returncode, stdout, stderr = 1, "", "No chain/target/match by that name."

    monkeypatch.setattr(dockerlab, "_iptables", lambda *a, check=True: Missing)
    with pytest.raises(EnvironmentProblem, match="DOCKER-USER"):
        dockerlab.preflight()
    flag.write_text("0\n")
    dockerlab.preflight()  # without br_netfilter, Docker's FORWARD rules never see bridged frames


def test_host_rules_are_found_by_comment(monkeypatch):
    class Listing:
        returncode, stderr = 0, ""
        stdout = (
            "-N DOCKER-USER\n"
            '-A DOCKER-USER -i d2dab.0 -o d2dab.0 -m comment --comment "dp2pt.lab=d2dab" -j ACCEPT\n'
            '-A DOCKER-USER -i d2dab.1 -o d2dab.1 -m comment --comment dp2pt.lab=d2dabc -j ACCEPT\n'
            '-A DOCKER-USER -i x -o x -m comment --comment "someone else" -j ACCEPT\n'
            "-A DOCKER-USER -j RETURN\n"
        )

    monkeypatch.setattr(dockerlab.shutil, "which", lambda name: "/usr/sbin/iptables")
    monkeypatch.setattr(dockerlab, "_iptables", lambda *a, check=True: Listing)
    assert dockerlab.host_rules("d2dab") == [Listing.stdout.splitlines()[1]]
    assert dockerlab.host_rules("d2da") == []  # a prefix of another lab's name is another lab
    assert dockerlab.host_rules("d2dcd") == []
    assert dockerlab._rule_prefixes() == {"d2dab", "d2dabc"}
