"""Unit tests of lab.world.nat: profile parsing, refusals, and the rendered nftables ruleset (pure)."""

import re

import pytest

from lab.world import nat
from lab.errors import UnknownProfile, UnsupportedNat

R = nat.RouterParams(wan_if="eth0", lan_if="eth1", wan_ip="198.51.100.1", lan_net="10.1.0.0/24")


@pytest.mark.parametrize("name", nat.PROFILE_NAMES)
def test_every_named_profile_renders_one_table(name):
    text = nat.render_ruleset(nat.parse_profile(name), R)
    assert text.count(f"table ip {nat.TABLE} {{") == 2  # create-if-missing, then the definition
    assert f"delete table ip {nat.TABLE}" in text  # atomic replace: old maps and numgen counter go
    assert text.count("{") == text.count("}")
    # Hint (d): unsolicited inbound to the WAN is dropped in a filter chain, for every profile.
    assert 'iifname "eth0" ct state new counter drop' in text


def test_port_restricted_cone_is_plain_masquerade():
    text = nat.render_ruleset(nat.parse_profile("port-restricted-cone"), R)
    assert 'oifname "eth0" ip saddr 10.1.0.0/24 masquerade' in text
    assert "snat" not in text and "dnat" not in text


def test_sequential_allocator_steps_by_delta():
    prof = nat.parse_profile("symmetric-sequential:delta=3,base=30000")
    text = nat.render_ruleset(prof, R)
    m = re.search(r"numgen inc mod (\d+) map \{ (.*?) \}", text)
    assert m
    pairs = [tuple(map(int, p.split(" : "))) for p in m.group(2).split(", ")]
    assert pairs[:3] == [(0, 30000), (1, 30003), (2, 30006)]
    assert len(pairs) == int(m.group(1))
    assert all(p <= 65535 for _, p in pairs)


def test_sequential_slots_stay_in_port_range():
    prof = nat.parse_profile("symmetric-sequential:delta=100,base=60000")
    slots = nat.sequential_slots(prof)
    assert slots[0] == 60000 and slots[-1] <= 65535 and len(slots) == 56


def test_random_uses_fully_random_snat():
    text = nat.render_ruleset(nat.parse_profile("symmetric-random"), R)
    assert "snat ip to 198.51.100.1 : 1024-65535 random,fully-random" in text


def test_full_cone_dnats_by_mapped_port_only():
    text = nat.render_ruleset(nat.parse_profile("full-cone"), R)
    assert "dnat ip to udp dport map @eif" in text
    assert "update @eif { ct reply proto-dst :" in text
    assert "ct status dnat accept" in text


def test_restricted_cone_keys_on_remote_address():
    text = nat.render_ruleset(nat.parse_profile("restricted-cone"), R)
    assert "dnat ip to ip saddr . udp dport map @adf" in text
    assert "update @adf { ip daddr . ct reply proto-dst" in text


def test_timeout_parameter_sets_both_conntrack_timeouts():
    prof = nat.parse_profile("full-cone:timeout=5")
    assert nat.conntrack_sysctls(prof) == {
        "net.netfilter.nf_conntrack_udp_timeout": "5",
        "net.netfilter.nf_conntrack_udp_timeout_stream": "5",
    }
    assert "timeout 5s" in nat.render_ruleset(prof, R)


def test_spec_round_trips():
    for text in ("symmetric-sequential:delta=2", "full-cone", "restricted-cone:timeout=7", "full-cone:hairpin=1",
                 "cgnat", "cgnat:block=8,order=random,hairpin=1", "symmetric-random:block=64", "address-dependent"):
        assert nat.parse_profile(text).spec == text
    assert nat.parse_profile("full-cone:hairpin=on").spec == "full-cone:hairpin=1"


def test_every_profile_is_described_with_its_parameters():
    assert set(nat.DESCRIPTIONS) == set(nat.PROFILE_NAMES)
    assert {"hairpin", "block", "order", "timeout"} <= set(nat.PARAMETERS)


@pytest.mark.parametrize("name", nat.PROFILE_NAMES)
def test_lan_packets_to_the_wan_address_are_dropped_silently(name):
    """Without hairpinning (and when no mapping holds the port) a LAN datagram to the router's own
    WAN address is dropped in the input filter chain: no ICMP, no conntrack entry."""
    text = nat.render_ruleset(nat.parse_profile(name), R)
    assert 'iifname "eth1" ip daddr 198.51.100.1 meta l4proto udp ct state new counter drop' in text
    assert "dnat ip to udp dport map @hairpin" not in text


@pytest.mark.parametrize("name", ["port-restricted-cone", "restricted-cone", "symmetric-sequential", "address-dependent"])
def test_hairpin_dnats_lan_packets_to_the_mapping_and_snats_with_the_allocator(name):
    text = nat.render_ruleset(nat.parse_profile(f"{name}:hairpin=1"), R)
    assert 'iifname "eth1" ip daddr 198.51.100.1 meta l4proto udp dnat ip to udp dport map @hairpin' in text
    assert 'oifname "eth1" ip saddr 10.1.0.0/24 ct status dnat meta l4proto udp jump alloc' in text
    # Hairpinned flows are mappings too: recorded (after SNAT, by their original source).
    assert ('oifname "eth1" ct original ip saddr 10.1.0.0/24 ct status dnat ct direction original meta l4proto udp '
            "update @hairpin") in text


