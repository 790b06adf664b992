"""The shared directory of location servers (``dp2pt server --directory redis://...``), sans-IO.

Theory of operation.  Servers that share a directory know each other by name only.  Redis holds:

    dp2pt:server:NAME   -> the server's instance id       heartbeat, expires after SERVER_TTL
    dp2pt:peer:ID       -> "NAME INSTANCE" of its server  set at login, refreshed, expires after ENTRY_TTL
    dp2pt:inbox:NAME    a sharded pub/sub channel (SPUBLISH/SSUBSCRIBE) carrying the FIG. 4 messages
                        for server NAME: lookup, lookup_result, deliver (13-1) and upstream (7-1)

A peer id belongs to the server its entry names while that server's heartbeat still shows the same
instance; a dead server's peers may log in elsewhere as soon as its heartbeat lapses.  Every command
touches one key or one channel, so Redis Cluster needs no hash tags and no cross-slot command.

Everything a server accepts from another one through Redis is *sealed* (:class:`Sealer`): encrypted
and authenticated with ChaCha20-Poly1305 (RFC 8439) under a key derived from a secret all servers
share, with the sender, its instance, the recipient, the time and a fresh nonce bound in as associated
data.  So whoever can read or write Redis without the secret learns only who talks to whom, cannot
forge or alter a lookup answer, a session (with its key), a report or a punch order, and cannot
replay one: a server opens an envelope only if it is addressed to it, at most MAX_AGE seconds old
(servers' clocks must agree that well) and its nonce is new.  The directory entries themselves are
not sealed: a forged entry only misroutes a lookup, which the sealed answer then refuses.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from typing import Any

from dp2pt.errors import ConfigError, RemoteProtocolError
from dp2pt.proto import messages

PREFIX = "dp2pt"
HEARTBEAT = 1.0  # seconds between a server's heartbeats ...
SERVER_TTL = 3.0  # ... which expire after this: a dead server's peers may log in elsewhere then
ENTRY_TTL = 60.0  # seconds a peer's entry lives unless its server refreshes it ...
REFRESH = ENTRY_TTL / 3  # ... which it does this often
MAX_AGE = 30.0  # seconds an envelope stays valid (and its nonce remembered): the clock skew allowed
MIN_SECRET = 16  # bytes of shared secret, at least
MAX_NAME = 64  # characters of a server name
MAX_ENVELOPE = 2 * messages.MAX_MESSAGE_SIZE
ENVELOPE_DEPTH = 2  # {"h": {header}, "c": ciphertext}: anything deeper is refused before parsing
NONCE_BYTES = 12
_INFO = b"dp2pt directory envelope v1"

Msg = dict[str, Any]


def server_key(name: str) -> str:
    return f"{PREFIX}:server:{name}"


def peer_key(peer: str) -> str:
    return f"{PREFIX}:peer:{peer}"


def inbox(name: str) -> str:
    return f"{PREFIX}:inbox:{name}"


def entry(name: str, instance: str) -> str:
    """A peer's directory entry: its server's name and instance."""
    return f"{name} {instance}"


def parse_entry(value: str | bytes | None) -> tuple[str, str] | None:
    """(server name, instance) of an entry, or None if absent or malformed."""
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if not value:
        return None
    name, sep, instance = value.rpartition(" ")
    return (name, instance) if sep and name and instance else None


def new_instance() -> str:
    """A server process's instance id: tells a restarted server from the one that held its name."""
    return secrets.token_hex(8)


def check_name(name: str) -> str:
    """A server name usable in keys and channels (printable, no spaces, at most MAX_NAME).

    Raises:
        ConfigError: it is not.
    """
    if not name or len(name) > MAX_NAME or not name.isprintable() or " " in name:
        raise ConfigError(f"server name {name!r}: use 1-{MAX_NAME} printable characters without spaces")
    return name


