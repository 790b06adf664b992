"""The exchange's timing: derived instants, windows, and parameters read from peers' result lines."""

import pytest

from dp2pt.errors import ConfigError
from dp2pt.model.timeline import Timeline


def test_a_window_is_longer_than_b_window_as_the_spec_says():
    t = Timeline()
    assert t.a_window_ms > t.b_window_ms
    assert t.a_probe1 < t.a_probe2 < t.b_probe1 < t.b_probe2 < t.b_punch(0) < t.a_punch(0)
    assert t.a_punch(3) - t.a_punch(2) == pytest.approx(t.burst_gap_ms)


def test_from_results_reads_windows_from_probe_2_send_which_is_probe_1_answer():
    a = {"timeline_ms": {"probe1": 1.0, "probe2": 1.5, "punch": 6.0}}
    b = {"timeline_ms": {"probe1": 3.0, "probe2": 3.5, "punch": 4.0}}
    t = Timeline.from_results([(a, b)])
    assert t.probe_spacing_ms == pytest.approx(0.5)
    assert t.b_window_ms == pytest.approx(1.0)  # B's probe 2 left at 3.0, punched at 4.0
    assert t.b_to_a_burst_ms == pytest.approx(2.0)
    assert t.a_window_ms == pytest.approx(5.0)  # A's probe 2 left at 1.0, punched at 6.0


def test_from_results_averages_runs():
    runs = [({"timeline_ms": {"probe1": 1.0, "probe2": 2.0, "punch": 8.0}},
             {"timeline_ms": {"probe1": 4.0, "probe2": 5.0, "punch": 6.0}}),
            ({"timeline_ms": {"probe1": 1.0, "probe2": 1.0, "punch": 4.0}},
             {"timeline_ms": {"probe1": 2.0, "probe2": 2.0, "punch": 3.0}})]
    t = Timeline.from_results(runs)
    assert t.probe_spacing_ms == pytest.approx(0.5)
    assert t.b_to_a_burst_ms == pytest.approx(1.5)


@pytest.mark.parametrize("pairs", [[], [({"timeline_ms": {"probe1": 1.0}}, {"timeline_ms": {}})]])
def test_from_results_refuses_missing_marks(pairs):
    with pytest.raises(ConfigError):
        Timeline.from_results(pairs)


@pytest.mark.parametrize("kw", [{"burst_gap_ms": -1}, {"repeats_ms": (200.0, -1.0)}])
def test_negative_durations_are_refused(kw):
    with pytest.raises(ConfigError):
        Timeline(**kw)


def test_link_delays_add_to_each_step_what_its_messages_travel():
    base = Timeline(probe_spacing_ms=0, a_probe2_to_b_probe1_ms=0, b_probe2_to_punch_ms=0, b_to_a_burst_ms=0,
                    burst_gap_ms=0, wan_latency_ms=0)
    r = 10.0  # one way between each peer and the server: a 20 ms server round trip
    t = Timeline.from_delays(r, r, 7.0, base=base)
    assert t.a_probe2 == 2 * r  # probe 1's round trip
    assert t.b_probe1 == 2 * r + 3 * r + r  # probe 2's round trip, A's report, relayed to B
    assert t.b_probe2 - t.b_probe1 == 2 * r
    assert t.b_punch(0) == t.b_probe2 + 4 * r  # probe 2's answer, report, the server's punch order
    assert t.a_punch(0) == t.b_punch(0) + 2 * r  # B's punched, the server's order to A
    assert t.a_punch(0) == 7 * 2 * r  # seven server round trips from A's first probe: sequential
    assert t.wan_latency_ms == 7.0


def test_fig4_relays_cross_the_servers_link_and_each_peer_probes_its_own_server():
    t = Timeline.from_delays(1.0, 3.0, 50.0, servers_ms=40.0, base=Timeline(probe_spacing_ms=0,
                             a_probe2_to_b_probe1_ms=0, b_probe2_to_punch_ms=0, b_to_a_burst_ms=0))
    assert t.probe_spacing_ms == 2.0 and t.b_spacing_ms == 6.0
    assert t.b_probe1 - t.a_probe2 == 3 * 1.0 + 40.0 + 3.0
    assert t.a_punch(0) - t.b_punch(0) == 3.0 + 40.0 + 1.0
    with pytest.raises(ConfigError):
        Timeline.from_delays(-1.0, 0, 0)


def test_the_simplified_protocol_reports_after_its_only_probe():
    t = Timeline.from_delays(10.0, 10.0, 5.0, probes=1)
    assert t.probe_spacing_ms == 0 and t.b_spacing_ms == 0
    assert t.a_punch(0) == pytest.approx(Timeline.from_delays(10.0, 10.0, 5.0).a_punch(0) - 2 * 20.0 - 2 * 0.41)


def test_the_parallel_order_saves_three_server_round_trips():
    zero = Timeline(probe_spacing_ms=0, a_probe2_to_b_probe1_ms=0, b_probe2_to_punch_ms=0, b_to_a_burst_ms=0,
                    burst_gap_ms=0, wan_latency_ms=0)
    d = 10.0  # each peer 10 ms from the server: a 20 ms server round trip
    sequential = Timeline.from_delays(d, d, 5.0, base=zero)
    parallel = Timeline.from_delays(d, d, 5.0, base=zero, order="parallel")
    assert sequential.a_punch(0) == 14 * d and parallel.a_punch(0) == 8 * d
    assert parallel.b_probe1 == 0 and parallel.b_punch(0) == 6 * d  # both reports in at 5d, B told at 6d
    assert parallel.a_window_ms == 6 * d < sequential.a_window_ms == 12 * d  # fewer cut-ins fit
    with pytest.raises(ConfigError):
        Timeline.from_delays(d, d, 5.0, order="random")


def test_both_are_direct_when_the_reply_or_a_repeated_burst_reaches_a():
    zero = dict(probe_spacing_ms=0, a_probe2_to_b_probe1_ms=0, b_probe2_to_punch_ms=0, burst_gap_ms=0)
    near = Timeline(b_to_a_burst_ms=10, wan_latency_ms=5, repeats_ms=(200.0,), **zero)
    assert near.both_direct_ms == near.a_punch(0) + 2 * 5  # B's reply comes back long before its repeat
    far = Timeline(b_to_a_burst_ms=150, wan_latency_ms=75, repeats_ms=(200.0, 600.0), **zero)
    assert far.both_direct_ms == far.b_punch(0) + 200 + 75  # B's repeat (sent after A punched) beats the reply
