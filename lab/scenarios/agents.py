"""How a cell runs each kind of agent on A and B: its command line, readiness, time and claim.

An agent kind (:data:`KINDS`) is a small object the runner asks four questions, so the cell's
procedure (NATs, capture, artifacts, the path proof) is one code path for every agent:

* ``argv(cell, env, python, punch_timeout)`` — the command started in the peer node (with the
  contract's environment, :mod:`lab.agents.contract`, added to the node's own; its ``LAB_TIMEOUT``
  is the runner's, stretched by the links' round trips);
* ``ready`` — the line A prints once B may start (A is started first, as dp2pt's listener), or
  ``None`` to start both at once;
* ``timeout(cell)`` — seconds the agent has on an instant lab; the runner stretches it for slow or
  lossy links and stops the agent a little after;
* ``claim(a, b)`` — what the two result lines say happened (``direct`` / ``relayed`` / ``failed``),
  or ``None`` for a program that makes no claim: the capture alone decides (a ``command``);
* ``time_key`` — the result field with the time to the path (:func:`time_to_path_ms`).

Kinds: ``dp2pt`` (the protocol through its CLI, docs/CONTRACT.md), ``ice`` (:mod:`lab.agents.ice`;
variant ``stun``, or ``turn`` with coturn as the relay baseline) and ``command`` (any program).
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, ClassVar

from lab.agents import contract
from lab.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from lab.scenarios.run import Cell

#: dp2pt's per-cell peer timeouts (seconds) on instant links: small, so that an expected failure costs little.
SESSION_TIMEOUT = 4.0
PUNCH_TIMEOUT = 0.6
DATA_COUNT = 3
#: ICE: aioice retransmits a check after 0.5, 1.5 and 3.5 s (RTO 0.5 s, doubling); a check that
#: could pass has passed by its third try, and both sides have noticed the nomination after one
#: more round trip. Gathering (one STUN round trip, and a TURN allocation) is milliseconds here.
ICE_TIMEOUT = 4.5
#: A user's program gets this long unless the cell says otherwise.
COMMAND_TIMEOUT = 10.0
#: A's local port in a collision cell (a neighbour takes the same one first, lab.scenarios.run).
COLLISION_PORT = 40000


class AgentKind:
    """One kind of agent (see the module docstring)."""

    name: ClassVar[str]
    variants: ClassVar[tuple[str, ...] | None]  # None: a free label
    default_variant: ClassVar[str]
    ready: ClassVar[str | None] = '"ready"'
    cut_ins: ClassVar[bool] = False  # can the runner time cut-ins on this agent's probes?
    time_key: ClassVar[str] = "time_ms"

    def argv(self, cell: "Cell", env: dict[str, str], python: str, punch_timeout: float) -> list[str]:
        raise NotImplementedError

    def timeout(self, cell: "Cell") -> float:
        raise NotImplementedError

    def needs_turn(self, cell: "Cell") -> bool:
        return False

    def claim(self, a: dict, b: dict) -> str | None:
        raise NotImplementedError


class Dp2pt(AgentKind):
    name, variants, default_variant, cut_ins = "dp2pt", ("basic", "simplified", "improved", "distributed"), "basic", True
    time_key = "time_to_direct_ms"  # from pairing (B's connect) to the first direct datagram

    def argv(self, cell, env, python, punch_timeout):
        server = env["LAB_SERVER"]
        common = ["--json", "--timeout", env["LAB_TIMEOUT"], "--punch-timeout", f"{punch_timeout:.3f}",
                  "--count", str(DATA_COUNT), *cell.peer_args]
        argv = ["dp2pt", "peer", "--id", env["LAB_ID"], "--server", server, *common]
        if env["LAB_ROLE"] == "A":
            bind = ["--bind", f"0.0.0.0:{COLLISION_PORT}"] if cell.collision else []
            return argv + bind + ["listen", "--sessions", "1"]
        argv += ["connect", env["LAB_PEER_ID"], "--variant", cell.protocol_variant]
        if cell.k:
            argv += ["--k", str(cell.k)]
        if cell.schedule:
            argv += ["--schedule", cell.schedule]
        return argv

    def timeout(self, cell):
        return SESSION_TIMEOUT

    def claim(self, a, b):
        return "direct" if all(r.get("ok") and r.get("direct") for r in (a, b)) else "failed"


class Ice(AgentKind):
    name, variants, default_variant = "ice", ("stun", "turn"), "stun"
    time_key = "time_to_connected_ms"  # from the start of gathering to the nomination

    def argv(self, cell, env, python, punch_timeout):
        return [python, "-m", "lab.agents.ice", "--count", str(DATA_COUNT)]

    def timeout(self, cell):
        return cell.timeout or ICE_TIMEOUT

    def needs_turn(self, cell):
        return cell.variant == "turn"

    def claim(self, a, b):
        if not all(r.get("connected") for r in (a, b)):
            return "failed"
        return "relayed" if "relay" in (a.get("pair_type"), b.get("pair_type")) else "direct"


class Command(AgentKind):
    name, variants, default_variant, ready = "command", None, "command", None

    def argv(self, cell, env, python, punch_timeout):
        command = cell.command_b if env["LAB_ROLE"] == "B" and cell.command_b else cell.command
        try:
            return contract.substitute(shlex.split(command), env)
        except contract.ContractError as exc:
            raise ConfigError(f"cell {cell.id}: {exc}") from None

    def timeout(self, cell):
        return cell.timeout or COMMAND_TIMEOUT

    def needs_turn(self, cell):
        return bool(cell.turn)

    def claim(self, a, b):
        return None


KINDS: dict[str, AgentKind] = {k.name: k for k in (Dp2pt(), Ice(), Command())}


def time_to_path_ms(agent: str, a: dict, b: dict) -> float | None:
    """B's time to its path (B starts the exchange, as dp2pt's connector), A's when B has none."""
    key = get(agent).time_key
    for side in (b, a):
        if isinstance(side.get(key), (int, float)):
            return float(side[key])
    return None


def get(name: str) -> AgentKind:
    """The agent kind called ``name``.

    Raises:
        ConfigError: no such kind.
    """
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(f"unknown agent {name!r}; known: {', '.join(KINDS)}") from None
