"""Run scenario cells on a running lab and classify each outcome (``direct`` / ``relayed`` / ``failed``).

A *cell* is one point of the matrix: NAT-A profile x NAT-B profile x agent (what runs on A and B:
dp2pt with its variant, ICE, a user's command; :mod:`lab.scenarios.agents`) x cut-ins on each side,
in a *world* (a topology: FIG. 1/4 by default, or e.g. ``zoo`` with its double NAT, its carrier-grade
NAT and its shared LAN), between two of its peers, with profiles for any other NAT on their paths
(``nats``).
:class:`Runner` keeps what is expensive alive for a whole session — the location server(s)
(federated when the topology has two: spec FIG. 4, steps 7-1 and 13-1), one cut-in agent per noise
host, and once a cell needs them the signalling rendezvous and a TURN server (coturn) — and per
cell only reloads the NATs (fresh mappings, allocator reset), starts a capture, the two agents,
and collects the artifacts under ``<run dir>/<cell id>/``:

    public.pcap  a.json  b.json  a.log  b.log  cutins.json  conntrack-nat-a.txt  nft-nat-a.txt ...
    addresses.json  result.json  (the classified outcome and the evidence it rests on)

A starts first (dp2pt's listener, role A of the spec) and B once A says it is ready. Every agent
gets the lab's contract in its environment (:mod:`lab.agents.contract`); dp2pt is driven only
through its CLI (docs/CONTRACT.md). The outcome is the path the capture shows
(:func:`lab.world.capture.classify_path`), which must agree with what the agents claim; a program
that claims nothing is judged by the capture alone. The cut-in window is the spec's: flows on A's
side between its second probe (step 5) and its punch (step 16), on B's side between its second
probe (step 11) and its punch (step 15); the agents fire when they see that probe cross the LAN
(or, for a CGN's other subscribers, the carrier segment). A *collision* cell first has a neighbour
of A talk to the server's alternate STUN port from A's own source port, so a port-preserving NAT
cannot keep A's port for the second probe.

When the two peers' paths meet in a NAT (same LAN, same carrier-grade NAT), the direct path is
hairpinned by that NAT and judged from a capture of its inside segment (``inside.pcap``).
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dp2pt.proto import schedules
from dp2pt.proto.registry import MAX_K
from lab.agents import contract
from lab.scenarios import agents
from lab.scenarios.agents import PUNCH_TIMEOUT
from lab.world import capture, nat, services, topology, traffic
from lab.world.backends.base import Lab, wait_for_line
from lab.errors import ConfigError, MissingTool, ScenarioError

if TYPE_CHECKING:  # pragma: no cover
    from lab.world.topology import Topology

VARIANTS = agents.KINDS["dp2pt"].variants
OUTCOMES = ("direct", "relayed", "failed")
#: The capture's path (lab.world.capture) for each outcome.
PATH_OF = {"direct": "direct", "relayed": "relayed", "failed": "none"}
#: With link conditions (lab.world.links) the agents' timeouts (lab.scenarios.agents: those of an
#: instant lab) grow by these many round trips of the slowest path, and with loss by the time
#: retransmissions take (TCP's first SYN retry alone is 1 s).
SESSION_RTTS = 25
PUNCH_RTTS = 6
LOSSY_SESSION_EXTRA = 20.0
LOSSY_PUNCH_EXTRA = 6.0
#: A cell whose cut-ins missed their window (the agent fired too late) is re-run at most this often.
MAX_ATTEMPTS = 3
PEER_EXIT_GRACE = 8.0
#: How long A has to say it is ready (log in, publish its candidates) before B starts.
READY_TIMEOUT = 10.0
_LABEL = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


@dataclass(frozen=True)
class Cell:
    """One scenario: who is behind which NAT, which agent (and variant), how many flows cut in on each side.

    ``variant`` is the agent's: dp2pt's ``basic`` (default) / ``simplified`` / ``improved`` /
    ``distributed``, ICE's ``stun`` (default) / ``turn``, or a free label naming a ``command``.
    ``command`` is the program a ``command`` cell runs on both sides (shell words, ``{LAB_...}``
    placeholders) and ``command_b`` B's when it is another one (a user's implementation against
    another, as in an interop run), ``turn`` gives a command a TURN server, ``timeout`` overrides
    the agent's.
    """

    nat_a: str
    nat_b: str
    variant: str | None = None
    k: int | None = None
    schedule: str | None = None
    cut_a: int = 0
    cut_b: int = 0
    expect: str | None = None  # "direct" | "relayed" | "failed" (from the matrix file); None = just observe
    why: str = ""
    agent: str = "dp2pt"
    command: str | None = None
    command_b: str | None = None  # B's program when it differs from A's (command cells)
    turn: bool = False
    timeout: float | None = None
    peer_args: tuple[str, ...] = ()  # more `dp2pt peer` options for both peers (e.g. --stun, --discover-nat)
    world: str = ""  # topology; "" = the runner's lab (FIG. 1 / FIG. 4)
    peers: str = ""  # "a,c": which peers are A and B; "" = the world's first two
    nats: str = ""  # profiles of the other NATs on the paths: "cgn=cgnat:block=8"
    noise_a: str = ""  # the noise host cutting in on A's side; "" = the one on A's LAN
    collision: bool = False  # a neighbour of A holds A's source port towards the server first (dp2pt)

    def __post_init__(self) -> None:
        kind = agents.get(self.agent)
        if self.variant is None:
            object.__setattr__(self, "variant", kind.default_variant)
        if kind.variants is not None and self.variant not in kind.variants:
            raise ConfigError(f"unknown variant {self.variant!r} for agent {self.agent}; known: {', '.join(kind.variants)}")
        if kind.variants is None and not _LABEL.match(self.variant):
            raise ConfigError(f"a command's label must be 1-32 of [a-z0-9-], not {self.variant!r}")
        if self.expect not in (None, *OUTCOMES):
            raise ConfigError(f"expected outcome must be one of {', '.join(OUTCOMES)}, not {self.expect!r}")
        if not (0 <= self.cut_a <= 50 and 0 <= self.cut_b <= 50):
            raise ConfigError("cut-ins per side must be 0..50")
        if (self.cut_a or self.cut_b) and not kind.cut_ins:
            raise ConfigError(f"cut-ins are timed on dp2pt's probes: the {self.agent} agent runs without them")
        if self.agent != "dp2pt" and (self.k is not None or self.schedule or self.peer_args):
            raise ConfigError("k and schedule are dp2pt's (improved variant), and so are peer options")
        if self.k is not None and not 1 <= self.k <= MAX_K:
            raise ConfigError(f"k must be 1..{MAX_K}, not {self.k}")
        if self.k not in (None, 1) and self.variant != "improved":
            raise ConfigError(f"k applies to the improved variant, not {self.variant}")
        if self.schedule is not None and self.schedule not in schedules.SCHEDULES:  # dp2pt peer would refuse it
            raise ConfigError(f"unknown schedule {self.schedule!r}; known: {', '.join(schedules.SCHEDULES)}")
        if (self.command is not None) != (self.agent == "command"):
            raise ConfigError("a command cell needs a command (and only a command cell takes one)")
        if self.agent == "command" and not self.command.strip():
            raise ConfigError("the command is empty")
        if self.command_b is not None and (self.agent != "command" or not self.command_b.strip()):
            raise ConfigError("B's own command (command_b) is for a command cell, and must not be empty")
        if self.agent == "ice":
            object.__setattr__(self, "turn", self.variant == "turn")
        elif self.turn and self.agent == "dp2pt":
            raise ConfigError("dp2pt uses no TURN server")
        if self.timeout is not None and not 0 < self.timeout <= 120:
            raise ConfigError("a cell's timeout must be 0..120 seconds")
        for item in self.nats.split():
            if not all(item.partition("=")[::2]):
                raise ConfigError(f"other NATs: {item!r} is not ROUTER=PROFILE (e.g. cgn=cgnat:block=64)")
        for profile in (self.nat_a, self.nat_b, *(item.partition("=")[2] for item in self.nats.split())):
            nat.parse_profile(profile)
        if self.world:
            topology.resolve(self.world)
        if self.collision and self.agent != "dp2pt":
            raise ConfigError("a collision cell binds dp2pt's port on A: dp2pt cells only")

    @property
    def id(self) -> str:
        if self.agent == "dp2pt":
            v = self.variant + (str(self.k) if self.k else "") + (f"-{self.schedule}" if self.schedule else "")
        else:
            v = self.agent if self.variant == self.agent else f"{self.agent}-{self.variant}"
            v += "-turn" if self.turn and self.agent == "command" else ""
        safe = lambda s: re.sub(r"[^a-z0-9=.-]+", "_", s)  # noqa: E731
        extra = "__" + safe("".join(self.peer_args).replace("--", "+")) if self.peer_args else ""
        if self.world:
            extra += f"__{self.world}" + (f"-{safe(self.peers)}" if self.peers else "")
        if self.nats:
            extra += f"__{safe(self.nats)}"
        if self.noise_a:
            extra += f"__from-{self.noise_a}"
        if self.collision:
            extra += "__collision"
        return f"{safe(self.nat_a)}__{safe(self.nat_b)}__{v}__cut{self.cut_a}{self.cut_b}{extra}"

    @property
    def protocol_variant(self) -> str:
        """The peer's ``--variant``: the distributed protocol runs the FIG. 2 steps over two servers."""
        return "basic" if self.variant == "distributed" else self.variant


