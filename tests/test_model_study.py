"""The ``study improved`` command's model part: arguments, CSV and plots (no root needed)."""

import argparse
import csv

import pytest

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
        with pytest.raises(ConfigError):
            args.func(args)
    assert not (tmp_path / "out").exists()


def test_model_nat_mirrors_the_lab_profiles():
    from dp2pt.model.nat import Allocation, Filtering, Mapping
    from lab import nat

    seq = study.model_nat(nat.parse_profile("symmetric-sequential:delta=2"))
    assert (seq.mapping, seq.filtering, seq.allocation, seq.delta) == (
        Mapping.APDM, Filtering.APDF, Allocation.SEQUENTIAL, 2)
    slots = nat.sequential_slots(nat.parse_profile("symmetric-sequential:delta=2"))
    assert seq.first_port == slots[0] and (seq.port_max - seq.port_min + 1) == len(slots) * 2
    cone = study.model_nat(nat.parse_profile("full-cone"))
    assert (cone.mapping, cone.filtering, cone.allocation) == (Mapping.EIM, Filtering.EIF, Allocation.PRESERVE)
    rnd = study.model_nat(nat.parse_profile("symmetric-random"))
    assert (rnd.port_min, rnd.port_max) == nat.RANDOM_RANGE


def test_model_nat_wraps_where_the_lab_numgen_map_wraps():
    import random

    from dp2pt.model.nat import Nat
    from lab import nat

    profile = nat.parse_profile("symmetric-sequential:delta=2")
    router = Nat(study.model_nat(profile), "198.51.100.1", random.Random(0))
    slots = nat.sequential_slots(profile)
    ports = [router.outbound(("10.1.0.10", 4000), ("192.0.2.1", p)) for p in range(len(slots) + 1)]
    assert ports == slots + [slots[0]]


@pytest.mark.parametrize("p,n,interval", [(0.5, 10, (2, 8)), (0.8, 200, (149, 171)), (1.0, 30, (30, 30)),
                                          (0.0, 30, (0, 0))])
def test_prediction_interval_is_the_central_binomial_range(p, n, interval):
    assert study.prediction_interval(p, n) == interval
