"""Unit tests of lab.world.traffic's pure parts: schedules, bounds, trigger matching, datagram building."""

import json
import struct

import pytest

from lab.world import traffic
from lab.errors import ConfigError

SRC = ("10.1.0.100", "10.1.0.101")


def plan(**kw):
    base = dict(flows=3, dst="203.0.113.50", sources=SRC)
    base.update(kw)
    return traffic.CutInPlan(**base)


def test_count_mode_sends_back_to_back():
    assert traffic.offsets(plan(flows=3)) == [0.0, 0.0, 0.0]


def test_rate_mode_is_evenly_spaced_after_the_delay():
    assert traffic.offsets(plan(flows=3, mode="rate", rate=10, delay=0.5)) == pytest.approx([0.5, 0.6, 0.7])


def test_poisson_mode_is_reproducible_increasing_and_bounded():
    p = plan(flows=200, mode="poisson", rate=50, seed=7)
    times = traffic.offsets(p)
    assert times == traffic.offsets(p)
    assert times != traffic.offsets(plan(flows=200, mode="poisson", rate=50, seed=8))
    assert all(b >= a for a, b in zip(times, times[1:]))
    assert times[-1] <= traffic.MAX_DURATION
    mean_gap = times[-1] / (len(times) - 1)
    assert 0.01 < mean_gap < 0.04  # mean 1/rate = 0.02 s


def test_poisson_drops_flows_beyond_the_time_bound():
    assert len(traffic.offsets(plan(flows=1000, mode="poisson", rate=1.0))) < 100


@pytest.mark.parametrize("kw", [
    dict(flows=traffic.MAX_FLOWS + 1), dict(flows=-1), dict(mode="burst"), dict(rate=0),
    dict(rate=traffic.MAX_RATE * 2), dict(dst="8.8.8.8"), dict(dst="10.2.0.10"),
    dict(sources=("192.0.2.1",)), dict(sources=()), dict(delay=traffic.MAX_DURATION + 1),
])
def test_unsafe_or_unbounded_plans_are_refused(kw):
    with pytest.raises(ConfigError):
        plan(**kw).validate()


def test_plan_round_trips_through_json():
    p = plan(trigger=traffic.Trigger(src="10.1.0.10", dport=3479, dst="198.51.100.10"))
    assert traffic.CutInPlan.from_dict(json.loads(p.to_json())) == p


def _frame(src, dst, dport, proto=17, ethertype=b"\x08\x00"):
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, proto, 0,
                     bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    udp = struct.pack("!HHHH", 40000, dport, 8, 0)
    return b"\x00" * 12 + ethertype + ip + udp


def test_trigger_matches_only_its_datagram():
    t = traffic.Trigger(src="10.1.0.10", dport=3479, dst="198.51.100.10")
    assert t.matches(_frame("10.1.0.10", "198.51.100.10", 3479))
    assert not t.matches(_frame("10.1.0.10", "198.51.100.10", 3478))
    assert not t.matches(_frame("10.1.0.11", "198.51.100.10", 3479))
    assert not t.matches(_frame("10.1.0.10", "198.51.100.11", 3479))
    assert not t.matches(_frame("10.1.0.10", "198.51.100.10", 3479, proto=6))
    assert not t.matches(_frame("10.1.0.10", "198.51.100.10", 3479, ethertype=b"\x86\xdd"))
    assert not t.matches(b"\x00" * 20)


def test_datagrams_are_distinct_flows_from_spoofed_lan_sources():
    from scapy.layers.inet import IP, UDP

    out = traffic.build_datagrams(plan(flows=4, seed=3))
    tuples = [t for _, t in out]
    assert len(set(tuples)) == 4
    for raw, (src, sport, dst, dport) in out:
        pkt = IP(raw)
        assert (pkt[IP].src, pkt[UDP].sport, pkt[IP].dst, pkt[UDP].dport) == (src, sport, dst, dport)
        assert src in SRC and dst == "203.0.113.50" and dport == traffic.SINK_PORT


def test_lan_sources_skip_used_addresses():
    srcs = traffic.lan_sources("10.1.0.0/24", ["10.1.0.100", "10.1.0.1"], n=3)
    assert srcs == ("10.1.0.101", "10.1.0.102", "10.1.0.103")


def test_carrier_subscribers_and_a_pinned_source_port():
    """A noise host on a CGN's carrier segment spoofs shared-address subscribers; a collision pins the port."""
    from scapy.layers.inet import UDP

    p = plan(flows=3, sources=("100.64.0.100", "100.64.0.101"), sport=40000)
    p.validate()
    assert {UDP(raw[20:]).sport for raw, _ in traffic.build_datagrams(p)} == {40000}
    with pytest.raises(ConfigError):
        plan(sport=70000).validate()
