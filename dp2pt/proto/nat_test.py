"""The testing-NAT procedure's arithmetic (spec steps 3-7 and 9-13, FIG. 3), without I/O.

Each peer learns the NAT's external source port of two probes (x1, x2) and reports x2 and
dx2 = x2 - x1; the simplified protocol sends one probe and takes dx2 = 1.  The other side predicts
the next mapping as x2 + dx2 (or the ports of a schedule, for the improved protocol).
"""

from __future__ import annotations

from dataclasses import dataclass

from dp2pt.errors import ConfigError, RemoteProtocolError
from dp2pt.proto.messages import VARIANTS

Address = tuple[str, int]


def probe_count(variant: str) -> int:
    """Probes a variant sends: two, except the simplified protocol's one (FIG. 3 skips steps 3-4)."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r} (known: {', '.join(VARIANTS)})")
    return 1 if variant == "simplified" else 2


@dataclass(frozen=True)
class NatReport:
    """What a peer reports at step 7 (or 13): its NAT's public ip, the last mapped port, and the delta."""

    ip: str
    port: int
    delta: int

    @property
    def predicted_port(self) -> int:
        """The port the next new flow is expected to leave from (x2 + dx2)."""
        return self.port + self.delta


def report_from_probes(variant: str, mapped: list[Address]) -> NatReport:
    """Turn the mapped addresses of the probes into the step-7 report.

    Raises:
        RemoteProtocolError: the probes disagree on the public address (a NAT with several public
            addresses is outside the spec's model) or their number does not fit the variant.
    """
    expected = probe_count(variant)
    if len(mapped) != expected:
        raise RemoteProtocolError(f"{variant} NAT test needs {expected} probe answers, got {len(mapped)}")
    ips = {ip for ip, _ in mapped}
    if len(ips) != 1:
        raise RemoteProtocolError(f"probes were mapped to several public addresses: {sorted(ips)}")
    if expected == 1:
        (ip, x1), = mapped
        return NatReport(ip, x1, 1)
    (ip, x1), (_, x2) = mapped
    return NatReport(ip, x2, x2 - x1)
