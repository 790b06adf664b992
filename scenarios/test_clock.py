"""The protocol on links with a clock (issue 10), the CI-sized part; the full studies are
``dp2pt-lab study timing|cutin|fig4|loss|relay`` (README, "The lab gets a clock").

- Matrix cells with 20 ms one way on each WAN link end as the matrix declares (a subset holding
  every NAT profile of FIG. 1, cut-ins, the improved and the distributed variant, and the zoo's
  cases: address-dependent mapping, port blocks, a port collision, double NAT behind a CGN, two
  subscribers of one hairpinning CGN, two peers on one LAN; ``dp2pt-lab run all --link
  wan=delay=20ms`` is the whole matrix, README "The lab gets a clock"), and cells of the
  model-vs-lab grid (scripted cut-ins) end as the model with those delays predicts.
- 20% loss each way on both WAN links: basic on a symmetric-sequential pair still reaches a direct
  path. The issue asks >= 95% of runs; a CI-sized sample can only refuse that claim when the
  count is too low for it (one-sided binomial test at 1%); the study runs 200.
- Under Poisson cut-in on links with delay, the model predicts the lab: the success count is in the
  model's 95% prediction interval, the model given only the configured delays (on top of the
  protocol's processing times, measured on instant links in the same session), and each run
  replayed with its own cut-in order ends as it did.
"""

from __future__ import annotations

import pytest

from dp2pt.model.cutins import PoissonCutIns
from dp2pt.model.estimate import binomial_interval, success_probability
from dp2pt.model.exchange import Network
from dp2pt.model.timeline import Timeline
from dp2pt.proto.schedules import get_schedule
from lab import study
from lab.scenarios import matrix
from lab.scenarios.run import Cell, Runner
from lab.world import linkctl
from lab.world.links import parse_conditions

from .conftest import _lab

WAN_DELAY = "delay=20ms"
#: (nat_a, nat_b, variant, cut_a, cut_b) of the matrix rows re-run with delay.
DELAYED = (
    ("full-cone", "symmetric-random", "basic", 0, 0),
    ("restricted-cone", "port-restricted-cone", "basic", 0, 0),
    ("symmetric-random", "symmetric-random", "basic", 0, 0),
    ("symmetric-sequential", "symmetric-sequential", "basic", 1, 0),
    ("symmetric-sequential", "symmetric-sequential", "simplified", 0, 0),
    ("symmetric-sequential", "symmetric-sequential", "improved", 1, 0),
    ("symmetric-sequential", "symmetric-sequential", "distributed", 0, 0),
)
#: The zoo's cases (cell ids of scenarios/matrix.csv; ADM, port blocks and the collision live in FIG. 1's
#: world, the rest in the zoo's) re-run with delay on every router's WAN link.
DELAYED_ZOO = (
    "address-dependent__full-cone__basic__cut00",
    "symmetric-sequential_block=64__port-restricted-cone__basic__cut20",
    "port-restricted-cone__port-restricted-cone__basic__cut00__collision",
    "symmetric-sequential__port-restricted-cone__basic__cut00__zoo-a_b__cgn=cgnat",
    "port-restricted-cone__port-restricted-cone__basic__cut00__zoo-a_c__cgn=cgnat_hairpin=1",
    "port-restricted-cone_hairpin=1__port-restricted-cone_hairpin=1__basic__cut00__zoo-b_b2",
    "port-restricted-cone__symmetric-sequential__improved6__cut10__zoo-a_b__cgn=symmetric-sequential__from-subs",
)
CELLS = [c for c in matrix.load() if ((c.nat_a, c.nat_b, c.variant, c.cut_a, c.cut_b) in DELAYED and c.schedule is None
                                      and not (c.world or c.collision)) or c.id in DELAYED_ZOO]
LOSSY = "delay=10ms,loss=20%"
LOSS_RUNS = 20
CLAIMED = 0.95
POISSON_DELAY = "delay=5ms"
POISSON_RATE = 0.05
POISSON_RUNS = 30
CALIBRATION_RUNS = 10


def _netns_only(backend) -> None:
    """The protocol's and the model's claims are measured once, on the default backend; the Docker run
    checks what a backend can change: the links (test_links.py) and the delayed matrix cells."""
    if backend.name != "netns":
        pytest.skip("a statistical claim about the protocol, measured on the netns backend (CI time)")


@pytest.fixture(scope="module")
def clock_runner(backend, run_dir):
    lab = _lab(backend, "fig4")
    try:
        with Runner(lab, run_dir / "clock") as runner:
            yield runner
    finally:
        lab.down()


