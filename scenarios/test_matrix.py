"""The scenario matrix (scenarios/matrix.csv): every cell runs and must end as declared.

A ``direct`` cell must also be proven from the public segment's capture (data datagrams between
NAT-A's and NAT-B's WAN addresses, none via a location server); a ``failed`` cell must show no
data datagram at all. Cut-ins must have landed in their window (checked on the NAT's conntrack).
"""

from __future__ import annotations

import pytest

from lab.scenarios import matrix

CELLS = matrix.load()


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
def test_cell(runner, cell):
    result = runner.run(cell)
    assert result.cutins.get("in_window", True), f"cut-ins missed their window: {result.cutins} ({result.dir})"
    assert result.path_error is None, f"{result.path_error} ({result.dir})"
    assert result.outcome == cell.expect, (
        f"expected {cell.expect}, got {result.outcome}: A error={result.a.get('error')!r}, "
        f"B error={result.b.get('error')!r} ({result.dir}); why expected: {cell.why}"
    )