@dataclass
class CellResult:
    cell: Cell
    outcome: str  # "direct" | "relayed" | "failed"
    dir: Path
    a: dict = field(default_factory=dict)
    b: dict = field(default_factory=dict)
    cutins: dict = field(default_factory=dict)
    path: dict = field(default_factory=dict)
    path_error: str | None = None
    attempts: int = 1
    seconds: float = 0.0
    claim: str | None = None  # what the agents said happened (None: a program that claims nothing)
    b_started_unix: float | None = None  # when B's program (`dp2pt peer ... connect`) was spawned, wall clock as in the pcap

    @property
    def route(self) -> str | None:
        """The path the capture shows: ``direct``, ``relayed`` or ``none`` (lab.world.capture)."""
        return self.path.get("path")

    @property
    def as_expected(self) -> bool:
        return self.cell.expect is None or self.cell.expect == self.outcome

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cell"] = asdict(self.cell) | {"id": self.cell.id}
        d["dir"] = str(self.dir)
        return d


def endpoints(topo: "Topology", turn: bool = False, nats: tuple[str, str] | None = None,
              inside: tuple[str, str, str] | None = None) -> capture.Endpoints:
    """Who is who on the public segment: the NATs' WANs (``nats``, default the outermost NATs of
    ``topo``'s first two peers), the servers' STUN ports, and the TURN server (services: on the
    first server node) if ``turn``; with ``inside`` (A's and B's addresses on a shared NAT's inside
    segment, that NAT's public address) who is who on that segment instead."""
    servers = topo.by_role("server")
    listening = {(ip, port) for s in servers for ip in topo.addresses(s)
                 for port in (services.STUN_PORT, services.ALT_STUN_PORT)}
    relays = set()
    if turn:
        relay = topo.address(servers[0])
        listening.add((relay, services.TURN_PORT))
        relays.add(relay)
    if inside:
        return capture.Endpoints(inside[0], inside[1], frozenset(listening), frozenset(relays), via=inside[2])
    nat_a, nat_b = nats or (topo.nat_chain(peer)[-1] for peer in topo.by_role("peer")[:2])
    return capture.Endpoints(topo.address(nat_a, topo.public), topo.address(nat_b, topo.public),
                             frozenset(listening), frozenset(relays))


