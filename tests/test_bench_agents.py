"""ICE vs dp2pt side by side (lab.bench.agents): the table and totals from results, without a lab."""

from lab.bench import agents


def slot(outcomes, times=(), types=None):
    return {"outcomes": outcomes, "times_ms": list(times), "pair_types": types or {}}


def results():
    pairs = ["full-cone|full-cone", "symmetric-random|symmetric-random"]
    table = {
        "dp2pt basic": {pairs[0]: slot({"direct": 3}, (3.0, 2.0, 4.0)), pairs[1]: slot({"failed": 3})},
        "dp2pt improved k=6": {pairs[0]: slot({"direct": 3}, (5.0, 5.0, 5.0)), pairs[1]: slot({"failed": 3})},
        "ICE": {pairs[0]: slot({"direct": 2, "failed": 1}, (20.0, 40.0), {"srflx": 2}), pairs[1]: slot({"failed": 3})},
        "ICE + TURN": {pairs[0]: slot({"direct": 3}, (30.0,) * 3, {"srflx": 3}),
                       pairs[1]: slot({"relayed": 3}, (500.0,) * 3, {"relay": 3})},
    }
    return {"runs": 3, "pairs": pairs, "agents": table}


def test_totals_count_cells_and_compare_times_on_common_cells():
    s = agents.summary(results())
    assert s["common_cells"] == 1
    assert s["agents"]["dp2pt basic"] == {"direct_cells": 1, "relayed_cells": 0, "cells": 2, "median_direct_ms": 3.0,
                                          "median_direct_common_ms": 3.0, "median_relayed_ms": None}
    assert s["agents"]["ICE + TURN"]["relayed_cells"] == 1 and s["agents"]["ICE + TURN"]["median_relayed_ms"] == 500.0
    assert s["agents"]["ICE"]["median_direct_ms"] == 30.0


def test_table_has_a_row_per_pair_and_the_totals():
    md = agents.markdown(results())
    assert "| full-cone | full-cone | direct 3/3, 3 ms | direct 3/3, 5 ms | direct 2/3, 30 ms (srflx) |" in md
    assert "| symmetric-random | symmetric-random | fails 3/3 | fails 3/3 | fails 3/3 | relayed 3/3, 500 ms (relay) |" in md
    assert "| **direct / relayed cells** | | **1** / 0 of 2 |" in md
