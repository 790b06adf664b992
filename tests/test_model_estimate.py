"""Monte-Carlo estimates: the Wilson interval, determinism, and agreement with the exact cover law."""


import pytest

from dp2pt.errors import ConfigError
from dp2pt.model.cutins import FixedCutIns, PoissonCutIns
from dp2pt.model.design import cover_probability, survived_cut_ins, window_means
from dp2pt.model.estimate import success_probability, wilson
from dp2pt.model.exchange import Network
from dp2pt.model.timeline import Timeline
from dp2pt.proto.schedules import get_schedule

DIAGRAM1 = get_schedule("diagram1")
GREEDY = get_schedule("poisson-greedy")


def test_wilson_matches_the_textbook_values():
    e = wilson(5, 10)
    assert (round(e.low, 4), round(e.high, 4)) == (0.2366, 0.7634)
    e = wilson(0, 10)
    assert e.low == 0 and round(e.high, 4) == 0.2775
    assert wilson(10, 10).high == pytest.approx(1.0)


def test_wilson_refuses_nonsense():
    with pytest.raises(ConfigError):
        wilson(3, 2)


def test_fixed_cut_ins_give_certain_outcomes():
    assert success_probability(DIAGRAM1, 6, FixedCutIns(2, 0), trials=50).successes == 50
    assert success_probability(DIAGRAM1, 6, FixedCutIns(0, 1), trials=50).successes == 0


def test_estimates_are_reproducible_from_the_seed():
    a = success_probability(GREEDY, 4, PoissonCutIns(0.26), trials=500, seed=7)
    assert a == success_probability(GREEDY, 4, PoissonCutIns(0.26), trials=500, seed=7)


@pytest.mark.parametrize("name", ["diagram1", "poisson-greedy"])
def test_without_probe_gap_or_burst_spread_monte_carlo_agrees_with_the_exact_cover_law(name):
    # With cut-ins only possible before the bursts, the outcome is a function of (c_a, c_b).
    timeline = Timeline(probe_spacing_ms=0, burst_gap_ms=0)
    schedule = get_schedule(name)
    exact = cover_probability(survived_cut_ins(schedule.first(6)), *window_means(0.26, timeline))
    e = success_probability(schedule, 6, PoissonCutIns(0.26), Network(timeline=timeline), trials=10000, seed=1)
    assert e.low <= exact <= e.high


@pytest.mark.parametrize("rate", [0.05, 0.26])
def test_poisson_greedy_beats_diagram1_at_six_packets(rate):
    ours = success_probability(GREEDY, 6, PoissonCutIns(rate), trials=4000, seed=2)
    theirs = success_probability(DIAGRAM1, 6, PoissonCutIns(rate), trials=4000, seed=2)
    assert ours.low > theirs.high


def test_drawing_timelines_per_trial_differs_from_their_mean():
    # Half the runs with a short window, half with a long one: the success probability is not linear
    # in the window (here concave), so the mean timeline overestimates the mixture.
    base = dict(probe_spacing_ms=0.27, b_probe2_to_punch_ms=0.3, b_to_a_burst_ms=0.35)
    short, long = Timeline(a_probe2_to_b_probe1_ms=0.1, **base), Timeline(a_probe2_to_b_probe1_ms=20.0, **base)
    mean = Timeline(a_probe2_to_b_probe1_ms=10.05, **base)
    mixed = success_probability(DIAGRAM1, 6, PoissonCutIns(0.26), trials=4000, seed=3, timelines=[short, long])
    flat = success_probability(DIAGRAM1, 6, PoissonCutIns(0.26), Network(timeline=mean), trials=4000, seed=3)
    assert mixed.high < flat.low
