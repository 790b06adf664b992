"""The ladder classifier on a synthetic capture of one basic exchange (scapy-built, no root).

The pcap is what the public segment of FIG. 1 carries: TCP control lines between the NATs' WAN
addresses and the server, STUN probes to the server's two ports, and D2PT punches/replies/data
between the NATs.  The tests check the step labels, the order 3..17, and the drop rule.
"""

import json

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from dp2pt.proto import stun
from dp2pt.proto.datagram import Datagram, Kind
from lab.report import ladder as rl

NAT_A, NAT_B, SERVER = "198.51.100.1", "203.0.113.1", "198.51.100.10"
XA, XB = 40000, 50000  # NAT-A's / NAT-B's mapped ports of the data sockets
SESSION = b"\x01" * 8


class Capture:
    """Builds packets with increasing timestamps and TCP sequence numbers per flow."""

    def __init__(self):
        self.pkts, self.t, self.seq = [], 1000.0, {}

    def _add(self, pkt):
        self.t += 0.01
        pkt.time = self.t
        self.pkts.append(pkt)

    def udp(self, src, dst, payload):
        self._add(Ether() / IP(src=src[0], dst=dst[0]) / UDP(sport=src[1], dport=dst[1]) / payload)

    def tcp(self, src, dst, msg, resend=False):
        flow = (src, dst)
        data = json.dumps(msg).encode() + b"\n"
        seq = self.seq.setdefault(flow, 1000)
        if resend:
            seq -= len(data)
        else:
            self.seq[flow] = seq + len(data)
        self._add(Ether() / IP(src=src[0], dst=dst[0]) / TCP(sport=src[1], dport=dst[1], flags="PA", seq=seq) / data)

    def probe(self, nat, port, server_port):
        req = stun.binding_request()
        self.udp((nat, port), (SERVER, server_port), bytes(req))
        self.udp((SERVER, server_port), (nat, port), stun.binding_response(req, (nat, port)))

    def d2pt(self, src, dst, kind, index=0):
        self.udp(src, dst, bytes(Datagram(kind, SESSION, index)))


CA, CB, SRV = (NAT_A, 30001), (NAT_B, 30002), (SERVER, 7000)


def basic_exchange(cap: Capture, b_punch_port=XA + 1):
    cap.tcp(CA, SRV, {"type": "login", "id": "A"})
    cap.tcp(SRV, CA, {"type": "login_ok"})
    cap.tcp(CB, SRV, {"type": "login", "id": "B"})
    cap.tcp(SRV, CB, {"type": "login_ok"})
    cap.tcp(CB, SRV, {"type": "connect"})
    cap.tcp(SRV, CA, {"type": "session"})
    cap.probe(NAT_A, XA - 1, 3478)
    cap.probe(NAT_A, XA, 3479)
    cap.tcp(CA, SRV, {"type": "report", "port": XA, "delta": 1})
    cap.tcp(CA, SRV, {"type": "report", "port": XA, "delta": 1}, resend=True)  # TCP retransmission
    cap.tcp(SRV, CB, {"type": "peer_report", "step": 8})
    cap.probe(NAT_B, XB - 1, 3478)
    cap.probe(NAT_B, XB, 3479)
    cap.tcp(CB, SRV, {"type": "report", "port": XB, "delta": 1})
    cap.tcp(SRV, CA, {"type": "peer_report", "step": 14})
    cap.tcp(SRV, CB, {"type": "punch", "step": 15})
    cap.d2pt((NAT_B, XB), (NAT_A, b_punch_port), Kind.PUNCH, 1)
    cap.tcp(CB, SRV, {"type": "punched"})
    cap.tcp(SRV, CA, {"type": "punch", "step": 16})
    cap.d2pt((NAT_A, XA), (NAT_B, XB + 1), Kind.PUNCH, 1)
    cap.d2pt((NAT_B, XB + 1), (NAT_A, XA), Kind.REPLY, 1)
    cap.d2pt((NAT_A, XA), (NAT_B, XB + 1), Kind.DATA)
    cap.d2pt((NAT_B, XB + 1), (NAT_A, XA), Kind.DATA_ACK)


