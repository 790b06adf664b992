"""Unit tests of lab.scenarios.expect (the NAT model behind the matrix) and of the matrix file's consistency."""

import pytest

from lab.scenarios import expect, matrix
from lab.world.nat import PROFILE_NAMES

SEQ, RND = "symmetric-sequential", "symmetric-random"


@pytest.mark.parametrize("variant, k, schedule", [("basic", None, None), ("simplified", None, None),
                                                  ("improved", 6, None), ("improved", 6, "poisson-greedy")])
def test_random_vs_random_always_fails(variant, k, schedule):
    for seed in range(5):
        assert expect.expected(RND, RND, variant, k, schedule, seed=seed) == "failed"


def test_basic_fails_with_one_cut_in_on_a_sequential_nat():
    assert expect.expected(SEQ, SEQ, "basic") == "direct"
    assert expect.expected(SEQ, SEQ, "basic", cut_a=1) == "failed"
    assert expect.expected(SEQ, SEQ, "basic", cut_b=1) == "failed"


def test_improved_survives_its_hypotheses_but_diagram1_rows_3_4_share_a_flow():
    assert expect.expected(SEQ, SEQ, "improved", 6, cut_a=1) == "direct"  # row 2
    assert expect.expected(SEQ, SEQ, "improved", 6, cut_a=2) == "direct"  # row 5
    assert expect.expected(SEQ, SEQ, "improved", 6, cut_b=2) == "direct"  # row 6
    assert expect.expected(SEQ, SEQ, "improved", 6, cut_b=1) == "failed"  # row 3: B's rows 2-3 collide
    assert expect.expected(SEQ, SEQ, "improved", 6, cut_a=1, cut_b=1) == "failed"  # row 4


def test_poisson_greedy_covers_ca_plus_2cb_below_k():
    for a in range(4):
        for b in range(3):
            want = "direct" if a + 2 * b <= 5 else "failed"
            assert expect.expected(SEQ, SEQ, "improved", 6, "poisson-greedy", a, b) == want, (a, b)


def test_port_restricted_vs_random_fails_and_full_cone_helps():
    assert expect.expected("port-restricted-cone", RND) == "failed"
    assert expect.expected(RND, "full-cone") == "direct"
    assert expect.expected(SEQ, "full-cone", cut_a=2) == "direct"


def test_simplified_assumes_delta_one():
    assert expect.expected(SEQ, SEQ, "simplified") == "direct"
    assert expect.expected(f"{SEQ}:delta=2", f"{SEQ}:delta=2", "simplified") == "failed"
    assert expect.expected("full-cone", "full-cone", "simplified") == "failed"


def test_restricted_vs_random_succeeds_on_the_repeated_round():
    """B's first punch is dropped by A's address-restricted filter (A has not sent to B's NAT yet);
    A's punch misses B's random port but opens A's filter to B's address; B's repeated round passes."""
    assert expect.expected("restricted-cone", RND) == "direct"
    assert expect.expected("port-restricted-cone", RND) == "failed"  # APDF: the port must match too


def test_matrix_file_agrees_with_the_model():
    declared = {c.id: c.expect for c in matrix.load()}
    derived = {c.id: c.expect for c in matrix.default_cells()}
    assert declared == derived, "scenarios/matrix.csv is stale: run `python -m lab.scenarios.matrix --write`"


def test_matrix_covers_every_profile_pair_and_variant():
    cells = [c for c in matrix.load() if c.agent == "dp2pt"]
    pairs = {(c.nat_a, c.nat_b) for c in cells if c.variant == "basic"}
    assert len(pairs & {(a, b) for a in PROFILE_NAMES for b in PROFILE_NAMES}) >= 24
    assert {c.variant for c in cells} == {"basic", "simplified", "improved", "distributed"}
    assert {(c.cut_a, c.cut_b) for c in cells} >= {(a, b) for a in range(3) for b in range(3)}
    assert {"direct", "failed"} == {c.expect for c in cells}


