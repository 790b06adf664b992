"""The backend interface: where the lab's nodes live, and how to act inside them.

A *backend* (network namespaces, Docker, ...) turns a :class:`~lab.world.topology.Topology` into a
running :class:`Lab`. Everything above this module (NAT configuration, cut-in traffic, captures,
scenarios) talks only to :class:`Lab`, so a scenario runs unchanged on every backend.

A backend implements few primitives — ``popen`` (a process inside a node), ``interface`` (the
name of a node's interface on a segment), ``capture`` (a packet capture on a segment) and
``down`` — and inherits the rest (``exec``, ``configure_nat``, ``sysctl``, ``conntrack_dump``),
which are written in terms of those primitives and the tools every node image must carry
(``nft``, ``conntrack``, ``sysctl``, ``tcpdump``, ``python3`` with the ``lab`` package).

Lifecycle rules every backend keeps (issue 3):

* everything it creates carries the lab's *prefix* (``Lab.prefix``), so two labs run side by side
  and ``Backend.down_all()`` finds what a crashed run left behind;
* ``Lab.down()`` is idempotent and also stops every process started with ``popen``.
"""

from __future__ import annotations

import abc
import contextlib
import os
import select
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Iterator, Sequence

from lab.errors import (ConfigError, LabError, MissingKernelFeature, MissingTool, NodeCommandFailed, ScenarioError,
                        UnknownNode)

if TYPE_CHECKING:  # pragma: no cover
    from lab.world.nat import NatProfile
    from lab.world.topology import Topology

#: How long ``exec`` waits for a command unless told otherwise (seconds).
DEFAULT_EXEC_TIMEOUT = 10.0
#: Grace between SIGTERM and SIGKILL when the lab stops its processes (seconds).
STOP_GRACE = 1.0
#: Name of the nftables table the lab owns in every router; removed by name, never flushed globally.
NAT_TABLE = "dp2pt_nat"
#: Seconds a port-block allocator may take to bind its queue.
PBA_READY_TIMEOUT = 10.0


@dataclass
class LabInfo:
    """What ``status`` shows about one running lab."""

    prefix: str
    backend: str
    topology: str
    nodes: list[str] = field(default_factory=list)
    processes: int = 0
    nats: dict[str, str] = field(default_factory=dict)  # router -> profile, when the backend knows


@dataclass(frozen=True)
class Wire:
    """Where a node's link meets its segment: :mod:`lab.world.linkctl` conditions the link here.

    ``netns``/``iface``: the namespace (a path; empty: the host's, where ``dp2pt-lab`` runs) holding
    the segment's ``bridge`` and the bridge-side end of the node's veth; ``tap``: a name free there for the userspace emulator's TAP;
    ``node_netns``/``node_iface``: the node's own end (netem's node -> segment direction).
    """

    netns: str
    iface: str
    bridge: str
    tap: str
    node_netns: str
    node_iface: str


class Capture(abc.ABC):
    """A running packet capture on one segment, written to ``path`` (pcap)."""

    path: Path

    @abc.abstractmethod
    def stop(self) -> Path:
        """Stop capturing, flush the file, and return its path. Idempotent."""

    def __enter__(self) -> "Capture":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class TcpdumpCapture(Capture):
    """tcpdump writing a pcap; started by a backend where the segment's frames are visible."""

    READY_TIMEOUT = 3.0

    def __init__(self, proc: subprocess.Popen, path: Path, on_stop) -> None:
        self.proc, self.path, self._on_stop = proc, path, on_stop
        # tcpdump says "listening on ..." on stderr once its socket is bound: only then is no packet lost.
        try:
            wait_for_line(proc, lambda line: "listening on" in line, self.READY_TIMEOUT, stream=proc.stderr)
        except TimeoutError:
            self.stop()
            raise ScenarioError(f"tcpdump did not start capturing {path.name}") from None

    def stop(self) -> Path:
        if self.proc.poll() is None:
            self._on_stop(self.proc)
        return self.path


