"""What the lab tells an agent about where it is: environment variables and ``{NAME}`` placeholders.

A program that knows nothing of the lab learns its place from these variables (a page of docs,
lab/README.md "Agents"), in the spirit of libp2p's hole-punch interop (``MODE``, a Redis
rendezvous, one JSON line) — and the lab judges its path from the capture in every case:

==================  ==========================================================================
``LAB_ROLE``        ``A`` (started first, like dp2pt's listener) or ``B``
``LAB_ID``          this peer's id; ``LAB_PEER_ID`` the other peer's
``LAB_SESSION``     a key unique to this run of the cell (prefix your rendezvous keys with it)
``LAB_RENDEZVOUS``  ``host:port`` of the lab's signalling rendezvous (:mod:`lab.agents.rendezvous`)
``LAB_SERVER``      ``host:port`` of dp2pt's location server (TCP control)
``LAB_STUN``        ``host:port`` answering STUN Binding (RFC 8489); the next port answers too
``LAB_TURN``        ``host:port`` of a TURN server (coturn, RFC 8656), only when the cell has one,
                    with ``LAB_TURN_USER`` / ``LAB_TURN_PASSWORD`` (long-term credentials)
``LAB_LOCAL_IP``    this node's own address (behind its NAT)
``LAB_TIMEOUT``     seconds the program has; the lab stops it a little later
==================  ==========================================================================

Arguments may name the same values as placeholders (``--peer {LAB_PEER_ID}``): a token holding
``{NAME}`` of a variable above is replaced, nothing else is touched. The program's result is the
last line of its standard output that parses as a JSON object, if any (:func:`result_line`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

ROLES = ("A", "B")
#: The variable names, in the order documented above (a contract: extend, never rename).
NAMES = ("LAB_ROLE", "LAB_ID", "LAB_PEER_ID", "LAB_SESSION", "LAB_RENDEZVOUS", "LAB_SERVER", "LAB_STUN",
         "LAB_TURN", "LAB_TURN_USER", "LAB_TURN_PASSWORD", "LAB_LOCAL_IP", "LAB_TIMEOUT")
_PLACEHOLDER = re.compile(r"\{(LAB_[A-Z_]+)\}")


class ContractError(ValueError):
    """An agent was started without what the contract promises (one line, for the agent's stderr)."""


@dataclass(frozen=True)
class Turn:
    """A TURN server and the long-term credentials the lab configured on it."""

    address: tuple[str, int]
    user: str
    password: str


@dataclass(frozen=True)
class AgentEnv:
    """Everything one side of a cell is told (see the module docstring)."""

    role: str
    id: str
    peer_id: str
    session: str
    rendezvous: tuple[str, int]
    server: tuple[str, int]
    stun: tuple[str, int]
    local_ip: str
    timeout: float
    turn: Turn | None = None

    def to_env(self) -> dict[str, str]:
        env = {
            "LAB_ROLE": self.role, "LAB_ID": self.id, "LAB_PEER_ID": self.peer_id, "LAB_SESSION": self.session,
            "LAB_RENDEZVOUS": _hostport(self.rendezvous), "LAB_SERVER": _hostport(self.server),
            "LAB_STUN": _hostport(self.stun), "LAB_LOCAL_IP": self.local_ip, "LAB_TIMEOUT": f"{self.timeout:.3f}".rstrip("0").rstrip("."),
        }
        if self.turn:
            env |= {"LAB_TURN": _hostport(self.turn.address), "LAB_TURN_USER": self.turn.user,
                    "LAB_TURN_PASSWORD": self.turn.password}
        return env

    @classmethod
    def from_env(cls, env: dict[str, str]) -> "AgentEnv":
        """Read the contract back (what :mod:`lab.agents.ice` does inside a node).

        Raises:
            ContractError: a variable is missing or malformed.
        """
        def need(name: str) -> str:
            value = env.get(name)
            if not value:
                raise ContractError(f"{name} is not set (is this running under the lab?)")
            return value

        role = need("LAB_ROLE")
        if role not in ROLES:
            raise ContractError(f"LAB_ROLE must be A or B, not {role!r}")
        turn = None
        if env.get("LAB_TURN"):
            turn = Turn(parse_hostport(env["LAB_TURN"], "LAB_TURN"), need("LAB_TURN_USER"), need("LAB_TURN_PASSWORD"))
        try:
            timeout = float(need("LAB_TIMEOUT"))
        except ValueError:
            raise ContractError(f"LAB_TIMEOUT must be a number of seconds, not {env['LAB_TIMEOUT']!r}") from None
        return cls(role, need("LAB_ID"), need("LAB_PEER_ID"), need("LAB_SESSION"),
                   parse_hostport(need("LAB_RENDEZVOUS"), "LAB_RENDEZVOUS"),
                   parse_hostport(need("LAB_SERVER"), "LAB_SERVER"), parse_hostport(need("LAB_STUN"), "LAB_STUN"),
                   need("LAB_LOCAL_IP"), timeout, turn)


def substitute(argv: list[str], env: dict[str, str]) -> list[str]:
    """Replace ``{LAB_...}`` placeholders of the contract in ``argv``; other braces stay as they are.

    Raises:
        ContractError: a placeholder names a variable this cell does not set (e.g. ``{LAB_TURN}``
            in a cell without a TURN server).
    """
    def one(m: re.Match) -> str:
        name = m.group(1)
        if name not in NAMES:
            return m.group(0)
        if name not in env:
            raise ContractError(f"argument placeholder {{{name}}}: this cell does not set {name}")
        return env[name]

    return [_PLACEHOLDER.sub(one, arg) for arg in argv]


def result_line(stdout: str) -> dict | None:
    """The last line of ``stdout`` that is a JSON object (an agent's result), or None."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict):
                return doc
    return None


def parse_hostport(text: str, what: str = "address") -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ContractError(f"{what} must be HOST:PORT, not {text!r}")
    return host, int(port)


def _hostport(addr: tuple[str, int]) -> str:
    return f"{addr[0]}:{addr[1]}"
