"""STUN Binding (RFC 8489) for the testing-NAT probes (spec steps 3-6, 9-12), on aioice's codec.

Using STUN for the probes means any STUN client can query a dp2pt location server, and a dp2pt
peer can test its NAT against any STUN server (e.g. coturn).
"""

from __future__ import annotations

import struct

from aioice import stun

from dp2pt.errors import RemoteProtocolError

HEADER_LENGTH = stun.HEADER_LENGTH


def is_stun(data: bytes) -> bool:
    """Cheap demultiplexing test (RFC 8489 §6): top two bits zero and the magic cookie in place."""
    return len(data) >= HEADER_LENGTH and data[0] < 0x40 and struct.unpack_from("!I", data, 4)[0] == stun.COOKIE


def binding_request() -> stun.Message:
    """A fresh Binding request with a random transaction id."""
    return stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)


def parse(data: bytes) -> stun.Message:
    """Parse a STUN message.

    Raises:
        RemoteProtocolError: the bytes are not a well-formed STUN message.
    """
    try:
        return stun.parse_message(data)
    except Exception as exc:  # aioice raises ValueError, struct.error, etc. on bad input
        raise RemoteProtocolError(f"malformed STUN message: {exc}") from None


def is_binding_request(message: stun.Message) -> bool:
    return message.message_method == stun.Method.BINDING and message.message_class == stun.Class.REQUEST


def is_binding_response(message: stun.Message) -> bool:
    return message.message_method == stun.Method.BINDING and message.message_class == stun.Class.RESPONSE


def binding_response(request: stun.Message, source: tuple[str, int], software: str = "dp2pt") -> bytes:
    """Answer a Binding request with the source address it came from (XOR-MAPPED-ADDRESS, RFC 8489 §14.2)."""
    response = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=stun.Class.RESPONSE,
        transaction_id=request.transaction_id,
    )
    response.attributes["XOR-MAPPED-ADDRESS"] = (source[0], source[1])
    response.attributes["SOFTWARE"] = software
    response.add_fingerprint()
    return bytes(response)


def mapped_address(response: stun.Message) -> tuple[str, int]:
    """The reflexive address of a Binding response (XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS).

    Raises:
        RemoteProtocolError: the response carries neither attribute.
    """
    for name in ("XOR-MAPPED-ADDRESS", "MAPPED-ADDRESS"):
        if name in response.attributes:
            host, port = response.attributes[name]
            return str(host), int(port)
    raise RemoteProtocolError("STUN Binding response carries no mapped address")


def other_address(response: stun.Message) -> tuple[str, int] | None:
    """The server's alternate address (RFC 5780 §7.4 OTHER-ADDRESS), if it advertises one."""
    value = response.attributes.get("OTHER-ADDRESS")
    return (str(value[0]), int(value[1])) if value else None
