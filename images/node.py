"""Entrypoint (PID 1) of a lab container: become a node of a topology, report ready, then serve or idle.

Roles (first argument): ``server``, ``router``, ``peer``, ``noise``, ``sink`` — a node of the
compose world (lab/world/compose.py): with $DP2PT_TOPOLOGY (a topology name the image carries, or a
mounted YAML file) and $DP2PT_NODE it takes the topology's addresses and routes in place of Docker's
(lab.world.addressing.adopt); a router then loads its NAT profile ($NAT_PROFILE, else the
topology's) with the lab's own renderer, a server runs the location server with the command line
every lab uses (lab.world.services). ``idle``: nothing (the Docker backend configures its
containers from the host).

Readiness: the log line ``dp2pt-node: ready: ...`` (and the file /run/dp2pt/ready), which
``make lab-up`` waits for; a failed setup is one ``dp2pt-node: error:`` line and exit status 1.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

from lab.errors import LabError
from pyroute2.netlink.exceptions import NetlinkError

READY = Path("/run/dp2pt/ready")
ROLES = ("server", "router", "peer", "noise", "sink")


class NodeError(Exception):
    """A setup step failed; printed as one line, exit status 1."""


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise NodeError(f"environment variable {name} is required for this role")
    return value


def become(role: str):
    """Adopt the topology's addresses and routes for $DP2PT_NODE; returns (topology, node, ifnames)."""
    from pyroute2 import IPRoute

    from lab.world import addressing, compose, topology

    topo, node = topology.load(env("DP2PT_TOPOLOGY")), env("DP2PT_NODE")
    declared = topo.node(node).role
    if declared != role:
        raise NodeError(f"{node} is a {declared} in topology {topo.name}, not a {role}")
    with IPRoute() as ipr:
        try:
            ifnames = addressing.adopt(ipr, topo, node, compose.docker_plan(topo)[node])
        except LookupError as exc:
            raise NodeError(f"{exc} (is the container attached to the networks of the generated compose file?)") from None
    return topo, node, ifnames


def setup_router(topo, node: str, ifnames: dict[str, str]) -> str:
    from lab.world import nat

    profile = nat.parse_profile(os.environ.get("NAT_PROFILE") or topo.node(node).nat or "port-restricted-cone")
    params = nat.router_params(topo, node, ifnames)
    run(["nft", "-f", "-"], input=nat.render_ruleset(profile, params))
    check_sysctls(nat.conntrack_sysctls(profile))
    if profile.block:
        start_port_blocks(profile, params)
    return f"router {node} {profile.spec}"


def start_port_blocks(profile, params) -> None:
    """A port-block profile: its allocator (lab.world.pba) as a child of PID 1, then the rules that
    queue new flows to it (the Docker backend does the same from the host: Lab.configure_nat)."""
    from lab.world import nat

    child = subprocess.Popen([sys.executable, "-m", "lab.world.pba", "serve", "--profile", profile.spec,
                              "--wan-ip", params.wan_ip, "--pidfile", "/run/dp2pt/pba.pid",
                              "--state", "/run/dp2pt/pba.state"], stdout=subprocess.PIPE, text=True)
    line = child.stdout.readline()
    if '"ready"' not in line:
        raise NodeError(f"port-block allocator did not start (exit {child.poll()})")
    for argv in nat.queue_rules(profile, params):
        removal = argv[3] in ("-D", "-F", "-X")
        done = subprocess.run(["iptables", *argv], capture_output=True, text=True)
        if done.returncode and not removal:
            raise NodeError(f"iptables {' '.join(argv)}: {done.stderr.strip()}")


def check_sysctls(values: dict[str, str]) -> None:
    """Docker mounts /proc/sys read-only: values come from the compose file's ``sysctls``; this only
    checks them (and writes them where /proc/sys is writable, e.g. a privileged container)."""
    for key, want in values.items():
        path = Path("/proc/sys") / key.replace(".", "/")
        try:
            have = path.read_text().strip()
        except OSError as exc:
            raise NodeError(f"cannot read {key}: {exc.strerror}") from None
        if have == str(want):
            continue
        try:
            path.write_text(str(want))
        except OSError:
            raise NodeError(f"{key} is {have}, the profile needs {want}: set it in the compose file's sysctls") from None


def run(argv: list[str], input: str | None = None) -> None:
    done = subprocess.run(argv, input=input, text=True, capture_output=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or [""])[-1]
        raise NodeError(f"{shlex.join(argv)} exited {done.returncode}: {tail}")


def serve(topo, node: str) -> int:
    """Run the location server as a child; ready once it prints its ready line; relay its output."""
    from lab.world.services import location_server_argv

    child = subprocess.Popen(location_server_argv(topo, node), stdout=subprocess.PIPE, text=True)
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    for line in child.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        if '"ready"' in line and not READY.exists():
            READY.write_text(line)
            print(f"dp2pt-node: ready: location server {node}", flush=True)
    return child.wait()


def idle() -> int:
    """Stay PID 1: reap orphans of ``docker exec`` processes; exit 0 at once on SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(1.0):
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
    return 0


def main(argv: list[str]) -> int:
    role = argv[1] if len(argv) > 1 else "idle"
    READY.parent.mkdir(parents=True, exist_ok=True)
    READY.unlink(missing_ok=True)
    if role == "idle":
        what = "idle"
    else:
        try:
            if role not in ROLES:
                raise NodeError(f"unknown role {role!r} ({', '.join(ROLES)}, idle)")
            topo, node, ifnames = become(role)
            if role == "server":
                return serve(topo, node)
            what = setup_router(topo, node, ifnames) if role == "router" else f"{role} {node}"
        except NetlinkError as exc:
            hint = " (the container needs cap_add NET_ADMIN)" if exc.code == 1 else ""
            print(f"dp2pt-node: error: netlink: {exc.args[-1]}{hint}", file=sys.stderr, flush=True)
            return 1
        except (NodeError, LabError, OSError) as exc:
            print(f"dp2pt-node: error: {exc}", file=sys.stderr, flush=True)
            return 1
    READY.write_text(what + "\n")
    print(f"dp2pt-node: ready: {what}", flush=True)
    return idle()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
