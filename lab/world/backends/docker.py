"""The Docker backend: every node is a container of the lab image, every segment a Docker network.

Layout of a lab with prefix ``d2d1a2b3``:

* segment ``public`` -> network ``d2d1a2b3-public``, an *internal* bridge (no masquerade, no route
  out) whose host-side bridge is named ``d2d1a2b3.0`` (segments in topology order); LAN bridges
  never learn MAC addresses (ageing 0, a hub), as in the netns backend, so noise hosts sniff;
* node ``nat-a`` -> container ``d2d1a2b3-nat-a`` running the image's ``idle`` role (PID 1 that
  reaps orphans); addresses and routes are then set by the topology, from the host, in the
  container's network namespace (pyroute2). Docker addresses its networks from a private pool
  (:data:`DOCKER_POOL`) and that address is replaced by the topology's: Docker's bridge driver
  carries a single subnet (the public segment has two), refuses overlapping subnets (two labs
  could not coexist), and keeps no interface order — interfaces are found by address;
* everything carries the label ``dp2pt.lab=<prefix>`` (and the topology, as JSON, on every
  container), so ``attach``/``list``/``down_all`` work from labels alone, after a crash too;
* host rules: with ``br_netfilter`` on, frames switched *within* a lab bridge traverse the host's
  iptables FORWARD chain, where Docker's isolation rules for internal networks drop any frame whose
  source or destination lies outside the network's subnet — i.e. all NATed traffic. One
  ``DOCKER-USER`` rule per lab bridge (``-i BR -o BR -j ACCEPT``, commented ``dp2pt.lab=<prefix>``)
  lets frames stay on their own bridge and nothing else: routing *between* lab bridges through the
  host stays dropped, so the host never becomes a bypass of the NATs. Removed by comment on down.

Processes run with ``docker exec`` (the image's tools, not the host's). ``docker exec`` does not
forward signals, so every process records its PID in the container and ``stop`` signals it there.
Captures run ``tcpdump`` on the host side of the segment's bridge (it sees every switched frame).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from lab.world import addressing
from lab.world.backends.base import STOP_GRACE, Backend, Lab, LabInfo, Wire
from lab.errors import (
    ConfigError,
    EnvironmentProblem,
    LabNotFound,
    LabStateError,
    MissingTool,
    UnknownNode,
)
from lab.world.topology import Topology, from_dict, load

#: Image of every node (built by ``make lab-image``); overridable for other tags.
DEFAULT_IMAGE = "dp2pt/node:latest"
IMAGE = os.environ.get("DP2PT_NODE_IMAGE") or os.environ.get("NODE_IMAGE") or DEFAULT_IMAGE
LABEL = "dp2pt.lab"
LABEL_NODE = "dp2pt.node"
LABEL_SEGMENT = "dp2pt.segment"
LABEL_TOPOLOGY = "dp2pt.topology"
PREFIX_STEM = "d2d"
PREFIX_RE = re.compile(rf"^{PREFIX_STEM}[0-9a-z]{{1,8}}$")
#: Where a process started by ``_spawn`` writes its PID inside the container.
PID_DIR = "/run/dp2pt/pids"
#: Where ``copy_to`` puts files in a container (/tmp exists in nearly every image).
FILES_DIR = "/tmp/dp2pt-lab-files"
LABEL_IMAGE = "dp2pt.image"
#: PID 1's child in a user's image (Docker's init is PID 1: it reaps and forwards signals): the
#: image's own entrypoint is not run; the lab runs what a cell asks for with ``docker exec``.
KEEP_ALIVE = ["sh", "-c", 'trap "exit 0" TERM INT; while :; do sleep 3600 & wait $!; done']
#: The roles whose nodes may run a user's image: peers. Routers need nft and conntrack, servers the
#: location server, sinks coturn, noise hosts scapy and the lab package: the lab's own image.
USER_IMAGE_ROLES = ("peer",)
_SHIM = f'mkdir -p {PID_DIR}; echo $$ > {PID_DIR}/"$1".pid; shift; exec "$@"'
CAPS = ["NET_ADMIN", "NET_RAW"]
NODE_SYSCTLS = {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}
#: As the netns backend's: routers forward and never send ICMP redirects (hairpinned packets).
ROUTER_SYSCTLS = {"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.send_redirects": "0",
                  "net.ipv4.conf.default.send_redirects": "0"}
BR_NETFILTER = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
#: Docker must address every network it creates, but one bridge carries one subnet and two labs
#: may not overlap. So Docker gets /24s of RFC 2544's benchmarking range (used by nothing else);
#: that address is removed from each container and the topology's addresses are set instead. The
#: host keeps only its bridge address in this range: it has no address, hence no route, in any lab
#: subnet, and several labs (and the compose lab) run side by side.
DOCKER_POOL = ipaddress.IPv4Network("198.18.0.0/15")
#: Creating containers in parallel: the engine serialises part of the work, 4 threads suffice.
WORKERS = 4


def new_prefix() -> str:
    return PREFIX_STEM + secrets.token_hex(3)[:5]


def _client():
    """A docker SDK client, or EnvironmentProblem with the reason in one line."""
    try:
        import docker
    except ImportError:
        raise MissingTool("the docker SDK is not installed (pip install docker, or make setup)") from None
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:  # the SDK raises several unrelated types for "no engine"
        raise EnvironmentProblem(
            f"no Docker engine reachable ({exc.__class__.__name__}); start dockerd (make setup)"
        ) from None
    return client


# ---- host rules (DOCKER-USER) -------------------------------------------------------------------


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    if shutil.which("iptables") is None:
        raise MissingTool("iptables: command not found (apt-get install iptables)")
    done = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise EnvironmentProblem(f"iptables {' '.join(args)}: {done.stderr.strip()}")
    return done


def br_netfilter_on() -> bool:
    """True when bridged frames go through iptables (the trap of the module docstring)."""
    try:
        return BR_NETFILTER.read_text().strip() == "1"
    except OSError:
        return False


def preflight() -> None:
    """Refuse to build a lab that Docker's own rules would silently cut (one clear line)."""
    if br_netfilter_on() and _iptables("-S", "DOCKER-USER", check=False).returncode != 0:
        raise EnvironmentProblem(
            "br_netfilter is on but iptables has no DOCKER-USER chain: Docker's isolation rules would "
            "drop the lab's NATed traffic; restart dockerd with iptables enabled"
        )