def load_secret(data: bytes, where: str) -> bytes:
    """The directory secret from a file's bytes or an environment variable (surrounding whitespace dropped).

    Raises:
        ConfigError: shorter than MIN_SECRET bytes.
    """
    secret = data.strip()
    if len(secret) < MIN_SECRET:
        raise ConfigError(f"directory secret from {where} has {len(secret)} bytes; give at least {MIN_SECRET} "
                          f"(e.g. head -c 32 /dev/urandom | base64 > FILE), the same on every server")
    return secret


class Sealer:
    """Seals messages from this server and opens those addressed to it (one per server process)."""

    def __init__(self, secret: bytes, name: str, instance: str) -> None:
        try:
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
            from cryptography.hazmat.primitives.kdf.hkdf import HKDF
        except ImportError:
            raise ConfigError("--directory needs the cryptography package: pip install 'dp2pt[directory]'") from None
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret)
        self._aead = ChaCha20Poly1305(key)
        self.name = name
        self.instance = instance
        self._seen: dict[bytes, float] = {}  # nonce -> time it was sealed
        self._pruned = 0.0

    def seal(self, to: str, body: Msg, now: float) -> bytes:
        """``body`` (a FIG. 4 message) as an envelope for server ``to``."""
        nonce = os.urandom(NONCE_BYTES)
        header = {"from": self.name, "inst": self.instance, "to": to, "t": round(now, 3),
                  "nonce": nonce.hex()}
        sealed = self._aead.encrypt(nonce, messages.encode(body), _canonical(header))
        return json.dumps({"h": header, "c": base64.b64encode(sealed).decode()}, separators=(",", ":")).encode()

    def open(self, data: bytes, now: float) -> tuple[str, str, Msg]:
        """(sender name, sender instance, message) of an envelope addressed to us.

        Raises:
            RemoteProtocolError: malformed (too large, too deep, not JSON), not for us, not authentic,
                too old or from the future, replayed, or its message is not a valid control message.
        """
        if len(data) > MAX_ENVELOPE:
            raise RemoteProtocolError(f"envelope of {len(data)} bytes exceeds {MAX_ENVELOPE}")
        if messages.too_deep(data, ENVELOPE_DEPTH):
            raise RemoteProtocolError(f"envelope nests deeper than {ENVELOPE_DEPTH}")
        try:
            outer = json.loads(data)
            header, sealed = outer["h"], base64.b64decode(outer["c"], validate=True)
            sender, instance, to, sent = header["from"], header["inst"], header["to"], header["t"]
            nonce = bytes.fromhex(header["nonce"])
        except (ValueError, TypeError, KeyError, binascii.Error):
            raise RemoteProtocolError("envelope is not well formed") from None
        if not (isinstance(sender, str) and isinstance(instance, str) and isinstance(to, str)
                and isinstance(sent, (int, float)) and len(nonce) == NONCE_BYTES):
            raise RemoteProtocolError("envelope header has a field of the wrong type")
        if to != self.name:
            raise RemoteProtocolError(f"envelope is for {to[:MAX_NAME]!r}, not us")
        try:
            plain = self._aead.decrypt(nonce, sealed, _canonical(header))
        except Exception:  # cryptography's InvalidTag, or a truncated ciphertext
            raise RemoteProtocolError("envelope does not authenticate (wrong secret, or altered)") from None
        if abs(now - sent) > MAX_AGE:
            raise RemoteProtocolError(f"envelope is {now - sent:.0f} s old (clocks out of step?)")
        self._prune(now)
        if nonce in self._seen:
            raise RemoteProtocolError("envelope replayed")
        self._seen[nonce] = sent
        return sender, instance, messages.decode(plain)

    def _prune(self, now: float) -> None:
        if now - self._pruned < MAX_AGE / 4:
            return
        self._pruned = now
        for nonce in [n for n, t in self._seen.items() if now - t > 2 * MAX_AGE]:
            del self._seen[nonce]


def _canonical(header: Msg) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