def test_full_cone_hairpins_through_its_own_map():
    text = nat.render_ruleset(nat.parse_profile("full-cone:hairpin=1"), R)
    assert 'iifname "eth1" ip daddr 198.51.100.1 meta l4proto udp dnat ip to udp dport map @eif' in text
    assert "map hairpin" not in text


def test_address_dependent_mapping_reuses_the_port_per_remote_address():
    text = nat.render_ruleset(nat.parse_profile("address-dependent"), R)
    lookup = "snat ip to ip saddr . udp sport . ct original ip daddr map @adm"
    assert lookup in text and text.index(lookup) < text.index("numgen inc")  # an existing mapping first
    assert "update @adm { ct original ip saddr . ct original proto-src . ct original ip daddr" in text
    assert "dnat ip to ip saddr . udp dport map @adf" in text


def test_port_blocks_take_the_allocators_mark_or_drop():
    prof = nat.parse_profile("cgnat:block=8")
    text = nat.render_ruleset(prof, R)
    assert f"meta mark {prof.pool()[0]}-{prof.pool()[-1]} snat ip to 198.51.100.1 : meta mark map" in text
    assert "counter drop" in text.split("chain alloc")[1].split("}")[1]
    assert "numgen" not in text


def test_queue_rules_build_and_remove_the_allocators_chain():
    build = nat.queue_rules(nat.parse_profile("cgnat:hairpin=1"), R)
    flat = [" ".join(c) for c in build]
    assert any(f"-A {nat.PBA_CHAIN} -o eth0 -p udp -s 10.1.0.0/24" in c and f"--queue-num {nat.PBA_QUEUE}" in c
               for c in flat)
    assert any("-i eth1 -o eth1" in c and "--ctstate DNAT" in c for c in flat)  # hairpinned flows too
    assert flat[-1].endswith(f"-A FORWARD -j {nat.PBA_CHAIN}")
    assert nat.queue_rules(nat.parse_profile("full-cone"), R) == nat.queue_rules(None, R) == build[:3]


@pytest.mark.parametrize(
    "text, error",
    [
        ("cone", UnknownProfile),
        ("symmetric-sequential:delta=0", UnknownProfile),
        ("symmetric-sequential:delta=x", UnknownProfile),
        ("symmetric-sequential:colour=red", UnknownProfile),
        ("symmetric-sequential:delta", UnknownProfile),
        ("full-cone:hairpin=maybe", UnknownProfile),
        ("full-cone:timeout=0", UnknownProfile),
        ("full-cone:block=64", UnsupportedNat),
        ("cgnat:block=3", UnknownProfile),
        ("cgnat:block=4096", UnknownProfile),
        ("cgnat:order=preserve", UnknownProfile),
        ("symmetric-sequential:order=random", UnknownProfile),
        ("symmetric-sequential:block=64,delta=2", UnsupportedNat),
    ],
)
def test_bad_profiles_are_refused(text, error):
    with pytest.raises(error):
        nat.parse_profile(text)


@pytest.mark.parametrize(
    "mapping, filtering, allocation",
    [
        (nat.Mapping.ADM, nat.Filtering.EIF, nat.Allocation.SEQUENTIAL),
        (nat.Mapping.ADM, nat.Filtering.ADF, nat.Allocation.PRESERVE),
        (nat.Mapping.ADM, nat.Filtering.ADF, nat.Allocation.RANDOM),
        (nat.Mapping.EIM, nat.Filtering.EIF, nat.Allocation.RANDOM),
        (nat.Mapping.APDM, nat.Filtering.EIF, nat.Allocation.SEQUENTIAL),
        (nat.Mapping.APDM, nat.Filtering.APDF, nat.Allocation.PRESERVE),
    ],
)
def test_unbuildable_combinations_are_refused(mapping, filtering, allocation):
    with pytest.raises(UnsupportedNat):
        nat.render_ruleset(nat.NatProfile("custom", mapping, filtering, allocation), R)


def test_aliases():
    assert nat.parse_profile("masquerade").name == "port-restricted-cone"


def test_table_carries_the_profile_for_status():
    text = nat.render_ruleset(nat.parse_profile("symmetric-sequential:delta=2"), R)
    assert f'comment "{nat.COMMENT_PREFIX}symmetric-sequential:delta=2"' in text
def test_conntrack_udp_flows_reads_the_mapped_port():
    text = (
        "ipv4     2 udp      17 29 src=10.1.0.10 dst=198.51.100.10 sport=37653 dport=3479 "
        "src=198.51.100.10 dst=198.51.100.1 sport=3479 dport=20001 mark=0 use=1\n"
        "ipv4     2 tcp      6 119 TIME_WAIT src=10.1.0.10 dst=198.51.100.10 sport=56446 dport=7000 "
        "src=198.51.100.10 dst=198.51.100.1 sport=7000 dport=56446 [ASSURED] mark=0 use=1\n"
    )
    (flow,) = nat.conntrack_udp_flows(text)
    assert flow == nat.UdpFlow("10.1.0.10", 37653, "198.51.100.10", 3479, 20001)