def new_run_dir(root: Path | str = "runs") -> Path:
    run = Path(root) / time.strftime("%Y%m%d-%H%M%S")
    n = 0
    while True:
        candidate = run if n == 0 else run.with_name(f"{run.name}-{n}")
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            n += 1


class Runner:
    """Runs cells one after the other on one lab; ``close()`` stops its long-lived processes."""

    def __init__(self, lab: Lab, run_dir: Path, *, servers_running: bool = False,
                 start_servers: list[str] | None = None) -> None:
        """``servers_running``: the world's location servers already serve (the compose world starts
        them with :func:`~lab.world.services.location_server_argv`); the runner uses them as they are.
        ``start_servers``: start only these server nodes (a scenario adds the others later with
        :meth:`start_server`); default all."""
        if shutil.which("dp2pt") is None:
            raise MissingTool("dp2pt: command not found (pip install -e . in the repository)")
        self.lab = lab
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        topo = lab.topology
        self.servers = topo.by_role("server")
        if not self.servers:
            raise ConfigError(f"topology {topo.name} has no location server")
        self.server_procs: dict[str, subprocess.Popen] = {}
        self.server_info: dict[str, dict] = {}
        self.services: dict[str, subprocess.Popen] = {}  # "rendezvous", "turn": started when a cell needs them
        self.agents: dict[str, traffic.TrafficAgent] = {}
        self.servers_running = servers_running
        self.start_servers = self.servers if start_servers is None else list(start_servers)
        self._serial = 0
        self._started = False

    # ---- session ------------------------------------------------------------------------------

    def start(self) -> "Runner":
        """Start the location server(s) (federated if several) and the cut-in agents.

        If anything fails to start, what did start is stopped before the error propagates.
        """
        try:
            return self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> "Runner":
        topo = self.lab.topology
        if not self.servers_running:
            for node in topo.by_role("directory")[:1]:
                self._directory(node)
        for name in self.servers:
            if self.servers_running:
                self.server_info[name] = services.location_server_addresses(topo, name)
            elif name in self.start_servers:
                self.server_procs[name] = self.lab.popen(name, services.location_server_argv(topo, name),
                                                         env=services.location_server_env(topo))
        for name, proc in self.server_procs.items():
            self.server_info[name] = self._ready(name, proc)
        for noise in topo.by_role("noise"):
            self.agents[noise] = traffic.TrafficAgent(self.lab, noise).start()
        self._started = True
        return self

    def start_server(self, name: str) -> dict:
        """Start the location server of node ``name`` now (a server added to a running service); returns
        its ready line."""
        topo = self.lab.topology
        proc = self.lab.popen(name, services.location_server_argv(topo, name), env=services.location_server_env(topo))
        self.server_procs[name] = proc
        self.server_info[name] = self._ready(name, proc)
        return self.server_info[name]

    def _directory(self, node: str) -> None:
        """Start the Redis the location servers share (a topology's ``directory`` node)."""
        proc = self.lab.popen(node, services.directory_argv(self.lab.topology, node))
        self.services["directory"] = proc  # stopped after the servers
        try:
            wait_for_line(proc, lambda l: services.DIRECTORY_READY in l, READY_TIMEOUT)
        except TimeoutError:
            err = proc.stderr.read() if proc.poll() is not None else ""
            raise ScenarioError(f"redis-server on {node} did not start: {err.strip()[-300:]}") from None

    def _ready(self, name: str, proc: subprocess.Popen) -> dict:
        """The ready line of the location server ``proc`` on node ``name``."""
        try:
            line = wait_for_line(proc, lambda l: '"ready"' in l, READY_TIMEOUT)
        except TimeoutError:
            try:
                proc.wait(timeout=1.0)  # it closed its output: let it exit, then read why
            except subprocess.TimeoutExpired:
                pass
            err = proc.stderr.read() if proc.poll() is not None else ""
            if "in use" in err.lower():
                from lab.errors import PortInUse

                raise PortInUse(f"location server on {name}: port already in use") from None
            raise ScenarioError(f"location server on {name} did not start: {err.strip()[-300:]}") from None
        return json.loads(line)

    def _service(self, name: str) -> None:
        """Start the rendezvous or coturn on the first server node, once per session."""
        if name in self.services:
            return
        node, topo = self.servers[0], self.lab.topology
        if name == "rendezvous":
            proc = self.lab.popen(node, services.rendezvous_argv(topo, node, self.lab.python))
            self.services[name] = proc
            try:
                wait_for_line(proc, lambda l: '"ready"' in l, READY_TIMEOUT)
            except TimeoutError:
                err = proc.stderr.read() if proc.poll() is not None else ""
                raise ScenarioError(f"rendezvous on {node} did not start: {err.strip()[-300:]}") from None
            return
        if shutil.which("turnserver") is None:
            raise MissingTool("turnserver: command not found (apt-get install coturn): the TURN variant needs it")
        log = self.run_dir / "server-turn.log"  # a file, not a pipe: coturn logs every allocation
        with log.open("w") as out:
            proc = self.lab.popen(node, services.turn_server_argv(topo, node, services.turn_pidfile(self.lab.prefix)),
                                  stdout=out, stderr=subprocess.STDOUT)
        self.services[name] = proc
        deadline = time.monotonic() + READY_TIMEOUT
        while services.TURN_READY not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace").strip().splitlines()[-1:]
                raise ScenarioError(f"turnserver on {node} did not start: {tail}")
            time.sleep(0.02)

    def close(self) -> None:
        for agent in self.agents.values():
            agent.stop()
        self.agents.clear()
        for name, proc in [*self.server_procs.items(), *self.services.items()]:
            self.lab.stop(proc)
            if proc.stdout is None:
                continue  # logged to a file already
            try:
                out = proc.stdout.read()
                (self.run_dir / f"server-{name}.log").write_text(out + (proc.stderr.read() if proc.stderr else ""))
            except (OSError, ValueError):
                pass
        if "turn" in self.services:
            services.remove_turn_pidfile(self.lab.prefix)
        self.server_procs.clear()
        self.services.clear()

    def __enter__(self) -> "Runner":
        return self.start() if not self._started else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- one cell -----------------------------------------------------------------------------

    def run(self, cell: Cell) -> CellResult:
        """Run ``cell`` (re-running it if a cut-in missed its window) and return its outcome."""
        if not self._started:
            self.start()
        for attempt in range(1, MAX_ATTEMPTS + 1):
            result = self._run_once(cell, attempt)
            if result.cutins.get("in_window", True):
                break
        (result.dir / "result.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))
        return result

    def servers_for(self, cell: Cell) -> tuple[str, str]:
        """The location servers of A and B in ``cell``: two for the distributed variant (FIG. 4), else one."""
        if cell.variant == "distributed":
            if len(self.servers) < 2:
                raise ConfigError("the distributed variant needs a topology with two location servers (fig4)")
            return self.servers[0], self.servers[1]
        return self.servers[0], self.servers[0]

    def timeouts(self, cell: Cell | None = None) -> tuple[float, float]:
        """(session, punch) timeouts of ``cell``'s agent (dp2pt's by default) between its peers: the
        instant lab's, stretched by the links' round trips and loss (read from the lab now:
        ``dp2pt-lab link`` may have changed them)."""
        from lab.scenarios import expect
        from lab.world import linkctl

        topo = self.lab.topology
        base = agents.get(cell.agent).timeout(cell) if cell else agents.SESSION_TIMEOUT
        peers = list(expect.peers_of(topo, cell.peers if cell else ""))
        rtt = linkctl.worst_round_trip_ms(self.lab, peers + self.servers) / 1000
        lossy = linkctl.worst_loss(self.lab) > 0
        return (base + SESSION_RTTS * rtt + (LOSSY_SESSION_EXTRA if lossy else 0.0),
                PUNCH_TIMEOUT + PUNCH_RTTS * rtt + (LOSSY_PUNCH_EXTRA if lossy else 0.0))

    def _environments(self, cell: Cell, peers: tuple[str, str], servers: tuple[str, str],
                      timeout: float) -> tuple[dict, dict]:
        """The contract's environment of A and B for this run of ``cell``."""
        topo = self.lab.topology
        first = topo.address(self.servers[0])
        turn = contract.Turn((first, services.TURN_PORT), services.TURN_USER, services.TURN_PASSWORD) if cell.turn else None
        ids, session = (f"A{self._serial}", f"B{self._serial}"), f"{self.lab.prefix}-{self._serial}-{secrets.token_hex(3)}"
        envs = []
        for i, (role, peer, srv) in enumerate(zip("AB", peers, servers)):
            ip = topo.address(srv)
            envs.append(contract.AgentEnv(role, ids[i], ids[1 - i], session, (first, services.RENDEZVOUS_PORT),
                                          (ip, services.CONTROL_PORT), (ip, services.STUN_PORT), topo.address(peer),
                                          timeout, turn).to_env())
        return envs[0], envs[1]

    def _run_once(self, cell: Cell, attempt: int) -> CellResult:
        from lab.scenarios import expect

        lab, topo = self.lab, self.lab.topology
        if cell.world and cell.world != topo.name:
            raise ConfigError(f"cell {cell.id} is for world {cell.world}, this runner's lab is {topo.name}")
        kind = agents.get(cell.agent)
        t0 = time.monotonic()
        self._serial += 1
        cdir = self.run_dir / (cell.id if attempt == 1 else f"{cell.id}.try{attempt}")
        cdir.mkdir(parents=True, exist_ok=True)
        peer_a, peer_b = expect.peers_of(topo, cell.peers)
        chain_a, chain_b = topo.nat_chain(peer_a), topo.nat_chain(peer_b)
        srv_a, srv_b = self.servers_for(cell)
        if cell.agent != "dp2pt":
            self._service("rendezvous")
        if cell.turn:
            self._service("turn")
        profiles = {r: lab.configure_nat(r, p)
                    for r, p in expect.profiles_for(topo, peer_a, peer_b, cell.nat_a, cell.nat_b, cell.nats).items()}
        # Where the two paths meet: the public segment, or the inside of the (innermost) NAT they share.
        shared = [r for r in chain_a if r in chain_b]
        meet = topo.router_segments(shared[0])[1] if shared else None
        session_timeout, punch_timeout = self.timeouts(cell)
        env_a, env_b = self._environments(cell, (peer_a, peer_b), (srv_a, srv_b), session_timeout)
        argv_a, argv_b = (kind.argv(cell, env, lab.python, punch_timeout) for env in (env_a, env_b))

        # TCP too: control steps 1, 2, 7, 8, 13, 14
        caps = [lab.capture(topo.public, cdir / "public.pcap", bpf="udp or tcp")]
        armed: dict[str, tuple[str, int]] = {}
        try:
            if meet:
                caps.append(lab.capture(meet, cdir / "inside.pcap", bpf="udp"))
            if cell.collision:
                self._collide(peer_a, srv_a)
            for peer, n, srv, noise in ((peer_a, cell.cut_a, srv_a, cell.noise_a), (peer_b, cell.cut_b, srv_b, "")):
                if not n:
                    continue
                noise = noise or topo.lan_hosts(topo.router_of(peer), "noise")[0]
                if noise in armed:
                    raise ConfigError(f"cell {cell.id}: both sides would cut in from {noise}")
                # The window opens at the peer's last probe: probe 2 (to the server's alternate
                # port) normally, the only probe (to the main port) for the simplified protocol.
                last = self.server_info[srv]["udp" if cell.variant == "simplified" else "alt"]
                src = _address_seen_on(topo, peer, topo.upstream_segment(noise))
                trig = traffic.Trigger(src=src, dst=last[0], dport=int(last[1]))
                self.agents[noise].arm(traffic.plan_for(lab, noise, n, trig,
                                                           timeout=min(session_timeout + 2, traffic.MAX_DURATION)))
                armed[noise] = (peer, n)

            proc_a = lab.popen(peer_a, argv_a, env=env_a)
            if kind.ready:
                try:
                    wait_for_line(proc_a, lambda l: kind.ready in l, max(READY_TIMEOUT, session_timeout))
                except TimeoutError:
                    lab.stop(proc_a)
                    raise ScenarioError(f"{cell.agent} on A did not get ready: "
                                        f"{proc_a.stderr.read().strip()[-300:]}") from None
            b_started = time.time()
            proc_b = lab.popen(peer_b, argv_b, env=env_b)
            wait = session_timeout + PEER_EXIT_GRACE
            res_a = self._collect(proc_a, cdir / "a", wait)
            res_b = self._collect(proc_b, cdir / "b", wait)
            reports = {}
            for noise, (peer, n) in armed.items():
                reports[noise] = self.agents[noise].result(session_timeout + 3)
        finally:
            for cap in caps:
                cap.stop()
        for router in profiles:
            (cdir / f"conntrack-{router}.txt").write_text(lab.conntrack_dump(router))
            (cdir / f"nft-{router}.txt").write_text(lab.nft_dump(router))

        cutins = self._check_cutins(cell, reports, armed, {peer_a: (chain_a, res_a), peer_b: (chain_b, res_b)},
                                    profiles, cdir)
        (cdir / "cutins.json").write_text(json.dumps(cutins, indent=2))

        # A hairpinned path is seen on the inside of the innermost NAT both share, addressed to the
        # outermost one's public address (the address the peers learnt).
        inside = (_address_seen_on(topo, peer_a, meet), _address_seen_on(topo, peer_b, meet),
                  topo.address(chain_a[-1], topo.public)) if meet else None
        ends = endpoints(topo, cell.turn, (chain_a[-1], chain_b[-1]), inside)
        pcap = cdir / ("inside.pcap" if meet else "public.pcap")
        (cdir / "addresses.json").write_text(json.dumps(
            {"nat_a": ends.wan_a, "nat_b": ends.wan_b, "servers": sorted({ip for ip, _ in ends.services}),
             "relays": sorted(ends.relays)} | ({"via": ends.via} if ends.via else {})))
        verdict = capture.classify_path(pcap, ends)
        path = verdict.to_dict() | {"pcap": str(pcap)}
        claim = kind.claim(res_a, res_b)
        path_error = None
        if claim is None:
            outcome = next(o for o, p in PATH_OF.items() if p == verdict.path)
        elif PATH_OF[claim] != verdict.path:
            path_error = f"{cell.agent} says {claim}, the capture shows {verdict.path}"
            outcome = "failed"
        else:
            outcome = claim
        if cell.agent == "dp2pt":
            report = capture.read_d2pt(pcap)
            path["d2pt"] = report.to_dict()["d2pt"]
            try:
                if outcome == "direct":
                    capture.assert_direct(report, ends.wan_a, ends.wan_b,
                                          [ip for s in self.servers for ip in topo.addresses(s)], via=ends.via)
                else:
                    capture.assert_no_direct_data(report)
            except capture.PathNotProven as exc:
                path_error, outcome = path_error or str(exc), "failed"
        return CellResult(cell, outcome, cdir, res_a, res_b, cutins, path, path_error, attempt,
                          round(time.monotonic() - t0, 3), claim, b_started)

    def _collide(self, peer: str, srv: str) -> None:
        """Before the peer's probes, a neighbour of ``peer`` (a spoofed LAN source) sends one
        datagram from ``peer``'s own port to the second probe's destination (the server's
        alternate STUN port): a port-preserving NAT keeps the port for probe 1 but cannot for probe
        2 (same remote, same external port) and draws another one."""
        topo = self.lab.topology
        noise = topo.lan_hosts(topo.router_of(peer), "noise")[0]
        ip, dport = self.server_info[srv]["alt"]
        plan = traffic.plan_for(self.lab, noise, 1, dst=ip, dport=int(dport), sport=agents.COLLISION_PORT)
        self.agents[noise].arm(plan)
        rep = self.agents[noise].result(5.0)
        if rep.get("event") != "done":
            raise ScenarioError(f"collision flow from {noise} not sent: {rep}")

    def _collect(self, proc: subprocess.Popen, stem: Path, wait: float) -> dict:
        try:
            out, err = proc.communicate(timeout=wait)
        except subprocess.TimeoutExpired:
            self.lab.stop(proc)
            out, err = proc.communicate()
        self.lab.stop(proc)
        stem.with_suffix(".log").write_text(err or "")
        stem.with_suffix(".out").write_text(out or "")
        result = contract.result_line(out or "") or {}
        result.setdefault("exit_code", proc.returncode)
        stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
        return result

    def _check_cutins(self, cell: Cell, reports: dict, armed: dict, sides: dict, profiles: dict, cdir: Path) -> dict:
        """Did every cut-in flow take its mapping inside the window (after probe 2, before the punch)?

        When the NAT whose ports the peer reports (the outermost of its chain) allocates in
        sequence for the cut-in flows and the peer alike (a shared sequential NAT, or port blocks
        with the cut-ins from the peer's own household), the window is visible in its conntrack:
        the cut-in flows, followed through any NAT before it, must hold the ports right after the
        peer's second mapping (x2 + dx2, x2 + 2dx2, ...). A late agent (a scheduling hiccup) shows
        up here and the cell is re-run, never misclassified. Elsewhere (other subscribers' blocks)
        the agent's report must say every flow was sent.
        """
        topo = self.lab.topology
        out: dict = {"in_window": True, "sides": {}}
        for noise, (peer, n) in armed.items():
            rep = reports.get(noise, {})
            chain, res = sides[peer]
            path = topo.nat_chain(noise)
            outer = profiles[chain[-1]]
            side = {"noise": noise, "asked": n, "agent": rep}
            ok = rep.get("event") == "done" and rep.get("sent") == n
            readable = (path[-1] == chain[-1] and outer.allocation is nat.Allocation.SEQUENTIAL
                        and outer.mapping is nat.Mapping.APDM and (not outer.block or path[:-1] == chain[:-1] != []))
            if ok and readable and res.get("mapped"):
                flows = [tuple(f["flow"]) for f in rep["flows"]]
                for inner in path[:-1]:  # what the flows look like after each NAT before the outer one
                    flows = _through(topo, inner, (cdir / f"conntrack-{inner}.txt").read_text(), flows)
                mapped_ports = _cutin_ports((cdir / f"conntrack-{chain[-1]}.txt").read_text(), flows)
                x2 = int(res["mapped"][1])
                want = sorted(x2 + outer.delta * (i + 1) for i in range(n))
                side["mapped_ports"], side["expected_ports"] = mapped_ports, want
                ok = sorted(mapped_ports) == want
            side["in_window"] = ok
            out["in_window"] = out["in_window"] and ok
            out["sides"][peer] = side
        return out


def _through(topo: topology.Topology, router: str, conntrack_text: str, flows: list[tuple]) -> list[tuple]:
    """The flows as they leave ``router`` (source: its WAN address and the port it mapped them to)."""
    mapped = {(f.src, f.sport, f.dst, f.dport): f.mapped for f in nat.conntrack_udp_flows(conntrack_text)}
    wan = topo.address(router, topo.router_segments(router)[0])
    return [(wan, mapped[key], key[2], key[3]) for key in ((s, int(p), d, int(dp)) for s, p, d, dp in flows)
            if key in mapped]


def _address_seen_on(topo: topology.Topology, node: str, segment: str) -> str:
    """The source address ``node``'s packets carry on ``segment``: its own, or that of the NAT of
    its chain that sits there (A's packets cross the carrier segment as nat-a's)."""
    for hop in [node, *topo.nat_chain(node)]:
        if segment in (l.segment for l in topo.node(hop).links):
            return topo.address(hop, segment)
    raise ConfigError(f"{node}'s packets never cross segment {segment}")


def _cutin_ports(conntrack_text: str, flows: list[tuple]) -> list[int]:
    """Mapped (NAT) ports of the cut-in flows, read from ``conntrack -L`` output."""
    mapped = {(f.src, f.sport, f.dst, f.dport): f.mapped for f in nat.conntrack_udp_flows(conntrack_text)}
    return [mapped[(src, int(sport), dst, int(dport))] for src, sport, dst, dport in flows
            if (src, int(sport), dst, int(dport)) in mapped]
