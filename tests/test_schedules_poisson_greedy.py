"""The poisson-greedy schedule's ports, through the same API the peers use for Diagram 1."""

import pytest

from dp2pt.errors import ConfigError
from dp2pt.proto.schedules import SCHEDULES, get_schedule, punch_ports

X2, DX2, Y2, DY2 = 1000, 2, 5000, 3


def test_is_registered_next_to_diagram1():
    assert {"diagram1", "poisson-greedy"} <= set(SCHEDULES)


def test_a_aims_at_consecutive_ports_and_b_at_every_other_port():
    hypotheses = get_schedule("poisson-greedy").first(6)
    assert punch_ports("A", Y2, DY2, hypotheses) == [Y2 + i * DY2 for i in range(1, 7)]
    assert punch_ports("B", X2, DX2, hypotheses) == [X2 + (2 * j - 1) * DX2 for j in range(1, 7)]


def test_every_destination_is_distinct_so_every_punch_is_a_new_flow():
    hypotheses = get_schedule("poisson-greedy").first(12)
    for role, port, delta in (("A", Y2, DY2), ("B", X2, DX2)):
        assert len(set(punch_ports(role, port, delta, hypotheses))) == 12


def test_k1_is_still_the_basic_protocol():
    assert punch_ports("B", X2, DX2, get_schedule("poisson-greedy").first(1)) == [X2 + DX2]


def test_asking_for_more_packets_than_designed_is_refused():
    with pytest.raises(ConfigError):
        get_schedule("poisson-greedy").first(65)
