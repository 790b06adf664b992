"""The scenario matrix (scenarios/matrix.csv): every cell runs and must end as declared.

The outcome is the path the public segment's capture shows (direct between NAT-A's and NAT-B's WAN
addresses, relayed through the TURN server, or none), and it must agree with what the agents claim;
dp2pt's direct cells must also show D2PT data both ways and none via a location server, its failed
cells no data datagram at all. When both peers sit behind one NAT (the zoo's shared LAN and shared
CGN) the direct path is the one that NAT hairpins, seen on its inside segment. Cut-ins must have landed in their window (checked on the NAT's
conntrack).
"""

from __future__ import annotations

import pytest

from lab.scenarios import matrix

CELLS = matrix.load()
#: ICE's outcome does not depend on the backend (scenarios/test_docker_parity.py shows the NATs do
#: not): on Docker one cell of each kind runs — srflx, peer-reflexive, failed, relayed — and netns
#: (make test) runs the whole column.
ICE_ON_DOCKER = {
    "port-restricted-cone__port-restricted-cone__ice-stun__cut00",
    "symmetric-random__full-cone__ice-stun__cut00",
    "symmetric-sequential__symmetric-sequential__ice-stun__cut00",
    "symmetric-sequential__symmetric-sequential__ice-turn__cut00",
}


def test_docker_subset_is_in_the_matrix():
    assert ICE_ON_DOCKER <= {c.id for c in CELLS}


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
def test_cell(request, backend_name, cell):
    if backend_name == "docker" and cell.agent == "ice" and cell.id not in ICE_ON_DOCKER:
        pytest.skip("ICE's full column runs on netns; Docker runs ICE_ON_DOCKER")
    # FIG. 4 hosts every cell of no particular world (distributed ones need its two servers).
    runner = request.getfixturevalue("world_runner")(cell.world) if cell.world else request.getfixturevalue("runner")
    result = runner.run(cell)
    assert result.cutins.get("in_window", True), f"cut-ins missed their window: {result.cutins} ({result.dir})"
    assert result.path_error is None, f"{result.path_error} ({result.dir})"
    assert result.outcome == cell.expect, (
        f"expected {cell.expect}, got {result.outcome}: A error={result.a.get('error')!r}, "
        f"B error={result.b.get('error')!r} ({result.dir}); why expected: {cell.why}"
    )
