"""The ``study improved`` command's model part: arguments, CSV and plots (no root needed)."""

import argparse
import csv

import pytest

from dp2pt.errors import Dp2ptError
from lab import study
from lab.errors import ConfigError


def parse(argv):
    parser = argparse.ArgumentParser()
    study.register(parser.add_subparsers(dest="cmd"))
    return parser.parse_args(argv)


@pytest.mark.parametrize("text,ks", [("1..4", [1, 2, 3, 4]), ("6", [6]), ("6,1,2,6", [1, 2, 6])])
def test_k_forms(text, ks):
    assert study.parse_ks(text) == ks


@pytest.mark.parametrize("text", ["0..3", "a", "3..", ""])
def test_bad_k_is_refused(text):
    with pytest.raises(ConfigError):
        study.parse_ks(text)


def test_bad_rates_are_refused():
    assert study.parse_rates("0.05,0.26") == [0.05, 0.26]
    with pytest.raises(ConfigError):
        study.parse_rates("0.05,-1")


def test_model_only_study_writes_csv_and_one_plot_per_rate(tmp_path, capsys):
    args = parse(["study", "improved", "--model-only", "--trials", "200", "--k", "1,6", "--out", str(tmp_path)])
    assert args.func(args) == 0
    rows = list(csv.DictReader((tmp_path / study.CSV_NAME).open()))
    assert len(rows) == 2 * 2 * 2  # schedules x rates x ks
    assert {r["schedule"] for r in rows} == {"diagram1", "poisson-greedy"}
    assert all(float(r["low"]) <= float(r["p"]) <= float(r["high"]) for r in rows)
    for rate in ("0.05", "0.26"):
        png = tmp_path / f"improved-rate-{rate}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert out.count("k=6") == 4 and "poisson-greedy" in out


def test_unknown_schedule_fails_before_any_work(tmp_path):
    for argv in (["--schedules", "nope"], ["--k", "1..65"]):
        args = parse(["study", "improved", "--model-only", *argv, "--out", str(tmp_path / "out")])
        with pytest.raises((ConfigError, Dp2ptError)):  # the CLI prints either as one line
            args.func(args)
    assert not (tmp_path / "out").exists()


def test_model_nat_mirrors_the_lab_profiles():
    from dp2pt.model.nat import Allocation, Filtering, Mapping
    from lab.world import nat

    seq = study.model_nat(nat.parse_profile("symmetric-sequential:delta=2"))
    assert (seq.mapping, seq.filtering, seq.allocation, seq.delta) == (
        Mapping.APDM, Filtering.APDF, Allocation.SEQUENTIAL, 2)
    slots = nat.sequential_slots(nat.parse_profile("symmetric-sequential:delta=2"))
    assert seq.first_port == slots[0] and (seq.port_max - seq.port_min + 1) == len(slots) * 2
    cone = study.model_nat(nat.parse_profile("full-cone"))
    assert (cone.mapping, cone.filtering, cone.allocation) == (Mapping.EIM, Filtering.EIF, Allocation.PRESERVE)
    rnd = study.model_nat(nat.parse_profile("symmetric-random"))
    assert (rnd.port_min, rnd.port_max) == nat.RANDOM_RANGE
    cgn = study.model_nat(nat.parse_profile("cgnat:block=8"))  # port blocks: the allocator's pool
    pool = nat.parse_profile("cgnat:block=8").pool()
    assert (cgn.mapping, cgn.block, cgn.port_min, cgn.port_max) == (Mapping.EIM, 8, pool.start, pool.stop - 1)


def test_model_nat_wraps_where_the_lab_numgen_map_wraps():
    import random

    from dp2pt.model.nat import Nat
    from lab.world import nat

    profile = nat.parse_profile("symmetric-sequential:delta=2")
    router = Nat(study.model_nat(profile), "198.51.100.1", random.Random(0))
    slots = nat.sequential_slots(profile)
    ports = [router.outbound(("10.1.0.10", 4000), ("192.0.2.1", p)) for p in range(len(slots) + 1)]
    assert ports == slots + [slots[0]]


@pytest.mark.parametrize("p,n,interval", [(0.5, 10, (2, 8)), (0.8, 200, (149, 171)), (1.0, 30, (30, 30)),
                                          (0.0, 30, (0, 0))])
def test_prediction_interval_is_the_central_binomial_range(p, n, interval):
    assert study.prediction_interval(p, n) == interval


