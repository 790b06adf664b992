"""``make lab-up`` / ``lab-down`` / ``lab-shell``: drive the compose.yaml world from the host.

Why a script and not bare ``docker-compose up``: the lab also needs host state compose cannot
express (DOCKER-USER rules so that br_netfilter does not drop routed NAT traffic — shared with the
Docker backend, lab/world/backends/docker.py), a wait until every node reports ready, one traversal
(peer-a listens, peer-b connects, spec steps 1-17), and a check on a capture of the internet
network that the direct datagrams really travel between the two NATs' WAN addresses.

Errors are one line on stderr and a non-zero exit status; no traceback for a user's problem.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COMPOSE_FILE = ROOT / "compose.yaml"
PROJECT = "dp2pt"
LAB = "compose"  # the dp2pt.lab label of everything compose.yaml creates (lab.world.backends.docker.COMPOSE_LAB)
BRIDGES = ("dp2pt-inet", "dp2pt-lan-a", "dp2pt-lan-b")
INTERNET_BRIDGE = "dp2pt-inet"
NODES = ("location-server", "nat-a", "nat-b", "peer-a", "noise-a", "peer-b", "noise-b")
SERVER = "198.51.100.10:7000"
SERVER_IP = SERVER.split(":")[0]
WAN = {"nat-a": "198.51.100.1", "nat-b": "198.51.100.2"}
READY_TIMEOUT = 30.0
TRAVERSAL_TIMEOUT = 60.0
RUN_DIR = ROOT / "runs" / "docker-lab-up"
MAGIC = b"D2PT"  # docs/CONTRACT.md: direct datagrams start with it


class LabCtlError(Exception):
    """A problem the user can fix; printed as one line."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def container(node: str) -> str:
    return f"{PROJECT}-{node}"


def say(text: str) -> None:
    print(f"lab: {text}", flush=True)


# ---- compose ---------------------------------------------------------------------------------------


