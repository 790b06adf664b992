"""Link conditions with the kernel's netem qdisc, where the kernel has it (``sch_netem``).

netem delays, drops and rate-limits what *leaves* an interface, so a link gets one netem qdisc on
each end of its veth: on the node's own interface (node -> segment) and on the bridge-side end
(segment -> node). Both are removed with the veth, so ``down`` needs nothing more.

:func:`unavailable_reason` probes once per process in a throwaway namespace (``unshare -n``): this
machine's kernel, like CI's, WSL2's and Docker Desktop's, has no netem, and the userspace emulator
(:mod:`lab.world.linkemu`) takes its place.
"""

from __future__ import annotations

import functools
import shutil
import subprocess

from lab.errors import MissingKernelFeature, MissingTool
from lab.world.links import DEFAULT_LIMIT, Conditions


@functools.lru_cache(maxsize=1)
def unavailable_reason() -> str | None:
    """None when netem works here, else why not (one line)."""
    if shutil.which("tc") is None:
        return "tc is not installed (apt-get install iproute2)"
    if shutil.which("unshare") is None:
        return "unshare is not installed (util-linux)"
    done = subprocess.run(["unshare", "-n", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
                          capture_output=True, text=True)
    if done.returncode == 0:
        return None
    lines = (done.stderr or done.stdout).strip().splitlines()
    return f"this kernel has no sch_netem ({lines[0] if lines else f'tc exit {done.returncode}'})"


def qdisc_args(conditions: Conditions, seed: int | None = None) -> list[str]:
    """``tc qdisc replace ... root`` arguments that give netem these conditions (uniform jitter,
    random loss, rate, queue limit; the seed only where ``tc`` knows it)."""
    args = ["netem", "limit", str(conditions.limit or DEFAULT_LIMIT)]
    if conditions.delay_ms or conditions.jitter_ms:
        args += ["delay", f"{conditions.delay_ms * 1000:.0f}us"]
        if conditions.jitter_ms:
            args += [f"{conditions.jitter_ms * 1000:.0f}us"]
    if conditions.loss:
        args += ["loss", "random", f"{conditions.loss * 100:.6g}%"]
    if conditions.rate_bit:
        args += ["rate", f"{conditions.rate_bit}bit"]
    if seed is not None:
        args += ["seed", str(seed)]
    return args


def _tc(netns: str, args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    argv = (["nsenter", f"--net={netns}"] if netns else []) + ["tc", *args]
    done = subprocess.run(argv, capture_output=True, text=True)
    if check and done.returncode != 0:
        err = done.stderr.strip().splitlines()[0] if done.stderr.strip() else f"exit {done.returncode}"
        if "qdisc kind is unknown" in err or "Specified qdisc" in err:
            raise MissingKernelFeature(f"this kernel has no sch_netem ({err})")
        raise MissingTool(f"tc {' '.join(args)} in {netns}: {err}")
    return done


def set_qdisc(netns: str, iface: str, conditions: Conditions, seed: int | None = None) -> None:
    """Give ``iface`` (in ``netns``) a root netem qdisc with ``conditions``, replacing any other.

    The seed is passed where ``tc`` accepts one (iproute2 6.6+) and dropped otherwise.
    """
    base = ["qdisc", "replace", "dev", iface, "root"]
    done = _tc(netns, base + qdisc_args(conditions, seed), check=seed is None)
    if done.returncode != 0:
        _tc(netns, base + qdisc_args(conditions))


def clear_qdisc(netns: str, iface: str) -> None:
    """Back to the default qdisc (no error when there is none or the interface is gone)."""
    _tc(netns, ["qdisc", "del", "dev", iface, "root"], check=False)
