"""Entrypoint (PID 1) of a lab container: set the node up for its role, report ready, then idle.

Roles (first argument, or $ROLE):
  router  -- apply the NAT profile $NAT_PROFILE between the interfaces on $WAN_SUBNET and
             $LAN_SUBNET with the lab's own renderer (lab.world.nat), as the netns lab does;
  peer    -- (also ``noise``) replace the default route by $GATEWAY, the LAN's NAT router;
  server  -- run ``dp2pt server`` ($SERVER_ARGS); ready once it prints its ready line;
  idle    -- nothing (the Docker backend configures its nodes from the host).
Routers and the server lose the default route Docker gives every container (via the host).

Why here and not in compose.yaml: Docker neither keeps interface order nor lets a compose file
route through a container, so interfaces are picked by subnet (pyroute2) and routes set at start.
Readiness: the log line ``dp2pt-node: ready`` (and the file /run/dp2pt/ready), which
``make lab-up`` waits for; a failed setup is one ``dp2pt-node: error:`` line and exit status 1.
"""
from __future__ import annotations

import ipaddress
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


class NodeError(Exception):
    """A setup step failed; printed as one line, exit status 1."""


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if not value:
        raise NodeError(f"environment variable {name} is required for this role")
    return value


def interface_on(subnet: str) -> tuple[str, str]:
    """(interface name, IPv4 address) of this container on ``subnet`` — never assume eth0/eth1."""
    from pyroute2 import IPRoute

    net = ipaddress.ip_network(subnet)
    with IPRoute() as ipr:
        for msg in ipr.get_addr(family=2):
            addr = msg.get_attr("IFA_ADDRESS")
            if addr and ipaddress.ip_address(addr) in net:
                link = ipr.get_links(msg["index"])[0]
                return link.get_attr("IFLA_IFNAME"), addr
    raise NodeError(f"no interface on {subnet} (is the container attached to that network?)")


def setup_router() -> str:
    from lab.world import nat

    wan_if, wan_ip = interface_on(env("WAN_SUBNET"))
    lan_if, _ = interface_on(env("LAN_SUBNET"))
    profile = nat.parse_profile(env("NAT_PROFILE"))
    params = nat.RouterParams(wan_if=wan_if, lan_if=lan_if, wan_ip=wan_ip, lan_net=env("LAN_SUBNET"))
    run(["nft", "-f", "-"], input=nat.render_ruleset(profile, params))
    apply_sysctls(nat.conntrack_sysctls(profile))
    return f"router {os.environ['NAT_PROFILE']} wan={wan_if}/{wan_ip} lan={lan_if}"


def apply_sysctls(values: dict[str, str]) -> None:
    """Docker mounts /proc/sys read-only: values must come from compose.yaml's ``sysctls``; this
    only checks them (and writes them where /proc/sys is writable, e.g. a privileged container)."""
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
            raise NodeError(f"{key} is {have}, the profile needs {want}: set it in compose.yaml's sysctls") from None


def setup_peer() -> str:
    from pyroute2 import IPRoute

    gateway = env("GATEWAY")
    with IPRoute() as ipr:
        ipr.route("replace", dst="0.0.0.0/0", gateway=gateway)
    return f"host default via {gateway}"


def drop_default_route() -> None:
    """Docker routes every container via the host's bridge: routers and public hosts get none."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        for route in ipr.get_default_routes(family=2):
            ipr.route("del", dst="0.0.0.0/0", gateway=route.get_attr("RTA_GATEWAY"))


def run(argv: list[str], input: str | None = None) -> None:
    done = subprocess.run(argv, input=input, text=True, capture_output=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or [""])[-1]
        raise NodeError(f"{shlex.join(argv)} exited {done.returncode}: {tail}")


def serve() -> int:
    """Run the location server as a child; ready once it prints its ready line; relay its output."""
    argv = ["dp2pt", "server", *shlex.split(os.environ.get("SERVER_ARGS", "--json"))]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    for line in child.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        if '"ready"' in line and not READY.exists():
            READY.write_text(line)
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
    role = argv[1] if len(argv) > 1 else os.environ.get("ROLE", "peer")
    READY.parent.mkdir(parents=True, exist_ok=True)
    READY.unlink(missing_ok=True)
    try:
        if role in ("server", "router"):
            drop_default_route()
        if role == "server":
            return serve()
        if role == "router":
            what = setup_router()
        elif role in ("peer", "noise"):
            what = setup_peer()
        elif role == "idle":
            what = "idle"
        else:
            raise NodeError(f"unknown role {role!r} (router, peer, noise, server, idle)")
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
