"""Link conditions measured against what was declared, for each mechanism (issue 10).

A fig1 lab without NATs loaded (routers just route) gets conditions on its public links; tools
run inside the nodes (:mod:`lab.world.measure`) and the kernel's own timestamps say what the links
did. The tolerances are the issue's, never widened for load:

- RTT (median of ICMP echoes) within 0.3 ms + 3% of the configured sum of the links' delays;
- one-way loss: the count lost lies in the 99% interval of Binomial(n, declared loss);
- jitter: the spread of RTTs is the declared one (uniform ±jitter each way): their interquartile
  range within 20% of the sum's, the 5th and 95th percentiles where the sum puts them (± the RTT
  tolerance);
- rate: throughput of link-layer bytes within 10% of the declared rate when sent at twice it.

A timing claim is measured in rounds: a round that misses is measured again after a pause, up to
:data:`ROUNDS` in all, and the claim fails only when every round missed (each round's numbers, and
the emulator's own lateness, in the message). A mechanism that adds the wrong delay misses every
round; what one round can miss by is the machine: on a shared 2-core VM a few seconds in which
every wake-up comes a millisecond late (other guests' load) once shifted two Docker measurements in
a row by 1-1.4 ms, tolerances stay the issue's.

The userspace emulator runs here; netem is measured where the kernel has it and skipped with the
reason where it does not.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from typing import Callable

import pytest

from dp2pt.model.estimate import binomial_interval
from lab.world import linkctl, measure, netem
from lab.world.links import parse_conditions

from .conftest import _lab

SERVER, NAT_A, NAT_B, SINK, NAT_A_LAN, A = "198.51.100.10", "198.51.100.1", "203.0.113.1", "203.0.113.50", \
    "10.1.0.1", "10.1.0.10"
#: Declared per link (public links, and A's LAN link). Delays chosen so each check costs seconds.
CONDITIONS = {
    "server": "delay=5ms",
    "nat-b": "delay=10ms,rate=20mbit",
    "sink": "delay=10ms,jitter=5ms",
    "a": "loss=10%",
}
SEED = 7
RTT_SAMPLES = 100
JITTER_SAMPLES = 200
LOSS_DATAGRAMS = 2000
#: Rounds of a timing measurement, and the pause before each repeat (a disturbance lasts seconds).
ROUNDS = 3
ROUND_PAUSE_S = 5.0


def _tolerance_ms(configured: float) -> float:
    return 0.3 + 0.03 * configured


@pytest.fixture(scope="module", params=["userspace", "netem"])
def lab(request, backend):
    mechanism = request.param
    if mechanism == "netem" and (reason := netem.unavailable_reason()):
        pytest.skip(f"netem: {reason} (the userspace emulator is measured instead)")
    lab = _lab(backend, "fig1")
    try:
        linkctl.apply(lab, {n: parse_conditions(c) for n, c in CONDITIONS.items()}, mechanism=mechanism, seed=SEED)
        yield lab
    finally:
        lab.down()


def _run(lab, node: str, *args: str, timeout: float = 60.0) -> dict:
    out = lab.exec(node, [lab.python, "-m", "lab.world.measure", *args], timeout=timeout)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rtts(lab, src: str, dst: str, count: int, interval: float = 0.002) -> list[float]:
    _run(lab, src, "rtt", dst, "--count", "2")  # ARP resolved first: it would double one sample
    result = _run(lab, src, "rtt", dst, "--count", str(count), "--interval", str(interval))
    return [s for s in result["samples_ms"] if s is not None]


def _in_rounds(lab, measure: Callable[[], str | None]) -> None:
    """Run ``measure`` (None when the claim holds, else what it saw) until a round holds or
    :data:`ROUNDS` missed; fail with every round's numbers and the emulator's lateness."""
    missed = []
    for round_ in range(ROUNDS):
        if round_:
            time.sleep(ROUND_PAUSE_S)
        seen = measure()
        if seen is None:
            return
        missed.append(seen)
    stats = linkctl.emulator_stats(lab.prefix) or {}
    pytest.fail(f"every round missed: {missed}; emulator realtime={stats.get('realtime')}, "
                f"lateness={stats.get('lateness')}")


def _delay(node: str) -> float:
    return parse_conditions(CONDITIONS.get(node, "clear")).delay_ms


@pytest.mark.parametrize("src, dst, dst_node", [
    ("server", NAT_A, "nat-a"),  # one conditioned link: 2 x 5 ms
    ("server", NAT_B, "nat-b"),  # two: 2 x (5 + 10) ms
    ("nat-a", NAT_B, "nat-b"),
])
def test_round_trip_time_is_the_configured_sum(lab, src, dst, dst_node):
    configured = 2 * (_delay(src) + _delay(dst_node))

    def measure() -> str | None:
        samples = _rtts(lab, src, dst, RTT_SAMPLES)
        # These links declare no loss. On Docker a rare echo goes missing (2 of 3,600 once, none of
        # 5,000 in later runs; every frame left the emulator), so one in a hundred is let pass.
        if len(samples) < 0.99 * RTT_SAMPLES:
            return f"{RTT_SAMPLES - len(samples)} of {RTT_SAMPLES} echoes lost on links without loss"
        median = statistics.median(samples)
        ok = abs(median - configured) <= _tolerance_ms(configured)
        return None if ok else f"median {median:.3f} ms vs {configured:g} ms"

    _in_rounds(lab, measure)


def test_jitter_spreads_round_trips_as_declared(lab):
    cond = parse_conditions(CONDITIONS["sink"])
    centre, j = 2 * cond.delay_ms, cond.jitter_ms
    tol = _tolerance_ms(centre)
    # Each way adds uniform(-j, j): their sum is triangular on [-2j, 2j], with quartiles at
    # -/+ (2 - sqrt(2))·j and 5th/95th percentiles at -/+ (2 - sqrt(0.4))·j. Quantiles, not the
    # standard deviation: a frame the emulator sends late on a loaded machine (its own error,
    # counted in its lateness histogram) must not pass for jitter, nor hide a wrong spread.
    iqr = 2 * (2 - math.sqrt(2)) * j
    reach = (2 - math.sqrt(0.4)) * j

    def measure() -> str | None:
        samples = sorted(_rtts(lab, "nat-a", SINK, JITTER_SAMPLES, interval=0.001))
        q = statistics.quantiles(samples, n=20)
        p05, p25, p75, p95, median = q[0], q[4], q[14], q[18], statistics.median(samples)
        ok = (abs((p75 - p25) - iqr) <= 0.2 * iqr and abs(p05 - (centre - reach)) <= tol
              and abs(p95 - (centre + reach)) <= tol and abs(median - centre) <= tol)
        return None if ok else f"p05 {p05:.2f}, p25 {p25:.2f}, median {median:.2f}, p75 {p75:.2f}, p95 {p95:.2f} ms"

    _in_rounds(lab, measure)


@pytest.mark.parametrize("sender, receiver, receiver_ip", [
    ("nat-a", "a", A),  # lost entering a (its link's segment -> node direction)
    ("a", "nat-a", NAT_A_LAN),  # lost leaving a (node -> segment)
])
def test_loss_is_within_the_binomial_interval(lab, sender, receiver, receiver_ip):
    from lab.world.backends.base import started, wait_for_line

    port = 9100
    with started(lab, receiver, [lab.python, "-m", "lab.world.measure", "recv", str(port),
                                 "--expect", str(LOSS_DATAGRAMS), "--duration", "30"]) as proc:
        wait_for_line(proc, lambda line: '"ready"' in line, 10.0)
        _run(lab, sender, "send", f"{receiver_ip}:{port}", "--count", str(LOSS_DATAGRAMS), "--rate", "2000")
        out, _ = proc.communicate(timeout=30)
    got = json.loads(out.strip().splitlines()[-1])
    lost = LOSS_DATAGRAMS - got["received"]
    low, high = binomial_interval(LOSS_DATAGRAMS, parse_conditions(CONDITIONS["a"]).loss, level=0.99)
    assert low <= lost <= high, (lost, (low, high))
    assert got["duplicates"] == 0


def test_rate_is_within_ten_percent(lab):
    from lab.world.backends.base import started, wait_for_line

    cond = parse_conditions(CONDITIONS["nat-b"])
    size = 1250
    per_s = 2 * cond.rate_bit / ((size + measure.UDP_FRAME_OVERHEAD) * 8)  # offered: twice the rate
    count = int(per_s * 1.5)
    port = 9101
    with started(lab, "server", [lab.python, "-m", "lab.world.measure", "recv", str(port),
                                 "--expect", str(count), "--duration", "30"]) as proc:
        wait_for_line(proc, lambda line: '"ready"' in line, 10.0)
        _run(lab, "nat-b", "send", f"{SERVER}:{port}", "--count", str(count), "--rate", f"{per_s:.0f}",
             "--size", str(size))
        out, _ = proc.communicate(timeout=30)
    got = json.loads(out.strip().splitlines()[-1])
    assert got["rate_bit"] is not None
    assert abs(got["rate_bit"] - cond.rate_bit) <= 0.1 * cond.rate_bit, got


def test_status_shows_each_link_and_its_mechanism(lab):
    lines = linkctl.status_lines(lab.prefix)
    keys = {line.split()[1] for line in lines}
    assert keys == {lab.topology.link_key(n)[0] + ":" + lab.topology.link_key(n)[1] for n in CONDITIONS}
    mechanism = linkctl.describe(lab.prefix)[0].mechanism
    assert all(f"via {mechanism}" in line for line in lines)


def test_conditions_change_on_a_running_lab(lab):
    before = statistics.median(_rtts(lab, "server", NAT_A, 20))
    linkctl.apply(lab, {"nat-a": parse_conditions("delay=15ms")})
    configured = 2 * (5 + 15)

    def measure() -> str | None:
        after = statistics.median(_rtts(lab, "server", NAT_A, 20))
        ok = abs(after - configured) <= _tolerance_ms(configured) and after - before > 25
        return None if ok else f"median {before:.3f} ms before, {after:.3f} ms after vs {configured:g} ms"

    try:
        _in_rounds(lab, measure)
    finally:
        linkctl.apply(lab, {"nat-a": parse_conditions("clear")})
