"""Location servers that share a directory, seen from the lab (issue 15): a server added while peers
are logged in, and servers killed in the middle of a run.

Both run on a world with a ``directory`` node (``topologies/directory.yaml``: Redis and three
servers in three regions) through a :class:`~lab.scenarios.run.Runner`, drive the peers only by the
``dp2pt`` command line (A listens on the lab's peer ``a``, the connectors run on ``b``), and judge
each session from its own capture of the public segment: data between NAT-A's WAN and NAT-B's WAN,
none through a server.  A killed server gets SIGKILL: no goodbye, its heartbeat just stops.

The kill in the middle of a session is triggered by what the wire shows, not by a timer: the
connector's server is killed when A's first probe of that session leaves A (spec step 3), so the
session is open on both sides and its owner dies under it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lab.errors import ScenarioError
from lab.scenarios.run import PEER_EXIT_GRACE, Runner
from lab.world import capture, services
from lab.world.backends.base import wait_for_line

#: Seconds a peer keeps trying the servers (at start, after losing one); the dead server's
#: heartbeat lapses in 3 s, so its peers are back well within this.
RETRY = 20.0
WATCH_READY = 5.0  # seconds for tcpdump to start listening
DATA_COUNT = 3
DEFAULT_NAT = "port-restricted-cone"  # for a router the topology leaves without one


@dataclass
class Session:
    """One connect of the run: B's result line and exit code, and what the capture proves."""

    name: str
    b: dict
    exit_code: int | None
    path_error: str | None = None
    seconds: float = 0.0

    @property
    def direct(self) -> bool:
        return bool(self.b.get("ok") and self.b.get("direct")) and self.path_error is None


@dataclass
class Run:
    """What a failover scenario saw, for its test to judge (and ``result.json`` to keep)."""

    sessions: list[Session] = field(default_factory=list)
    a_results: list[dict] = field(default_factory=list)
    a_logins: list[list] = field(default_factory=list)  # the servers A logged in to, in order
    a_exit: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    servers: dict[str, list] = field(default_factory=dict)  # node -> its TCP control address

    def to_dict(self) -> dict:
        return asdict(self) | {"sessions": [asdict(s) | {"direct": s.direct} for s in self.sessions]}


class _Scenario:
    """The pieces both scenarios share: A listening, connectors from B's node, one capture each."""

    def __init__(self, runner: Runner, out: Path) -> None:
        if not runner.lab.topology.by_role("directory"):
            raise ScenarioError(f"topology {runner.lab.topology.name} has no directory node (use 'directory')")
        self.runner, self.lab, self.topo = runner, runner.lab, runner.lab.topology
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.node_a, self.node_b = self.topo.by_role("peer")[:2]
        for router in self.topo.by_role("router"):  # the NATs the topology declares, fresh
            self.lab.configure_nat(router, self.topo.node(router).nat or DEFAULT_NAT)
        self.timeout, self.punch_timeout = runner.timeouts()
        self.run = Run(servers={s: [self.topo.address(s), services.CONTROL_PORT] for s in runner.servers})
        self.proc_a: subprocess.Popen | None = None
        self._a_lines: list[str] = []

    def _common(self, *servers: str) -> list[str]:
        argv = []
        for s in servers:
            argv += ["--server", f"{self.topo.address(s)}:{services.CONTROL_PORT}"]
        return argv + ["--retry", f"{RETRY:g}", "--json", "--timeout", f"{self.timeout:.3f}",
                       "--punch-timeout", f"{self.punch_timeout:.3f}", "--count", str(DATA_COUNT)]

    def listen(self, sessions: int, *servers: str) -> None:
        argv = ["dp2pt", "peer", "--id", "A", *self._common(*servers), "listen", "--sessions", str(sessions)]
        self.proc_a = self.lab.popen(self.node_a, argv)
        self.wait_for_a_login(lambda server: True, self.timeout)

    def wait_for_a_login(self, which, timeout: float) -> list:
        """Read A's output up to its next ready line whose server satisfies ``which``; returns that server."""
        assert self.proc_a is not None

        def ready(line: str) -> bool:
            self._a_lines.append(line)
            msg = _json(line)
            return msg.get("event") == "ready" and which(msg["server"])

        try:
            line = wait_for_line(self.proc_a, ready, timeout)
        except TimeoutError:
            raise ScenarioError(f"peer A did not log in: {self._tail(self.proc_a)}") from None
        return _json(line)["server"]

    def start_connect(self, pid: str, *servers: str) -> subprocess.Popen:
        argv = ["dp2pt", "peer", "--id", pid, *self._common(*servers), "connect", "A"]
        return self.lab.popen(self.node_b, argv)

    def finish_connect(self, name: str, proc: subprocess.Popen, cap: capture.Capture, t0: float) -> Session:
        try:
            out, err = proc.communicate(timeout=self.timeout + RETRY + PEER_EXIT_GRACE)
        except subprocess.TimeoutExpired:
            self.lab.stop(proc)
            out, err = proc.communicate()
        seconds = time.monotonic() - t0
        cap.stop()
        (self.out / f"{name}.log").write_text(err or "")
        result = next((_json(l) for l in (out or "").splitlines() if '"ok"' in l), {})
        session = Session(name, result, proc.returncode, seconds=round(seconds, 3))
        wan_a, wan_b = (self.topo.address(self.topo.router_of(n), self.topo.public) for n in (self.node_a, self.node_b))
        servers = [ip for s in self.runner.servers for ip in self.topo.addresses(s)]
        try:
            capture.assert_direct(capture.read_d2pt(cap.path), wan_a, wan_b, servers)
        except capture.PathNotProven as exc:
            session.path_error = str(exc)
        self.run.sessions.append(session)
        return session

    def connect(self, name: str, pid: str, *servers: str) -> Session:
        cap = self.lab.capture(self.topo.public, self.out / f"{name}.pcap", bpf="udp or tcp")
        t0 = time.monotonic()
        return self.finish_connect(name, self.start_connect(pid, *servers), cap, t0)

    def crash(self, server: str) -> float:
        """SIGKILL the location server of node ``server`` (netns: the process itself); returns when."""
        proc = self.runner.server_procs[server]
        proc.send_signal(signal.SIGKILL)
        when = time.monotonic()
        proc.wait(5)
        return when

    def watch_probe(self, server: str) -> subprocess.Popen:
        """tcpdump on A's node, printing A's STUN probes to ``server`` (spec step 3) as they leave."""
        iface = self.lab.interface(self.node_a, self.topo.node(self.node_a).links[0].segment)
        argv = ["tcpdump", "-l", "-n", "-i", iface, "udp", "and", "dst", "host", self.topo.address(server),
                "and", "dst", "port", str(services.STUN_PORT)]
        proc = self.lab.popen(self.node_a, argv, stderr=subprocess.STDOUT)
        try:
            wait_for_line(proc, lambda l: "listening on" in l, WATCH_READY)
        except TimeoutError:
            self.lab.stop(proc)
            raise ScenarioError(f"tcpdump on {self.node_a} did not start") from None
        return proc

    def close(self) -> Run:
        if self.proc_a is not None:
            try:
                out, err = self.proc_a.communicate(timeout=self.timeout + PEER_EXIT_GRACE)
            except subprocess.TimeoutExpired:
                self.lab.stop(self.proc_a)
                out, err = self.proc_a.communicate()
            self.run.a_exit = self.proc_a.returncode
            said = [_json(l) for l in self._a_lines + (out or "").splitlines()]
            self.run.a_results = [m for m in said if "ok" in m]
            self.run.a_logins = [m["server"] for m in said if m.get("event") == "ready"]
            (self.out / "a.log").write_text(err or "")
        (self.out / "result.json").write_text(json.dumps(self.run.to_dict(), indent=2, default=str))
        return self.run

    def _tail(self, proc: subprocess.Popen) -> str:
        if proc.poll() is None:
            self.lab.stop(proc)
        return (proc.stderr.read() if proc.stderr else "").strip()[-300:]


