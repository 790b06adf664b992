"""``make bench`` part ``links``: how many frames per second the userspace link emulator relays with
its added delay still within tolerance, next to the kernel's netem where the kernel has it.

One link is conditioned (the location server's, ``delay=10ms``); ``server`` sends numbered UDP
datagrams to ``sink`` at a paced rate and ``sink`` stamps their arrival with the kernel's clock
(:mod:`lab.world.measure`). The *added* delay is the one-way delay minus the same path's delay on
instant links minus the 10 ms declared: what the emulator costs. A rate is within tolerance when no
frame is lost and the median added delay is at most 0.3 ms + 3% of the declared delay (the
tolerance the link scenarios hold RTTs to); the capacity is the highest such rate. The emulator's
own lateness histogram (how late frames left against their release time) comes with it.
"""

from __future__ import annotations

import json

from lab.world.links import parse_conditions

RATES = (1000, 2000, 5000, 10000, 20000, 40000)
DELAY = "delay=10ms"
SECONDS = 2.0
SIZE = 64
PORT = 9200


def _one_way(lab, rate: int) -> dict:
    from lab.world.backends.base import started, wait_for_line

    count = int(rate * SECONDS)
    sink = lab.topology.address("sink")
    with started(lab, "sink", [lab.python, "-m", "lab.world.measure", "recv", str(PORT), "--expect", str(count),
                               "--duration", str(SECONDS + 20)]) as proc:
        wait_for_line(proc, lambda line: '"ready"' in line, 10.0)
        sent = json.loads(lab.exec("server", [lab.python, "-m", "lab.world.measure", "send", f"{sink}:{PORT}",
                                              "--count", str(count), "--rate", str(rate), "--size", str(SIZE)],
                                   timeout=SECONDS * 10 + 30).stdout.strip().splitlines()[-1])
        out, _ = proc.communicate(timeout=SECONDS + 30)
    got = json.loads(out.strip().splitlines()[-1])
    return {"offered": rate, "sent_per_s": sent["rate_sent"], "sent": count, "received": got["received"],
            "median_ms": got["one_way_median_ms"], "p99_ms": got["one_way_p99_ms"]}


def _sweep(lab, mechanism: str, rates) -> dict:
    from lab.world import linkctl

    declared = parse_conditions(DELAY).delay_ms
    tolerance = 0.3 + 0.03 * declared
    linkctl.apply(lab, {"server": parse_conditions("clear")})
    base = _one_way(lab, rates[0])["median_ms"]
    linkctl.apply(lab, {"server": parse_conditions(DELAY)}, mechanism=mechanism)
    points, capacity = [], None
    for rate in rates:
        before = _lateness(lab, mechanism)
        p = _one_way(lab, rate)
        p["lateness"] = _lateness_between(before, _lateness(lab, mechanism))
        p["added_median_ms"] = round(p["median_ms"] - base - declared, 3) if p["median_ms"] is not None else None
        p["added_p99_ms"] = round(p["p99_ms"] - base - declared, 3) if p["p99_ms"] is not None else None
        p["within"] = p["received"] == p["sent"] and p["added_median_ms"] is not None \
            and abs(p["added_median_ms"]) <= tolerance
        points.append(p)
        if p["within"]:
            capacity = p["sent_per_s"]
        else:
            break  # past the knee: higher rates only queue more
    linkctl.apply(lab, {"server": parse_conditions("clear")})
    within = [p for p in points if p["within"]]
    return {"mechanism": mechanism, "declared_ms": declared, "tolerance_ms": tolerance, "base_ms": base,
            "points": points, "capacity_per_s": capacity,
            "lateness_at_capacity": within[-1]["lateness"] if within else None}


def _lateness(lab, mechanism: str) -> dict | None:
    from lab.world import linkctl

    stats = linkctl.emulator_stats(lab.prefix) if mechanism == "userspace" else None
    return (stats or {}).get("lateness")


def _lateness_between(before: dict | None, after: dict | None) -> dict | None:
    """The emulator's lateness over one rate: the difference of two snapshots of its histogram."""
    if not before or not after:
        return None
    from lab.world.linkemu import Lateness

    late = Lateness()
    late.histogram = [a - b for a, b in zip(after["histogram_us"].values(), before["histogram_us"].values())]
    late.count = after["frames"] - before["frames"]
    late.total = ((after["mean_us"] or 0) * after["frames"] - (before["mean_us"] or 0) * before["frames"]) / 1e6
    stats = late.stats()
    stats.pop("worst_us")  # a maximum does not subtract
    return stats


def bench(lab, rates=RATES) -> dict:
    """Capacity of the userspace emulator, and of netem where the kernel has it."""
    from lab.world import netem

    out = {"userspace": _sweep(lab, "userspace", rates)}
    reason = netem.unavailable_reason()
    out["netem"] = {"skipped": reason} if reason else _sweep(lab, "netem", rates)
    return out


def markdown_rows(r: dict) -> list[list[str]]:
    """Rows of the README's table (the same columns as the suite's)."""
    u = r["userspace"]
    last = u["points"][-1]
    late = u.get("lateness_at_capacity") or {}
    netem_cell = (f"n/a ({r['netem']['skipped']})" if "skipped" in r["netem"]
                  else f"{_capacity(r['netem'])} frames/s")
    return [[f"Link emulator capacity: frames/s with the added delay within {u['tolerance_ms']:g} ms "
             f"(delay {u['declared_ms']:g} ms, {SIZE}-byte datagrams)", _capacity(u), netem_cell, "",
             f"added delay median / p99 at the last rate tried ({last['sent_per_s']:,.0f}/s): "
             f"{last['added_median_ms']} / {last['added_p99_ms']} ms; at capacity the emulator's own lateness: mean "
             f"{late.get('mean_us')} us, p99 <= {late.get('p99_us_at_most')} us"]]


def _capacity(sweep: dict) -> str:
    """The capacity as measured: a floor when even the highest rate tried stayed within tolerance."""
    if not sweep["capacity_per_s"]:
        return "below the first rate"
    floor = "≥ " if all(p["within"] for p in sweep["points"]) else ""  # the sweep stops at its first miss
    return f"{floor}{sweep['capacity_per_s']:,.0f}"


def run() -> dict:
    """The part on a fig1 lab of its own (root; the lab is removed afterwards)."""
    from lab.world import backends, topology

    lab = backends.get().up(topology.load("fig1"))
    try:
        return bench(lab)
    finally:
        lab.down()
