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
- With port blocks (RFC 7422, a carrier-grade NAT's way to keep its logs small) each subscriber — an
  internal address — allocates inside blocks of its own, so only flows of the peer's own subscriber
  cut in; another subscriber's flows take ports in other blocks.

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
    ``block`` > 0: ports in blocks of that many per subscriber (internal address), taken from the
    range in order, in sequence (SEQUENTIAL) or at random (RANDOM) inside a block.

    Raises:
        ConfigError: a delta, block or port range that cannot work.
    """

    mapping: Mapping = Mapping.APDM
    filtering: Filtering = Filtering.APDF
    allocation: Allocation = Allocation.SEQUENTIAL
    delta: int = 1
    first_port: int = 20000
    port_min: int = PORT_MIN
    port_max: int = PORT_MAX
    block: int = 0

    def __post_init__(self) -> None:
        if not PORT_MIN <= self.port_min < self.port_max <= PORT_MAX:
            raise ConfigError(f"bad port range {self.port_min}-{self.port_max}")
        if not self.port_min <= self.first_port <= self.port_max:
            raise ConfigError(f"first port {self.first_port} outside {self.port_min}-{self.port_max}")
        if not 1 <= self.delta < self.port_max - self.port_min:
            raise ConfigError(f"delta must be in 1..{self.port_max - self.port_min - 1}, got {self.delta}")
        if self.block and (self.block < 1 or self.block > self.port_max - self.port_min + 1
                           or self.allocation is Allocation.PRESERVE):
            raise ConfigError(f"port blocks of {self.block} need a sequential or random allocator and a range that holds one")


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
        self._blocks: dict[str, list[int]] = {}  # subscriber -> first port of each of its blocks
        self._cursor: dict[str, int] = {}
        self._next_block = config.port_min

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
        if cfg.block:
            return self._block_port(src[0])
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

    def _block_port(self, subscriber: str) -> int:
        """The next port of the subscriber's current block (in order, or a random free one); a new
        block from the range when it is used up (blocks are never given back in a model run)."""
        cfg, blocks = self.config, self._blocks.setdefault(subscriber, [])
        if cfg.allocation is Allocation.RANDOM and blocks:
            free = [p for p in range(blocks[-1], blocks[-1] + cfg.block) if p not in self._by_port]
            if free:
                return self._rng.choice(free)
        elif blocks and self._cursor[subscriber] < cfg.block:
            self._cursor[subscriber] += 1
            return blocks[-1] + self._cursor[subscriber] - 1
        if self._next_block + cfg.block - 1 > cfg.port_max:
            raise ConfigError(f"no port block left for {subscriber}")
        blocks.append(self._next_block)
        self._next_block += cfg.block
        self._cursor[subscriber] = 1
        if cfg.allocation is Allocation.RANDOM:
            self._cursor[subscriber] = cfg.block
            return self._rng.randint(blocks[-1], blocks[-1] + cfg.block - 1)
        return blocks[-1]

    def _sequential(self) -> int:
        """The counter's port, even if a mapping to another destination holds it (as nf_nat does:
        only the whole 5-tuple must be unique)."""
        cfg = self.config
        port = self._next
        self._next = (self._next - cfg.port_min + cfg.delta) % (cfg.port_max - cfg.port_min + 1) + cfg.port_min
        return port
