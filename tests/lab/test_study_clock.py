"""The clock studies (``dp2pt-lab study timing|cutin|fig4|loss|relay``) without a lab: their settings
say what the issue asks (RTTs, rates, losses, places), and their tables judge saved runs."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

import pytest

from lab.study import clock, sweep
from lab.world import topology

FIG4 = topology.load("fig4")


def test_each_study_sweeps_what_it_claims():
    timing = clock.timing_settings()
    assert {s.cell.variant for s in timing} == set(clock.VARIANTS)
    server_rtts = {s.delays(FIG4, ("server1", "server1"))["server_rtt"] for s in timing}
    assert server_rtts == set(clock.SERVER_RTTS)
    assert any("--order" in s.cell.peer_args for s in timing)  # the parallel order next to the spec's
    cutin = clock.cutin_settings()
    assert {(s.cell.schedule, s.rate_per_ms) for s in cutin} == {
        (name, rate) for name in clock.CUTIN_SCHEDULES for rate in clock.CUTIN_RATES}
    loss = clock.loss_settings()
    assert {s.conditions()["nat-a"].loss for s in loss} == set(clock.LOSSES)
    assert all(s.conditions()["nat-a"] == s.conditions()["nat-b"] for s in loss)  # each WAN link
    for settings in (timing, cutin, loss, clock.fig4_settings()):
        names = [s.name for s in settings]
        assert len(names) == len(set(names)), "a study's settings need unique names (runs are keyed by them)"


def test_places_put_the_server_far_and_the_peers_near():
    s = next(s for s in clock.timing_settings() if s.name == "basic server 150 peers 10")
    d = s.delays(FIG4, ("server1", "server1"))
    assert (d["server_rtt"], d["peer_rtt"]) == (150.0, 10.0)


def test_fig4_compares_one_far_server_with_one_near_each_peer():
    far, near = (next(s for s in clock.fig4_settings() if s.name == f"{w} rate 0") for w in
                 ("one far server", "two near servers"))
    d_far = far.delays(FIG4, ("server1", "server1"))
    d_near = near.delays(FIG4, ("server1", "server2"))
    assert d_far["a_server"] == clock.WORLD_RTTS["eu/am"] / 2 and d_far["b_server"] == clock.WORLD_RTTS["asia/am"] / 2
    assert d_near["a_server"] == d_near["b_server"] == clock.WORLD_RTTS["eu/eu"] / 2
    assert d_near["servers"] == clock.WORLD_RTTS["eu/asia"] / 2  # steps 7-1 and 13-1 cross the world
    assert d_far["a_b"] == d_near["a_b"] == clock.WORLD_RTTS["eu/asia"] / 2
    # The model: two near servers reach the direct path sooner than one far one.
    assert near.timeline(FIG4, ("server1", "server2")).both_direct_ms < far.timeline(FIG4, ("server1", "server1")).both_direct_ms


def _records(setting: sweep.Setting, times: list[float | None]) -> list[sweep.Record]:
    return [sweep.Record(setting.name, i, t is not None, {"time_to_direct_ms": t}, {"time_to_direct_ms": t})
            for i, t in enumerate(times)]


def test_summary_counts_successes_and_takes_times_of_successful_runs_only():
    s = clock.loss_settings()[0]
    summary = sweep.summarize(s, _records(s, [100.0, 120.0, None, 110.0]), FIG4, ("server1", "server1"))
    assert (summary.estimate.successes, summary.estimate.trials) == (3, 4)
    assert summary.median_ms == 110.0 and summary.p90_ms == 120.0
    assert summary.server_rtt_ms == 2 * 10.0  # loss settings ride on a 10 ms link each way


def test_a_study_judges_saved_runs_and_writes_its_table(tmp_path, capsys):
    settings = clock.loss_settings()
    path = tmp_path / "runs.jsonl"
    with path.open("w") as f:
        for s in settings[:2]:
            for r in _records(s, [90.0, 95.0, None]):
                f.write(json.dumps(asdict(r)) + "\n")
    args = argparse.Namespace(out=str(tmp_path / "out"), study="loss", only=None, runs=None, from_runs=[path],
                              model_only=False, model_base_defaults=True, backend=None)
    assert clock.run_study(args) == 0
    table = (tmp_path / "out" / "loss" / "table.md").read_text().splitlines()
    assert table[0].startswith("| variant | loss on each WAN link")
    rows = table[2:]
    assert len(rows) == 2 and all("2/3" in row for row in rows)  # settings without runs are left out
    assert "1%" in rows[0] and "92 ms" in rows[0]


@pytest.mark.parametrize("study", ["timing", "fig4"])
def test_every_table_has_a_row_per_setting_with_runs(tmp_path, study):
    settings = clock.STUDIES[study]()
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(asdict(r)) + "\n" for s in settings for r in _records(s, [500.0])))
    args = argparse.Namespace(out=str(tmp_path), study=study, only=None, runs=None, from_runs=[path],
                              model_only=False, model_base_defaults=True, backend=None)
    assert clock.run_study(args) == 0
    table = (tmp_path / study / "table.md").read_text().splitlines()
    assert len(table) == 2 + len(settings)
