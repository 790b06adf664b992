"""Whole exchanges on two modelled NATs: which cut-in counts each schedule survives, and why."""

import random

import pytest

from dp2pt.model.cutins import Arrivals, FixedCutIns, PoissonCutIns
from dp2pt.model.design import survived_cut_ins
from dp2pt.model.exchange import Network, run_exchange
from dp2pt.model.nat import Allocation, Filtering, Mapping, NatConfig
from dp2pt.model.timeline import Timeline
from dp2pt.proto.schedules import get_schedule

NET = Network()
DIAGRAM1_6 = get_schedule("diagram1").first(6)
GREEDY_6 = get_schedule("poisson-greedy").first(6)


def run(hypotheses, a=0, b=0, network=NET, seed=0):
    arrivals = FixedCutIns(a, b).draw(network.timeline, len(hypotheses), random.Random(seed))
    return run_exchange(network, hypotheses, arrivals, random.Random(seed))


def test_basic_protocol_without_cut_ins_gets_through_with_a_first_punch():
    out = run(DIAGRAM1_6[:1])
    assert out.ok and out.hit == ("A", 0)
    assert out.x == (20000, 20001) and out.y == (20000, 20001)
    assert out.a_targets == (20002,) and out.a_sources == (20002,)


@pytest.mark.parametrize("a,b", [(1, 0), (0, 1)])
def test_basic_protocol_fails_with_one_cut_in_on_either_side(a, b):
    assert not run(DIAGRAM1_6[:1], a, b).ok


def test_b_punches_are_dropped_at_a_nat_and_the_hit_is_always_a_punch_of_a():
    for a in range(4):
        for b in range(4):
            out = run(DIAGRAM1_6, a, b)
            assert out.hit is None or out.hit[0] == "A"


def test_diagram1_k6_survives_exactly_these_cut_in_counts():
    # Rows 1, 2, 5, 6 and seven coincidences (packet i of A meeting packet j != i of B). Rows 3 (0, 1)
    # and 4 (1, 1) fail: B's rows 2 and 3 aim at the same x2+3·dx2, so B's packet 3 reuses packet 2's
    # flow and B's later packets leave one port earlier than the rows assume.
    expected = {(0, 0), (1, 0), (2, 0), (0, 2), (0, 5), (1, 2), (1, 3), (2, 1), (2, 4), (3, 1), (4, 0)}
    got = {(a, b) for a in range(7) for b in range(7) if run(DIAGRAM1_6, a, b).ok}
    assert got == expected
    assert got == survived_cut_ins(DIAGRAM1_6)


def test_poisson_greedy_k6_survives_every_count_with_ca_plus_twice_cb_below_k():
    got = {(a, b) for a in range(7) for b in range(7) if run(GREEDY_6, a, b).ok}
    assert got == {(a, b) for a in range(7) for b in range(7) if a + 2 * b <= 5}


def test_cut_in_during_a_burst_shifts_the_later_packets_of_that_burst():
    t = NET.timeline
    mid_burst = (t.a_punch(1) + t.a_punch(2)) / 2
    out = run_exchange(NET, GREEDY_6, Arrivals(a=(mid_burst,), b=()), random.Random(0))
    first = out.x[1] + 1
    assert out.a_sources[:3] == (first, first + 1, first + 3)


def test_cut_in_between_the_probes_inflates_the_measured_delta():
    t = NET.timeline
    out = run_exchange(NET, GREEDY_6, Arrivals(a=(t.a_probe2 / 2,), b=()), random.Random(0))
    assert out.x[1] - out.x[0] == 2


@pytest.mark.parametrize("delta", [1, 2])
def test_delta_two_behaves_like_delta_one(delta):
    nat = NatConfig(delta=delta)
    network = Network(nat, nat, Timeline())
    for a, b in [(0, 0), (2, 0), (0, 1), (3, 1)]:
        assert run(GREEDY_6, a, b, network).ok == (a + 2 * b <= 5)


def test_symmetric_random_allocation_defeats_prediction():
    nat = NatConfig(allocation=Allocation.RANDOM)
    network = Network(nat, nat, Timeline())
    assert not any(run(GREEDY_6, network=network, seed=s).ok for s in range(200))


def test_full_cone_nats_get_through_whatever_the_cut_ins():
    cone = NatConfig(mapping=Mapping.EIM, filtering=Filtering.EIF)
    network = Network(cone, cone, Timeline())
    assert all(run(DIAGRAM1_6[:1], a, b, network).ok for a in range(4) for b in range(4))


def test_poisson_draws_are_inside_each_nat_span_and_reproducible():
    t = NET.timeline
    arrivals = PoissonCutIns(0.5).draw(t, 6, random.Random(3))
    assert arrivals == PoissonCutIns(0.5).draw(t, 6, random.Random(3))
    assert all(t.a_probe1 < x < t.a_punch(5) for x in arrivals.a)
    assert all(t.b_probe1 < x < t.b_punch(5) for x in arrivals.b)
    assert PoissonCutIns(0).draw(t, 6, random.Random(3)) == Arrivals((), ())


def test_a_repeated_burst_gets_through_a_restricted_cone_that_dropped_the_first():
    # A behind an address-restricted cone drops B's first burst (A has not sent to B's address yet);
    # A's own punches cannot predict B's random ports, but B's repeat, after A punched, passes.
    restricted = NatConfig(mapping=Mapping.EIM, filtering=Filtering.ADF, allocation=Allocation.PRESERVE)
    random_b = NatConfig(allocation=Allocation.RANDOM)
    with_repeats = Network(restricted, random_b, Timeline())
    assert run(GREEDY_6, network=with_repeats).hit[0] == "B"
    without = Network(restricted, random_b, Timeline(repeats_ms=()))
    assert not run(GREEDY_6, network=without).ok
