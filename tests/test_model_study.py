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
