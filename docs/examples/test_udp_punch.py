"""Example: test your own UDP program behind real NATs with the dp2pt lab's pytest plugin.

The plugin comes with the package (``pip install -e '.[lab]'``; entry point ``pytest11``), so
``nat_lab`` is there in any test suite of the environment. Run as root (network namespaces):

    pytest docs/examples                        # netns
    pytest docs/examples --lab-backend docker   # the same in containers

``udp_punch.py`` (next to this file) knows nothing of dp2pt: it reads the lab's ``LAB_*``
environment, asks a STUN server for its address, swaps it through the lab's rendezvous and
punches. The lab judges its path from the capture of the public segment, whatever it prints.
"""

from pathlib import Path

PROGRAM = Path(__file__).with_name("udp_punch.py")


def test_a_plain_hole_punch_fails_behind_two_symmetric_nats(nat_lab):
    lab = nat_lab(nat_a="symmetric-random", nat_b="symmetric-random")
    result = lab.run_command(f"python3 {lab.put(PROGRAM)}", timeout=3)
    assert result.route == "none"  # nothing crossed between the two NATs both ways
    assert not result.a["connected"] and not result.b["connected"]  # and the program knows it


def test_the_same_program_goes_direct_behind_port_restricted_cones(nat_lab):
    lab = nat_lab(nat_a="port-restricted-cone", nat_b="port-restricted-cone")
    result = lab.run_command(f"python3 {lab.put(PROGRAM)}", timeout=3)
    assert result.route == "direct", result.path
    flow = next(f for f in result.path["flows"] if f["leg"] == "direct" and f["open"])
    assert flow["near"][0] == "198.51.100.1" and flow["far"][0] == "203.0.113.1"  # NAT-A WAN <-> NAT-B WAN


def test_commands_in_nodes_and_a_capture_of_your_own(nat_lab, tmp_path):
    """The lower level: run anything in a node, capture the public segment, prove the path yourself."""
    lab = nat_lab(nat_a="full-cone", nat_b="full-cone")
    assert lab.exec("a", ["ip", "-4", "-o", "addr", "show"]).stdout.count("10.1.0.10") == 1
    send = "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'hi', ('{}', {}))"
    with lab.capture(tmp_path / "public.pcap") as cap:
        lab.exec("a", ["python3", "-c", send.format("198.51.100.10", 3478)])  # to the server's STUN port: a probe
        lab.exec("a", ["python3", "-c", send.format("203.0.113.1", 40000)])  # to NAT-B, unanswered: no path
    verdict = lab.prove_path(cap.path)
    assert (verdict.path, verdict.probes, len(verdict.flows)) == ("none", 1, 1)
