"""The cross-match design: cover sets, the greedy schedule, and the adaptive k."""

import pytest

from dp2pt.errors import ConfigError
from dp2pt.model.design import (
    choose_k,
    cover_probability,
    cut_in_rate,
    greedy_schedule,
    poisson_pmf,
    survived_cut_ins,
)
from dp2pt.proto.schedules import get_schedule

DIAGRAM1 = get_schedule("diagram1")
GREEDY = get_schedule("poisson-greedy")


def test_one_packet_survives_only_no_cut_in():
    assert survived_cut_ins(DIAGRAM1.first(1)) == {(0, 0)}


def test_a_repeated_destination_takes_no_port_so_diagram1_row_3_is_lost():
    # B's rows 2 and 3 both aim at x2+3·dx2: one flow, so B's packet 3 does not leave from y2+(3+1)·dy2
    # as row 3 (0, 1) assumes; instead A's packet 3 meets B's packet 1 when B had two cut-ins.
    assert survived_cut_ins(DIAGRAM1.first(3)) == {(0, 0), (1, 0), (0, 2)}


def test_greedy_design_reproduces_the_registered_schedule():
    assert greedy_schedule("g", 12, (0.05, 0.26)).hypotheses == GREEDY.first(12)


def test_greedy_schedule_survives_more_probable_counts_than_diagram1():
    for mean_a, mean_b in [(0.3, 0.05), (1.7, 0.26)]:
        ours = cover_probability(survived_cut_ins(GREEDY.first(6)), mean_a, mean_b)
        theirs = cover_probability(survived_cut_ins(DIAGRAM1.first(6)), mean_a, mean_b)
        assert ours > theirs


def test_cover_probability_of_everything_likely_is_nearly_one():
    cells = {(a, b) for a in range(30) for b in range(30)}
    assert cover_probability(cells, 2.0, 1.0) == pytest.approx(1.0)
    assert poisson_pmf(2.0, 0) == pytest.approx(0.1353352832)


def test_choose_k_grows_with_the_cut_in_rate():
    ks = [choose_k(GREEDY, rate) for rate in (0.0, 0.05, 0.26, 1.0)]
    assert ks[0] == 1
    assert ks == sorted(ks) and ks[2] > ks[1]
    assert choose_k(GREEDY, 50.0, k_max=8) == 8


def test_choose_k_refuses_an_impossible_target():
    with pytest.raises(ConfigError):
        choose_k(GREEDY, 0.1, target=1.5)


def test_cut_in_rate_counts_the_extra_deltas_between_probes():
    # delta 2; one cut-in between probes 2-3, two between 3-4, over 10 ms
    assert cut_in_rate([100, 102, 106, 112], [0.0, 2.0, 6.0, 10.0]) == pytest.approx(0.3)
    assert cut_in_rate([100, 101], [0.0, 1.0]) == 0


@pytest.mark.parametrize("ports,times", [([100], [0.0]), ([100, 90], [0.0, 1.0]), ([100, 101], [1.0, 1.0])])
def test_cut_in_rate_refuses_what_it_cannot_read(ports, times):
    with pytest.raises(ConfigError):
        cut_in_rate(ports, times)
