"""Conditioning a running lab's links: the mechanism per link, the emulator process, the state.

Two mechanisms, one behaviour (:mod:`lab.world.links`): the kernel's netem (:mod:`lab.world.netem`)
where it exists, and the userspace emulator (:mod:`lab.world.linkemu`) where it does not — chosen
automatically, or forced (``--link-mechanism``, ``$DP2PT_LINK_MECHANISM``). Regions need delays per
destination, which only the userspace emulator builds: ``auto`` picks it for them.

What a lab's links do now (after ``dp2pt-lab link`` changes too) lives in a state file,
``/run/dp2pt-lab/links/<prefix>.json``, next to the emulator's control socket and log: one emulator
process per lab, started detached (it outlives the ``dp2pt-lab`` invocation that started it) and
stopped by the backends' teardown, also for ``down --all`` after a crash (found by its command line
when the state file is lost).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from lab.errors import ConfigError, MissingKernelFeature, ScenarioError
from lab.world import netem
from lab.world.backends.base import process_alive
from lab.world.linkemu import read_line
from lab.world.links import Conditions, Regions, one_way_ms, parse_regions

if TYPE_CHECKING:  # pragma: no cover
    from lab.world.backends.base import Lab

STATE_DIR = Path("/run/dp2pt-lab/links")
MECHANISMS = ("auto", "netem", "userspace")
ENV_MECHANISM = "DP2PT_LINK_MECHANISM"
EMULATOR_MODULE = "lab.world.linkemu"
START_TIMEOUT = 10.0
REQUEST_TIMEOUT = 10.0
STOP_GRACE = 2.0


@dataclass(frozen=True)
class LinkState:
    """One conditioned link of a running lab, as ``status`` shows it."""

    key: str
    conditions: Conditions
    mechanism: str
    by_destination: dict[str, float]


def _paths(prefix: str) -> tuple[Path, Path, Path, Path]:
    base = STATE_DIR / prefix
    return base.with_suffix(".json"), base.with_suffix(".sock"), base.with_suffix(".log"), base.with_suffix(".lock")


def resolve_mechanism(mechanism: str | None, needs_per_destination: bool = False) -> str:
    """``auto`` -> ``netem`` where the kernel has it (and no region needs per-destination delays),
    else ``userspace``.

    Raises:
        ConfigError: an unknown mechanism, or netem asked for regions.
        MissingKernelFeature: netem asked for on a kernel without it.
    """
    mechanism = mechanism or os.environ.get(ENV_MECHANISM) or "auto"
    if mechanism not in MECHANISMS:
        raise ConfigError(f"unknown link mechanism {mechanism!r}; known: {', '.join(MECHANISMS)}")
    if mechanism == "auto":
        return "userspace" if needs_per_destination or netem.unavailable_reason() else "netem"
    if mechanism == "netem":
        if needs_per_destination:
            raise ConfigError("regions need per-destination delays, which only the userspace emulator builds "
                              "(--link-mechanism userspace or auto)")
        reason = netem.unavailable_reason()
        if reason:
            raise MissingKernelFeature(f"--link-mechanism netem: {reason}; use userspace or auto")
    return mechanism


@contextlib.contextmanager
def _locked(prefix: str) -> Iterator[None]:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(_paths(prefix)[3], "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def load_state(prefix: str) -> dict[str, Any] | None:
    path = _paths(prefix)[0]
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _save_state(prefix: str, state: dict[str, Any]) -> None:
    path = _paths(prefix)[0]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(path)


def current(lab: "Lab") -> dict[tuple[str, str], Conditions]:
    """The conditions each link of ``lab`` has now (the topology's until ``dp2pt-lab link`` changed them)."""
    state = load_state(lab.prefix)
    if state is None:
        return dict(lab.topology.conditions)
    out = {}
    for key, entry in state["links"].items():
        node, _, segment = key.partition(":")
        cond = Conditions.from_dict(entry["conditions"])
        if not cond.is_clear:
            out[(node, segment)] = cond
    return out


def worst_round_trip_ms(lab: "Lab", nodes: list[str]) -> float:
    """The longest configured round trip between any two of ``nodes`` (each link at its delay plus
    jitter, regions included): what a timeout must allow for."""
    conds, regions = current(lab), current_regions(lab)
    return max((one_way_ms(lab.topology, conds, regions, a, b, with_jitter=True)
                + one_way_ms(lab.topology, conds, regions, b, a, with_jitter=True)
                for i, a in enumerate(nodes) for b in nodes[i + 1:]), default=0.0)


def worst_loss(lab: "Lab") -> float:
    """The highest loss of any conditioned link (0 when none loses)."""
    return max((c.loss for c in current(lab).values()), default=0.0)


def current_regions(lab: "Lab") -> Regions | None:
    state = load_state(lab.prefix)
    if state is None or state.get("regions") is None:
        return lab.topology.regions
    return parse_regions(state["regions"])


#: ``apply(regions=KEEP)``: leave the lab's regions as they are.
KEEP = object()


def apply(lab: "Lab", overrides: dict[str, Conditions], mechanism: str | None = None,
          seed: int | None = None, regions: "Regions | None | object" = KEEP) -> list[LinkState]:
    """Set some links' conditions (``"NODE[:SEGMENT]"`` -> conditions; clear ones are removed) on a
    running lab, on top of what it has now, and return every conditioned link.

    A link keeps its mechanism unless ``mechanism`` is given; a new link gets ``mechanism`` (default:
    ``$DP2PT_LINK_MECHANISM`` or ``auto``). ``regions`` replaces the lab's regions (None: none).

    Raises:
        ConfigError / UnknownNode: a bad link or mechanism.  MissingKernelFeature: netem missing.
        ScenarioError: the emulator did not start or refused the wiring (with its reason).
    """
    topo = lab.topology
    with _locked(lab.prefix):
        state = load_state(lab.prefix)
        if state is None:
            state = {"prefix": lab.prefix, "backend": lab.backend_name, "seed": topo.link_seed,
                     "regions": topo.regions.to_dict() if topo.regions else None, "emulator": None, "links": {}}
            wanted = {f"{n}:{s}": c for (n, s), c in topo.conditions.items()}
        else:
            wanted = {key: Conditions.from_dict(e["conditions"]) for key, e in state["links"].items()}
        if seed is not None:
            state["seed"] = seed
        if regions is not KEEP:
            if regions is not None:
                topo.check_regions(regions)  # type: ignore[arg-type]
            state["regions"] = regions.to_dict() if regions is not None else None  # type: ignore[union-attr]
        for target, cond in overrides.items():
            for node, segment in topo.link_keys(target):
                wanted[f"{node}:{segment}"] = cond
        wanted = {k: c for k, c in wanted.items() if not c.is_clear}
        regions = parse_regions(state["regions"]) if state.get("regions") else None
        by_dest = _destination_delays(lab, regions)
        links: dict[str, Any] = {}
        for key in sorted(set(wanted) | set(by_dest)):
            node, _, segment = key.partition(":")
            old = state["links"].get(key, {})
            needs_dest = bool(by_dest.get(key))
            mech = resolve_mechanism(mechanism, needs_dest) if mechanism or not old else old["mechanism"]
            if needs_dest and mech != "userspace":
                mech = resolve_mechanism("userspace")
            wire = lab.wire(node, segment)
            links[key] = {"conditions": wanted.get(key, Conditions()).to_dict(), "mechanism": mech,
                          "by_destination": by_dest.get(key, {}), "wire": wire.__dict__}
        _apply_netem(state["links"], links, state["seed"])
        state["links"] = links
        userspace = [_spec(key, entry, state["seed"]) for key, entry in links.items()
                     if entry["mechanism"] == "userspace"]
        if userspace:
            state["emulator"] = _ensure_emulator(lab.prefix, state.get("emulator"))
            _request(lab.prefix, {"op": "apply", "links": userspace})
        elif state.get("emulator"):
            _stop_emulator(lab.prefix, state["emulator"].get("pid"))
            state["emulator"] = None
        _save_state(lab.prefix, state)
    return describe(lab.prefix)


def _destination_delays(lab: "Lab", regions: Regions | None) -> dict[str, dict[str, float]]:
    """link key -> {destination IP: extra one-way ms} for public nodes in regions."""
    if regions is None:
        return {}
    topo = lab.topology
    public = topo.public
    out: dict[str, dict[str, float]] = {}
    for src in regions.of:
        table = {ip: regions.one_way_ms(src, dst) for dst in regions.of if dst != src
                 for ip in topo.addresses(dst, public)}
        table = {ip: ms for ip, ms in table.items() if ms}
        if table:
            out[f"{src}:{public}"] = table
    return out


def _spec(key: str, entry: dict[str, Any], seed: int) -> dict[str, Any]:
    wire = entry["wire"]
    return {"key": key, "netns": wire["netns"], "wire": wire["iface"], "bridge": wire["bridge"], "tap": wire["tap"],
            "conditions": entry["conditions"], "seed": seed, "by_destination": entry["by_destination"]}


def _apply_netem(old: dict[str, Any], new: dict[str, Any], seed: int) -> None:
    """Clear netem where a link left it, set it where a link has it."""
    for key, entry in old.items():
        if entry["mechanism"] == "netem" and new.get(key, {}).get("mechanism") != "netem":
            wire = entry["wire"]
            netem.clear_qdisc(wire["node_netns"], wire["node_iface"])
            netem.clear_qdisc(wire["netns"], wire["iface"])
    for key, entry in new.items():
        if entry["mechanism"] == "netem":
            wire, cond = entry["wire"], Conditions.from_dict(entry["conditions"])
            netem.set_qdisc(wire["node_netns"], wire["node_iface"], cond, seed)
            netem.set_qdisc(wire["netns"], wire["iface"], cond, seed)


# ---- the emulator process -----------------------------------------------------------------------


def _emulator_pids(prefix_re: re.Pattern | None = None, prefix: str | None = None) -> dict[int, str]:
    """pid -> lab prefix of every running emulator (by command line), of one lab or of matching ones."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv]
        if EMULATOR_MODULE not in args or "--lab" not in args[:-1]:
            continue
        lab = args[args.index("--lab") + 1]
        if (prefix is None or lab == prefix) and (prefix_re is None or prefix_re.match(lab)):
            found[int(entry)] = lab
    return found


def _ensure_emulator(prefix: str, known: dict[str, Any] | None) -> dict[str, Any]:
    """The lab's emulator, started if it is not running."""
    if known and process_alive(known["pid"]) and known["pid"] in _emulator_pids(prefix=prefix):
        return known
    _, sock, log, _ = _paths(prefix)
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", EMULATOR_MODULE, "serve", "--lab", prefix, "--socket", str(sock)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, env=env)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (log.read_text(errors="replace").strip().splitlines() or ["?"])[-1]
            raise ScenarioError(f"the link emulator exited at start: {tail}")
        try:
            reply = _request(prefix, {"op": "stats"}, timeout=1.0)
            return {"pid": proc.pid, "socket": str(sock), "realtime": reply.get("realtime", False)}
        except (OSError, ScenarioError):
            time.sleep(0.02)
    _stop_emulator(prefix, proc.pid)
    raise ScenarioError(f"the link emulator did not answer within {START_TIMEOUT:g} s (log: {log})")


def _request(prefix: str, request: dict[str, Any], timeout: float = REQUEST_TIMEOUT) -> dict[str, Any]:
    """One request to the lab's emulator; raises ScenarioError with its refusal."""
    sock_path = _paths(prefix)[1]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(str(sock_path))
        conn.sendall(json.dumps(request).encode() + b"\n")
        data = read_line(conn)
    try:
        reply = json.loads(data)
    except ValueError:
        raise ScenarioError("the link emulator gave no answer") from None
    if not reply.get("ok"):
        raise ScenarioError(f"link emulator: {reply.get('error', '?')}")
    return reply


def _stop_emulator(prefix: str, pid: int | None) -> None:
    pids = set(_emulator_pids(prefix=prefix))
    if pid and process_alive(pid) and pid in pids:
        pids.add(pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, sig)
        deadline = time.monotonic() + STOP_GRACE
        while time.monotonic() < deadline and any(process_alive(p) for p in pids):
            time.sleep(0.01)
        pids = {p for p in pids if process_alive(p)}
        if not pids:
            return


def stop(prefix: str) -> None:
    """Stop the lab's emulator (wherever its state file went) and remove its files. Idempotent.

    Netem qdiscs need nothing: they go with the lab's veths.
    """
    state = load_state(prefix) or {}
    _stop_emulator(prefix, (state.get("emulator") or {}).get("pid"))
    for path in _paths(prefix):
        path.unlink(missing_ok=True)


def leftover_prefixes(prefix_re: re.Pattern) -> list[str]:
    """Labs (prefix matching ``prefix_re``) with an emulator process or a link state file: ``down
    --all`` removes them even when nothing else of the lab is left."""
    found = set(_emulator_pids(prefix_re=prefix_re).values())
    if STATE_DIR.is_dir():
        found |= {p.stem for p in STATE_DIR.glob("*.json") if prefix_re.match(p.stem)}
    return sorted(found)


# ---- what status shows --------------------------------------------------------------------------


def describe(prefix: str) -> list[LinkState]:
    """The conditioned links of a lab, for ``status`` (empty when none)."""
    state = load_state(prefix)
    if not state:
        return []
    return [LinkState(key, Conditions.from_dict(e["conditions"]), e["mechanism"], e["by_destination"])
            for key, e in sorted(state["links"].items())]


def emulator_stats(prefix: str) -> dict[str, Any] | None:
    """The emulator's counters per link (None when the lab has no emulator running)."""
    state = load_state(prefix)
    if not state or not state.get("emulator"):
        return None
    try:
        return _request(prefix, {"op": "stats"}, timeout=2.0)
    except (OSError, ScenarioError):
        return None


def status_lines(prefix: str) -> list[str]:
    """One line per conditioned link: its conditions, mechanism, and the emulator's counters."""
    links = describe(prefix)
    if not links:
        return []
    stats = emulator_stats(prefix)
    state = load_state(prefix) or {}
    lines = []
    for link in links:
        extra = f" +regions({len(link.by_destination)} destinations)" if link.by_destination else ""
        line = f"  link {link.key:16} {link.conditions.spec}{extra}  via {link.mechanism}"
        if link.mechanism == "userspace":
            emu = state.get("emulator") or {}
            if stats is None:
                line += "  EMULATOR NOT RUNNING"
            else:
                s = stats["links"].get(link.key, {})
                up, down = s.get("up", {}), s.get("down", {})
                line += (f" (pid {emu.get('pid')}{', realtime' if stats.get('realtime') else ''}; "
                         f"up {up.get('delivered', 0)}/{up.get('frames', 0)} frames, "
                         f"down {down.get('delivered', 0)}/{down.get('frames', 0)})")
        lines.append(line)
    return lines
