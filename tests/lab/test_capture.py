"""Unit tests of the pcap proof of the direct path (lab.capture), on synthetic captures."""

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from lab.world import capture

WAN_A, WAN_B, SERVER = "198.51.100.1", "203.0.113.1", "198.51.100.10"


def d2pt(src, dst, kind, sport=20002, dport=20002):
    payload = capture.MAGIC + bytes([kind]) + b"\x00" * 8 + b"\x00\x01" + b"\x00\x00\x00\x01"
    return Ether() / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload


def write(tmp_path, pkts):
    path = tmp_path / "public.pcap"
    wrpcap(str(path), pkts)
    return capture.read_d2pt(path)


def test_direct_data_both_ways_is_proven(tmp_path):
    rep = write(tmp_path, [d2pt(WAN_A, WAN_B, 1), d2pt(WAN_B, WAN_A, 2), d2pt(WAN_A, WAN_B, 3), d2pt(WAN_B, WAN_A, 3),
                           Ether() / IP(src=WAN_A, dst=SERVER) / UDP(dport=3478) / b"stun"])
    capture.assert_direct(rep, WAN_A, WAN_B, [SERVER])
    assert rep.count(WAN_A, WAN_B, "data") == 1 and rep.udp_total == 5


def test_one_way_data_is_not_enough(tmp_path):
    rep = write(tmp_path, [d2pt(WAN_A, WAN_B, 3)])
    with pytest.raises(capture.PathNotProven, match="both ways"):
        capture.assert_direct(rep, WAN_A, WAN_B, [SERVER])


def test_data_through_a_server_is_refused(tmp_path):
    rep = write(tmp_path, [d2pt(WAN_A, WAN_B, 3), d2pt(WAN_B, WAN_A, 3), d2pt(WAN_A, SERVER, 3)])
    with pytest.raises(capture.PathNotProven, match="location server"):
        capture.assert_direct(rep, WAN_A, WAN_B, [SERVER])


def test_failed_cell_must_show_no_data(tmp_path):
    capture.assert_no_direct_data(write(tmp_path, [d2pt(WAN_A, WAN_B, 1)]))
    with pytest.raises(capture.PathNotProven):
        capture.assert_no_direct_data(write(tmp_path, [d2pt(WAN_A, WAN_B, 3)]))
