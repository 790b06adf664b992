"""The lab's signalling channel: a rendezvous where the two agents of a cell swap what they need.

ICE needs a signalling channel to exchange candidates (RFC 8445 §5.3 leaves it to the
application); so does any user's program. The lab runs this one on its server node, reachable from
both LANs through their NATs. It is a key-value store with a blocking read, spoken in text lines
over TCP, so a program in any language (or ``nc``) can use it in a few lines:

    PUT <key> <value>        ->  OK
    GET <key> [<seconds>]    ->  VALUE <value>   (waits until the key is set)   |  TIMEOUT
    anything else            ->  ERR <reason>    (the connection stays usable)

Why not Redis (which the location servers' directory uses): a user's program, or image, would need
a client library; these two verbs need a socket. A key is 1-200 printable characters without
spaces; a value is one line of at most
:data:`MAX_VALUE` bytes (JSON fits). A key set twice keeps the last value. Prefix keys with
``LAB_SESSION`` (:mod:`lab.agents.contract`) so runs never see each other's values.

Bounded like every server facing a network: :data:`MAX_KEYS` keys (the oldest is forgotten
first), :data:`MAX_CONNECTIONS` connections, :data:`MAX_LINE` bytes per line, :data:`MAX_WAIT`
seconds per GET, :data:`IDLE_TIMEOUT` seconds of silence per connection. A bad line is answered
with ``ERR`` and never takes the server down. It answers only the size of what it was sent or
stored, and stores nothing that decides who may do what: it is a meeting point, not an
authority (the agents authenticate each other, e.g. ICE's short-term credentials).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections import OrderedDict

DEFAULT_PORT = 7010
MAX_KEYS = 4096
MAX_VALUE = 16 * 1024
MAX_LINE = MAX_VALUE + 256
MAX_CONNECTIONS = 256
MAX_WAIT = 60.0
DEFAULT_WAIT = 10.0
IDLE_TIMEOUT = 60.0
_KEY = re.compile(r"^[!-~]{1,200}$")


class RendezvousError(Exception):
    """The rendezvous refused a request, timed out, or could not be reached (one line)."""


class Store:
    """Keys -> values with waiters; pure asyncio, no I/O (the server and tests drive it)."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self.values: OrderedDict[str, str] = OrderedDict()
        self.events: dict[str, asyncio.Event] = {}
        self.max_keys = max_keys

    def put(self, key: str, value: str) -> None:
        self.values.pop(key, None)
        self.values[key] = value
        while len(self.values) > self.max_keys:
            old, _ = self.values.popitem(last=False)
            self.events.pop(old, None)
        event = self.events.pop(key, None)
        if event:
            event.set()

    async def get(self, key: str, wait: float) -> str | None:
        if key in self.values:
            return self.values[key]
        event = self.events.setdefault(key, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), wait)
        except asyncio.TimeoutError:
            if self.events.get(key) is event and not event.is_set():
                del self.events[key]
            return None
        return self.values.get(key)


def parse_request(line: str) -> tuple[str, str, str | float]:
    """``"PUT k v"`` -> ("PUT", k, v); ``"GET k 5"`` -> ("GET", k, 5.0).

    Raises:
        ValueError: with the sentence the client gets after ``ERR``.
    """
    verb, _, rest = line.partition(" ")
    if verb == "PUT":
        key, sep, value = rest.partition(" ")
        if not sep:
            raise ValueError("PUT needs a key and a value")
        _check_key(key)
        if len(value.encode()) > MAX_VALUE:
            raise ValueError(f"value longer than {MAX_VALUE} bytes")
        return verb, key, value
    if verb == "GET":
        key, _, wait = rest.partition(" ")
        _check_key(key)
        try:
            seconds = float(wait) if wait else DEFAULT_WAIT
        except ValueError:
            raise ValueError(f"GET wait must be a number of seconds, not {wait!r}") from None
        if not 0 <= seconds <= MAX_WAIT:
            raise ValueError(f"GET wait must be 0..{MAX_WAIT:g} seconds")
        return verb, key, seconds
    raise ValueError(f"unknown command {verb[:20]!r} (PUT or GET)")


def _check_key(key: str) -> None:
    if not _KEY.match(key):
        raise ValueError("a key is 1-200 printable characters without spaces")


