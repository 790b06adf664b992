"""The retransmission schedule (sans-IO): doubling gaps, capped so a lossy link gets its tries in time."""

import pytest

from dp2pt.proto.retransmit import MAX_RTO_FACTOR, Resender, repeat_times


def test_punch_bursts_repeat_with_doubling_gaps_capped_until_the_punch_timeout():
    assert repeat_times(0.2, 0.8, 3.6) == pytest.approx([0.2, 0.6, 1.4, 2.2, 3.0])
    assert repeat_times(0.2, 0.8, 0.6) == pytest.approx([0.2])  # the instant lab's punch timeout
    assert repeat_times(0.5, 0.8, 0.4) == []


def test_capped_resends_pack_more_tries_into_the_same_time():
    def send_times(resender: Resender, seconds: float) -> list[float]:
        resender.sent("x", b"d", 0.0)
        times = [0.0]
        while (at := resender.next_due()) is not None and at <= seconds:
            resender.due(at)
            times.append(at)
        return times

    assert send_times(Resender(0.2, 8), 2.5) == pytest.approx([0, 0.2, 0.6, 1.4])  # next: 3.0
    assert send_times(Resender(0.2, 8, max_rto=MAX_RTO_FACTOR * 0.2), 2.5) == pytest.approx([0, 0.2, 0.6, 1.4, 2.2])