@pytest.fixture(scope="module")
def zoo_runner(backend, run_dir):
    """The zoo with 20 ms on every router's WAN link (a lab of its own: the matrix's stays instant)."""
    lab = _lab(backend, "zoo")
    try:
        linkctl.apply(lab, {"wan": parse_conditions(WAN_DELAY)})
        with Runner(lab, run_dir / "clock-zoo") as runner:
            yield runner
    finally:
        lab.down()


def _wan(runner, spec: str) -> None:
    linkctl.apply(runner.lab, {"wan": parse_conditions(spec)})


def test_the_subset_holds_the_zoo_s_cases():
    assert {c.id for c in CELLS} >= set(DELAYED_ZOO)  # a renamed row must not drop out silently


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
def test_matrix_cell_with_20ms_each_wan_link(request, cell):
    if cell.world:
        runner = request.getfixturevalue("zoo_runner")
    else:
        runner = request.getfixturevalue("clock_runner")
        _wan(runner, WAN_DELAY)
    result = runner.run(cell)
    assert result.cutins.get("in_window", True), f"cut-ins missed their window: {result.cutins} ({result.dir})"
    assert result.path_error is None, f"{result.path_error} ({result.dir})"
    assert result.outcome == cell.expect, (result.a.get("error"), result.b.get("error"), result.dir)
    if result.outcome == "direct":
        assert result.b["time_to_direct_ms"] > 4 * 20, "faster than two round trips to the server across a 20 ms WAN link: was the delay applied?"


#: (schedule, k, cut-ins on A, on B, delta) of the agreement grid, re-run on delayed links.
GRID = (("diagram1", 6, 0, 1, 1), ("poisson-greedy", 6, 3, 1, 2), ("poisson-greedy", 6, 2, 2, 1))


@pytest.mark.parametrize("schedule,k,cut_a,cut_b,delta", GRID)
def test_agreement_grid_with_20ms_each_wan_link(clock_runner, schedule, k, cut_a, cut_b, delta):
    _wan(clock_runner, WAN_DELAY)
    outcome = study.lab_grid_run(clock_runner, schedule, k, cut_a, cut_b, delta)
    if not outcome.cutins.get("in_window", True):
        pytest.skip("the cut-in agent missed the window in every attempt (scheduling), no verdict")
    d = parse_conditions(WAN_DELAY).delay_ms
    assert outcome.ok == study.model_prediction(schedule, k, cut_a, cut_b, delta, Timeline.from_delays(d, d, 2 * d))


def test_basic_goes_direct_through_20_percent_loss_each_way(backend, clock_runner):
    _netns_only(backend)
    _wan(clock_runner, LOSSY)
    cell = Cell("symmetric-sequential", "symmetric-sequential", "basic")
    results = [clock_runner.run(cell) for _ in range(LOSS_RUNS)]
    direct = sum(r.outcome == "direct" for r in results)
    # The smallest count a >= 95% success rate gives with probability >= 1% (two-sided 98% interval's floor).
    floor = binomial_interval(LOSS_RUNS, CLAIMED, level=0.98)[0]
    errors = [(r.a.get("error"), r.b.get("error")) for r in results if r.outcome != "direct"]
    assert direct >= floor, f"{direct}/{LOSS_RUNS} direct (at least {floor} expected): {errors}"


def test_model_with_the_links_delays_predicts_poisson_runs(backend, clock_runner):
    _netns_only(backend)
    _wan(clock_runner, "clear")
    calibration = [study.lab_poisson_run(clock_runner, "poisson-greedy", 6, 0.0, seed) for seed in range(CALIBRATION_RUNS)]
    base = Timeline.from_results([(o.a, o.b) for o in calibration if o.ok])
    _wan(clock_runner, POISSON_DELAY)
    d = parse_conditions(POISSON_DELAY).delay_ms  # A and B each one WAN link from the server, two apart
    timeline = Timeline.from_delays(d, d, 2 * d, base=base)
    outcomes = [study.lab_poisson_run(clock_runner, "poisson-greedy", 6, POISSON_RATE, seed,
                                      span_ms=timeline.a_punch(30) + 50) for seed in range(POISSON_RUNS)]
    for o in outcomes:
        assert study.replay_prediction(o, "poisson-greedy", 6, wan_latency_ms=timeline.wan_latency_ms) in (None, o.ok), \
            (o.order_a, o.order_b)
    model = success_probability(get_schedule("poisson-greedy"), 6, PoissonCutIns(POISSON_RATE), Network(timeline=timeline),
                                trials=5000, seed=1)
    # 99.9%: a CI check must not fail one run in twenty by chance (the replay above is the sharp check).
    low, high = binomial_interval(POISSON_RUNS, model.p, level=0.999)
    assert low <= sum(o.ok for o in outcomes) <= high, (sum(o.ok for o in outcomes), model.p)
