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


# ---- any UDP program: classify_path ------------------------------------------------------------

RELAY = "198.51.100.20"
ENDS = capture.Endpoints(WAN_A, WAN_B, frozenset({(SERVER, 3478), (SERVER, 3479), (RELAY, 3478)}),
                         frozenset({RELAY}))
STUN_REQ = bytes.fromhex("0001 0000 2112a442") + b"\x01" * 12  # a Binding request header
CHANNEL_DATA = b"\x40\x00\x00\x04data"


def dg(t, src, dst, payload=b"hello"):
    return capture.Packet(t, "udp", src, dst, payload)


def test_a_flow_answered_after_it_started_is_a_direct_path():
    a, b = (WAN_A, 20001), (WAN_B, 30001)
    v = capture.classify_path([dg(0.0, a, b), dg(0.1, b, a), dg(0.2, a, b)], ENDS)
    assert v.path == "direct" and v.flows[0].open and v.flows[0].carries_data


def test_punches_that_cross_the_wire_both_ways_prove_nothing():
    """Both punches of a failed exchange are on the public segment: different 5-tuples, no path."""
    v = capture.classify_path([dg(0.0, (WAN_A, 20001), (WAN_B, 30002)), dg(0.1, (WAN_B, 30001), (WAN_A, 20002)),
                               dg(0.2, (WAN_A, 20001), (WAN_B, 30002))], ENDS)
    assert v.path == "none" and not any(f.open for f in v.flows)


def test_one_datagram_each_way_is_not_enough():
    """The first datagram may have died at the far NAT: only a later one each way is proof."""
    a, b = (WAN_A, 20001), (WAN_B, 30001)
    assert capture.classify_path([dg(0.0, a, b), dg(0.1, b, a)], ENDS).path == "none"


def test_probes_to_servers_are_not_a_path():
    v = capture.classify_path([dg(0.0, (WAN_A, 20001), (SERVER, 3478), STUN_REQ),
                               dg(0.1, (SERVER, 3478), (WAN_A, 20001), STUN_REQ),
                               dg(0.2, (WAN_A, 20001), (SERVER, 3478), STUN_REQ),
                               dg(0.3, (WAN_A, 20009), ("203.0.113.50", 9))], ENDS)
    assert (v.path, v.probes, v.other) == ("none", 3, 1)


def relayed_both_sides(t0=0.0):
    """A's ChannelData to the relay's port, the relay's port to B: both legs answered."""
    a, b, listen, relayed = (WAN_A, 20001), (WAN_B, 30001), (RELAY, 3478), (RELAY, 50000)
    return [dg(t0, a, listen, CHANNEL_DATA), dg(t0 + 0.1, listen, a, CHANNEL_DATA), dg(t0 + 0.2, a, listen, CHANNEL_DATA),
            dg(t0 + 0.3, relayed, b), dg(t0 + 0.4, b, relayed), dg(t0 + 0.5, relayed, b)]


def test_data_through_a_turn_relay_is_a_relayed_path():
    v = capture.classify_path(relayed_both_sides(), ENDS)
    assert v.path == "relayed"
    assert {f.leg for f in v.flows if f.carries_data} == {"relay-A", "relay-B"}


def test_turn_allocation_alone_is_a_probe():
    a, listen = (WAN_A, 20001), (RELAY, 3478)
    v = capture.classify_path([dg(0.0, a, listen, STUN_REQ), dg(0.1, listen, a, STUN_REQ), dg(0.2, a, listen, STUN_REQ)], ENDS)
    assert (v.path, v.probes) == ("none", 3)


def test_data_decides_when_checks_opened_a_direct_flow_too():
    """ICE's checks may open a direct flow it does not nominate: the data went through the relay."""
    a, b = (WAN_A, 20001), (WAN_B, 30001)
    checks = [dg(0.0, a, b, STUN_REQ), dg(0.01, b, a, STUN_REQ), dg(0.02, a, b, STUN_REQ)]
    assert capture.classify_path(checks + relayed_both_sides(0.1), ENDS).path == "relayed"
    assert capture.classify_path(checks, ENDS).path == "direct"  # no data anywhere: the open flow decides


def test_classify_path_reads_a_pcap(tmp_path):
    path = tmp_path / "public.pcap"
    wrpcap(str(path), [Ether() / IP(src=WAN_A, dst=WAN_B) / UDP(sport=20001, dport=30001) / b"x",
                       Ether() / IP(src=WAN_B, dst=WAN_A) / UDP(sport=30001, dport=20001) / b"y",
                       Ether() / IP(src=WAN_A, dst=WAN_B) / UDP(sport=20001, dport=30001) / b"z"])
    v = capture.classify_path(path, ENDS)
    assert v.path == "direct" and v.to_dict()["flows"][0]["out"] == 2


def test_hairpinned_data_is_proven_on_the_inside_segment(tmp_path):
    """Two peers behind one NAT: every datagram goes to its public address and comes back down."""
    a, b, via = "100.64.0.2", "100.64.0.3", "198.51.100.1"
    legs = [d2pt(a, via, 3), d2pt(via, b, 3), d2pt(b, via, 3), d2pt(via, a, 3)]
    capture.assert_direct(write(tmp_path, legs), a, b, [], via=via)
    with pytest.raises(capture.PathNotProven, match="no hairpinned data"):
        capture.assert_direct(write(tmp_path, legs[:2]), a, b, [], via=via)
    with pytest.raises(capture.PathNotProven, match="outside the hairpin path"):
        capture.assert_direct(write(tmp_path, legs + [d2pt(a, b, 3)]), a, b, [], via=via)


def test_a_path_hairpinned_by_a_shared_nat_is_direct():
    """On a shared NAT's inside segment: each side's flow with the NAT's public address is a leg."""
    a, b, via = ("10.2.0.10", 41000), ("10.2.0.11", 42000), "203.0.113.1"
    ends = capture.Endpoints(a[0], b[0], frozenset({(SERVER, 3478)}), via=via)
    legs = [dg(0.0, a, (via, 42000)), dg(0.1, (via, 41000), b), dg(0.2, b, (via, 41000)), dg(0.3, (via, 42000), a),
            dg(0.4, a, (via, 42000)), dg(0.5, (via, 41000), b)]
    assert capture.classify_path(legs, ends).path == "direct"
    assert capture.classify_path(legs[:3], ends).path == "none"  # nothing came back to A
    # Address-dependent mapping: each side sends on one hairpinned flow and receives on another.
    split = [dg(0.0, a, (via, 42000)), dg(0.1, (via, 41001), b), dg(0.2, b, (via, 41001)), dg(0.3, (via, 42001), a)]
    assert capture.classify_path(split, ends).path == "direct"


def test_data_one_way_through_the_relay_is_a_relayed_path():
    """A sends on a direct pair, B on a relayed one (aioice's two sides may nominate different pairs)."""
    a, b, listen = (WAN_A, 20001), (WAN_B, 30001), (RELAY, 3478)
    stream = [dg(0.0, a, b, STUN_REQ), dg(0.01, b, a, STUN_REQ), dg(0.02, a, b, STUN_REQ),  # a direct pair opens
              dg(0.03, b, listen, CHANNEL_DATA), dg(0.04, listen, b, CHANNEL_DATA),  # B's checks via its relay
              dg(0.05, a, b), dg(0.06, b, listen, CHANNEL_DATA)]  # A's data direct, B's through the relay
    assert capture.classify_path(stream, ENDS).path == "relayed"
    no_relay = stream[:3] + [stream[5]]
    assert capture.classify_path(no_relay, ENDS).path == "direct"  # data one way only, no relay: the open flow