CONNTRACK = """\
ipv4     2 udp      17 29 src=10.1.0.10 dst=198.51.100.10 sport=4000 dport=3479 src=198.51.100.10 dst=198.51.100.1 sport=3479 dport=20002 mark=0 use=1
ipv4     2 udp      17 29 src=10.1.0.101 dst=203.0.113.50 sport=3111 dport=9 [UNREPLIED] src=203.0.113.50 dst=198.51.100.1 sport=9 dport=20001 mark=0 use=1
ipv4     2 udp      17 29 src=10.1.0.10 dst=198.51.100.10 sport=4000 dport=3478 src=198.51.100.10 dst=198.51.100.1 sport=3478 dport=20000 mark=0 use=1
ipv4     2 tcp      6 119 TIME_WAIT src=10.1.0.10 dst=198.51.100.10 sport=48550 dport=7000 src=198.51.100.10 dst=198.51.100.1 sport=7000 dport=48550 [ASSURED] mark=0 use=1
ipv4     2 udp      17 29 src=10.1.0.102 dst=203.0.113.50 sport=3112 dport=9 [UNREPLIED] src=203.0.113.50 dst=198.51.100.1 sport=9 dport=20003 mark=0 use=1
ipv4     2 udp      17 29 src=10.1.0.10 dst=203.0.113.1 sport=4000 dport=20005 [UNREPLIED] src=203.0.113.1 dst=198.51.100.1 sport=20005 dport=20004 mark=0 use=1
ipv4     2 udp      17 29 src=10.1.0.103 dst=203.0.113.50 sport=3113 dport=9 [UNREPLIED] src=203.0.113.50 dst=198.51.100.1 sport=9 dport=20005 mark=0 use=1
ipv4     2 udp      17 29 src=10.1.0.10 dst=203.0.113.1 sport=4000 dport=20007 [UNREPLIED] src=203.0.113.1 dst=198.51.100.1 sport=20007 dport=20006 mark=0 use=1
ipv4     2 udp      17 29 src=10.1.0.104 dst=203.0.113.50 sport=3114 dport=9 [UNREPLIED] src=203.0.113.50 dst=198.51.100.1 sport=9 dport=20007 mark=0 use=1
"""


def test_allocation_order_reads_the_sequential_nat_in_port_order_and_ignores_tcp():
    order = study.allocation_order(CONNTRACK, "10.1.0.10")
    assert order == ("198.51.100.10:3478", None, "198.51.100.10:3479", None, "203.0.113.1:20005", None,
                     "203.0.113.1:20007", None)
    assert study.realized_counts(order) == (1, 1, 1)  # the last cut-in came after every peer flow


def test_replay_puts_each_cut_in_just_before_the_next_peer_flow():
    order = study.allocation_order(CONNTRACK, "10.1.0.10")
    times = study.replay_arrivals(order, [0.0, 1.0, 5.0, 5.5])
    assert [round(t, 3) for t in times] == [1.0, 5.0, 5.5]
    assert all(t < flow for t, flow in zip(times, [1.0, 5.0, 5.5]))


def test_poisson_plan_first_wait_is_independent_of_the_agents_gaps():
    from types import SimpleNamespace

    from lab.world import topology
    from lab.world.traffic import offsets

    lab = SimpleNamespace(topology=topology.load("fig1"))
    for seed in range(20):
        plan = study.poisson_plan(lab, "a", ("198.51.100.10", 3478), 0.26, seed)
        times = offsets(plan)
        assert times[0] == plan.delay
        assert times[1] - times[0] != pytest.approx(plan.delay)  # not the same exponential draw again
    assert plan.trigger.src == "10.1.0.10" and plan.trigger.dport == 3478 and plan.mode == "poisson"


def test_saved_runs_load_back_by_kind(tmp_path):
    outcome = study.LabOutcome(True, {"timeline_ms": {}}, {}, {"in_window": True}, ("x:1", None), ("y:2",))
    path = tmp_path / study.RUNS_JSONL
    path.write_text(
        '{"schedule": "diagram1", "rate": 0.26, "seed": 0}\t' + outcome.to_json() + "\n"
        + '{"schedule": "diagram1", "k": 6, "cut": [2, 0], "delta": 2}\t' + outcome.to_json() + "\n"
    )
    poisson, grid = study.load_runs([path])
    assert poisson == {("diagram1", 0.26): [outcome]}
    assert grid == [("diagram1", 6, 2, 0, 2, outcome)]
