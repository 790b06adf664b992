"""Control messages between peers and location servers (login and testing-NAT procedures).

A message is one JSON object with a ``type``; the table :data:`MESSAGES` says which fields each type
carries (after aioice's attribute table: adding a message is a row).  Over TCP a message is one line;
over UDP it is one datagram.  :func:`decode` checks size, syntax and every field before the message is
trusted, and raises :class:`RemoteProtocolError` naming what is wrong.
"""

from __future__ import annotations

import json
from typing import Any

from dp2pt.errors import LocalProtocolError, RemoteProtocolError

#: Largest control message accepted, in bytes (a report is ~200 bytes; anything this big is an attack).
MAX_MESSAGE_SIZE = 4096

VARIANTS = ("basic", "simplified", "improved")

_STR, _INT, _BOOL, _LIST, _DICT = str, int, bool, list, dict

#: type -> {field: python type}; every listed field is required, others are ignored.
MESSAGES: dict[str, dict[str, type]] = {
    # Login procedure (spec steps 1-2).
    "login": {"id": _STR},
    "login_ok": {"token": _STR, "server": _STR, "stun": _LIST},
    "ping": {"token": _STR},
    "pong": {},
    "error": {"code": _STR, "message": _STR},
    # A peer asks for a direct path to another peer id; the server pairs them and drives the rest.
    "connect": {"token": _STR, "target": _STR, "variant": _STR, "k": _INT, "schedule": _STR},
    "session": {"session": _STR, "role": _STR, "peer": _STR, "variant": _STR, "k": _INT, "schedule": _STR},
    # Testing NAT procedure: step 7 / 13 (report) and step 8 / 14 (relay to the other peer).
    "report": {"token": _STR, "session": _STR, "ip": _STR, "port": _INT, "delta": _INT},
    "peer_report": {"session": _STR, "ip": _STR, "port": _INT, "delta": _INT, "step": _INT},
    # Direct transmission procedure: the server tells B to punch first (step 15), then A (step 16).
    "punch": {"session": _STR, "step": _INT},
    "punched": {"token": _STR, "session": _STR},
    "result": {"token": _STR, "session": _STR, "ok": _BOOL},
    # Reliable delivery over UDP control (see dp2pt.proto.reliable).
    "ack": {"n": _INT},
    # Federation of location servers (FIG. 4): lookups, delivery to a peer, and reports upstream.
    "hello": {"server": _STR},
    "lookup": {"q": _INT, "id": _STR},
    "lookup_result": {"q": _INT, "id": _STR, "found": _BOOL},
    "deliver": {"to": _STR, "msg": _DICT},
    "upstream": {"from": _STR, "msg": _DICT},
}


def make(type_: str, **fields: Any) -> dict[str, Any]:
    """Build a message, checking it against the table.

    Raises:
        LocalProtocolError: unknown type or a required field missing or of the wrong type.
    """
    msg = {"type": type_, **fields}
    problem = _problem(msg)
    if problem:
        raise LocalProtocolError(problem)
    return msg


def encode(msg: dict[str, Any]) -> bytes:
    """One message as compact JSON bytes (no newline)."""
    data = json.dumps(msg, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE_SIZE:
        raise LocalProtocolError(f"{msg.get('type')} message is {len(data)} bytes, limit {MAX_MESSAGE_SIZE}")
    return data


def decode(data: bytes) -> dict[str, Any]:
    """Parse and validate one message.

    Raises:
        RemoteProtocolError: oversized, not JSON, not an object, unknown type, or a bad field.
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise RemoteProtocolError(f"control message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    try:
        msg = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise RemoteProtocolError("control message is not valid JSON") from None
    if not isinstance(msg, dict):
        raise RemoteProtocolError("control message is not a JSON object")
    problem = _problem(msg)
    if problem:
        raise RemoteProtocolError(problem)
    return msg


def _problem(msg: dict[str, Any]) -> str | None:
    type_ = msg.get("type")
    fields = MESSAGES.get(type_) if isinstance(type_, str) else None
    if fields is None:
        return f"unknown control message type {type_!r}"
    for name, kind in fields.items():
        value = msg.get(name)
        # bool is an int in Python; a field declared int must not accept true/false.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"{type_} message: field {name!r} missing or not {kind.__name__}"
    if "n" in msg and (not isinstance(msg["n"], int) or isinstance(msg["n"], bool)):
        return f"{type_} message: field 'n' is not int"
    return None