def add_server(runner: Runner, out: Path) -> Run:
    """A logs in at the first server, B at the second; a third server starts while they are logged
    in, and a new peer C logging in there reaches A at once (the new server knows only Redis).

    The runner must have been started with the first two servers only (``start_servers``).
    """
    first, second, third = runner.servers[:3]
    sc = _Scenario(runner, out)
    try:
        sc.listen(2, first)
        sc.connect("before", "B", second)
        t0 = time.monotonic()
        runner.start_server(third)
        sc.run.timings["third_server_start_s"] = round(time.monotonic() - t0, 3)
        sc.connect("through-the-new-server", "C", third)
    finally:
        run = sc.close()
    return run


def kill_servers(runner: Runner, out: Path) -> Run:
    """Three sessions A (first server, falling back to the second) <- B (third, then second):

    1. all servers up: through Redis between the first and the third server;
    2. the third server (B's, the session's owner) is killed when A starts probing: B logs in at the
       second and runs the session again, A's half of the old one ends;
    3. the first server (A's) is killed between sessions: A logs in at the second; the next
       connect reaches it there.
    """
    first, second, third = runner.servers[:3]
    sc = _Scenario(runner, out)
    try:
        sc.listen(3, first, second)
        sc.connect("all-up", "B1", third, second)

        cap = sc.lab.capture(sc.topo.public, sc.out / "owner-killed.pcap", bpf="udp or tcp")
        watcher = sc.watch_probe(first)
        try:
            t0 = time.monotonic()
            proc = sc.start_connect("B2", third, second)
            try:
                wait_for_line(watcher, lambda l: "UDP" in l, sc.timeout)
            except TimeoutError:
                raise ScenarioError("A never probed its server: the session did not start") from None
            killed = sc.crash(third)
            sc.run.timings["owner_killed_after_s"] = round(killed - t0, 3)
        finally:
            sc.lab.stop(watcher)
        session = sc.finish_connect("owner-killed", proc, cap, t0)
        sc.run.timings["owner_killed_session_done_s"] = round(t0 + session.seconds - killed, 3)

        killed = sc.crash(first)
        sc.wait_for_a_login(lambda server: server[0] != runner.lab.topology.address(first), RETRY)
        sc.run.timings["a_back_in_s"] = round(time.monotonic() - killed, 3)
        session = sc.connect("after-a-moved", "B3", third, second)
        sc.run.timings["a_reachable_s"] = round(time.monotonic() - killed, 3)
    finally:
        run = sc.close()
    return run


def _json(line: str) -> dict:
    line = line.strip()
    if not line.startswith("{"):
        return {}
    try:
        msg = json.loads(line)
    except ValueError:
        return {}
    return msg if isinstance(msg, dict) else {}