class Server:
    """The rendezvous over TCP: one :class:`Store`, line requests, bounded as the docstring says."""

    def __init__(self, store: Store | None = None) -> None:
        self.store = store or Store()
        self.connections = 0
        self.stats = {"put": 0, "get": 0, "timeout": 0, "error": 0, "refused": 0}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.connections >= MAX_CONNECTIONS:
            self.stats["refused"] += 1
            writer.close()
            return
        self.connections += 1
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT)
                except (asyncio.TimeoutError, ValueError, ConnectionError):
                    return  # idle, a line over the stream limit, or the peer went away
                if not raw:
                    return
                writer.write((await self._answer(raw)).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            return
        finally:
            self.connections -= 1
            writer.close()

    async def _answer(self, raw: bytes) -> str:
        try:
            verb, key, arg = parse_request(raw.decode("utf-8").rstrip("\r\n"))
        except UnicodeDecodeError:
            self.stats["error"] += 1
            return "ERR not UTF-8"
        except ValueError as exc:
            self.stats["error"] += 1
            return f"ERR {exc}"
        self.stats[verb.lower()] += 1
        if verb == "PUT":
            self.store.put(key, arg)
            return "OK"
        value = await self.store.get(key, arg)
        if value is None:
            self.stats["timeout"] += 1
            return "TIMEOUT"
        return f"VALUE {value}"

    async def serve(self, host: str, port: int, ready=None) -> None:
        server = await asyncio.start_server(self.handle, host, port, limit=MAX_LINE)
        bound = server.sockets[0].getsockname()[:2]
        print(json.dumps({"event": "ready", "rendezvous": list(bound)}), flush=True)
        if ready:
            ready(bound)
        async with server:
            await server.serve_forever()


class Client:
    """An asyncio client (what :mod:`lab.agents.ice` uses); one TCP connection, requests in turn."""

    def __init__(self, address: tuple[str, int], connect_timeout: float = 5.0) -> None:
        self.address = address
        self.connect_timeout = connect_timeout
        self._rw: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def _request(self, line: str, timeout: float) -> str:
        if self._rw is None:
            try:
                self._rw = await asyncio.wait_for(asyncio.open_connection(*self.address, limit=MAX_LINE),
                                                  self.connect_timeout)
            except (OSError, asyncio.TimeoutError) as exc:
                raise RendezvousError(f"rendezvous {self.address[0]}:{self.address[1]} unreachable: "
                                      f"{exc or type(exc).__name__}") from None
        reader, writer = self._rw
        writer.write(line.encode() + b"\n")
        try:
            await writer.drain()
            answer = await asyncio.wait_for(reader.readline(), timeout)
        except (OSError, asyncio.TimeoutError):
            raise RendezvousError("rendezvous did not answer") from None
        answer = answer.decode("utf-8", "replace").rstrip("\r\n")
        if answer.startswith("ERR "):
            raise RendezvousError(f"rendezvous refused: {answer[4:]}")
        return answer

    async def put(self, key: str, value: str) -> None:
        if "\n" in value:
            raise RendezvousError("a rendezvous value is one line")
        await self._request(f"PUT {key} {value}", 5.0)

    async def get(self, key: str, wait: float) -> str:
        """The value of ``key``, waiting up to ``wait`` seconds for it to be set."""
        answer = await self._request(f"GET {key} {min(wait, MAX_WAIT):.3f}", wait + 5.0)
        if answer == "TIMEOUT":
            raise RendezvousError(f"nothing under {key!r} within {wait:g} s (did the other peer start?)")
        if not answer.startswith("VALUE "):
            raise RendezvousError(f"unexpected rendezvous answer {answer[:60]!r}")
        return answer[len("VALUE "):]

    async def close(self) -> None:
        if self._rw:
            self._rw[1].close()
            self._rw = None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m lab.agents.rendezvous",
                                description="the lab's signalling rendezvous (PUT/GET text lines over TCP)")
    p.add_argument("--listen", default=f"0.0.0.0:{DEFAULT_PORT}", help=f"HOST:PORT (default 0.0.0.0:{DEFAULT_PORT})")
    args = p.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        print(f"rendezvous: error: --listen must be HOST:PORT, not {args.listen!r}", file=sys.stderr)
        return 2
    server = Server()
    try:
        asyncio.run(server.serve(host, int(port)))
    except OSError as exc:
        print(f"rendezvous: error: cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