class Lab(abc.ABC):
    """A running topology. Nodes are addressed by their topology name (``"nat-a"``, ``"a"``)."""

    #: The backend's registry name (``"netns"``, ``"docker"``).
    backend_name: ClassVar[str] = "?"
    #: Python interpreter inside the nodes (with the ``lab`` package and scapy importable).
    python: str = "python3"

    def __init__(self, topology: "Topology", prefix: str) -> None:
        self.topology = topology
        self.prefix = prefix
        self._procs: list[subprocess.Popen] = []
        #: (pid, start time) of every process this handle started: tests check none survives. The start
        #: time tells a survivor from a later process that got the same pid.
        self.spawned: list[tuple[int, int | None]] = []
        self._profiles: dict[str, "NatProfile"] = {}  # router -> profile this handle loaded

    # ---- primitives every backend implements -------------------------------------------------

    @abc.abstractmethod
    def _spawn(self, node: str, argv: Sequence[str], **popen_kwargs) -> subprocess.Popen:
        """Start ``argv`` inside ``node`` (its network stack; its own process group); ``env`` adds variables."""

    @abc.abstractmethod
    def interface(self, node: str, segment: str) -> str:
        """Name of ``node``'s interface attached to ``segment`` (as seen inside the node)."""

    @abc.abstractmethod
    def _capture_interface(self, segment: str) -> str:
        """The interface through which every frame of ``segment`` passes (its bridge)."""

    @abc.abstractmethod
    def _spawn_capture(self, segment: str, argv: list[str]) -> subprocess.Popen:
        """Start ``argv`` (tcpdump) where ``_capture_interface(segment)`` is visible, in its own process group."""

    @abc.abstractmethod
    def _teardown(self) -> None:
        """Remove every object of this lab (idempotent; processes are already stopped)."""

    def wire(self, node: str, segment: str) -> Wire:
        """Where ``node``'s link to ``segment`` meets the segment (for link conditions).

        Raises:
            ConfigError: this backend cannot condition links.
        """
        from lab.errors import ConfigError

        raise ConfigError(f"the {self.backend_name} backend cannot condition links")

    @abc.abstractmethod
    def runtime_path(self, node: str, name: str) -> str:
        """A file path for ``node``'s runtime state (pidfiles), as seen by processes inside it."""

    # ---- derived operations ------------------------------------------------------------------

    @property
    def nodes(self) -> list[str]:
        return list(self.topology.nodes)

    def check_node(self, node: str) -> None:
        """Raise :class:`UnknownNode` unless ``node`` is in the topology."""
        if node not in self.topology.nodes:
            raise UnknownNode(f"unknown node {node!r}; nodes: {', '.join(self.topology.nodes)}")

    def address(self, node: str, segment: str | None = None) -> str:
        """The node's first IPv4 address (on ``segment`` if given), without prefix length."""
        return self.topology.address(node, segment)

    def popen(
        self,
        node: str,
        argv: Sequence[str],
        *,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text: bool = True,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen:
        """Start a long-running process in ``node``; ``down()`` (or ``stop``) ends it.

        ``env`` holds variables *added* to the node's own environment (the agents' contract).
        """
        self.check_node(node)
        proc = self._spawn(node, list(argv), stdin=stdin, stdout=stdout, stderr=stderr, text=text, env=env)
        self._procs.append(proc)
        self.spawned.append((proc.pid, process_start_time(proc.pid)))
        return proc

    def copy_to(self, node: str, src: Path | str) -> str:
        """Make the file ``src`` (on the host) available in ``node``; returns its path there.

        The default is for backends whose nodes share the host's filesystem (network namespaces):
        the file is already there. A backend with its own filesystems (containers) copies it.
        """
        self.check_node(node)
        path = Path(src).resolve()
        if not path.is_file():
            raise ConfigError(f"{src}: no such file to copy into node {node!r}")
        return str(path)

    def capture(self, segment: str, path: Path, *, bpf: str = "udp") -> Capture:
        """Start a capture of every frame crossing ``segment`` into the pcap ``path``.

        Raises:
            UnknownNode: no such segment.  MissingTool: no tcpdump.
        """
        if segment not in self.topology.segments:
            raise UnknownNode(f"unknown segment {segment!r}")
        if shutil.which("tcpdump") is None:
            raise MissingTool("tcpdump: command not found (needed for captures)")
        path = Path(path).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        # --immediate-mode: without it libpcap hands packets over per filled block or timeout, and a
        # capture stopped right after the traffic would miss it (an empty pcap).
        argv = ["tcpdump", "-i", self._capture_interface(segment), "-n", "-U", "--immediate-mode", "-s", "512",
                "-w", str(path)] + bpf.split()
        proc = self._spawn_capture(segment, argv)
        self._procs.append(proc)
        self.spawned.append((proc.pid, process_start_time(proc.pid)))
        return TcpdumpCapture(proc, path, self._stop_capture)

    def _stop_capture(self, proc: subprocess.Popen) -> None:
        """SIGINT makes tcpdump flush and close the pcap cleanly; then the usual stop."""
        with contextlib.suppress(ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
            _killpg(proc, signal.SIGINT)
            proc.wait(timeout=3)
        self.stop(proc)

    def exec(
        self,
        node: str,
        argv: Sequence[str],
        *,
        input: str | None = None,
        timeout: float = DEFAULT_EXEC_TIMEOUT,
        check: bool = True,
    ) -> subprocess.CompletedProcess:
        """Run ``argv`` in ``node`` to completion (bounded by ``timeout``) and return its output.

        Raises:
            NodeCommandFailed: ``check`` and a non-zero exit (or the timeout ran out).
        """
        self.check_node(node)
        proc = self._spawn(
            node,
            list(argv),
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=None,
        )
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(proc, grace=0)
            out, err = proc.communicate()
            raise NodeCommandFailed(node, list(argv), -1, f"timed out after {timeout} s") from None
        done = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
        if check and proc.returncode != 0:
            raise NodeCommandFailed(node, list(argv), proc.returncode, err)
        return done

    def interactive(self, node: str, argv: Sequence[str]) -> int:
        """Run ``argv`` in ``node`` attached to this terminal (``dp2pt-lab exec``); its exit code.

        Backends override this to keep the command in the terminal's foreground (a shell must be
        able to read the terminal); the default runs it like any other process.
        """
        self.check_node(node)
        proc = self._spawn(node, list(argv), stdin=None, stdout=None, stderr=None)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            self.stop(proc)
            return 130

    def stop(self, proc: subprocess.Popen, grace: float = STOP_GRACE) -> int | None:
        """SIGTERM the process group of ``proc``, SIGKILL after ``grace``; return its exit code."""
        if proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    _killpg(proc, sig)
                try:
                    proc.wait(timeout=grace if sig == signal.SIGTERM else 5)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if proc in self._procs:
            self._procs.remove(proc)
        return proc.returncode

    def stop_all(self) -> None:
        """Stop every process this handle started (servers, peers, captures, injectors)."""
        for proc in list(self._procs):
            self.stop(proc)

    def sysctl(self, node: str, values: dict[str, str | int]) -> None:
        """Set kernel parameters inside ``node`` (per-namespace ones: net.*)."""
        argv = ["sysctl", "-q", "-w"] + [f"{k}={v}" for k, v in values.items()]
        self.exec(node, argv)

    def configure_nat(self, router: str, profile: "NatProfile | str") -> "NatProfile":
        """Make ``router`` behave as ``profile`` (RFC 4787), replacing its previous NAT.

        Loading the table anew also resets the sequential allocator (numgen counter) and, with
        the conntrack flush, every mapping: each scenario cell starts from a fresh NAT. A profile
        with port blocks gets a fresh allocator process and the rules that queue flows to it; a
        profile without removes them.
        """
        from lab.world import nat

        prof = nat.parse_profile(profile) if isinstance(profile, str) else profile
        ifnames = {seg: self.interface(router, seg) for seg in self.topology.router_segments(router)}
        params = nat.router_params(self.topology, router, ifnames)
        ruleset = nat.render_ruleset(prof, params)  # replaces the previous table atomically
        had_blocks = self._had_port_blocks(router)
        try:
            self.exec(router, ["nft", "-f", "-"], input=ruleset)
        except NodeCommandFailed as exc:
            if any(s in exc.stderr for s in ("not supported", "No such file or directory", "Protocol not")):
                raise MissingKernelFeature(
                    f"nftables cannot build the NAT on {router} (nf_tables/nf_nat/nft_numgen missing?): "
                    f"{exc.stderr.strip().splitlines()[0] if exc.stderr.strip() else exc}"
                ) from None
            raise
        self.sysctl(router, nat.conntrack_sysctls(prof))
        self.flush_conntrack(router)
        if prof.block:
            self._start_port_blocks(router, prof, params)
        elif had_blocks:
            self._stop_port_blocks(router, params)
        self._profiles[router] = prof
        return prof

    def _had_port_blocks(self, router: str) -> bool:
        """Whether the router's current NAT runs a port-block allocator (asks the router only when
        this handle did not load its NAT itself)."""
        from lab.world import nat

        if router in self._profiles:
            return bool(self._profiles[router].block)
        spec = self.nat_profile(router)
        try:
            return bool(spec and nat.parse_profile(spec).block)
        except LabError:
            return True  # an unreadable old profile: clean up to be safe

    def _start_port_blocks(self, router: str, prof: "NatProfile", params) -> None:
        """A fresh allocator (it stops its predecessor by pidfile), then the queue rules."""
        from lab.world import nat

        argv = [self.python, "-m", "lab.world.pba", "serve", "--profile", prof.spec, "--wan-ip", params.wan_ip,
                "--pidfile", self.runtime_path(router, "pba.pid"), "--state", self.runtime_path(router, "pba.state")]
        proc = self.popen(router, argv)
        try:
            wait_for_line(proc, lambda line: '"ready"' in line, PBA_READY_TIMEOUT)
        except TimeoutError:
            err = proc.stderr.read() if proc.poll() is not None else ""
            self.stop(proc)
            raise ScenarioError(f"port-block allocator on {router} did not start: {err.strip()[-300:]}") from None
        self._run_queue_rules(router, nat.queue_rules(prof, params))

    def _stop_port_blocks(self, router: str, params) -> None:
        from lab.world import nat

        self._run_queue_rules(router, nat.queue_rules(None, params))
        pidfile = self.runtime_path(router, "pba.pid")
        self.exec(router, ["sh", "-c", f'[ -f {pidfile} ] && kill "$(cat {pidfile})"; rm -f {pidfile}'], check=False)

    def _run_queue_rules(self, router: str, commands: list[list[str]]) -> None:
        """Removal commands (``-D``/``-F``/``-X``) may fail when there is nothing to remove."""
        for argv in commands:
            self.exec(router, ["iptables", *argv], check=argv[3] not in ("-D", "-F", "-X"))

    def clear_nat(self, router: str) -> None:
        """Remove the lab's NAT table from ``router`` (no error if there is none)."""
        self.exec(router, ["nft", "delete", "table", "ip", NAT_TABLE], check=False)

    def flush_conntrack(self, router: str) -> None:
        """Forget every mapping of ``router`` (conntrack table of its namespace)."""
        self.exec(router, ["conntrack", "-F"], check=False)

    def conntrack_dump(self, router: str) -> str:
        """``conntrack -L`` of ``router``: the NAT's mappings, for the run's artifacts."""
        return self.exec(router, ["conntrack", "-L", "-o", "extended"], check=False).stdout

    def nft_dump(self, router: str) -> str:
        """The lab's nftables table of ``router`` as the kernel holds it (with set contents)."""
        return self.exec(router, ["nft", "list", "table", "ip", NAT_TABLE], check=False).stdout

    def nat_profile(self, router: str) -> str | None:
        """The profile the router's NAT table was loaded with (from the table's comment), if any."""
        from lab.world.nat import COMMENT_PREFIX

        for line in self.nft_dump(router).splitlines():
            line = line.strip()
            if line.startswith(f'comment "{COMMENT_PREFIX}'):
                return line[len(f'comment "{COMMENT_PREFIX}'):].rstrip('"')
        return None

    def apply_links(self, mechanism: str | None = None) -> None:
        """Condition the links the topology declares (``conditions``, ``regions``); none: nothing to do.

        ``mechanism``: ``auto`` (netem where the kernel has it), ``netem`` or ``userspace``; default
        from ``$DP2PT_LINK_MECHANISM``, else ``auto``.
        """
        if self.topology.conditions or self.topology.regions:
            from lab.world import linkctl

            linkctl.apply(self, {}, mechanism=mechanism)

    def down(self) -> None:
        """Stop every process and remove every object of this lab. Idempotent."""
        self.stop_all()
        self._teardown()

    def info(self) -> LabInfo:
        return LabInfo(self.prefix, self.backend_name, self.topology.name, self.nodes, len(self._procs))

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


class Backend(abc.ABC):
    """Factory of labs on one engine; also finds and removes labs left over by crashed runs."""

    name: ClassVar[str] = "?"

    @abc.abstractmethod
    def check(self) -> None:
        """Raise an :class:`~lab.errors.EnvironmentProblem` if this machine cannot run the backend."""

    @abc.abstractmethod
    def up(self, topology: "Topology", *, prefix: str | None = None, images: dict[str, str] | None = None) -> Lab:
        """Build ``topology`` under ``prefix`` (a fresh one if ``None``) and return the running lab.

        ``images`` maps peer nodes to a user's own image (``--image a=myorg/app:dev``), for
        backends whose nodes are containers; the others refuse it.

        Raises:
            LabStateError: a lab with that prefix already exists.
            ConfigError: ``images`` names a node that cannot take one, or the backend takes none.
        """

    @abc.abstractmethod
    def attach(self, prefix: str) -> Lab:
        """A handle on a lab brought up earlier (e.g. by another ``dp2pt-lab`` invocation).

        Raises:
            LabNotFound: no lab with that prefix.
        """

    @abc.abstractmethod
    def list(self) -> list[LabInfo]:
        """Every lab of this backend on the machine (found by prefix, not by memory)."""

    def down(self, prefix: str) -> None:
        """Remove one lab by prefix, also when only leftovers of a crashed run remain."""
        self.attach(prefix).down()

    @abc.abstractmethod
    def down_all(self) -> list[str]:
        """Remove every lab of this backend, including leftovers of crashed runs; return prefixes."""


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, /proc/PID/stat field 22), or None when gone."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None


def process_alive(pid: int, started: int | None = None) -> bool:
    """True for a running (not zombie) process; with ``started``, only if it is that same process."""
    fields = _proc_stat(pid)
    if not fields or fields[0] == "Z":
        return False
    return started is None or int(fields[19]) == started


def refuse_images(backend: str, images: dict[str, str] | None) -> None:
    """For backends whose nodes run the host's programs: a user's image has nowhere to go."""
    if images:
        raise ConfigError(f"--image {', '.join(f'{n}={i}' for n, i in images.items())}: node images need the "
                          f"docker backend (the {backend} backend's nodes run the host's programs)")


def _killpg(proc: subprocess.Popen, sig: int) -> None:
    os.killpg(proc.pid, sig)


def wait_for_line(proc: subprocess.Popen, predicate, timeout: float, stream=None) -> str:
    """Read ``proc``'s stdout (or ``stream``) until a line satisfies ``predicate``, within ``timeout``.

    Reads the pipe unbuffered, one byte at a time, so nothing after the matching line is taken
    into a Python buffer that ``select`` cannot see: a later ``wait_for_line`` or ``communicate``
    still gets every following line. Lines that do not match are dropped.

    Returns the line, or raises TimeoutError (the caller turns it into a ScenarioError).
    """
    fd = (stream or proc.stdout).fileno()
    deadline = time.monotonic() + timeout
    buf = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no matching line before the deadline")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        byte = os.read(fd, 1)
        if not byte:
            raise TimeoutError("process closed its output")
        if byte != b"\n":
            buf += byte
            continue
        line = buf.decode("utf-8", errors="replace") + "\n"
        buf.clear()
        if predicate(line):
            return line


@contextlib.contextmanager
def started(lab: Lab, node: str, argv: Sequence[str], **kw) -> Iterator[subprocess.Popen]:
    """``popen`` as a context manager: the process is stopped however the block exits."""
    proc = lab.popen(node, argv, **kw)
    try:
        yield proc
    finally:
        lab.stop(proc)