def allow_bridges(prefix: str, bridges: Sequence[str]) -> None:
    """Accept frames that stay on one lab bridge (never between bridges), tagged with ``prefix``."""
    for br in bridges:
        _iptables("-I", "DOCKER-USER", "-i", br, "-o", br, "-m", "comment",
                  "--comment", f"{LABEL}={prefix}", "-j", "ACCEPT")


_RULE_LABEL = re.compile(rf'--comment "?{re.escape(LABEL)}=([^"\s]+)"?')


def _rule_label(line: str) -> str | None:
    m = _RULE_LABEL.search(line)
    return m.group(1) if m else None


def host_rules(prefix: str | None = None) -> list[str]:
    """The DOCKER-USER rules of lab ``prefix`` (every lab's if None), in ``iptables -S`` form."""
    if shutil.which("iptables") is None:
        return []
    done = _iptables("-S", "DOCKER-USER", check=False)
    return [line for line in done.stdout.splitlines()
            if line.startswith("-A ") and _rule_label(line) and (prefix is None or _rule_label(line) == prefix)]


def remove_host_rules(prefix: str | None = None) -> int:
    """Delete the lab's DOCKER-USER rules by their comment; returns how many."""
    rules = host_rules(prefix)
    for line in rules:
        _iptables("-D", *shlex.split(line)[1:], check=False)
    return len(rules)


def _rule_prefixes() -> set[str]:
    return {_rule_label(line) for line in host_rules()} - {None}


# ---- the lab ------------------------------------------------------------------------------------


