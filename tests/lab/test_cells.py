"""Cells with an agent: ids, defaults, refusals, and the matrix file's agent column."""

from __future__ import annotations

import pytest

from lab.errors import ConfigError
from lab.scenarios import agents, matrix
from lab.scenarios.run import Cell


def test_dp2pt_ids_are_unchanged_and_other_agents_name_themselves():
    assert Cell("full-cone", "symmetric-random").id == "full-cone__symmetric-random__basic__cut00"
    assert Cell("full-cone", "full-cone", "improved", 6, cut_a=1).id == "full-cone__full-cone__improved6__cut10"
    assert Cell("full-cone", "full-cone", agent="ice").id == "full-cone__full-cone__ice-stun__cut00"
    assert Cell("full-cone", "full-cone", "turn", agent="ice").turn
    assert Cell("full-cone", "full-cone", agent="command", command="prog").id == "full-cone__full-cone__command__cut00"
    assert Cell("full-cone", "full-cone", "udp-punch", agent="command", command="prog", turn=True).id == \
        "full-cone__full-cone__command-udp-punch-turn__cut00"


@pytest.mark.parametrize("kwargs,message", [
    (dict(agent="quic"), "unknown agent 'quic'; known: dp2pt, ice, command"),
    (dict(agent="ice", variant="basic"), "unknown variant 'basic' for agent ice"),
    (dict(agent="ice", k=6), "k and schedule are dp2pt's"),
    (dict(agent="command", command="  "), "the command is empty"),
    (dict(agent="command", command="p", variant="Has Space"), "a command's label"),
    (dict(agent="dp2pt", command="p"), "only a command cell takes one"),
    (dict(agent="dp2pt", turn=True), "dp2pt uses no TURN server"),
    (dict(agent="ice", expect="maybe"), "expected outcome must be one of direct, relayed, failed"),
    (dict(agent="command", command="p", timeout=0), "timeout must be 0..120"),
    (dict(agent="dp2pt", command_b="p"), "command_b"),
    (dict(agent="command", command="p", command_b=" "), "command_b"),
    # what `dp2pt peer` would refuse after the lab is up and a capture runs: refused at once
    (dict(variant="improved", k=0), "k must be 1..64, not 0"),
    (dict(variant="improved", k=-3), "k must be 1..64, not -3"),
    (dict(variant="basic", k=6), "k applies to the improved variant, not basic"),
    (dict(variant="improved", k=6, schedule="nope"), "unknown schedule 'nope'; known: diagram1, poisson-greedy"),
    (dict(nats="cgn"), "'cgn' is not ROUTER=PROFILE"),
])
def test_cells_refuse_what_cannot_run(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Cell("full-cone", "full-cone", **kwargs)


def test_agent_argv_follow_the_contract():
    env = {"LAB_ROLE": "B", "LAB_ID": "B7", "LAB_PEER_ID": "A7", "LAB_SERVER": "198.51.100.10:7000", "LAB_TIMEOUT": "4"}
    argv = agents.get("dp2pt").argv(Cell("full-cone", "full-cone", "improved", 6, "poisson-greedy"), env, "python3", 0.6)
    assert argv[:6] == ["dp2pt", "peer", "--id", "B7", "--server", "198.51.100.10:7000"]
    assert argv[-8:] == ["connect", "A7", "--variant", "improved", "--k", "6", "--schedule", "poisson-greedy"]
    cmd = Cell("full-cone", "full-cone", agent="command", command="./prog --peer {LAB_PEER_ID} '{LAB_ID} x'")
    assert agents.get("command").argv(cmd, env, "python3", 0.6) == ["./prog", "--peer", "A7", "B7 x"]
    two = Cell("full-cone", "full-cone", agent="command", command="./prog {LAB_ROLE}", command_b="./other {LAB_ROLE}")
    assert agents.get("command").argv(two, env, "python3", 0.6) == ["./other", "B"]
    assert agents.get("command").argv(two, env | {"LAB_ROLE": "A"}, "python3", 0.6) == ["./prog", "A"]
    assert agents.get("ice").argv(Cell("full-cone", "full-cone", agent="ice"), env, "py", 0.6)[:3] == ["py", "-m", "lab.agents.ice"]


def test_claims_from_result_lines():
    ice = agents.get("ice")
    assert ice.claim({"connected": True, "pair_type": "srflx"}, {"connected": True, "pair_type": "prflx"}) == "direct"
    assert ice.claim({"connected": True, "pair_type": "relay"}, {"connected": True, "pair_type": "srflx"}) == "relayed"
    assert ice.claim({"connected": True}, {}) == "failed"
    assert agents.get("dp2pt").claim({"ok": True, "direct": True}, {"ok": True, "direct": False}) == "failed"
    assert agents.get("command").claim({}, {}) is None


def test_matrix_has_an_agent_column_with_ice_over_every_pair():
    cells = matrix.load()
    ice = [c for c in cells if c.agent == "ice"]
    assert {(c.nat_a, c.nat_b) for c in ice if c.variant == "stun"} == \
        {(c.nat_a, c.nat_b) for c in cells if c.agent == "dp2pt" and c.variant == "basic" and not (c.cut_a or c.cut_b)
         and {c.nat_a, c.nat_b} <= set(matrix.TEXTBOOK) and not (c.world or c.collision)}
    assert {c.expect for c in ice} == {"direct", "failed", "relayed"}
    assert all(c.expect == "relayed" for c in ice if c.variant == "turn")


def test_a_command_row_round_trips_through_the_file(tmp_path):
    row = Cell("full-cone", "symmetric-random", "udp", agent="command", command="prog {LAB_ROLE}", expect="direct",
               why="a user's program", command_b="other-prog --as {LAB_ROLE}")
    path = tmp_path / "m.csv"
    matrix.write(path, [row])
    assert matrix.load(path) == [row]
    with pytest.raises(ConfigError, match="no model of what a command does"):
        matrix.expected(row)