#: ICE between the five textbook profiles (rows NAT-A, columns NAT-B, in matrix.TEXTBOOK order): a mapping
#: that depends on the destination (symmetric) defeats the srflx address unless the far NAT filters
#: by address only (or not at all), so that a peer-reflexive address gets through.
ICE_GRID = """
direct direct direct direct direct
direct direct direct direct direct
direct direct direct failed failed
direct direct failed failed failed
direct direct failed failed failed
"""


def test_ice_outcomes_over_the_profile_grid():
    rows = [line.split() for line in ICE_GRID.strip().splitlines()]
    for i, a in enumerate(matrix.TEXTBOOK):
        for j, b in enumerate(matrix.TEXTBOOK):
            assert expect.expected_ice(a, b) == rows[i][j], (a, b)
            assert expect.expected_ice(a, b, turn=True) == ("relayed" if rows[i][j] == "failed" else "direct")


def test_ice_needs_a_retransmission_on_restricted_cones():
    """A symmetric A's first check meets an address-restricted B that has not sent to A yet: dropped;
    B's check opens NAT-B towards NAT-A's address, and A's retransmission passes (one round is not enough)."""
    assert expect.expected_ice(SEQ, "restricted-cone") == "direct"
    assert expect.expected_ice(SEQ, "restricted-cone", rounds=1) == "failed"


ZOO = dict(world="zoo")
PRC, FULL = "port-restricted-cone", "full-cone"


def test_same_lan_needs_hairpinning_and_no_sender_sees_its_own_punch():
    same = dict(ZOO, peers="b,b2")
    assert expect.expected(PRC, PRC, **same) == "failed"
    assert expect.expected(f"{PRC}:hairpin=1", f"{PRC}:hairpin=1", **same) == "direct"
    # A shared sequential NAT maps B's predicted port to B's own first probe: no defined outcome.
    assert expect.returns_to_sender(f"{SEQ}:hairpin=1", f"{SEQ}:hairpin=1", **same)
    assert not expect.returns_to_sender(f"{PRC}:hairpin=1", f"{PRC}:hairpin=1", **same)


def test_address_dependent_mapping_hides_from_the_spec_probes():
    assert expect.expected("address-dependent", PRC) == "failed"  # dx2 = 0, x2 is the server's mapping
    assert expect.expected("address-dependent", "restricted-cone") == "direct"


def test_port_blocks_shield_a_subscriber_from_the_others_cut_ins():
    double = dict(ZOO, peers="a,b", noise_a="subs")
    assert expect.expected(PRC, PRC, cut_a=1, nats=f"cgn={SEQ}", **double) == "failed"
    assert expect.expected(PRC, PRC, cut_a=1, nats=f"cgn={SEQ}:block=64", **double) == "direct"
    assert expect.expected(PRC, PRC, cut_a=1, nats=f"cgn={SEQ}:block=64", world="zoo", peers="a,b") == "failed"


def test_two_subscribers_of_one_cgn_need_its_hairpinning():
    same_cgn = dict(ZOO, peers="a,c")
    assert expect.expected(PRC, PRC, nats="cgn=cgnat", **same_cgn) == "failed"
    assert expect.expected(PRC, PRC, nats="cgn=cgnat:hairpin=1", **same_cgn) == "direct"


def test_a_collision_on_probe_2_makes_dx2_noise():
    assert expect.expected(PRC, PRC) == "direct"
    assert expect.expected(PRC, PRC, collision=True) == "failed"
    assert expect.expected(PRC, FULL, collision=True) == "direct"  # A's punch from its newest mapping gets in


def test_a_nat_between_a_peer_and_the_public_segment_needs_a_profile():
    from lab.errors import ConfigError

    with pytest.raises(ConfigError, match="cgn"):
        expect.expected(PRC, PRC, world="zoo", peers="a,b")