@pytest.fixture
def cell(tmp_path):
    cap = Capture()
    basic_exchange(cap)
    wrpcap(str(tmp_path / "public.pcap"), cap.pkts)
    (tmp_path / "a.json").write_text(json.dumps({"role": "A", "mapped": [NAT_A, XA]}))
    (tmp_path / "b.json").write_text(json.dumps({"role": "B", "mapped": [NAT_B, XB + 1]}))
    return tmp_path


def test_steps_of_a_basic_exchange_in_order(cell):
    ladder = rl.ladder_of(cell)
    assert ladder.steps == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]
    assert ladder.control_captured


def test_addresses_from_the_peers_results_and_the_capture(cell):
    ladder = rl.ladder_of(cell)
    assert ladder.addresses == rl.Addresses(NAT_A, NAT_B, (SERVER,))


def test_b_punch_to_a_port_no_reply_uses_is_dropped_at_nat_a(cell):
    punches = [e for e in rl.ladder_of(cell).events if e.kind == "punch"]
    b_punch, a_punch = punches
    assert (b_punch.step, b_punch.dropped_at, b_punch.dst_lane) == (15, "NAT-A", "NAT-A")
    assert (a_punch.step, a_punch.dropped_at, a_punch.dst_lane) == (16, None, "B")


def test_b_punch_to_the_port_the_reply_goes_to_is_delivered(tmp_path):
    cap = Capture()
    basic_exchange(cap, b_punch_port=XA)
    wrpcap(str(tmp_path / "public.pcap"), cap.pkts)
    ladder = rl.classify(rl.read_packets([tmp_path / "public.pcap"]), rl.Addresses(NAT_A, NAT_B, (SERVER,)))
    assert [e.dropped_at for e in ladder.events if e.kind == "punch"] == [None, None]


def test_lanes_of_probes_and_punches(cell):
    events = rl.ladder_of(cell).events
    step = {e.step: e for e in events if e.step}
    assert (step[3].src_lane, step[3].dst_lane) == ("A", "server")
    assert (step[4].src_lane, step[4].dst_lane) == ("server", "A")
    assert (step[12].src_lane, step[12].dst_lane) == ("server", "B")
    assert (step[17].src_lane, step[17].dst_lane) == ("B", "A")


def test_single_probe_is_steps_5_and_6(tmp_path):
    """The simplified protocol (FIG. 3) skips steps 3 and 4: its only probe is step 5."""
    cap = Capture()
    cap.probe(NAT_A, XA, 3478)
    cap.probe(NAT_B, XB, 3478)
    ladder = rl.classify(_read(cap, tmp_path), rl.Addresses(NAT_A, NAT_B, (SERVER,)))
    assert ladder.steps == [5, 6, 11, 12]
    assert not ladder.control_captured


def test_udp_and_tcp_in_separate_files_merge_by_time(tmp_path):
    cap = Capture()
    basic_exchange(cap)
    wrpcap(str(tmp_path / "public.pcap"), [p for p in cap.pkts if UDP in p])
    wrpcap(str(tmp_path / "public-tcp.pcap"), [p for p in cap.pkts if TCP in p])
    (tmp_path / "addresses.json").write_text(json.dumps({"nat_a": NAT_A, "nat_b": NAT_B, "servers": [SERVER]}))
    assert rl.ladder_of(tmp_path).steps == list(range(1, 18))


def test_garbage_udp_is_drawn_without_a_step(tmp_path):
    cap = Capture()
    cap.udp((NAT_A, 1), (SERVER, 3478), b"\x00\x01" + b"x" * 30)
    cap.udp((NAT_A, 1), (NAT_B, 2), b"D2PT")
    ladder = rl.classify(_read(cap, tmp_path), rl.Addresses(NAT_A, NAT_B, (SERVER,)))
    assert ladder.steps == [] and len(ladder.events) == 2


def test_no_pcap_is_a_report_error(tmp_path):
    with pytest.raises(rl.ReportError, match="no .pcap"):
        rl.ladder_of(tmp_path)


def test_no_addresses_is_a_report_error(tmp_path):
    wrpcap(str(tmp_path / "public.pcap"), [Ether() / IP() / UDP()])
    with pytest.raises(rl.ReportError, match="addresses"):
        rl.ladder_of(tmp_path)


def test_contains_in_order():
    assert rl.contains_in_order([1, 3, 2, 4, 3, 5], [3, 4, 5])
    assert not rl.contains_in_order([5, 4, 3], [3, 4, 5])


