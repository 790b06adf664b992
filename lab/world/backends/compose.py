"""The compose world (``make lab-up``): a generated compose file brought up, made ready, torn down.

``docker compose`` creates the containers and networks of :func:`lab.world.compose.render`; this
module adds what a compose file cannot express — the host's DOCKER-USER rules that let routed NAT
traffic stay on its lab bridge when br_netfilter is on, LAN bridges that flood like hubs (so noise
hosts see their neighbours' probes) — waits until every node reports ready, and hands out a
:class:`~lab.world.backends.docker.DockerLab` on the running containers, so scenarios run on the
compose world through the same code as on any lab. Everything carries the label
``dp2pt.lab=dp2pt``: ``down`` (and the Docker backend's ``down --all``) removes it by label.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

from lab.errors import ConfigError, EnvironmentProblem, LabStateError, MissingTool, UnknownNode
from lab.world import compose, topology
from lab.world.backends import docker as dockerlab

#: The committed compose file: ``dp2pt-lab compose fig1`` (a test keeps them equal).
COMPOSE_FILE = Path(__file__).resolve().parents[3] / "compose.yaml"
COMPOSE_TOPOLOGY = "fig1"
READY_TIMEOUT = 30.0


def compose_cmd() -> list[str]:
    """``docker compose`` (v2 plugin) if present, else Debian's ``docker-compose`` (v1)."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise MissingTool("no compose tool: apt-get install docker-compose (or the docker compose plugin)")


