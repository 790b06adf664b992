"""The spec's Diagram 1, rows 1-6, reproduced exactly by the default schedule."""

from dp2pt.proto.schedules import get_schedule, punch_ports

X2, DX2, Y2, DY2 = 1000, 2, 5000, 3
# (A's destination, B's destination) per row, as printed in the spec.
ROWS = [
    (Y2 + DY2, X2 + DX2),
    (Y2 + 2 * DY2, X2 + 3 * DX2),
    (Y2 + 4 * DY2, X2 + 3 * DX2),
    (Y2 + 5 * DY2, X2 + 5 * DX2),
    (Y2 + 5 * DY2, X2 + 7 * DX2),
    (Y2 + 8 * DY2, X2 + 6 * DX2),
]


def test_default_schedule_is_diagram_1():
    hypotheses = get_schedule("diagram1").first(6)
    assert hypotheses == ((0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (0, 2))
    assert punch_ports("A", Y2, DY2, hypotheses) == [a for a, _ in ROWS]
    assert punch_ports("B", X2, DX2, hypotheses) == [b for _, b in ROWS]


def test_k1_is_the_basic_protocol():
    assert punch_ports("B", X2, DX2, get_schedule("diagram1").first(1)) == [X2 + DX2]