def compose_cmd() -> list[str]:
    """``docker compose`` (v2 plugin) if present, else Debian's ``docker-compose`` (v1)."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise LabCtlError("no compose tool: apt-get install docker-compose (or the docker compose plugin)", 3)


def compose(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    tool = compose_cmd()
    argv = tool + ["-p", PROJECT, "-f", str(COMPOSE_FILE), *args]
    done = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, **(env or {})))
    if check and done.returncode != 0:
        lines = [l for l in done.stderr.strip().splitlines() if l.strip()]
        raise LabCtlError(f"{' '.join(tool)} {args[0]} failed: {lines[-1] if lines else done.returncode}")
    return done


def client():
    from lab.world.backends.docker import _client

    return _client()


# ---- up ----------------------------------------------------------------------------------------------


def preflight() -> None:
    from lab.world.backends import docker as dockerlab

    if os.geteuid() != 0:
        raise LabCtlError("run as root (the lab adds host DOCKER-USER rules and captures on bridges)", 3)
    client()
    dockerlab.preflight()
    image = os.environ.get("NODE_IMAGE", "dp2pt/node:latest")
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0:
        raise LabCtlError(f"image {image} is missing: run make lab-image", 3)


def wait_ready(timeout: float = READY_TIMEOUT) -> float:
    """Poll every node until its log says ready; fail fast (with its last log line) if one exits."""
    api = client().api
    start = time.monotonic()
    pending = set(NODES)
    while pending:
        for node in sorted(pending):
            state = api.inspect_container(container(node))["State"]
            logs = api.logs(container(node), stdout=True, stderr=True).decode(errors="replace")
            if not state["Running"]:
                last = (logs.strip().splitlines() or ["(no output)"])[-1]
                raise LabCtlError(f"{node} exited ({state['ExitCode']}): {last}")
            if "dp2pt-node: ready" in logs or '"event":"ready"' in logs.replace(" ", ""):
                pending.discard(node)
        if pending and time.monotonic() - start > timeout:
            raise LabCtlError(f"not ready after {timeout:.0f}s: {', '.join(sorted(pending))} (docker logs {container(sorted(pending)[0])})")
        if pending:
            time.sleep(0.1)
    return time.monotonic() - start


def up(args: argparse.Namespace) -> int:
    from lab.world.backends import docker as dockerlab

    preflight()
    nat_a = os.environ.get("NAT_A", "symmetric-sequential")
    nat_b = os.environ.get("NAT_B", "port-restricted-cone")
    env = {**profile_env("A", nat_a), **profile_env("B", nat_b)}
    start = time.monotonic()
    dockerlab.remove_host_rules(LAB)
    dockerlab.allow_bridges(LAB, BRIDGES)
    compose("up", "-d", "--no-build", "--remove-orphans", env=env)
    try:
        waited = wait_ready()
    except LabCtlError as exc:
        raise LabCtlError(f"{exc} (make lab-down removes what came up)", exc.code) from None
    say(f"up in {time.monotonic() - start:.1f}s (ready after {waited:.1f}s): nat-a={nat_a} nat-b={nat_b}, "
        f"{len(NODES)} containers")
    if args.no_traversal:
        return 0
    result, path = traversal()
    print(json.dumps(result), flush=True)
    if not result.get("ok"):
        raise LabCtlError(f"traversal failed: {result.get('error') or 'no direct path'} (lab left up: make lab-shell)", 6)
    say(path)
    say("hands-on: make lab-shell NODE=peer-a | remove everything: make lab-down")
    return 0


def profile_env(side: str, name: str) -> dict[str, str]:
    """compose.yaml's variables for one router: its profile and the conntrack timeouts it needs
    (set through compose's ``sysctls``: the router cannot write /proc/sys itself)."""
    from lab.world import nat
    from lab.errors import LabError

    try:
        values = nat.conntrack_sysctls(nat.parse_profile(name))
    except LabError as exc:
        raise LabCtlError(str(exc), 2) from None
    return {
        f"NAT_{side}": name,
        f"NAT_{side}_UDP_TIMEOUT": str(values["net.netfilter.nf_conntrack_udp_timeout"]),
        f"NAT_{side}_UDP_STREAM_TIMEOUT": str(values["net.netfilter.nf_conntrack_udp_timeout_stream"]),
    }


def traversal() -> tuple[dict, str]:
    """One session: peer-a listens, peer-b connects; returns B's result line and the path seen."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    pcap = RUN_DIR / "internet.pcap"
    cap = subprocess.Popen(
        ["tcpdump", "-i", INTERNET_BRIDGE, "-n", "-U", "--immediate-mode", "-w", str(pcap), "udp"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    listener = None
    try:
        if not _wait_line(cap.stderr, "listening on", 5):
            raise LabCtlError("tcpdump did not start on the internet bridge")
        common = ["--server", SERVER, "--json"]
        listener = subprocess.Popen(
            ["docker", "exec", container("peer-a"), "dp2pt", "peer", "--id", "a", *common, "listen"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        if not _wait_line(listener.stdout, '"ready"', 15):
            raise LabCtlError(f"peer-a did not log in: {listener.stderr.read() if listener.poll() is not None else 'timeout'}".strip())
        done = subprocess.run(
            ["docker", "exec", container("peer-b"), "dp2pt", "peer", "--id", "b", *common, "connect", "a"],
            capture_output=True, text=True, timeout=TRAVERSAL_TIMEOUT,
        )
        lines = [l for l in done.stdout.splitlines() if l.startswith("{")]
        if not lines:
            raise LabCtlError(f"peer-b printed no result (exit {done.returncode}): {done.stderr.strip()[-200:]}")
        result = json.loads(lines[-1])
        listener.wait(timeout=10)
    except subprocess.TimeoutExpired:
        raise LabCtlError("the traversal did not finish in time") from None
    finally:
        if listener and listener.poll() is None:
            listener.kill()
        os.killpg(cap.pid, signal.SIGINT)
        cap.wait(timeout=5)
    return result, describe_path(pcap)


def _wait_line(stream, needle: str, timeout: float) -> str | None:
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if sel.select(deadline - time.monotonic()):
                line = stream.readline()
                if not line:
                    return None
                if needle in line:
                    return line
        return None
    finally:
        sel.close()


def direct_flows(pcap: Path) -> dict[tuple[str, str], int]:
    """(src ip:port, dst ip:port) -> count of D2PT datagrams in a pcap (Ethernet/IPv4/UDP)."""
    data = pcap.read_bytes()
    flows: dict[tuple[str, str], int] = {}
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        frame = data[off + 16: off + 16 + incl]
        off += 16 + incl
        if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
            continue
        ihl = (frame[14] & 0x0F) * 4
        udp = 14 + ihl
        if frame[udp + 8: udp + 12] != MAGIC:
            continue
        src = ".".join(map(str, frame[26:30])) + ":%d" % struct.unpack_from("!H", frame, udp)[0]
        dst = ".".join(map(str, frame[30:34])) + ":%d" % struct.unpack_from("!H", frame, udp + 2)[0]
        flows[(src, dst)] = flows.get((src, dst), 0) + 1
    return flows


def describe_path(pcap: Path) -> str:
    """One line on what crossed the internet network; raises if a datagram bypassed the NATs."""
    flows = direct_flows(pcap)
    if not flows:
        raise LabCtlError(f"no direct (D2PT) datagram on the internet network (capture: {pcap})")
    wans = set(WAN.values())
    for src, dst in flows:
        ends = {src.split(":")[0], dst.split(":")[0]}
        if not ends <= wans:
            raise LabCtlError(f"bypass: a direct datagram {src} -> {dst} is not between the NATs' WAN addresses")
    pairs = sorted({tuple(sorted(k)) for k in flows})
    return (f"direct path checked on the internet network: {sum(flows.values())} D2PT datagrams, all between "
            f"NAT WAN addresses ({', '.join(' <-> '.join(p) for p in pairs)}), none via {SERVER_IP}; pcap: {pcap}")


# ---- down / shell / status -------------------------------------------------------------------------


def leftovers() -> list[str]:
    """What of the compose lab still exists: containers, networks, host rules."""
    from lab.world.backends import docker as dockerlab

    api = client().api
    flt = {"label": f"{dockerlab.LABEL}={LAB}"}
    found = [f"container {c['Names'][0].lstrip('/')}" for c in api.containers(all=True, filters=flt)]
    found += [f"network {n['Name']}" for n in api.networks(filters=flt)]
    found += [f"host rule {r}" for r in dockerlab.host_rules(LAB)]
    return found


def down(args: argparse.Namespace) -> int:
    from lab.world.backends import docker as dockerlab

    if os.geteuid() != 0:
        raise LabCtlError("run as root (the lab's host rules are removed with iptables)", 3)
    api = client()
    try:
        compose("down", "--remove-orphans", "--timeout", "2", check=False)
    except LabCtlError:
        pass  # no compose tool: the label sweep below still removes everything
    dockerlab.teardown(api, LAB)
    left = leftovers()
    if left:
        raise LabCtlError(f"could not remove: {'; '.join(left)}")
    say("down: no container, network or host rule of the lab is left")
    return 0


def shell(args: argparse.Namespace) -> int:
    if args.node not in NODES:
        raise LabCtlError(f"unknown node {args.node!r}; nodes: {', '.join(NODES)}", 2)
    state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", container(args.node)],
                           capture_output=True, text=True)
    if state.stdout.strip() != "true":
        raise LabCtlError(f"{args.node} is not running: make lab-up", 4)
    tty = ["-it"] if sys.stdin.isatty() else ["-i"]
    os.execvp("docker", ["docker", "exec", *tty, container(args.node), "bash"])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="labctl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start the lab, wait until ready, run one traversal")
    p_up.add_argument("--no-traversal", action="store_true", help="only bring the lab up")
    sub.add_parser("down", help="remove every container, network and host rule of the lab")
    p_sh = sub.add_parser("shell", help="a shell in a node")
    p_sh.add_argument("node")
    args = parser.parse_args(argv)
    from lab.errors import LabError

    try:
        return {"up": up, "down": down, "shell": shell}[args.cmd](args)
    except LabCtlError as exc:
        print(f"lab: error: {exc}", file=sys.stderr)
        return exc.code
    except LabError as exc:
        print(f"lab: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("lab: interrupted (make lab-down removes what is up)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
