"""Control messages between peers and location servers (login and testing-NAT procedures).

A message is one JSON object with a ``type``; the table :data:`MESSAGES` says which fields each type
carries (after aioice's attribute table: adding a message is a row), :data:`OPTIONAL` the type of the
fields any message may carry.  Over TCP a message is one line; over UDP it is one datagram.  After
login every message carries ``n`` (its number) and ``mac`` (:mod:`dp2pt.proto.link`).  :func:`decode`
checks size, nesting depth, syntax and every field before the message is trusted, and raises
:class:`RemoteProtocolError` naming what is wrong.
"""

from __future__ import annotations

import json
from typing import Any

from dp2pt.errors import LocalProtocolError, RemoteProtocolError

#: Largest control message accepted, in bytes (a report is ~200 bytes; anything this big is an attack).
MAX_MESSAGE_SIZE = 4096
#: Deepest nesting of objects and lists accepted (``deliver`` of a ``login_ok`` is 4); checked before parsing,
#: so a deeply nested message is refused without recursing into it.
MAX_DEPTH = 8

VARIANTS = ("basic", "simplified", "improved")

_STR, _INT, _BOOL, _LIST, _DICT = str, int, bool, list, dict

#: type -> {field: python type}; every listed field is required, others are ignored.
MESSAGES: dict[str, dict[str, type]] = {
    # Login procedure (spec steps 1-2).  Over UDP the first login is answered by a ``cookie`` only
    # (return routability, :mod:`dp2pt.proto.auth`); the login that echoes it gets ``login_ok``, whose
    # ``key`` authenticates every later message of this login, both ways.
    "login": {"id": _STR},
    "cookie": {"cookie": _STR},
    "login_ok": {"key": _STR, "server": _STR, "stun": _LIST},
    "ping": {},
    "pong": {},
    "error": {"code": _STR, "message": _STR},
    # A peer asks for a direct path to another peer id; the server pairs them and drives the rest.
    # ``session`` carries the session key that tags the pair's direct datagrams (dp2pt.proto.datagram).
    "connect": {"target": _STR, "variant": _STR, "k": _INT, "schedule": _STR},
    "session": {"session": _STR, "role": _STR, "peer": _STR, "variant": _STR, "k": _INT, "schedule": _STR,
                "key": _STR},
    # Consent: A answers its ``session`` with its report (step 7: consent) or with ``decline``.
    "decline": {"session": _STR},
    # Testing NAT procedure: step 7 / 13 (report) and step 8 / 14 (relay to the other peer).
    "report": {"session": _STR, "ip": _STR, "port": _INT, "delta": _INT},
    "peer_report": {"session": _STR, "ip": _STR, "port": _INT, "delta": _INT, "step": _INT},
    # Direct transmission procedure: the server tells B to punch first (step 15), then A (step 16).
    "punch": {"session": _STR, "step": _INT},
    "punched": {"session": _STR},
    "result": {"session": _STR, "ok": _BOOL},
    # Reliable delivery over UDP control (see dp2pt.proto.link).
    "ack": {"n": _INT},
    # Federation of location servers (FIG. 4): lookups, delivery to a peer, and reports upstream.
    "hello": {"server": _STR},
    "lookup": {"q": _INT, "id": _STR},
    "lookup_result": {"q": _INT, "id": _STR, "found": _BOOL},
    "deliver": {"to": _STR, "msg": _DICT},
    "upstream": {"from": _STR, "msg": _DICT},
}

#: Fields any message may carry; when present they must have this type.
OPTIONAL: dict[str, type] = {
    "n": _INT,  # the sender's message number (after login)
    "mac": _STR,  # the message's authentication code (after login)
    "nonce": _STR,  # the login's random number, echoed by cookie, login_ok and a login error
    "cookie": _STR,  # a login over UDP echoes the server's cookie
    "pad": _STR,  # a UDP login without cookie is padded to be no smaller than its answer
    "allow": _LIST,  # login: the ids that may connect to this peer (listen --allow)
    "from": _STR,  # lookup: who asks (the target's server checks its allow list)
    "session": _STR,  # error: the session it concerns
    "mapping": _STR,  # report, peer_report: the reporter's NAT mapping behaviour (--discover-nat, RFC 5780)
    "order": _STR,  # connect, session: "parallel" when both peers test their NATs at once (--order)
    "reason": _STR,  # decline: "busy" when A's server declined for A (too many sessions), as a local cap says
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
        RemoteProtocolError: oversized, too deep, not JSON, not an object, unknown type, or a bad field.
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise RemoteProtocolError(f"control message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    if too_deep(data):
        raise RemoteProtocolError(f"control message nests deeper than {MAX_DEPTH}")
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


def too_deep(data: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether brackets outside strings nest deeper than ``limit``: json would recurse that deep, and
    raise RecursionError past Python's recursion limit, so JSON from a remote is checked before parsing."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    depth, in_string, escaped = 0, False, False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return False


def _is(value: Any, kind: type) -> bool:
    # bool is an int in Python; a field declared int must not accept true/false.
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _problem(msg: dict[str, Any]) -> str | None:
    type_ = msg.get("type")
    fields = MESSAGES.get(type_) if isinstance(type_, str) else None
    if fields is None:
        return f"unknown control message type {_clip(type_)!r}"
    for name, kind in fields.items():
        if not _is(msg.get(name), kind):
            return f"{type_} message: field {name!r} missing or not {kind.__name__}"
    for name, kind in OPTIONAL.items():
        if name in msg and name not in fields and not _is(msg[name], kind):
            return f"{type_} message: field {name!r} is not {kind.__name__}"
    return None


def _clip(value: Any, limit: int = 40) -> Any:
    """A remote's value short enough to quote in an error."""
    return value[:limit] + "..." if isinstance(value, str) and len(value) > limit else value
