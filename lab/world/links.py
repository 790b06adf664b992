"""Link conditions: delay, jitter, loss and rate on a node's link to a segment (pure, no I/O).

A link is the wire between one node and one segment (``nat-a:public``). Its :class:`Conditions`
apply to *both* directions, each direction on its own (a round trip through a link with
``delay=20ms`` takes 40 ms more), and follow netem's semantics so the two mechanisms that build
them (:mod:`lab.world.netem`, the kernel's; :mod:`lab.world.linkemu`, ours in userspace) behave
alike: a frame is lost with probability ``loss``, waits for the link to be free at ``rate``
(serialisation: its length in bits over the rate), then travels ``delay`` ± a uniform ``jitter``
(frames whose delays cross are reordered, as netem does); at most ``limit`` frames wait in one
direction, the next ones are dropped.

Written as netem's and tc's words: ``delay=40ms,jitter=5ms,loss=1%,rate=20mbit`` or a preset name
(:data:`PRESETS`), optionally refined (``continental,loss=1%``).

*Regions* (:class:`Regions`) place public nodes in named places with a round-trip-time matrix
between them: a frame from a node in region r to a node in region s is delayed by half their RTT on
its sender's link, on top of that link's own conditions. So "A in Europe, B in Asia, the server in
America" is one mapping, and two peers far apart can each have a server near them (spec FIG. 4),
which per-link delays alone cannot express.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from lab.errors import ConfigError

#: netem's default queue limit (frames per direction).
DEFAULT_LIMIT = 1000
MAX_DELAY_MS = 10_000.0
MAX_LIMIT = 100_000

_DURATION_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
#: tc's rate units: bit/s, and bytes/s for the "bps" family.
_RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9,
               "bps": 8, "kbps": 8 * 10**3, "mbps": 8 * 10**6, "gbps": 8 * 10**9}
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"


@dataclass(frozen=True)
class Conditions:
    """What one link does to every frame, in each direction.

    Attributes:
        delay_ms: one-way delay added in each direction.
        jitter_ms: each frame's delay is uniform in [delay - jitter, delay + jitter] (floored at 0).
        loss: probability (0..1) that a frame is dropped, independently per frame and direction.
        rate_bit: link rate in bit/s (0: unlimited); a frame occupies the link len·8/rate seconds.
        limit: frames that may wait in one direction (delay line plus rate queue) before drops.
    """

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    rate_bit: int = 0
    limit: int = DEFAULT_LIMIT

    def __post_init__(self) -> None:
        if not 0 <= self.delay_ms <= MAX_DELAY_MS or not 0 <= self.jitter_ms <= MAX_DELAY_MS:
            raise ConfigError(f"delay and jitter must be within 0..{MAX_DELAY_MS:g} ms")
        if not 0 <= self.loss <= 1:
            raise ConfigError(f"loss must be within 0..100%, not {self.loss * 100:g}%")
        if self.rate_bit < 0:
            raise ConfigError("rate must not be negative")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ConfigError(f"limit must be 1..{MAX_LIMIT} frames, not {self.limit}")

    @property
    def is_clear(self) -> bool:
        """True when the link does nothing (no delay, jitter, loss or rate)."""
        return not (self.delay_ms or self.jitter_ms or self.loss or self.rate_bit)

    @property
    def spec(self) -> str:
        """The canonical text form, parseable by :func:`parse_conditions` (``clear`` for none)."""
        parts = []
        if self.delay_ms:
            parts.append(f"delay={_num(self.delay_ms)}ms")
        if self.jitter_ms:
            parts.append(f"jitter={_num(self.jitter_ms)}ms")
        if self.loss:
            parts.append(f"loss={_num(self.loss * 100)}%")
        if self.rate_bit:
            parts.append(f"rate={_rate_text(self.rate_bit)}")
        if self.limit != DEFAULT_LIMIT:
            parts.append(f"limit={self.limit}")
        return ",".join(parts) or "clear"

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Conditions":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


#: Named link conditions, one link each. Two nodes whose links both carry preset P are 4·delay apart
#: in round-trip time (each frame crosses both links, each way).
PRESETS: dict[str, Conditions] = {
    "lan": Conditions(delay_ms=0.25, jitter_ms=0.05),
    "continental": Conditions(delay_ms=10.0, jitter_ms=1.0),
    "intercontinental": Conditions(delay_ms=40.0, jitter_ms=3.0, loss=0.001),
    "mobile": Conditions(delay_ms=25.0, jitter_ms=10.0, loss=0.02, rate_bit=10 * 10**6),
}
PRESET_DESCRIPTIONS = {
    "lan": "a wired LAN: two such links ~1 ms apart",
    "continental": "a path within a continent: two such links ~40 ms RTT apart",
    "intercontinental": "a path across an ocean: two such links ~160 ms RTT apart, 0.1% loss",
    "mobile": "a lossy mobile (4G) link: 25±10 ms, 2% loss, 10 Mbit/s",
}
PRESETS["lossy-mobile"] = PRESETS["mobile"]
PRESET_DESCRIPTIONS["lossy-mobile"] = "the same as mobile"


def _num(value: float) -> str:
    return f"{value:.6g}"


def _rate_text(bit: int) -> str:
    for unit, factor in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bit % factor == 0:
            return f"{bit // factor}{unit}"
    return f"{bit}bit"


def parse_duration_ms(text: str, what: str = "duration") -> float:
    """``"40ms"``, ``"500us"``, ``"0.2s"`` (or a bare number of ms) -> milliseconds."""
    m = re.fullmatch(_NUMBER + r"(us|ms|s)?", str(text).strip())
    if not m:
        raise ConfigError(f"{what}={text}: not a duration (e.g. 40ms, 500us, 0.2s)")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2) or "ms"]


def parse_rate_bit(text: str) -> int:
    """``"20mbit"``, ``"512kbit"``, ``"1gbit"``, ``"10mbps"`` (bytes/s, as tc) -> bit/s."""
    m = re.fullmatch(_NUMBER + r"(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)", str(text).strip().lower())
    if not m:
        raise ConfigError(f"rate={text}: not a rate (e.g. 20mbit, 512kbit, 1gbit)")
    return round(float(m.group(1)) * _RATE_UNITS[m.group(2)])


def parse_loss(text: str) -> float:
    """``"1%"`` -> 0.01 (a percentage, as netem's ``loss``)."""
    m = re.fullmatch(_NUMBER + r"%", str(text).strip())
    if not m:
        raise ConfigError(f"loss={text}: give a percentage, e.g. loss=1%")
    return float(m.group(1)) / 100


_PARSERS = {
    "delay": ("delay_ms", lambda v: parse_duration_ms(v, "delay")),
    "jitter": ("jitter_ms", lambda v: parse_duration_ms(v, "jitter")),
    "loss": ("loss", parse_loss),
    "rate": ("rate_bit", parse_rate_bit),
    "limit": ("limit", lambda v: _positive_int(v, "limit")),
}


def _positive_int(text: str, what: str) -> int:
    if not str(text).strip().isdigit():
        raise ConfigError(f"{what}={text}: not a positive whole number")
    return int(text)


def parse_conditions(text: str | Mapping[str, Any]) -> Conditions:
    """A link's conditions from their text (or YAML mapping) form.

    ``"delay=40ms,jitter=5ms,loss=1%,rate=20mbit"``; a preset name, optionally first and refined
    (``"continental,loss=1%"``); ``"clear"`` (or ``"none"``) for no conditions. A mapping uses the
    same keys (``{delay: 40ms, loss: 1%}``) and may name a ``preset``.

    Raises:
        ConfigError: an unknown key or preset, a malformed value, or a value out of range.
    """
    if isinstance(text, Mapping):
        items = [(str(k), str(v)) for k, v in text.items()]
    else:
        items = []
        for part in str(text).split(","):
            part = part.strip()
            if not part:
                continue
            key, sep, value = part.partition("=")
            items.append((key.strip(), value.strip()) if sep else ("preset", key))
    values: dict[str, Any] = {}
    base = Conditions()
    for n, (key, value) in enumerate(items):
        if key == "preset":
            if n != 0:
                raise ConfigError(f"{value!r}: a preset name goes first (e.g. continental,loss=1%)")
            if value in ("clear", "none"):
                continue
            if value not in PRESETS:
                raise ConfigError(f"unknown link preset {value!r}; known: {', '.join(PRESETS)} "
                                  f"(or delay=..,jitter=..,loss=..%,rate=..)")
            base = PRESETS[value]
        elif key in _PARSERS:
            name, parse = _PARSERS[key]
            values[name] = parse(value)
        else:
            raise ConfigError(f"unknown link condition {key!r}; known: {', '.join(_PARSERS)}")
    return replace(base, **values)


def split_link_option(text: str) -> tuple[str, Conditions]:
    """``"NODE[:SEGMENT]=delay=40ms,..."`` (the ``--link`` option) -> (``"NODE[:SEGMENT]"``, conditions).

    Raises:
        ConfigError: no ``=`` after the link's name, or bad conditions.
    """
    target, sep, spec = str(text).partition("=")
    if not sep or not target.strip() or not spec.strip():
        raise ConfigError(f"--link {text!r}: use NODE[:SEGMENT]=delay=40ms,jitter=5ms,loss=1%,rate=20mbit "
                          f"(or =PRESET, =clear)")
    return target.strip(), parse_conditions(spec)


# ---- regions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Regions:
    """Public nodes placed in regions, with the round-trip time between regions.

    Attributes:
        of: node -> region.
        rtt_ms: (region, region) -> round-trip time in ms, both orders present; a region with
            itself defaults to 0 (nodes of one region are as close as their own links make them).
    """

    of: dict[str, str] = field(default_factory=dict)
    rtt_ms: dict[tuple[str, str], float] = field(default_factory=dict)

    def one_way_ms(self, src: str, dst: str) -> float:
        """Extra one-way delay of a frame from node ``src`` to node ``dst`` (0 if either has no region)."""
        r, s = self.of.get(src), self.of.get(dst)
        if r is None or s is None:
            return 0.0
        return self.rtt_ms.get((r, s), 0.0) / 2

    def to_dict(self) -> dict[str, Any]:
        pairs = {f"{r}/{s}": v for (r, s), v in sorted(self.rtt_ms.items()) if r <= s}
        return {"nodes": dict(self.of), "rtt_ms": pairs}


def parse_regions(data: Any) -> Regions:
    """``{nodes: {nat-a: europe, ...}, rtt_ms: {europe/asia: 180, ...}}`` -> :class:`Regions`.

    Every pair of distinct regions in use needs an RTT (``a/b`` and ``b/a`` are the same entry).

    Raises:
        ConfigError: a malformed mapping, a negative RTT, or a missing pair.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("nodes"), Mapping):
        raise ConfigError("regions: needs 'nodes' (node: region) and 'rtt_ms' (region/region: ms)")
    of = {str(n): str(r) for n, r in data["nodes"].items()}
    rtt: dict[tuple[str, str], float] = {}
    for key, value in (data.get("rtt_ms") or {}).items():
        a, sep, b = str(key).partition("/")
        if not sep or not a or not b:
            raise ConfigError(f"regions: rtt_ms key {key!r} must be REGION/REGION")
        try:
            ms = parse_duration_ms(str(value), f"rtt_ms {key}")
        except ConfigError:
            raise ConfigError(f"regions: rtt_ms {key}={value!r} is not a duration") from None
        rtt[(a, b)] = rtt[(b, a)] = ms
    used = sorted(set(of.values()))
    for i, a in enumerate(used):
        for b in used[i + 1:]:
            if (a, b) not in rtt:
                raise ConfigError(f"regions: no rtt_ms for {a}/{b}")
    return Regions(of, rtt)


# ---- paths --------------------------------------------------------------------------------------


def path_links(topology: Any, src: str, dst: str) -> list[tuple[str, str]]:
    """The links a frame from node ``src`` to node ``dst`` crosses, in order (each as (node, segment)).

    A LAN host reaches the public segment through its router (its own link, the router's LAN link,
    the router's WAN link); two hosts of one LAN meet on it.
    """
    src_n, dst_n = topology.node(src), topology.node(dst)
    if not _is_public(topology, src_n) and not _is_public(topology, dst_n):
        if src_n.links[0].segment == dst_n.links[0].segment:
            seg = src_n.links[0].segment
            return [(src, seg), (dst, seg)]
    return _uplinks(topology, src) + list(reversed(_uplinks(topology, dst)))


def _is_public(topology: Any, node: Any) -> bool:
    return any(topology.segments[l.segment].kind == "public" for l in node.links)


def _uplinks(topology: Any, node: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for _ in range(8):  # a chain of NATs is short; a loop in a topology is not ours to follow
        n = topology.node(node)
        if _is_public(topology, n):
            return out + [(node, topology.public)]
        lan = topology.upstream_segment(node)  # a nested NAT's WAN, whatever order its links are listed in
        router = topology.router_of(node)
        out += [(node, lan), (router, lan)]
        node = router
    return out


def one_way_ms(topology: Any, conditions: Mapping[tuple[str, str], Conditions], regions: Regions | None,
               src: str, dst: str, with_jitter: bool = False) -> float:
    """The configured one-way delay from ``src`` to ``dst``: every link crossed, plus the regions'
    (``with_jitter``: each link's largest delay, for timeouts)."""
    path = path_links(topology, src, dst)
    total = sum(c.delay_ms + (c.jitter_ms if with_jitter else 0.0)
                for c in (conditions.get(link) for link in path) if c is not None)
    public = [node for node, segment in path if segment == topology.public]
    if regions is not None and public:
        total += regions.one_way_ms(public[0], public[-1])
    return total
