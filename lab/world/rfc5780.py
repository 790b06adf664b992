"""Verification of the NAT profiles by an outside tool: coturn's RFC 5780 behaviour discovery.

Our NAT profiles are only as good as their labels. This module asks a third party: coturn's
``turnserver`` runs STUN-only on the sink with two public addresses (RFC 5780 §4.2 needs an
alternate address *and* port for its mapping and filtering tests), and
``turnutils_natdiscovery -H -m -f`` runs on a peer behind the NAT under test. Its verdicts
("NAT with Endpoint Independent Mapping!", "... Address and Port Dependent Filtering!") must
equal the profile's RFC 4787 mapping and filtering behaviours, and its hairpinning test (a second
socket sends to the first one's mapped address; "Received a request (maybe a successful
hairpinning)") must succeed exactly when the profile hairpins. A profile with a short mapping
timeout (``timeout=`` at most :data:`LIFETIME_MAX` s) also gets the mapping lifetime test (``-t
-T``: after T seconds the server answers to the first mapping from a second socket, RESPONSE-PORT):
the mapping must live :data:`LIFETIME_MARGIN` s before its timeout and be gone as long after it.
What an RFC 5780 client cannot see (port blocks, collisions) is read from the router's conntrack
by scenarios instead (``scenarios/test_port_blocks.py``, ``scenarios/test_port_collision.py``).

The tool's filtering test waits out a few seconds per refused CHANGE-REQUEST, so
:func:`across_labs` spreads the profiles over several labs side by side (two NATs each) and runs
them concurrently (the STUN clients' comparison of dp2pt's server with coturn uses it too).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from lab.world import nat, topology
from lab.world.backends.base import Lab, wait_for_line
from lab.errors import MissingTool, ScenarioError

STUN_PORT = 3478
ALT_PORT = 3479
#: Upper bound of a turnserver's life (coreutils timeout), should the lab forget to stop it.
SERVER_LIFETIME = 300
DISCOVERY_TIMEOUT = 40.0
#: Profiles whose mapping timeout is at most this (seconds) get the lifetime test; it lasts about that long.
LIFETIME_MAX = 10
LIFETIME_MARGIN = 2
T = TypeVar("T")
_VERDICT = re.compile(r"NAT with (.+?) (Mapping|Filtering)!")
HAIRPIN_SEEN = "successful hairpinning"
_WORDS = {
    "Endpoint Independent": "endpoint-independent",
    "Address Dependent": "address-dependent",
    "Address and Port Dependent": "address-and-port-dependent",
}


@dataclass
class Verdict:
    profile: str
    expected_mapping: str
    expected_filtering: str
    mapping: str | None
    filtering: str | None
    output: str = ""
    expected_hairpin: bool = False
    hairpin: bool | None = None
    #: Mapping lifetime test, when the profile's timeout is short: alive before it, gone after it.
    lifetime: tuple[bool, bool] | None = None

    @property
    def matches(self) -> bool:
        return ((self.mapping, self.filtering) == (self.expected_mapping, self.expected_filtering)
                and self.hairpin == self.expected_hairpin and self.lifetime in (None, (True, False)))


def parse_discovery(text: str) -> tuple[str | None, str | None]:
    """(mapping, filtering) behaviours from ``turnutils_natdiscovery`` output, RFC 4787 words."""
    found: dict[str, str] = {}
    for words, kind in _VERDICT.findall(text):
        found[kind] = _WORDS.get(words, words.lower())
    if "No NAT" in text or "not behind a NAT" in text.lower():
        found.setdefault("Mapping", "none")
    return found.get("Mapping"), found.get("Filtering")


class StunServer:
    """coturn STUN-only with two addresses of the sink node (RFC 5780 server)."""

    def __init__(self, lab: Lab, node: str | None = None, workdir: Path | None = None,
                 port: int = STUN_PORT, alt_port: int = ALT_PORT) -> None:
        for tool in ("turnserver", "turnutils_natdiscovery", "timeout"):
            if shutil.which(tool) is None:
                raise MissingTool(f"{tool}: command not found (apt-get install coturn)")
        self.lab = lab
        self.node = node or lab.topology.by_role("sink")[0]
        addrs = lab.topology.addresses(self.node)
        if len(addrs) < 2:
            raise ScenarioError(f"RFC 5780 needs two addresses on {self.node}, it has {addrs}")
        self.addresses = addrs[:2]
        self.port, self.alt_port = port, alt_port
        self._own_workdir = workdir is None  # a temporary directory, removed on exit
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="dp2pt-turn-"))
        self.proc: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        a, b = self.addresses
        w = self.workdir
        return ["timeout", str(SERVER_LIFETIME), "turnserver", "-n", "--stun-only", "--no-auth",
                "-L", a, "-L", b, "--listening-port", str(self.port), "--alt-listening-port", str(self.alt_port),
                "--no-cli", "--no-tls", "--no-dtls", "--no-tcp", "--simple-log", "--log-file", "stdout",
                "--pidfile", str(w / "turnserver.pid"), "--userdb", str(w / "turndb"), "-r", "dp2pt-lab"]

    def __enter__(self) -> "StunServer":
        self.proc = self.lab.popen(self.node, self.argv())
        try:
            wait_for_line(self.proc, lambda l: "Total General servers" in l or "turn server id=1" in l, 10.0)
        except TimeoutError:
            self.lab.stop(self.proc)
            raise ScenarioError("turnserver did not start (see its log)") from None
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        try:
            with open(self.workdir / "turnserver.log", "w") as log:
                for line in self.proc.stdout:
                    log.write(line)
        except (ValueError, OSError):
            pass

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.lab.stop(self.proc)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def parse_hairpin(text: str) -> bool:
    """Whether ``turnutils_natdiscovery -H`` saw its own request come back through the NAT."""
    return HAIRPIN_SEEN in text


def parse_lifetime(text: str) -> bool:
    """Whether ``turnutils_natdiscovery -t`` got the answer sent to its first mapping after the wait."""
    return "RFC 5780 response 2" in text


def discover(lab: Lab, stun: StunServer, router: str, profile: str) -> Verdict:
    """Configure ``router`` as ``profile`` and classify it from the peer behind it."""
    prof = lab.configure_nat(router, profile)
    client = lab.topology.lan_hosts(router, "peer")[0]
    target = ["-p", str(stun.port), stun.addresses[0]]
    runs = {"discovery": ["turnutils_natdiscovery", "-H", "-m", "-f", *target]}
    if prof.udp_timeout <= LIFETIME_MAX:
        for name, wait in (("alive", prof.udp_timeout - LIFETIME_MARGIN), ("gone", prof.udp_timeout + LIFETIME_MARGIN)):
            runs[name] = ["turnutils_natdiscovery", "-t", "-T", str(max(wait, 1)), *target]
    # Side by side: the lifetime tests mostly wait, each on sockets of its own.
    procs = {name: lab.popen(client, argv) for name, argv in runs.items()}
    out = {}
    for name, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=DISCOVERY_TIMEOUT)
        except subprocess.TimeoutExpired:
            lab.stop(proc)
            stdout, stderr = proc.communicate()
        lab.stop(proc)
        out[name] = (stdout or "") + (stderr or "")
    mapping, filtering = parse_discovery(out["discovery"])
    lifetime = (parse_lifetime(out["alive"]), parse_lifetime(out["gone"])) if "alive" in out else None
    return Verdict(profile, prof.mapping.value, prof.filtering.value, mapping, filtering, "\n".join(out.values()),
                   prof.hairpin, parse_hairpin(out["discovery"]), lifetime)


def verify_all(backend, profiles: list[str], workdir: Path | None = None) -> dict[str, Verdict]:
    """Classify every profile with coturn's natdiscovery (see :func:`across_labs`)."""
    return across_labs(backend, profiles, lambda lab, wd: [StunServer(lab, workdir=wd)],
                       lambda lab, servers, router, profile: discover(lab, servers[0], router, profile), workdir)