class DockerLab(Lab):
    backend_name = "docker"

    def __init__(self, topology: Topology, prefix: str, client=None, images: dict[str, str] | None = None) -> None:
        super().__init__(topology, prefix)
        self.client = client or _client()
        self.images = dict(images or {})  # node -> a user's image (peer nodes only)
        self._ifnames: dict[tuple[str, str], str] = {}
        self._tokens: dict[int, tuple[str, str]] = {}  # id(Popen) -> (container, token)

    # ---- names ---------------------------------------------------------------------------------

    def container(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    def network(self, segment: str) -> str:
        return f"{self.prefix}-{segment}"

    def bridge(self, segment: str) -> str:
        """Host-side bridge of a segment (IFNAMSIZ: prefix + '.' + index fits 15 characters)."""
        return f"{self.prefix}.{list(self.topology.segments).index(segment)}"

    # ---- primitives ----------------------------------------------------------------------------

    def interface(self, node: str, segment: str) -> str:
        key = (node, segment)
        if key not in self._ifnames:
            self.check_node(node)
            address = self.topology.address(node, segment)  # raises UnknownNode for a missing link
            with self._netns(node) as ns:
                name = addressing.ifname_with(ns, address)
            if name is None:
                raise UnknownNode(f"node {node!r}: no interface holds {address} (was the lab built?)")
            self._ifnames[key] = name
        return self._ifnames[key]

    def wire(self, node: str, segment: str) -> Wire:
        """Docker's host-side veth of the node's interface, on the segment's host bridge (in the
        host's namespace: an empty path, where ``dp2pt-lab`` runs); the emulator's TAP is named
        after the lab and the link's index."""
        from pyroute2 import IPRoute

        ifname = self.interface(node, segment)
        with self._netns(node) as ns:
            peer = ns.get_links(ifname=ifname)[0].get_attr("IFLA_LINK")
        with IPRoute() as ipr:
            found = ipr.get_links(peer) if peer else []
        if not found:
            raise UnknownNode(f"node {node!r}: the host side of {ifname} on {segment!r} is gone (is the lab up?)")
        index = [(n.name, l.segment) for n in self.topology.nodes.values() for l in n.links].index((node, segment))
        return Wire("", found[0].get_attr("IFLA_IFNAME"), self.bridge(segment), f"{self.prefix}t{index}",
                    f"/proc/{self._pid(node)}/ns/net", ifname)

    def _spawn(self, node: str, argv: Sequence[str], **kw) -> subprocess.Popen:
        if shutil.which("docker") is None:
            raise MissingTool("docker: command not found (apt-get install docker.io)")
        env = kw.pop("env", None) or {}
        token = uuid.uuid4().hex[:12]
        cmd = ["docker", "exec", "-i"]
        for key, value in env.items():
            cmd += ["-e", f"{key}={value}"]
        cmd += [self.container(node), "sh", "-c", _SHIM, "dp2pt-spawn", token, *argv]
        proc = subprocess.Popen(cmd, start_new_session=True, **kw)
        self._tokens[id(proc)] = (self.container(node), token)
        return proc

    def interactive(self, node: str, argv: Sequence[str]) -> int:
        """``docker exec -it`` in the foreground (``dp2pt-lab exec``): a shell gets a real terminal,
        and ^C reaches the command through it (so this side just waits for the exit)."""
        self.check_node(node)
        self._pid(node)  # a clear error if the container is gone
        tty = ["-t"] if sys.stdin.isatty() and sys.stdout.isatty() else []
        proc = subprocess.Popen(["docker", "exec", "-i", *tty, self.container(node), *argv])
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:
                continue

    def stop(self, proc: subprocess.Popen, grace: float = STOP_GRACE) -> int | None:
        """Signal the process inside its container (``docker exec`` would not), then the client."""
        where = self._tokens.pop(id(proc), None)
        if where and proc.poll() is None:
            for sig, wait in (("TERM", grace), ("KILL", 5.0)):
                self._signal_inside(*where, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(wait, 0.2))
                    break
        return super().stop(proc, grace)

    def _signal_inside(self, container: str, token: str, sig: str) -> None:
        pidfile = f"{PID_DIR}/{token}.pid"
        subprocess.run(
            ["docker", "exec", container, "sh", "-c", f"[ -f {pidfile} ] && kill -{sig} $(cat {pidfile})"],
            capture_output=True, timeout=10,
        )

    def sysctl(self, node: str, values: dict[str, str | int]) -> None:
        """Docker mounts /proc/sys read-only in containers: write from the host, in the node's netns."""
        self.check_node(node)
        pid = self._pid(node)
        argv = ["nsenter", f"--net=/proc/{pid}/ns/net", "sysctl", "-q", "-w"]
        argv += [f"{k}={v}" for k, v in values.items()]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            from lab.errors import NodeCommandFailed

            raise NodeCommandFailed(node, argv, done.returncode, done.stderr)

    def copy_to(self, node: str, src: Path | str) -> str:
        """Copy ``src`` into the container (``FILES_DIR``, by the engine: no tool needed in the image)."""
        import io
        import tarfile

        path = Path(super().copy_to(node, src))
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w") as tar:
            tar.add(str(path), arcname=f"{Path(FILES_DIR).name}/{path.name}")
        try:
            self.client.api.put_archive(self.container(node), str(Path(FILES_DIR).parent), data.getvalue())
        except Exception as exc:  # the SDK's errors name the container and the engine's reason
            raise LabStateError(f"cannot copy {path.name} into {self.container(node)}: {_one_line(exc)}") from None
        return f"{FILES_DIR}/{path.name}"

    def _capture_interface(self, segment: str) -> str:
        return self.bridge(segment)

    def _spawn_capture(self, segment: str, argv: list[str]) -> subprocess.Popen:
        # On the host: the lab bridge carries every frame of the segment.
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)

    def down(self) -> None:
        """Fast down: the containers' removal kills what runs inside; only local clients remain."""
        for proc in list(self._procs):
            self._tokens.pop(id(proc), None)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, 9)
        self._teardown()
        for proc in list(self._procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self._procs.clear()

    def _teardown(self) -> None:
        teardown(self.client, self.prefix)

    def runtime_path(self, node: str, name: str) -> str:
        return f"/run/dp2pt/{name}"

    # ---- bring-up ------------------------------------------------------------------------------

    def _pid(self, node: str) -> int:
        try:
            pid = self.client.api.inspect_container(self.container(node))["State"]["Pid"]
        except Exception:
            raise LabNotFound(f"container {self.container(node)} does not exist (is the lab up?)") from None
        if not pid:
            raise LabStateError(f"container {self.container(node)} is not running")
        return pid

    @contextlib.contextmanager
    def _netns(self, node: str):
        from pyroute2 import NetNS

        ns = NetNS(f"/proc/{self._pid(node)}/ns/net")
        try:
            yield ns
        finally:
            ns.close()

    def build(self) -> None:
        """Networks, host rules, containers (in parallel), then addresses and routes per topology."""
        topo = self.topology
        for seg in topo.segments.values():
            self._create_network(seg.name)
        allow_bridges(self.prefix, [self.bridge(s) for s in topo.segments])
        make_hubs([self.bridge(s.name) for s in topo.segments.values() if s.kind != "public"])
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(self._create_node, topo.nodes))
            list(pool.map(self._configure_node, topo.nodes))

    def _create_network(self, segment: str) -> None:
        """An internal bridge addressed (for Docker only) from :data:`DOCKER_POOL`; retried on a race."""
        import docker.errors

        for _ in range(5):
            try:
                self.client.api.create_network(
                    self.network(segment), driver="bridge", internal=True, check_duplicate=True,
                    options={"com.docker.network.bridge.name": self.bridge(segment),
                             "com.docker.network.bridge.enable_ip_masquerade": "false"},
                    ipam={"Driver": "default", "Config": [{"Subnet": _free_pool(self.client)}]},
                    labels={LABEL: self.prefix, LABEL_SEGMENT: segment},
                )
                return
            except docker.errors.APIError as exc:
                if "overlap" not in str(exc):
                    raise
        raise LabStateError(f"could not find a free Docker subnet in {DOCKER_POOL} for {segment!r}")

    def _create_node(self, node: str) -> None:
        n = self.topology.node(node)
        api = self.client.api
        sysctls = dict(NODE_SYSCTLS, **(ROUTER_SYSCTLS if n.role == "router" else {}))
        first, *rest = n.links
        user_image = self.images.get(node)
        host_config = api.create_host_config(cap_add=CAPS, sysctls=sysctls, network_mode=self.network(first.segment),
                                             init=bool(user_image))
        labels = {LABEL: self.prefix, LABEL_NODE: node, LABEL_IMAGE: user_image or IMAGE,
                  LABEL_TOPOLOGY: json.dumps(self.topology.source, separators=(",", ":"))}
        if user_image:
            api.create_container(user_image, entrypoint=KEEP_ALIVE, command=[], name=self.container(node),
                                 hostname=node, detach=True, labels=labels, host_config=host_config)
        else:
            api.create_container(IMAGE, command=["idle"], name=self.container(node), hostname=node, detach=True,
                                 labels=labels, host_config=host_config)
        for link in rest:
            api.connect_container_to_network(self.container(node), self.network(link.segment))
        api.start(self.container(node))

    def _configure_node(self, node: str) -> None:
        """Docker's addresses (from its private pool) replaced by the topology's, routes as declared."""
        info = self.client.api.inspect_container(self.container(node))["NetworkSettings"]["Networks"]
        given = {link.segment: (info[self.network(link.segment)]["IPAddress"],
                                info[self.network(link.segment)]["IPPrefixLen"])
                 for link in self.topology.node(node).links}
        with self._netns(node) as ns:
            try:
                ifnames = addressing.adopt(ns, self.topology, node, given)
            except LookupError as exc:
                raise LabStateError(f"{self.container(node)}: {exc}") from None
        self._ifnames.update({(node, seg): name for seg, name in ifnames.items()})


