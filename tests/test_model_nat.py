"""The NAT model: RFC 4787 mapping/filtering and the allocators the improved protocol depends on."""

import random

import pytest

from dp2pt.errors import ConfigError
from dp2pt.model.nat import Allocation, Filtering, Mapping, Nat, NatConfig

HOST, OTHER_HOST = ("10.0.1.2", 40000), ("10.0.1.3", 40000)
R1, R2, R3 = ("192.0.2.1", 1000), ("192.0.2.1", 1001), ("192.0.2.2", 1000)


def nat(**kw) -> Nat:
    return Nat(NatConfig(**kw), "198.51.100.1", random.Random(0))


def test_endpoint_dependent_sequential_takes_a_port_per_new_destination_and_reuses_a_known_one():
    n = nat(first_port=20000)
    assert [n.outbound(HOST, r) for r in (R1, R2, R1, R3)] == [20000, 20001, 20000, 20002]


def test_sequential_counter_is_shared_by_all_lan_hosts_and_steps_by_delta():
    n = nat(first_port=20000, delta=2)
    assert n.outbound(HOST, R1) == 20000
    assert n.outbound(OTHER_HOST, R3) == 20002  # a cut-in
    assert n.outbound(HOST, R2) == 20004


def test_sequential_wraps_inside_the_range():
    n = nat(first_port=65534, port_min=1024, port_max=65535)
    assert [n.outbound(HOST, r) for r in (R1, R2, R3)] == [65534, 65535, 1024]


def test_a_wrapped_port_is_shared_by_mappings_to_different_remotes_and_each_filters_its_own():
    n = nat(first_port=2000, port_min=2000, port_max=2002)
    r4 = ("192.0.2.3", 1000)
    assert [n.outbound(HOST, r) for r in (R1, R2, R3)] + [n.outbound(OTHER_HOST, r4)] == [2000, 2001, 2002, 2000]
    assert n.inbound(R1, 2000) == HOST
    assert n.inbound(r4, 2000) == OTHER_HOST


def test_endpoint_independent_mapping_keeps_one_port_per_internal_endpoint():
    n = nat(mapping=Mapping.EIM)
    assert n.outbound(HOST, R1) == n.outbound(HOST, R2) == n.outbound(HOST, R3)


def test_address_dependent_mapping_shares_a_port_per_remote_ip():
    n = nat(mapping=Mapping.ADM)
    assert n.outbound(HOST, R1) == n.outbound(HOST, R2) != n.outbound(HOST, R3)


def test_apdf_admits_only_the_exact_remote_the_mapping_sent_to():
    n = nat(filtering=Filtering.APDF)
    port = n.outbound(HOST, R1)
    assert n.inbound(R1, port) == HOST
    assert n.inbound(R2, port) is None
    assert n.inbound(R3, port) is None


def test_adf_admits_any_port_of_a_contacted_ip():
    n = nat(filtering=Filtering.ADF)
    port = n.outbound(HOST, R1)
    assert n.inbound(R2, port) == HOST
    assert n.inbound(R3, port) is None


def test_eif_admits_anyone_on_a_mapped_port_but_nothing_on_an_unmapped_one():
    n = nat(filtering=Filtering.EIF)
    port = n.outbound(HOST, R1)
    assert n.inbound(R3, port) == HOST
    assert n.inbound(R1, port + 1) is None


def test_preserve_keeps_the_internal_port_until_another_host_holds_it():
    n = nat(allocation=Allocation.PRESERVE, first_port=30000)
    assert n.outbound(HOST, R1) == 40000
    assert n.outbound(HOST, R2) == 40000  # same socket, another destination: Linux keeps the port
    assert n.outbound(OTHER_HOST, R1) == 30000  # clash: falls back to the sequential allocator


def test_random_allocation_is_reproducible_from_the_seed_and_not_sequential():
    ports = [nat(allocation=Allocation.RANDOM).outbound(HOST, r) for r in (R1, R1)]
    assert ports[0] == ports[1]
    n = nat(allocation=Allocation.RANDOM)
    seq = [n.outbound(HOST, ("192.0.2.9", p)) for p in range(20)]
    assert len(set(seq)) == 20
    assert sorted(b - a for a, b in zip(seq, seq[1:])) != [1] * 19


@pytest.mark.parametrize(
    "kw", [{"delta": 0}, {"first_port": 80}, {"port_min": 2000, "port_max": 1500}, {"port_max": 70000}]
)
def test_impossible_profiles_are_refused(kw):
    with pytest.raises(ConfigError):
        NatConfig(**kw)


def test_port_blocks_keep_other_subscribers_out_of_a_peers_sequence():
    nat = Nat(NatConfig(block=4, first_port=20000, port_min=20000, port_max=20063), "198.51.100.1", random.Random(1))
    a1 = nat.outbound(("100.64.0.2", 5000), ("s", 3478))
    other = nat.outbound(("100.64.0.9", 7000), ("sink", 9))  # another subscriber: its own block
    a2 = nat.outbound(("100.64.0.2", 5000), ("s", 3479))
    assert (a1, a2, other) == (20000, 20001, 20004)
    ports = [nat.outbound(("100.64.0.2", 6000 + i), ("sink", 9)) for i in range(3)]
    assert ports == [20002, 20003, 20008]  # a new block when the first is used up


def test_port_blocks_in_random_order_stay_in_the_block():
    nat = Nat(NatConfig(block=8, allocation=Allocation.RANDOM, port_min=20000, first_port=20000, port_max=20063),
              "198.51.100.1", random.Random(3))
    ports = [nat.outbound(("10.1.0.10", 5000), ("sink", 9 + i)) for i in range(8)]
    assert sorted(ports) == list(range(20000, 20008)) and ports != sorted(ports)
    with pytest.raises(ConfigError):
        NatConfig(block=8, allocation=Allocation.PRESERVE)