def across_labs(backend, profiles: list[str], servers: Callable[[Lab, Path | None], list],
                job: Callable[[Lab, list, str, str], T], workdir: Path | None = None) -> dict[str, T]:
    """Run ``job(lab, servers, router, profile)`` for every profile, two per lab (nat-a, nat-b), all
    labs side by side and concurrent; ``servers(lab, workdir)`` makes the context managers each lab
    serves them with (entered before the jobs, left after them).  Returns job results by profile."""
    for p in profiles:
        nat.parse_profile(p)
    slots = [profiles[i : i + 2] for i in range(0, len(profiles), 2)]
    results: dict[str, T] = {}
    errors: list[BaseException] = []
    labs: list[Lab] = []
    lock = threading.Lock()

    def work(lab: Lab, running: list, router: str, profile: str) -> None:
        try:
            result = job(lab, running, router, profile)
            with lock:
                results[profile] = result
        except BaseException as exc:  # reported in the caller's thread
            errors.append(exc)

    entered: list[list] = []  # per lab, what the servers' __enter__ returned (what jobs get)
    managers: list = []
    try:
        for i, _pair in enumerate(slots):
            lab = backend.up(topology.load("fig1"))
            labs.append(lab)
            wd = (Path(workdir) / f"lab{i}") if workdir else None
            if wd:
                wd.mkdir(parents=True, exist_ok=True)
            entered.append([])
            for server in servers(lab, wd):
                entered[-1].append(server.__enter__())
                managers.append(server)
        threads = []
        for lab, running, pair in zip(labs, entered, slots):
            for router, profile in zip(("nat-a", "nat-b"), pair):
                t = threading.Thread(target=work, args=(lab, running, router, profile))
                t.start()
                threads.append(t)
        for t in threads:
            t.join()
        for lab, pair in zip(labs, slots):
            if workdir:
                for router in ("nat-a", "nat-b"):
                    (Path(workdir) / f"conntrack-{lab.prefix}-{router}.txt").write_text(lab.conntrack_dump(router))
    finally:
        for server in managers:
            server.__exit__(None, None, None)
        for lab in labs:
            lab.down()
    if errors:
        raise errors[0]
    return results