def _read(cap, tmp_path):
    path = tmp_path / "x.pcap"
    wrpcap(str(path), cap.pkts)
    return rl.read_packets([path])


def _eim_punches(tmp_path, filtering):
    """B punches first (step 15) from its mapped port; A then punches back; B replies (EIM, delta 0)."""
    cap = Capture()
    cap.udp((NAT_A, XA), (SERVER, 3478), bytes(stun.binding_request()))
    cap.udp((NAT_B, XB), (SERVER, 3478), bytes(stun.binding_request()))
    cap.d2pt((NAT_B, XB), (NAT_A, XA), Kind.PUNCH, 1)
    cap.d2pt((NAT_A, XA), (NAT_B, XB), Kind.PUNCH, 1)
    cap.d2pt((NAT_B, XB), (NAT_A, XA), Kind.REPLY, 1)
    addrs = rl.Addresses(NAT_A, NAT_B, (SERVER,), filtering=filtering)
    return [(e.step, e.dropped_at) for e in rl.classify(_read(cap, tmp_path), addrs).events if e.kind == "punch"]


@pytest.mark.parametrize("filtering, expected", [
    ({"A": "APDF", "B": "APDF"}, [(15, "NAT-A"), (16, None)]),  # B's first punch hits a closed filter
    ({"A": "ADF", "B": "APDF"}, [(15, "NAT-A"), (16, None)]),  # NAT-A never sent to NAT-B's address
    ({"A": "EIF", "B": "APDF"}, [(15, None), (16, None)]),  # full cone: the mapping accepts anyone
    ({}, [(15, None), (16, None)]),  # unknown filtering: the reply on that port says delivered
])
def test_drops_follow_the_far_nats_filtering(tmp_path, filtering, expected):
    assert _eim_punches(tmp_path, filtering) == expected


def test_punch_to_a_port_without_mapping_is_dropped_even_by_a_full_cone(tmp_path):
    cap = Capture()
    cap.d2pt((NAT_B, XB), (NAT_A, XA + 7), Kind.PUNCH, 1)
    addrs = rl.Addresses(NAT_A, NAT_B, (SERVER,), filtering={"A": "EIF"})
    assert [e.dropped_at for e in rl.classify(_read(cap, tmp_path), addrs).events] == ["NAT-A"]


def test_filtering_read_from_the_cells_profiles(cell):
    (cell / "result.json").write_text(json.dumps({"cell": {"nat_a": "full-cone", "nat_b": "symmetric-random"}}))
    assert rl.ladder_of(cell).addresses.filtering == {"A": "EIF", "B": "APDF"}


def test_any_agents_capture_is_drawn_without_spec_steps():
    """ICE-like: STUN to the server, checks between the NATs (the first one dropped), data both ways."""
    from dp2pt.proto import stun as codec

    cap = Capture()
    cap.probe(NAT_A, XA, 3478)
    cap.probe(NAT_B, XB, 3478)
    cap.udp((NAT_A, XA), (NAT_B, XB), bytes(codec.binding_request()))  # dies at NAT-B: B sent nothing yet
    cap.udp((NAT_B, XB), (NAT_A, XA), bytes(codec.binding_request()))
    cap.udp((NAT_A, XA), (NAT_B, XB), b"payload")
    cap.udp((NAT_B, XB), (NAT_A, XA), b"payload")
    packets = read_packets_of(cap)
    ladder = rl.classify_any(packets, rl.Addresses(NAT_A, NAT_B, (SERVER,)))
    assert ladder.steps == []
    kinds = [(e.kind, e.src_lane, e.dst_lane, e.dropped_at) for e in ladder.events]
    assert kinds[4:] == [("check", "A", "NAT-B", "NAT-B"), ("check", "B", "A", None), ("data", "A", "B", None),
                         ("data", "B", "A", None)]
    assert ladder.events[0].label.startswith("binding ") and ladder.events[4].label.startswith("check: binding")
    with_filtering = rl.classify_any(packets, rl.Addresses(NAT_A, NAT_B, (SERVER,), {"A": "EIF", "B": "EIF"}))
    assert with_filtering.events[4].dropped_at is None  # a full cone lets it in


def read_packets_of(cap):
    import tempfile
    from pathlib import Path

    from lab.world.capture import read_packets

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.pcap"
        wrpcap(str(path), cap.pkts)
        return read_packets([path])
