"""Typed errors of the lab, split by who is at fault.

``dp2pt-lab`` prints any :class:`LabError` as one line and exits with its ``exit_code``; anything
else is a bug and keeps its traceback.
"""


class LabError(Exception):
    """Base of every error the lab raises on purpose."""

    exit_code = 1


class ConfigError(LabError):
    """The caller asked for something that cannot work (bad topology file, unknown option)."""

    exit_code = 2


class UnknownProfile(ConfigError):
    """No NAT profile has that name, or a parameter of it is invalid."""


class UnsupportedNat(ConfigError):
    """A combination of RFC 4787 behaviours that the router cannot build (refused, never faked)."""


class UnknownNode(ConfigError):
    """The topology has no node (or segment) with that name."""


class UnknownBackend(ConfigError):
    """No backend is registered under that name, or it cannot be imported here."""


class EnvironmentProblem(LabError):
    """The machine cannot run the lab: not root, a tool or kernel feature is missing."""

    exit_code = 3


class NotRoot(EnvironmentProblem):
    """Namespaces, veths and netfilter need CAP_NET_ADMIN; we ask for plain root."""


class MissingTool(EnvironmentProblem):
    """A program the lab runs (nft, tcpdump, conntrack, turnserver, dp2pt) is not installed."""


class MissingKernelFeature(EnvironmentProblem):
    """The kernel lacks something the lab needs (netns, veth, bridge, nf_tables, conntrack)."""


class LabStateError(LabError):
    """The lab is not in the state the operation needs (no lab up, lab already up, port in use)."""

    exit_code = 4


class LabNotFound(LabStateError):
    """No running lab matches the prefix asked for."""


class PortInUse(LabStateError):
    """A process the lab starts could not bind its port (something else is listening there)."""


class NodeCommandFailed(LabError):
    """A command run inside a node exited non-zero where success was required."""

    exit_code = 5

    def __init__(self, node: str, argv: list[str], returncode: int, stderr: str = "") -> None:
        self.node, self.argv, self.returncode, self.stderr = node, argv, returncode, stderr
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        super().__init__(
            f"in node {node!r}: {' '.join(argv)} exited {returncode}" + (f": {tail}" if tail else "")
        )


class ScenarioError(LabError):
    """A scenario could not be run to an outcome (a process did not start, an artifact is missing)."""

    exit_code = 6
