"""Secrets of the control channel, sans-IO: login keys, message MACs, UDP cookies and replay windows.

* A **cookie** proves return routability before the server keeps any state for a UDP login, as
  DTLS's HelloVerifyRequest (RFC 6347 §4.2.1) and QUIC's Retry (RFC 9000 §8.1) do: it is an HMAC of
  the source address and the time under a server secret, so the server remembers nothing until the
  client echoes it from the same address.
* A **login key** (a random secret in ``login_ok``) authenticates every later control message in both
  directions with an HMAC, as STUN's MESSAGE-INTEGRITY does (RFC 8489 §14.5).  The direction is part
  of the MAC, so a message cannot be reflected back to its sender.
* A **replay window** accepts each message number once and none that is too old (RFC 4303 §3.4.3);
  it is consulted only after the MAC checked out, so a forged number cannot poison it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import struct
from typing import Any

from dp2pt.proto import messages

KEY_BYTES = 16
MAC_BYTES = 16
COOKIE_LIFETIME = 30.0  # seconds a cookie stays valid
UDP_LOGIN_SIZE = 128  # a UDP login without cookie is padded to this size, so the cookie answer is no larger
REPLAY_WINDOW = 512  # message numbers remembered behind the highest seen

TO_SERVER = b"p2s"  # direction labels mixed into the MAC
TO_PEER = b"s2p"

_HEX_KEY = re.compile(rf"[0-9a-f]{{{2 * KEY_BYTES}}}")
_HEX_MAC = re.compile(rf"[0-9a-f]{{{2 * MAC_BYTES}}}")
_COOKIE = re.compile(r"[0-9a-f]{8}" + rf"[0-9a-f]{{{2 * MAC_BYTES}}}")


def new_key() -> str:
    """A fresh random secret, hex (login keys and session keys)."""
    return secrets.token_hex(KEY_BYTES)


def key_bytes(text: Any) -> bytes | None:
    """The bytes of a hex key as it travels in a message, or None if it is not one."""
    return bytes.fromhex(text) if isinstance(text, str) and _HEX_KEY.fullmatch(text) else None


def mac(key: bytes, direction: bytes, msg: dict[str, Any]) -> str:
    """The MAC of a control message (every field but ``mac``, in canonical JSON)."""
    body = {k: v for k, v in msg.items() if k != "mac"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, direction + canonical, hashlib.sha256).hexdigest()[: 2 * MAC_BYTES]


def sign(key: bytes, direction: bytes, msg: dict[str, Any]) -> dict[str, Any]:
    """``msg`` with its MAC added."""
    return {**msg, "mac": mac(key, direction, msg)}


def verify(key: bytes, direction: bytes, msg: dict[str, Any]) -> bool:
    """Whether ``msg`` carries a well-formed MAC that matches."""
    given = msg.get("mac")
    if not isinstance(given, str) or not _HEX_MAC.fullmatch(given):
        return False
    return hmac.compare_digest(given.encode(), mac(key, direction, msg).encode())


def padded_login(msg: dict[str, Any]) -> bytes:
    """A UDP login without cookie, padded to :data:`UDP_LOGIN_SIZE` (as QUIC pads its Initial packets)."""
    data = messages.encode(msg)
    if len(data) < UDP_LOGIN_SIZE:
        data = messages.encode({**msg, "pad": "0" * (UDP_LOGIN_SIZE - len(data) - len(',"pad":""'))})
    return data


class Cookies:
    """Stateless cookies for UDP logins: ``issue`` to an address, ``valid`` when it comes back from there."""

    def __init__(self, secret: bytes | None = None, lifetime: float = COOKIE_LIFETIME) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self.lifetime = lifetime

    def issue(self, addr: tuple[str, int], now: float) -> str:
        stamp = struct.pack("!I", int(now) & 0xFFFFFFFF)
        return stamp.hex() + self._tag(addr, stamp)

    def valid(self, cookie: Any, addr: tuple[str, int], now: float) -> bool:
        if not isinstance(cookie, str) or not _COOKIE.fullmatch(cookie):
            return False
        stamp = bytes.fromhex(cookie[:8])
        age = int(now) - struct.unpack("!I", stamp)[0]
        if not 0 <= age <= self.lifetime:
            return False
        return hmac.compare_digest(cookie[8:].encode(), self._tag(addr, stamp).encode())

    def _tag(self, addr: tuple[str, int], stamp: bytes) -> str:
        who = f"{addr[0]}|{addr[1]}|".encode() + stamp
        return hmac.new(self._secret, who, hashlib.sha256).hexdigest()[: 2 * MAC_BYTES]


class ReplayWindow:
    """Each message number once; numbers more than ``size`` behind the highest are refused."""

    NEW, DUPLICATE, TOO_OLD = "new", "duplicate", "too-old"

    def __init__(self, size: int = REPLAY_WINDOW) -> None:
        self.size = size
        self.highest = 0
        self._seen: set[int] = set()

    def check(self, n: int) -> str:
        """Classify ``n`` and remember it if new."""
        if n <= self.highest - self.size or n < 1:
            return self.TOO_OLD
        if n in self._seen:
            return self.DUPLICATE
        self._seen.add(n)
        if n > self.highest:
            self.highest = n
            floor = n - self.size
            if len(self._seen) > 2 * self.size:
                self._seen = {m for m in self._seen if m > floor}
        return self.NEW