class ComposeWorld:
    """One topology as the compose project ``dp2pt`` (one at a time: its names are fixed)."""

    def __init__(self, topology_name: str | Path = COMPOSE_TOPOLOGY, file: Path | None = None) -> None:
        """``file``: the compose file to run; default the committed ``compose.yaml`` for fig1, and for
        any other world its rendering, written afresh for each compose command (``--topology zoo``)."""
        self.source = topology.resolve(topology_name)
        self.topology = topology.load(self.source)
        committed = self.source == topology.resolve(COMPOSE_TOPOLOGY)
        self.file = file or (COMPOSE_FILE if committed else None)

    # ---- up -----------------------------------------------------------------------------------

    def up(self, nats: dict[str, str]) -> dockerlab.DockerLab:
        """Start the world with ``nats`` (router -> profile; the topology's for the others), ready.

        Raises:
            EnvironmentProblem: not root, no engine, no image.  LabStateError: a node failed to start.
        """
        self._preflight()
        for router in nats:
            if self.topology.node(router).role != "router":
                raise UnknownNode(f"{router!r} is not a router of {self.topology.name}")
        env: dict[str, str] = {}
        for router in self.topology.by_role("router"):
            profile = nats.get(router) or self.topology.node(router).nat or "port-restricted-cone"
            env |= compose.router_env(router, profile)
        lab = dockerlab.DockerLab(self.topology, compose.PROJECT)
        bridges = [compose.bridge(self.topology, s) for s in self.topology.segments]
        dockerlab.remove_host_rules(compose.PROJECT)
        dockerlab.allow_bridges(compose.PROJECT, bridges)
        self._compose("up", "-d", "--no-build", "--remove-orphans", env=env)
        dockerlab.make_hubs([compose.bridge(self.topology, s.name)
                             for s in self.topology.segments.values() if s.kind != "public"])
        self.wait_ready(lab)
        lab.apply_links()  # the topology's link conditions: a compose file has no place for them
        return lab

    def _preflight(self) -> None:
        if os.geteuid() != 0:
            raise EnvironmentProblem("the compose lab needs root (host DOCKER-USER rules, bridge settings, captures)")
        client = dockerlab._client()
        dockerlab.preflight()
        image = os.environ.get("NODE_IMAGE") or compose.DEFAULT_IMAGE
        try:
            client.api.inspect_image(image)
        except Exception:
            raise EnvironmentProblem(f"image {image} is missing: run make lab-image") from None
        if self.file is not None and not self.file.exists():
            raise ConfigError(f"{self.file} does not exist: dp2pt-lab compose {self.source.stem} > {self.file}")

    def wait_ready(self, lab: dockerlab.DockerLab, timeout: float = READY_TIMEOUT) -> float:
        """Poll every node until its log says ready; fail fast (with its last line) if one exits."""
        api = lab.client.api
        start = time.monotonic()
        pending = set(self.topology.nodes)
        while pending:
            for node in sorted(pending):
                state = api.inspect_container(compose.container(node))["State"]
                logs = api.logs(compose.container(node), stdout=True, stderr=True).decode(errors="replace")
                if not state["Running"]:
                    last = (logs.strip().splitlines() or ["(no output)"])[-1]
                    raise LabStateError(f"{node} exited ({state['ExitCode']}): {last} (make lab-down removes the rest)")
                if "dp2pt-node: ready" in logs:
                    pending.discard(node)
            if pending and time.monotonic() - start > timeout:
                raise LabStateError(f"not ready after {timeout:.0f} s: {', '.join(sorted(pending))} "
                                    f"(docker logs {compose.container(sorted(pending)[0])}; make lab-down)")
            if pending:
                time.sleep(0.1)
        return time.monotonic() - start

    def lab(self) -> dockerlab.DockerLab:
        """A handle on the running world (for exec, captures, NAT reloads)."""
        lab = dockerlab.DockerLab(self.topology, compose.PROJECT)
        if not self.running():
            raise LabStateError("the compose lab is not up: make lab-up")
        return lab

    def running(self) -> bool:
        found = dockerlab._client().api.containers(filters={"label": f"{compose.LABEL}={compose.PROJECT}"})
        return bool(found)

    # ---- down ---------------------------------------------------------------------------------

    def down(self) -> None:
        """Remove every container, network and host rule of the compose world (also half-started)."""
        if os.geteuid() != 0:
            raise EnvironmentProblem("run as root (the lab's host rules are removed with iptables)")
        client = dockerlab._client()
        try:
            self._compose("down", "--remove-orphans", "--timeout", "2", check=False)
        except MissingTool:
            pass  # no compose tool: the label sweep below still removes everything
        dockerlab.teardown(client, compose.PROJECT)
        left = self.leftovers()
        if left:
            raise LabStateError(f"could not remove: {'; '.join(left)}")

    def leftovers(self) -> list[str]:
        """What of the compose world still exists: containers, networks, host rules."""
        api = dockerlab._client().api
        flt = {"label": f"{compose.LABEL}={compose.PROJECT}"}
        found = [f"container {c['Names'][0].lstrip('/')}" for c in api.containers(all=True, filters=flt)]
        found += [f"network {n['Name']}" for n in api.networks(filters=flt)]
        found += [f"host rule {r}" for r in dockerlab.host_rules(compose.PROJECT)]
        return found

    # ---- helpers ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _file(self) -> Iterator[Path]:
        """The compose file of this world: ``self.file``, or its rendering in a temporary file."""
        if self.file is not None:
            yield self.file
            return
        with tempfile.NamedTemporaryFile("w", prefix=f"dp2pt-compose-{self.topology.name}-", suffix=".yaml") as f:
            f.write(compose.render(self.topology, self.source))
            f.flush()
            yield Path(f.name)

    def node_name(self, name: str) -> str:
        """A node of the world, also by its name in the compose lab of old (``peer-a`` -> ``a``)."""
        name = compose.OLD_NAMES.get(name, name)
        self.topology.node(name)  # UnknownNode with the list of nodes
        return name

    def _compose(self, *args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        tool = compose_cmd()
        with self._file() as file:
            argv = tool + ["-p", compose.PROJECT, "-f", str(file), *args]
            done = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, **(env or {})))
        if check and done.returncode != 0:
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            raise LabStateError(f"{' '.join(tool)} {args[0]} failed: {lines[-1] if lines else done.returncode}")
        return done
