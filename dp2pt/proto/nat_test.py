"""The testing-NAT procedure's arithmetic (spec steps 3-7 and 9-13, FIG. 3), without I/O.

Each peer learns the NAT's external source port of two probes (x1, x2) and reports x2 and
dx2 = x2 - x1; the simplified protocol sends one probe and takes dx2 = 1.  The other side predicts
the next mapping as x2 + dx2 (or the ports of a schedule, for the improved protocol).

With a location server that has a second address (RFC 5780 mode), a peer can also classify its NAT
(``--discover-nat``): mapping and filtering behaviour in RFC 4787's words (:func:`mapping_behaviour`,
:func:`filtering_behaviour`), reported in its result line; an endpoint-independent mapping travels
with the report so that the other side punches that one port instead of predicting.
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


#: RFC 4787 §4.1 and §5 words (the same as the lab's NAT profiles and coturn's natdiscovery).
ENDPOINT_INDEPENDENT = "endpoint-independent"
ADDRESS_DEPENDENT = "address-dependent"
ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"
BEHAVIOURS = (ENDPOINT_INDEPENDENT, ADDRESS_DEPENDENT, ADDRESS_AND_PORT_DEPENDENT)


def mapping_behaviour(x1: Address, x2: Address | None, x3: Address | None) -> str | None:
    """RFC 5780 §4.3 from the spec's probes and one more.

    Args:
        x1: mapped address of probe 1 (to the server's IP, port P).
        x2: mapped address of probe 2 (same IP, port P+1: only the destination port differs), or
            None for the simplified protocol's single probe.
        x3: mapped address of a probe to the server's OTHER-ADDRESS (another IP and port), or None
            if the server has none.
    Returns:
        The behaviour, or None when the probes cannot tell it.
    """
    if x2 is not None and x1 != x2:
        return ADDRESS_AND_PORT_DEPENDENT  # a new destination port alone got a new mapping
    if x3 is None:
        return None
    if x3 == x1:
        return ENDPOINT_INDEPENDENT
    return ADDRESS_DEPENDENT if x2 is not None else None


def filtering_behaviour(other_ip_answered: bool, other_port_answered: bool) -> str:
    """RFC 5780 §4.4: which CHANGE-REQUEST answers crossed the NAT (from the other IP and port, from
    the other port only)."""
    if other_ip_answered:
        return ENDPOINT_INDEPENDENT
    return ADDRESS_DEPENDENT if other_port_answered else ADDRESS_AND_PORT_DEPENDENT


def punch_plan(remote_port: int, remote_mapping: str | None, ports: list[int]) -> list[int]:
    """Skip prediction on an endpoint-independent mapping: the other side's NAT will use the port it
    reported for our flow too, so one punch there replaces the k predicted ones (``ports``)."""
    return [remote_port] if remote_mapping == ENDPOINT_INDEPENDENT else ports
