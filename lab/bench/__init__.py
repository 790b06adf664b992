"""Benchmarks (``make bench``): dp2pt measured next to its reference, side by side in one run.

:mod:`~lab.bench.stun` (STUN Binding answers per second and per server CPU-second vs coturn),
:mod:`~lab.bench.startup` (a peer's wall time from spawn to its direct path),
:mod:`~lab.bench.discovery` (packets per success with ``--discover-nat`` vs the spec's prediction),
:mod:`~lab.bench.memory` (server memory with many logged-in peers), :mod:`~lab.bench.abuse` (reply
bytes per request kind, memory under a client that never reads), :mod:`~lab.bench.directory`
(logins/s, connects/s and memory per peer for 1, 2 and 4 servers sharing one Redis),
:mod:`~lab.bench.links` (the userspace link emulator's capacity, next to netem where present),
:mod:`~lab.bench.labruns` (time to direct path and packets per success on the lab, bring-up/teardown
of both backends), :mod:`~lab.bench.agents` (dp2pt and ICE over every NAT pair),
:mod:`~lab.bench.relay` (direct path vs coturn's TURN relay), :mod:`~lab.bench.bringup` (the
bring-up budget checks of ``make bench-lab`` / ``make bench-docker``); :mod:`~lab.bench.suite` runs
the parts and prints the README's table, :mod:`~lab.bench.cli` is the command. Benchmarks measure;
they never pass or fail a build on a timing.
"""

from lab.bench.cli import add_arguments, handler, main, register
from lab.bench.suite import DEFAULT_OUT, PARTS, machine, markdown, run

__all__ = ["DEFAULT_OUT", "PARTS", "add_arguments", "handler", "machine", "main", "markdown", "register", "run"]
