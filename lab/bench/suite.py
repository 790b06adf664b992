"""`make bench` / `dp2pt-lab bench`: how fast and how well dp2pt goes, next to its peers (issue 6).

Benchmarks, not timed tests: each part measures, writes JSON, and the whole prints one Markdown table
with the machine it ran on.  Parts that need root and the netns lab (time to direct path, packets per
success, lab bring-up/teardown, direct vs TURN relay) live in :mod:`lab.bench.labruns`, the link
emulator's capacity in :mod:`lab.bench.links`; they are skipped with a reason when the lab cannot run; the loopback parts (STUN throughput vs coturn, memory with
10,000 logged-in peers, the server under abuse: reply/request bytes per request kind and RSS under a
client that never reads) run anywhere; ``agents`` (:mod:`lab.bench.agents`) puts ICE and dp2pt side
by side over the NAT matrix.  Every loop is bounded in count and time.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

DEFAULT_OUT = Path("bench/results.json")
#: The parts of a run, in the order they run (``--parts``).
PARTS = ("stun", "memory", "abuse", "directory", "links", "lab", "agents")


def machine() -> dict:
    """nproc, CPU model and kernel: a number means nothing without the machine it was measured on."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        load = "?"
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "python": platform.python_version(), "loadavg_1m_at_start": load}


def _fmt(v, unit: str = "") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        v = f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"
    elif isinstance(v, int):
        v = f"{v:,}"
    return f"{v}{unit}"


def markdown(results: dict) -> str:
    """The table for the README: one row per measurement, with the machine in a header line."""
    m = results["machine"]
    lines = [f"Measured {results['date']} on {m['nproc']} cores, {m['cpu']}, Linux {m['kernel']}, "
             f"Python {m['python']}; 1-min load average at start {m.get('loadavg_1m_at_start', '?')} "
             "(other work on the machine skews the numbers).", "",
             "| Benchmark | dp2pt | Reference | Ratio | Notes |", "|---|---|---|---|---|"]
    if results.get("stun"):
        from lab.bench.stun import markdown_rows

        lines += markdown_rows(results["stun"])
    mem = results.get("memory")
    if mem:
        lines.append(
            f"| Server RSS, {mem['logged_in']:,} logged-in peers (TCP) | {_fmt(mem['rss_kib'] / 1024)} MiB | "
            f"{_fmt(mem['rss_idle_kib'] / 1024)} MiB idle | | {_fmt(mem['per_peer_kib'])} KiB per peer; "
            f"logins took {mem['login_s']} s |")
    if results.get("abuse"):
        from lab.bench.abuse import markdown_rows

        lines += markdown_rows(results["abuse"])
    if results.get("directory"):
        from lab.bench.directory import markdown_rows

        lines += markdown_rows(results["directory"])
    if results.get("links"):
        from lab.bench.links import markdown_rows as link_rows

        lines += ["| " + " | ".join(row) + " |" for row in link_rows(results["links"])]
    for row in results.get("lab_rows", []):
        lines.append("| " + " | ".join(str(x) for x in row) + " |")
    for name, why in results.get("skipped", {}).items():
        lines.append(f"| {name} | skipped | | | {why} |")
    if results.get("agents"):
        from lab.bench import agents

        lines += ["", f"ICE and dp2pt side by side over the NAT matrix (fig1, netns, {results['agents']['runs']} runs "
                      "per cell; outcome of most runs, median time to the path, ICE's nominated remote candidate):",
                  "", agents.markdown(results["agents"])]
    return "\n".join(lines)


def run(out: Path, parts: set[str], runs: int, agent_runs: int = 3) -> dict:
    """Run the selected parts (each failure is recorded, not fatal) and write ``out``."""
    from lab.bench import abuse, agents, directory, memory, stun

    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
                     "skipped": {}}
    for part, bench in (("stun", stun.bench), ("memory", memory.bench), ("abuse", abuse.bench),
                        ("directory", directory.bench)):
        if part in parts:
            try:
                results[part] = bench()
            except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
                results["skipped"][part] = f"failed: {exc}"
    if "links" in parts:
        from lab.errors import LabError

        try:
            from lab.bench import links

            results["links"] = links.run()
        except (LabError, RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
            results["skipped"]["link emulator capacity"] = f"failed: {exc}"
    if "lab" in parts:
        try:
            from lab.bench import labruns
        except ImportError as exc:
            results["skipped"]["lab benchmarks"] = f"lab.bench.labruns unavailable: {exc}"
        else:
            labruns.run(results, runs)
    if "agents" in parts:
        try:
            results["agents"] = agents.bench(agent_runs)
        except RuntimeError as exc:
            results["skipped"]["ICE and dp2pt side by side"] = str(exc)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    return results
