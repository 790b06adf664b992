"""The default backend: every node and every segment is a Linux network namespace (pyroute2).

Layout of a lab with prefix ``d2p1a2b3``:

* segment ``public`` -> namespace ``d2p1a2b3.public`` holding bridge ``br0``; LAN segments are
  built the same way but their bridge never learns MAC addresses (ageing 0), so it floods like a
  hub and a noise host on the LAN sees its neighbours' packets (the cut-in trigger sniffs them);
* node ``nat-a`` -> namespace ``d2p1a2b3-nat-a``; its link to a segment is a veth pair created
  *inside the segment namespace* with the peer end born in the node namespace as ``eth<i>`` — the
  root namespace never sees an interface of the lab (hard rule: never touch host networking);
* a state file ``/run/dp2pt-lab/<prefix>.json`` keeps the topology so another ``dp2pt-lab``
  invocation can attach; ``down_all`` needs only the namespace names (``d2p*``), so it also
  cleans up after a crash that lost the state file.

Processes run in a node through a ``preexec_fn`` that calls ``setns(2)`` — cheaper than ``ip netns
exec`` and equivalent for the network stack (``/sys`` stays the host's, which no lab tool needs).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from pyroute2 import IPRoute, netns

from lab.world import addressing
from lab.world.backends.base import Backend, Lab, LabInfo, refuse_images, Wire, process_alive
from lab.errors import (
    ConfigError,
    LabNotFound,
    LabStateError,
    MissingKernelFeature,
    MissingTool,
    NotRoot,
    UnknownNode,
)
from lab.world.topology import Topology, from_dict

NETNS_DIR = Path("/run/netns")
STATE_DIR = Path("/run/dp2pt-lab")
PREFIX_STEM = "d2p"
#: A lab prefix: the stem plus 1-8 [0-9a-z]; a namespace of the lab is "<prefix>-<node>" or "<prefix>.<segment>".
PREFIX_RE = re.compile(rf"^{PREFIX_STEM}[0-9a-z]{{1,8}}$")
_NS_RE = re.compile(rf"^({PREFIX_STEM}[0-9a-z]{{1,8}})[-.]")
CLONE_NEWNET = 0x40000000
BRIDGE = "br0"
#: Every node: no IPv6 (keeps captures to the lab's IPv4 traffic; no DAD/RS noise).
NODE_SYSCTLS = {
    "net/ipv6/conf/all/disable_ipv6": "1",
    "net/ipv6/conf/default/disable_ipv6": "1",
}
#: Routers forward; a hairpinned packet leaves by the interface it came in, which must not make the
#: router send ICMP redirects to the LAN host.
ROUTER_SYSCTLS = {"net/ipv4/ip_forward": "1", "net/ipv4/conf/all/send_redirects": "0",
                  "net/ipv4/conf/default/send_redirects": "0"}
#: Tools the netns backend itself runs (NAT/captures need more; checked where used).
REQUIRED_TOOLS = ("nft", "conntrack", "sysctl")

_libc = ctypes.CDLL(None, use_errno=True)


def new_prefix() -> str:
    return PREFIX_STEM + secrets.token_hex(3)[:5]


def _ns_path(name: str) -> Path:
    return NETNS_DIR / name


def _setns_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
    finally:
        os.close(fd)


def _in_thread_ns(nsname: str, fn):
    """Run ``fn()`` in a short-lived thread that entered namespace ``nsname`` (setns is per thread)."""
    box: dict = {}

    def body() -> None:
        try:
            _setns_path(str(_ns_path(nsname)))
            box["result"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=body, name=f"netns-{nsname}")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


def _write_sysctls(nsname: str, values: dict[str, str]) -> None:
    def write() -> None:
        for key, value in values.items():
            with open(f"/proc/sys/{key}", "w") as f:
                f.write(value)

    _in_thread_ns(nsname, write)


def _pids_in(namespaces: list[str]) -> dict[str, list[int]]:
    """Processes whose network namespace is one of ``namespaces`` (by inode, scanning /proc)."""
    inodes = {}
    for name in namespaces:
        try:
            st = os.stat(_ns_path(name))
            inodes[(st.st_dev, st.st_ino)] = name
        except OSError:
            continue
    found: dict[str, list[int]] = {n: [] for n in namespaces}
    if not inodes:
        return found
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        name = inodes.get((st.st_dev, st.st_ino))
        if name:
            found[name].append(int(entry))
    return found


def _kill_all(pids: list[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pid in pids:
            try:
                os.kill(pid, sig)
                alive.append(pid)
            except ProcessLookupError:
                pass
        if not alive:
            return
        deadline = time.monotonic() + 1.0
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if process_alive(p)]
            time.sleep(0.02)
        pids = alive


def _remove_ns(name: str) -> None:
    try:
        netns.remove(name)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.EINVAL):
            raise


def _remove_lab(prefix: str, names: list[str]) -> None:
    """Stop its link emulator, kill every process in the lab's namespaces, remove them and its state
    file (idempotent)."""
    from lab.world import linkctl

    linkctl.stop(prefix)
    _kill_all([p for plist in _pids_in(names).values() for p in plist])
    for name in names:
        _remove_ns(name)
    (STATE_DIR / f"{prefix}.json").unlink(missing_ok=True)
    for leftover in STATE_DIR.glob(f"{prefix}-*"):  # runtime files of its nodes (runtime_path)
        leftover.unlink(missing_ok=True)


def list_lab_namespaces() -> dict[str, list[str]]:
    """prefix -> namespace names, for every lab namespace on the machine."""
    labs: dict[str, list[str]] = {}
    if not NETNS_DIR.is_dir():
        return labs
    for name in sorted(os.listdir(NETNS_DIR)):
        m = _NS_RE.match(name)
        if m:
            labs.setdefault(m.group(1), []).append(name)
    return labs


class NetnsLab(Lab):
    backend_name = "netns"
    python = sys.executable  # nodes share the host's filesystem: the same interpreter and packages

    def __init__(self, topology: Topology, prefix: str) -> None:
        super().__init__(topology, prefix)
        self._ifnames = {
            (n.name, link.segment): f"eth{i}" for n in topology.nodes.values() for i, link in enumerate(n.links)
        }

    # ---- names ---------------------------------------------------------------------------------

    def node_ns(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    def segment_ns(self, segment: str) -> str:
        return f"{self.prefix}.{segment}"

    @property
    def namespaces(self) -> list[str]:
        return [self.segment_ns(s) for s in self.topology.segments] + [self.node_ns(n) for n in self.topology.nodes]

    @property
    def state_file(self) -> Path:
        return STATE_DIR / f"{self.prefix}.json"

    # ---- primitives ----------------------------------------------------------------------------

    def interface(self, node: str, segment: str) -> str:
        try:
            return self._ifnames[(node, segment)]
        except KeyError:
            raise UnknownNode(f"node {node!r} has no link on segment {segment!r}") from None

    def _spawn(self, node: str, argv: Sequence[str], **kw) -> subprocess.Popen:
        # Nodes share the host's environment; ``env`` only adds to it (an empty one must not empty it).
        kw["env"] = {**os.environ, **(kw.get("env") or {})}
        return self._spawn_in(self.node_ns(node), argv, **kw)

    def wire(self, node: str, segment: str) -> Wire:
        """The veth end named after the node, on the segment namespace's bridge (see :meth:`build`)."""
        return Wire(str(_ns_path(self.segment_ns(segment))), node, BRIDGE, f"{node}.t",
                    str(_ns_path(self.node_ns(node))), self.interface(node, segment))

    def _spawn_in(self, nsname: str, argv: Sequence[str], **kw) -> subprocess.Popen:
        path = str(_ns_path(nsname))
        if not os.path.exists(path):
            raise LabNotFound(f"namespace {nsname} does not exist (is the lab up?)")
        if shutil.which(argv[0]) is None and not os.path.isabs(argv[0]):
            raise MissingTool(f"{argv[0]}: command not found (needed in the lab)")
        return subprocess.Popen(argv, preexec_fn=lambda: _setns_path(path), start_new_session=True, **kw)

    def interactive(self, node: str, argv: Sequence[str]) -> int:
        self.check_node(node)
        path = str(_ns_path(self.node_ns(node)))
        if not os.path.exists(path):
            raise LabNotFound(f"namespace {self.node_ns(node)} does not exist (is the lab up?)")
        if shutil.which(argv[0]) is None and not os.path.isabs(argv[0]):
            raise MissingTool(f"{argv[0]}: command not found")
        # Same session and process group as dp2pt-lab: the command owns the terminal like a shell's child.
        proc = subprocess.Popen(list(argv), preexec_fn=lambda: _setns_path(path))
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:
                continue  # the terminal's ^C reached the command too; wait for it to exit

    def _capture_interface(self, segment: str) -> str:
        return BRIDGE

    def _spawn_capture(self, segment: str, argv: list[str]) -> subprocess.Popen:
        return self._spawn_in(self.segment_ns(segment), argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)

    def _teardown(self) -> None:
        _remove_lab(self.prefix, self.namespaces)

    def runtime_path(self, node: str, name: str) -> str:
        # Nodes share the host's filesystem: one file per lab and node, removed with the lab.
        return str(STATE_DIR / f"{self.prefix}-{node}.{name}")

    # ---- bring-up ------------------------------------------------------------------------------

    def build(self) -> None:
        """Create namespaces, bridges, veths, addresses and routes (pyroute2 netlink only)."""
        topo = self.topology
        handles: dict[str, IPRoute] = {}
        try:
            for name in self.namespaces:
                netns.create(name)
            for name in self.namespaces:
                _write_sysctls(name, NODE_SYSCTLS)
            for r in topo.by_role("router"):
                _write_sysctls(self.node_ns(r), ROUTER_SYSCTLS)
            for name in self.namespaces:
                handles[name] = IPRoute(netns=name)
                lo = handles[name].link_lookup(ifname="lo")[0]
                handles[name].link("set", index=lo, state="up")
            for seg in topo.segments.values():
                ipr = handles[self.segment_ns(seg.name)]
                # A LAN (or carrier) bridge that never learns floods every frame: a shared medium, as a hub.
                extra = {"br_ageing_time": 0} if seg.kind != "public" else {}
                ipr.link("add", ifname=BRIDGE, kind="bridge", **extra)
                br = ipr.link_lookup(ifname=BRIDGE)[0]
                ipr.link("set", index=br, state="up")
            for node in topo.nodes.values():
                ifnames = {}
                for link in node.links:
                    outer = handles[self.segment_ns(link.segment)]
                    ifnames[link.segment] = self.interface(node.name, link.segment)
                    outer.link("add", ifname=node.name, kind="veth",
                               peer={"ifname": ifnames[link.segment], "net_ns_fd": self.node_ns(node.name)})
                    port = outer.link_lookup(ifname=node.name)[0]
                    br = outer.link_lookup(ifname=BRIDGE)[0]
                    outer.link("set", index=port, master=br, state="up")
                addressing.set_addresses(handles[self.node_ns(node.name)], topo, node.name, ifnames)
                addressing.set_routes(handles[self.node_ns(node.name)], topo, node.name, ifnames)
        finally:
            for h in handles.values():
                h.close()


