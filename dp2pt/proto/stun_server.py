"""The location server's STUN Binding answers (RFC 8489, RFC 3489 clients, RFC 5780), sans-IO.

:func:`answer` turns one request datagram, its source and the local address it arrived on into the
reply and the local address to send it from.  Which attributes go in is a deliberate choice, because
the server answers anyone who sends a datagram, forged sources included (README, "Security" and
"Answer sizes"):

- RFC 5389/8489 request (magic cookie): XOR-MAPPED-ADDRESS only.  Every client that sends the cookie
  must read it (RFC 5389 §15.2), so MAPPED-ADDRESS next to it would be 12 bytes of amplification for
  no client; SOFTWARE is left out for the same reason.
- RFC 3489 request (no cookie, RFC 5389 §12.2): MAPPED-ADDRESS, the one attribute old clients read.
- With a second address (RFC 5780 mode), also where the answer came from and the server's other
  address: RESPONSE-ORIGIN + OTHER-ADDRESS (RFC 5780 §6), or for RFC 3489 clients their old names
  SOURCE-ADDRESS + CHANGED-ADDRESS, which Debian's ``stun`` and pystun3 read to classify a NAT.  The
  other address always has the alternate IP (:meth:`StunAddresses.other` says why).
- FINGERPRINT only when the request carried one (it is checked when present; a mismatch is dropped).
- CHANGE-REQUEST is honoured in RFC 5780 mode (the answer leaves from the other IP and/or port);
  without a second address a request with a change flag set gets 420, as from any RFC 8489 server
  (CHANGE-REQUEST is comprehension-required) and from coturn.
- RESPONSE-PORT (RFC 5780 §7.5) is honoured: the answer goes to that port of the source IP, which
  coturn's ``turnutils_stunclient`` uses to test filtering from a second socket.  The IP is the
  one the request came from, so it reaches no host a plain answer would not.
- PADDING (RFC 5780 §7.6, a fragmentation test) is answered with PADDING of the same length, as
  coturn does: the answer stays within 36 bytes of the request.
- 420 (Unknown Attribute) with UNKNOWN-ATTRIBUTES for every comprehension-required attribute the
  server does not implement (RFC 8489 §6.3.1), including RFC 3489's RESPONSE-ADDRESS, which would
  send the answer to any host the request names.
- Credentials (USERNAME, MESSAGE-INTEGRITY, REALM, NONCE) and ICE's PRIORITY/USE-CANDIDATE are
  read and ignored, as coturn does: the answer is the same for everyone.

The largest answer is 64 bytes (RFC 5780 mode, a request with FINGERPRINT) but for PADDING, and an
answer is at most 36 bytes larger than its request: 2.8x for the smallest request (20 bytes), 1.6x
without RFC 5780.  coturn's answers to the same 20 bytes are 84-92 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from dp2pt.errors import ConfigError, RemoteProtocolError
from dp2pt.proto import stun

Address = tuple[str, int]

#: Comprehension-required attributes the server knows but does not implement (it would answer another host).
REFUSED = ("RESPONSE-ADDRESS",)
UNKNOWN_ATTRIBUTE = (420, "Unknown Attribute")


@dataclass(frozen=True)
class StunAddresses:
    """Where the server answers STUN: its IP and two ports, and in RFC 5780 mode a second IP.

    In RFC 5780 mode the server listens on all four (ip, port) pairs, so that CHANGE-REQUEST can be
    honoured from whichever one the request arrived at.
    """

    ip: str
    port: int
    alt_port: int
    alt_ip: str | None = None

    def __post_init__(self) -> None:
        if self.alt_port == self.port and self.port != 0:
            raise ConfigError("the alternate STUN port must differ from the main one")
        if self.alt_ip is not None:
            if self.alt_ip == self.ip:
                raise ConfigError("the alternate STUN address must differ from the main one")
            if self.ip in ("0.0.0.0", "::") or self.alt_ip in ("0.0.0.0", "::"):
                raise ConfigError("RFC 5780 mode needs two explicit addresses, not a wildcard")

    @property
    def rfc5780(self) -> bool:
        return self.alt_ip is not None

    def sockets(self) -> list[Address]:
        """Every local address STUN is answered on; the first is the main (control) one."""
        ips = [self.ip] + ([self.alt_ip] if self.alt_ip else [])
        return [(ip, port) for ip in ips for port in (self.port, self.alt_port)]

    def changed(self, local: Address, flags: int) -> Address:
        """The local address an answer leaves from for CHANGE-REQUEST ``flags`` (RFC 5780 §7.2)."""
        ip, port = local
        if flags & stun.CHANGE_IP:
            ip = self.alt_ip if ip == self.ip else self.ip  # type: ignore[assignment]
        if flags & stun.CHANGE_PORT:
            port = self.alt_port if port == self.port else self.port
        return ip, port

    def other(self, local: Address) -> Address:
        """OTHER-ADDRESS (CHANGED-ADDRESS) for a request that arrived at ``local``: the alternate IP and
        the other port, wherever the request came in, as coturn names it.

        For a request to the main IP this is RFC 5780 §7.4's source of a change-IP-and-port answer, and
        the only answer stuntman's client, ``stun``, pystun3 and ``--discover-nat`` read it from;
        ``turnutils_natdiscovery`` re-reads it from its test II answer, which came in on the alternate
        IP, and aims test III there, which §4.3 defines as the alternate address and port: naming the
        main IP there would send test III back to it and call an address-dependent mapping
        address-and-port-dependent.
        """
        return self.alt_ip, self.changed(local, stun.CHANGE_PORT)[1]  # type: ignore[return-value]


@dataclass(frozen=True)
class Reply:
    """An answer, the local address to send it from and where to; ``counters`` name the server counters it adds to."""

    data: bytes
    via: Address
    to: Address
    counters: tuple[str, ...]


def answer(data: bytes, source: Address, local: Address, addrs: StunAddresses) -> Reply | None:
    """Answer one STUN datagram that arrived at ``local`` from ``source``; None: no answer is due.

    Indications, responses and methods other than Binding get no answer (they are counted by the
    caller as ignored).

    Raises:
        RemoteProtocolError: the datagram is not a well-formed STUN message (or its FINGERPRINT is
            wrong, or its RESPONSE-PORT is 0).
    """
    request = stun.parse(data)
    if not stun.is_binding_request(request):
        return None
    to = source
    if "RESPONSE-PORT" in request.attributes:
        to = (source[0], request.attributes["RESPONSE-PORT"] >> 16)
        if not to[1]:
            raise RemoteProtocolError("STUN RESPONSE-PORT is 0")
    fingerprint = "FINGERPRINT" in request.attributes
    unknown = request.unknown_required + [stun.BY_NAME[name][0] for name in REFUSED if name in request.attributes]
    flags = request.attributes.get("CHANGE-REQUEST", 0) & (stun.CHANGE_IP | stun.CHANGE_PORT)
    if flags and not addrs.rfc5780:
        unknown.append(stun.BY_NAME["CHANGE-REQUEST"][0])
    if unknown:
        return Reply(_unknown_attributes(request, unknown).encode(fingerprint), local, source, ("stun_420",))
    via = addrs.changed(local, flags)
    reply = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, request.transaction_id, {}, request.cookie)
    if request.classic:
        reply.attributes["MAPPED-ADDRESS"] = source
        if addrs.rfc5780:
            reply.attributes["SOURCE-ADDRESS"] = via
            reply.attributes["CHANGED-ADDRESS"] = addrs.other(local)
    else:
        reply.attributes["XOR-MAPPED-ADDRESS"] = source
        if addrs.rfc5780:
            reply.attributes["RESPONSE-ORIGIN"] = via
            reply.attributes["OTHER-ADDRESS"] = addrs.other(local)
    if "PADDING" in request.attributes:
        reply.attributes["PADDING"] = bytes(len(request.attributes["PADDING"]))
    counters = ("stun_binding",) + (("stun_classic",) if request.classic else ()) + (("stun_changed",) if flags else ())
    return Reply(reply.encode(fingerprint), via, to, counters)


def _unknown_attributes(request: stun.Message, types: list[int]) -> stun.Message:
    """420 with UNKNOWN-ATTRIBUTES (RFC 8489 §14.9); RFC 3489 §11.2.9 pads an odd list by repeating one."""
    if request.classic and len(types) % 2:
        types = types + types[-1:]
    return stun.Message(stun.Method.BINDING, stun.Class.ERROR, request.transaction_id,
                        {"ERROR-CODE": UNKNOWN_ATTRIBUTE, "UNKNOWN-ATTRIBUTES": types}, request.cookie)

