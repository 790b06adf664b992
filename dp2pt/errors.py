"""Typed errors, split by who is at fault (after h11).

Every error a user can cause is a :class:`Dp2ptError`; the CLI prints its message on one line
and exits non-zero, never a traceback. What no user should be able to cause (a bug met by some
input) is counted and logged on one line by :func:`internal_error`, and the server carries on.
"""

from __future__ import annotations

import logging
from collections import Counter


class Dp2ptError(Exception):
    """Base of every error dp2pt raises on purpose."""

    exit_code = 1


class ConfigError(Dp2ptError):
    """The caller gave arguments that cannot work (bad address, unknown variant, k < 1)."""

    exit_code = 2


class LocalProtocolError(Dp2ptError):
    """This side tried to do something the protocol does not allow in its current state."""


class RemoteProtocolError(Dp2ptError):
    """The other side sent something malformed or out of place; raised only on receive paths."""


class ServerUnreachable(Dp2ptError):
    """The location server did not answer the login (spec steps 1-2)."""

    exit_code = 3


class LoginRefused(ServerUnreachable):
    """The location server answered the login with an error (id in use, too many logins, bad id)."""


class ServerLost(ServerUnreachable):
    """A location server a session depended on (ours or the other peer's) went away during it."""


class DirectoryUnavailable(Dp2ptError):
    """The shared directory (Redis) of a location server did not answer at start."""

    exit_code = 3


class UnknownPeer(Dp2ptError):
    """The location server (or its federation) knows no peer with that id."""

    exit_code = 4


class TraversalTimeout(Dp2ptError):
    """A wait of the testing-NAT or direct-transmission procedure ran out."""

    exit_code = 5


class TraversalFailed(Dp2ptError):
    """The direct path could not be established (no punch datagram arrived in time)."""

    exit_code = 6


class TransactionTimeout(Dp2ptError):
    """A request was retransmitted the maximum number of times without an answer (RFC 8489 §6.2.1)."""


def one_line(exc: BaseException) -> str:
    """``Type: text`` of an exception, for a log line or a user's error (never a traceback)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def internal_error(stats: Counter[str], log: logging.Logger, where: str, exc: BaseException) -> None:
    """A bug met by some input: counted (``internal_errors``) and logged on one line."""
    stats["internal_errors"] += 1
    log.error("internal error on %s: %s", where, one_line(exc))