class NetnsBackend(Backend):
    name = "netns"

    def check(self) -> None:
        if os.geteuid() != 0:
            raise NotRoot("the netns backend needs root (network namespaces, veths, netfilter)")
        if not os.path.exists("/proc/self/ns/net"):
            raise MissingKernelFeature("this kernel has no network namespaces (/proc/self/ns/net)")
        for tool in REQUIRED_TOOLS:
            if shutil.which(tool) is None:
                raise MissingTool(f"{tool}: command not found (apt-get install nftables conntrack procps)")

    def up(self, topology: Topology, *, prefix: str | None = None, images: dict[str, str] | None = None) -> NetnsLab:
        refuse_images(self.name, images)
        self.check()
        prefix = prefix or new_prefix()
        if not PREFIX_RE.match(prefix):
            raise LabStateError(f"invalid lab prefix {prefix!r}: use {PREFIX_STEM} followed by 1-8 [0-9a-z]")
        if prefix in list_lab_namespaces() or (STATE_DIR / f"{prefix}.json").exists():
            raise LabStateError(f"a lab with prefix {prefix} is already up (dp2pt-lab down {prefix})")
        lab = NetnsLab(topology, prefix)
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        lab.state_file.write_text(json.dumps(
            {"prefix": prefix, "backend": self.name, "topology": topology.source, "created": time.time()}
        ))
        try:
            lab.build()
            lab.apply_links()
        except OSError as exc:
            lab.down()
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOENT) or "Not supported" in str(exc):
                raise MissingKernelFeature(f"cannot build the lab: {exc} (veth/bridge modules?)") from None
            raise
        except BaseException:
            lab.down()
            raise
        return lab

    def attach(self, prefix: str) -> NetnsLab:
        state = STATE_DIR / f"{prefix}.json"
        if not state.exists():
            raise LabNotFound(f"no lab {prefix!r} (running: {', '.join(self._prefixes()) or 'none'})")
        data = json.loads(state.read_text())
        return NetnsLab(from_dict(data["topology"]), prefix)

    def _prefixes(self) -> list[str]:
        from lab.world import linkctl

        found = set(list_lab_namespaces()) | set(linkctl.leftover_prefixes(PREFIX_RE))
        if STATE_DIR.is_dir():
            found |= {p.stem for p in STATE_DIR.glob(f"{PREFIX_STEM}*.json")}
        return sorted(found)

    def list(self) -> list[LabInfo]:
        labs = list_lab_namespaces()
        out = []
        for prefix in self._prefixes():
            names = labs.get(prefix, [])
            pids = sum(len(v) for v in _pids_in(names).values())
            nats: dict[str, str] = {}
            try:
                lab = self.attach(prefix)
                topo = lab.topology.name
                for r in lab.topology.by_role("router"):
                    if os.path.exists(_ns_path(lab.node_ns(r))):
                        nats[r] = lab.nat_profile(r) or "none"
            except (LabNotFound, ValueError, KeyError):
                topo = "? (no state file: a leftover)"
            except ConfigError as exc:  # written by another version of the lab (side by side on one machine)
                topo = f"? (state not readable here: {exc})"
            nodes = [n.split("-", 1)[1] for n in names if n.startswith(prefix + "-")]
            out.append(LabInfo(prefix, self.name, topo, nodes, pids, nats))
        return out

    def down_all(self) -> list[str]:
        prefixes = self._prefixes()
        labs = list_lab_namespaces()
        for prefix in prefixes:
            _remove_lab(prefix, labs.get(prefix, []))
        return prefixes

    def down(self, prefix: str) -> None:
        """Remove one lab by prefix, with or without its state file."""
        if prefix not in self._prefixes():
            raise LabNotFound(f"no lab {prefix!r} (running: {', '.join(self._prefixes()) or 'none'})")
        _remove_lab(prefix, list_lab_namespaces().get(prefix, []))


BACKEND_CLASS = NetnsBackend