def _free_pool(client) -> str:
    """The first /24 of :data:`DOCKER_POOL` that no Docker network on this engine uses."""
    taken = []
    for net in client.api.networks():
        for cfg in (net.get("IPAM") or {}).get("Config") or []:
            with contextlib.suppress(KeyError, ValueError):
                taken.append(ipaddress.IPv4Network(cfg["Subnet"]))
    for sub in DOCKER_POOL.subnets(new_prefix=24):
        if not any(sub.overlaps(t) for t in taken):
            return str(sub)
    raise LabStateError(f"no free /24 left in {DOCKER_POOL} for a Docker lab network (dp2pt-lab down --all?)")


def make_hubs(bridges: Sequence[str]) -> None:
    """Ageing 0: the LAN bridge floods every frame, like the netns backend's LANs (noise hosts sniff)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        for br in bridges:
            idx = ipr.link_lookup(ifname=br)
            if idx:
                ipr.link("set", index=idx[0], kind="bridge", br_ageing_time=0)


def teardown(client, prefix: str) -> None:
    """Stop the lab's link emulator, remove every container, network and host rule labelled with
    ``prefix``. Idempotent."""
    from lab.world import linkctl

    linkctl.stop(prefix)
    flt = {"label": f"{LABEL}={prefix}"}

    def remove(cid: str) -> None:
        with contextlib.suppress(Exception):
            client.api.remove_container(cid, force=True, v=True)

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(remove, [c["Id"] for c in client.api.containers(all=True, filters=flt)]))
    for net in client.api.networks(filters=flt):
        with contextlib.suppress(Exception):
            client.api.remove_network(net["Id"])
    remove_host_rules(prefix)


def lab_prefixes(client) -> set[str]:
    """Prefixes of every Docker lab on this engine: containers, networks, host rules."""
    found = {c["Labels"].get(LABEL) for c in client.api.containers(all=True, filters={"label": LABEL})}
    found |= {n["Labels"].get(LABEL) for n in client.api.networks(filters={"label": LABEL})}
    found |= _rule_prefixes()
    from lab.world import compose, linkctl

    found |= set(linkctl.leftover_prefixes(re.compile(rf"^({PREFIX_STEM}[0-9a-z]{{1,8}}|{compose.PROJECT})$")))
    return {p for p in found if p}


#: In a checkout, the node image is rebuilt from the working tree when its sources changed.
BUILD_SCRIPT = Path(__file__).resolve().parents[3] / "images" / "build-node.sh"


def refresh_image() -> None:
    """Rebuild the default node image if the working tree changed since it was built (a no-op, in
    milliseconds, when it did not): a Docker lab must never run yesterday's protocol code.
    Skipped outside a checkout (an installed package) and for a non-default image tag."""
    if not BUILD_SCRIPT.exists() or IMAGE != DEFAULT_IMAGE or not (BUILD_SCRIPT.parents[1] / ".git").exists():
        return
    done = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        raise EnvironmentProblem(f"the node image could not be rebuilt: {tail}")


def unavailable_reason(image: str | None = IMAGE) -> str | None:
    """Why Docker labs cannot run here (one line, for pytest skips), or None when they can."""
    if os.geteuid() != 0:
        return "Docker lab needs root"
    if shutil.which("docker") is None:
        return "no docker CLI (make setup installs docker.io)"
    try:
        client = _client()
    except (EnvironmentProblem, MissingTool) as exc:
        return str(exc)
    if image:
        try:
            client.api.inspect_image(image)
        except Exception:
            return f"image {image} is missing (make lab-image)"
    try:
        preflight()
    except EnvironmentProblem as exc:
        return str(exc)
    return None


class DockerBackend(Backend):
    name = "docker"

    def __init__(self) -> None:
        self._client = None
        self._image_checked = False

    @property
    def client(self):
        if self._client is None:
            self._client = _client()
        return self._client

    def check(self) -> None:
        if os.geteuid() != 0:
            from lab.errors import NotRoot

            raise NotRoot("the docker backend needs root (host DOCKER-USER rules, bridge settings, captures)")
        if shutil.which("docker") is None:
            raise MissingTool("docker: command not found (apt-get install docker.io, or make setup)")
        client = self.client
        if not self._image_checked:
            refresh_image()
            self._image_checked = True
        try:
            client.api.inspect_image(IMAGE)
        except Exception:
            raise EnvironmentProblem(f"image {IMAGE} is missing: run make lab-image") from None
        preflight()

    def up(self, topology: Topology, *, prefix: str | None = None, images: dict[str, str] | None = None) -> DockerLab:
        self.check()
        self.check_images(topology, images or {})
        prefix = prefix or new_prefix()
        if not PREFIX_RE.match(prefix):
            raise LabStateError(f"invalid lab prefix {prefix!r}: use {PREFIX_STEM} followed by 1-8 [0-9a-z]")
        if prefix in lab_prefixes(self.client):
            raise LabStateError(f"a Docker lab with prefix {prefix} is already up (dp2pt-lab down {prefix})")
        lab = DockerLab(topology, prefix, self.client, images)
        try:
            lab.build()
            lab.apply_links()
        except BaseException as exc:
            lab.down()
            if exc.__class__.__module__.startswith("docker"):
                raise LabStateError(f"Docker refused to build the lab: {_one_line(exc)}") from None
            raise
        return lab

    def check_images(self, topology: Topology, images: dict[str, str]) -> None:
        """Refuse a user's image on a node that needs the lab's tools, or one the engine lacks."""
        for node, image in images.items():
            role = topology.node(node).role  # UnknownNode for a name the topology lacks
            if role not in USER_IMAGE_ROLES:
                raise ConfigError(f"--image {node}={image}: {node} is a {role}; only peer nodes take a user's image "
                                  f"(routers, servers, sinks and noise hosts run the lab's tools)")
            try:
                self.client.api.inspect_image(image)
            except Exception:
                raise ConfigError(f"--image {node}={image}: no such image on this Docker engine "
                                  f"(docker build or docker pull it first)") from None

    def attach(self, prefix: str) -> DockerLab:
        found = self.client.api.containers(all=True, filters={"label": f"{LABEL}={prefix}"})
        if not found:
            running = ", ".join(sorted(lab_prefixes(self.client))) or "none"
            raise LabNotFound(f"no Docker lab {prefix!r} (running: {running})")
        return DockerLab(_topology_of(found[0]["Labels"][LABEL_TOPOLOGY]), prefix, self.client)

    def list(self) -> list[LabInfo]:
        out = []
        for prefix in sorted(lab_prefixes(self.client)):
            cs = self.client.api.containers(all=True, filters={"label": f"{LABEL}={prefix}"})
            nodes = sorted(c["Labels"].get(LABEL_NODE, "?") for c in cs)
            topo = "? (leftover)"
            if cs and LABEL_TOPOLOGY in cs[0]["Labels"]:
                with contextlib.suppress(Exception):
                    topo = _topology_of(cs[0]["Labels"][LABEL_TOPOLOGY]).name
            out.append(LabInfo(prefix, self.name, topo, nodes, 0))
        return out

    def down_all(self) -> list[str]:
        prefixes = sorted(lab_prefixes(self.client))
        for prefix in prefixes:
            teardown(self.client, prefix)
        return prefixes

    def down(self, prefix: str) -> None:
        """Remove one lab by prefix (containers, networks, host rules), even half-built."""
        if prefix not in lab_prefixes(self.client):
            raise LabNotFound(f"no Docker lab {prefix!r}")
        teardown(self.client, prefix)


def _topology_of(label: str) -> Topology:
    """The topology a container's label carries: the whole topology as JSON (backend labs), or a
    name or path (the compose world, lab.world.compose)."""
    return from_dict(json.loads(label)) if label.startswith("{") else load(label)


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "explanation", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else exc.__class__.__name__


BACKEND_CLASS = DockerBackend
