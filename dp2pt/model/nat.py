"""One NAT router as a pure model: RFC 4787 mapping and filtering, and its port allocator.

The lab's routers (lab/world/nat.py) are built from the same three choices, so a profile name means the
same behaviour here and on the kernel. What matters for the improved protocol (spec steps 15-16):

- On an endpoint-dependent NAT every *new flow* (a new destination endpoint, RFC 4787 §4.1) takes a
  fresh external port, so each punch packet to a new predicted port itself consumes a port, and so does
  every flow another LAN host opens meanwhile (a "cut-in"). A packet to a destination the socket already
  talked to reuses that flow's port.
- The sequential allocator keeps *one* counter for the whole router (all LAN hosts), advancing by the
  delta per new mapping; that is what makes x2 + dx2 predictable and cut-ins harmful.
- Filtering decides whether an inbound packet reaches the LAN: an APDF mapping only accepts the exact
  remote ip:port it sent to, so A's punch must come from the port B's punch was aimed at.

A dropped inbound packet is ``None``, never an exception (after Tailscale's natlab ``PickIncomingDst``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum

from dp2pt.errors import ConfigError

Endpoint = tuple[str, int]

#: The range a router allocates external ports from (Linux's default ephemeral range is wider; the lab
#: pins its own range, see lab/world/nat.py).
PORT_MIN = 1024
PORT_MAX = 65535


class Mapping(StrEnum):
    """RFC 4787 §4.1 mapping behaviour: what a mapping is keyed by besides the internal endpoint."""

    EIM = "eim"  # endpoint-independent: one mapping per internal endpoint
    ADM = "adm"  # address-dependent: one per (internal endpoint, remote ip)
    APDM = "apdm"  # address-and-port-dependent: one per (internal endpoint, remote ip:port)


class Filtering(StrEnum):
    """RFC 4787 §5 filtering behaviour: which inbound packets a mapping lets through."""

    EIF = "eif"  # any remote
    ADF = "adf"  # remotes whose ip the mapping sent to
    APDF = "apdf"  # exactly the remote ip:port the mapping sent to


class Allocation(StrEnum):
    """How the router picks the external port of a new mapping."""

    PRESERVE = "preserve"  # the internal port, if no other internal endpoint holds it (else sequential)
    SEQUENTIAL = "sequential"  # one router-wide counter, +delta per new mapping
    RANDOM = "random"  # uniform over the free ports of the range


@dataclass(frozen=True)
class NatConfig:
    """A NAT profile. ``delta`` is the sequential allocator's step; ``first_port`` its first port.

    Raises:
        ConfigError: a delta or port range that cannot work.
    """

    mapping: Mapping = Mapping.APDM
    filtering: Filtering = Filtering.APDF
    allocation: Allocation = Allocation.SEQUENTIAL
    delta: int = 1
    first_port: int = 20000
    port_min: int = PORT_MIN
    port_max: int = PORT_MAX

    def __post_init__(self) -> None:
        if not PORT_MIN <= self.port_min < self.port_max <= PORT_MAX:
            raise ConfigError(f"bad port range {self.port_min}-{self.port_max}")
        if not self.port_min <= self.first_port <= self.port_max:
            raise ConfigError(f"first port {self.first_port} outside {self.port_min}-{self.port_max}")
        if not 1 <= self.delta < self.port_max - self.port_min:
            raise ConfigError(f"delta must be in 1..{self.port_max - self.port_min - 1}, got {self.delta}")


@dataclass
class _Binding:
    port: int
    internal: Endpoint
    contacted: set[Endpoint] = field(default_factory=set)


class Nat:
    """The runtime state of one router: its mappings and its allocator (no clock, no sockets).

    Args:
        config: the profile.
        ip: the router's public address (what remotes see as source).
        rng: randomness of the RANDOM allocator; pass a seeded ``random.Random`` for reproducible runs.
    """

    def __init__(self, config: NatConfig, ip: str, rng: random.Random) -> None:
        self.config = config
        self.ip = ip
        self._rng = rng
        self._next = config.first_port
        self._by_key: dict[tuple, _Binding] = {}
        self._by_port: dict[int, list[_Binding]] = {}

    def outbound(self, src: Endpoint, dst: Endpoint) -> int:
        """Translate an outbound packet; returns its external source port (allocating on a new mapping)."""
        key = self._key(src, dst)
        binding = self._by_key.get(key)
        if binding is None:
            binding = _Binding(self._allocate(src), src)
            self._by_key[key] = binding
            self._by_port.setdefault(binding.port, []).append(binding)
        binding.contacted.add(dst)
        return binding.port

    def inbound(self, src: Endpoint, port: int) -> Endpoint | None:
        """The internal endpoint an inbound packet to ``port`` reaches, or None when the router drops it."""
        for binding in self._by_port.get(port, ()):
            if self._admits(binding, src):
                return binding.internal
        return None

    def _key(self, src: Endpoint, dst: Endpoint) -> tuple:
        if self.config.mapping is Mapping.EIM:
            return (src,)
        if self.config.mapping is Mapping.ADM:
            return (src, dst[0])
        return (src, dst)

    def _admits(self, binding: _Binding, src: Endpoint) -> bool:
        if self.config.filtering is Filtering.EIF:
            return True
        if self.config.filtering is Filtering.ADF:
            return any(ip == src[0] for ip, _ in binding.contacted)
        return src in binding.contacted

    def _allocate(self, src: Endpoint) -> int:
        cfg = self.config
        if cfg.allocation is Allocation.PRESERVE:
            holders = self._by_port.get(src[1], ())
            if cfg.port_min <= src[1] <= cfg.port_max and all(b.internal == src for b in holders):
                return src[1]
            return self._sequential()
        if cfg.allocation is Allocation.RANDOM:
            while True:
                port = self._rng.randint(cfg.port_min, cfg.port_max)
                if port not in self._by_port:
                    return port
        return self._sequential()

    def _sequential(self) -> int:
        """The counter's port, even if a mapping to another destination holds it (as nf_nat does:
        only the whole 5-tuple must be unique)."""
        cfg = self.config
        port = self._next
        self._next = (self._next - cfg.port_min + cfg.delta) % (cfg.port_max - cfg.port_min + 1) + cfg.port_min
        return port
