"""`dp2pt-lab report` on a synthetic run directory: ladders, heatmap, summary, and its user errors."""

import json

from scapy.utils import wrpcap

from lab import report
from tests.test_report_ladder import NAT_A, NAT_B, XA, XB, Capture, basic_exchange


def make_run(tmp_path):
    run = tmp_path / "run"
    cells = [("eim__eim__basic__cut00", "eim", "eim", "direct"),
             ("eim__sym__basic__cut00", "eim", "sym", "failed"),
             ("eim__eim__improved__cut00", "eim", "eim", "direct")]
    for name, a, b, outcome in cells:
        d = run / name
        d.mkdir(parents=True)
        cap = Capture()
        basic_exchange(cap)
        wrpcap(str(d / "public.pcap"), cap.pkts)
        peers = {"a": {"mapped": [NAT_A, XA], "packets_sent": 7}, "b": {"mapped": [NAT_B, XB],
                 "time_to_direct_ms": 12.5, "packets_sent": 9}}
        for role, doc in peers.items():
            (d / f"{role}.json").write_text(json.dumps(doc))
        variant = name.split("__")[2]
        (d / "result.json").write_text(json.dumps({"cell": {"nat_a": a, "nat_b": b, "variant": variant},
                                                   "outcome": outcome, **peers}))
    return run


def test_report_writes_ladders_heatmap_and_summary(tmp_path, capsys):
    run = make_run(tmp_path)
    assert report.main([str(run)]) == 0
    out = run / "report"
    assert (out / "matrix.png").stat().st_size > 1000 and (out / "matrix.svg").is_file()
    assert (out / "ladder-eim__eim__basic__cut00.png").stat().st_size > 1000
    doc = json.loads((out / "ladder-eim__eim__basic__cut00.json").read_text())
    assert doc["steps"] == list(range(1, 18))
    summary = (out / "summary.md").read_text()
    assert "2/3 cells reached a direct path; every declared outcome held." in summary
    assert "| eim__sym__basic__cut00 | dp2pt | basic | eim | sym | 0/0 | failed |" in summary
    assert "12.5" in capsys.readouterr().out


def test_outcome_panels_split_agents_variants_and_cut_ins(tmp_path):
    run = make_run(tmp_path)
    results = [report.load_result(c) for c in report.cell_dirs(run)]
    results += [{"cell": {"nat_a": "eim", "nat_b": "eim", "variant": "basic", "cut_a": 1, "expect": "failed"},
                 "outcome": "failed"},
                {"cell": {"nat_a": "eim", "nat_b": "sym", "agent": "ice", "variant": "turn", "expect": "relayed"},
                 "outcome": "failed"}]
    panels = report.outcome_panels(results)
    assert list(panels) == ["dp2pt basic", "dp2pt improved", "ice turn"]
    basic = panels["dp2pt basic"]
    assert {k: dict(t.outcomes) for k, t in basic.items()} == {
        ("eim", "eim"): {"direct": 1}, ("eim", "sym"): {"failed": 1}, ("eim  +1 cut-in", "eim"): {"failed": 1}}
    assert basic[("eim  +1 cut-in", "eim")].as_expected is True  # an expected failure, in a row of its own
    assert basic[("eim", "eim")].as_expected is None  # nothing declared
    assert panels["ice turn"][("eim", "sym")].as_expected is False


def test_heatmap_and_summary_mark_what_did_not_end_as_expected(tmp_path):
    from lab.report import draw

    results = [{"cell": {"nat_a": "full-cone", "nat_b": "full-cone", "agent": "ice", "variant": "stun",
                         "expect": "direct"}, "outcome": "failed"}]
    files = draw.draw_heatmap(report.outcome_panels(results), tmp_path / "m")
    assert "≠" in (tmp_path / "m.svg").read_text() and files[0].stat().st_size > 1000
    md = report.summary_markdown([{"name": "x", "result": results[0]}])
    assert "| failed (!) | direct |" in md and "1 ended otherwise than expected (!)." in md


def test_missing_run_dir_is_one_line_and_exit_2(tmp_path, capsys):
    assert report.main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dp2pt-lab: error:") and err.count("\n") == 1


def test_empty_run_dir_is_an_error(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert "no cell directories" in capsys.readouterr().err


def test_cells_of_another_world_get_their_own_panel():
    """A zoo cell must not be pooled with the FIG. 4 cell of the same profiles: another world, other NATs."""
    cell = {"nat_a": "eim", "nat_b": "eim", "variant": "basic", "agent": "dp2pt"}
    zoo = dict(cell, world="zoo", peers="a,c", nats="cgn=cgnat:hairpin=1")
    m = report.outcome_panels([{"cell": cell, "outcome": "direct"}, {"cell": zoo, "outcome": "failed"},
                               {"cell": dict(cell, collision=True), "outcome": "failed"}])
    assert set(m["dp2pt basic"]) == {("eim", "eim"), ("eim (collision)", "eim")}
    assert set(m["dp2pt basic · zoo a,c"]) == {("eim + cgn=cgnat:hairpin=1", "eim")}
