"""Unit tests of the port-block allocator's decision (lab.world.pba.PortBlocks): pure, no queue, no kernel."""

import random
import socket
import struct

import pytest

from lab.world import nat, pba

SERVER, SINK = ("198.51.100.10", 3478), ("203.0.113.50", 9)


def blocks(spec: str, seed: int = 1) -> pba.PortBlocks:
    return pba.PortBlocks(nat.parse_profile(spec), random.Random(seed))


def test_sequential_inside_a_block_then_a_new_block_when_it_is_used_up():
    b = blocks("cgnat:block=4")
    base = b.prof.pool()[0]
    ports = [b.decide("100.64.0.2", 1000 + i, *SINK, now=0) for i in range(6)]
    assert ports == [base, base + 1, base + 2, base + 3, base + 4, base + 5]  # block 1, then block 2
    assert [e["ports"] for e in b.log] == [[base, base + 3], [base + 4, base + 7]]


def test_subscribers_get_their_own_blocks():
    b = blocks("symmetric-sequential:block=4")
    base = b.prof.pool()[0]
    a1 = b.decide("100.64.0.2", 1000, *SERVER, now=0)
    c1 = b.decide("100.64.0.3", 1000, *SERVER, now=0)
    a2 = b.decide("100.64.0.2", 1000, SERVER[0], 3479, now=0)
    assert (a1, a2, c1) == (base, base + 1, base + 4)  # another subscriber's flow does not move A's next port


def test_mapping_behaviour_is_kept():
    eim, apdm, adm = blocks("cgnat:block=8"), blocks("symmetric-sequential:block=8"), blocks("cgnat:block=8")
    assert eim.decide("10.1.0.10", 5000, *SERVER, now=0) == eim.decide("10.1.0.10", 5000, *SINK, now=0)
    assert apdm.decide("10.1.0.10", 5000, *SERVER, now=0) != apdm.decide("10.1.0.10", 5000, SERVER[0], 3479, now=0)
    assert adm.key("10.1.0.10", 5000, *SERVER) != adm.key("10.1.0.10", 5001, *SERVER)


def test_random_order_stays_inside_the_subscribers_blocks():
    b = blocks("cgnat:block=8,order=random", seed=7)
    ports = [b.decide("10.1.0.10", 1000 + i, *SINK, now=0) for i in range(12)]
    assert len(set(ports)) == 12
    firsts = {p - (p - b.prof.pool()[0]) % 8 for p in ports}
    assert len(firsts) == 2 and ports[:8] != sorted(ports[:8])  # two blocks, not in order


def test_expiry_frees_ports_and_returns_old_blocks_to_the_pool():
    b = blocks("cgnat:block=2")
    free = len(b.free_blocks)
    p1 = b.decide("10.1.0.10", 1, *SINK, now=0)
    p2 = b.decide("10.1.0.10", 2, *SINK, now=0)
    p3 = b.decide("10.1.0.10", 3, *SINK, now=0)  # second block
    b.expire({("10.1.0.10", 3, p3)}, now=1)  # too young to expire: kept
    assert len(b.mappings) == 3
    b.expire({("10.1.0.10", 3, p3)}, now=10)
    assert len(b.mappings) == 1 and p1 not in b.by_port and p2 not in b.by_port
    assert len(b.free_blocks) == free - 1 and b.log[-1]["event"] == "release"


def test_an_exhausted_pool_refuses_a_new_subscriber():
    b = blocks(f"cgnat:block={nat.PBA_POOL_PORTS // 2}")
    b.decide("10.1.0.1", 1, *SINK, now=0)
    b.decide("10.1.0.2", 1, *SINK, now=0)
    with pytest.raises(pba.PoolExhausted):
        b.decide("10.1.0.3", 1, *SINK, now=0)


def test_parse_udp_reads_the_flow_of_a_queued_packet():
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0,
                         socket.inet_aton("10.1.0.10"), socket.inet_aton("198.51.100.10"))
    assert pba.parse_udp(header + struct.pack("!HHHH", 5000, 3478, 8, 0)) == ("10.1.0.10", 5000, "198.51.100.10", 3478)
    assert pba.parse_udp(header[:9] + b"\x06" + header[10:] + b"\x00" * 8) is None  # TCP
    assert pba.parse_udp(b"\x60" + b"\x00" * 40) is None  # IPv6
