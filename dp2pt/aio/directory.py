"""The shared directory on Redis: one server's heartbeat, its peers' entries, and its inbox.

What lives where and why is in :mod:`dp2pt.proto.directory`; this module moves it to and from Redis
with the ``redis`` client (``redis.asyncio``; a Redis Cluster is detected and used through
``RedisCluster``).  Messages to other servers leave in order through one sender task that batches
them in a pipeline (``SPUBLISH`` returns how many servers listen: 0 means the server is gone); the
inbox is read by one task on a plain connection to the node that owns its channel's slot, which
re-subscribes after an error or a slot move.  A Redis that does not answer never stops the server:
commands time out, are counted (``directory_errors``) and logged on one line; logins are then
granted locally and cross-server connects answer "unknown peer" until Redis is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit, urlunsplit

from dp2pt.errors import ConfigError, DirectoryUnavailable, RemoteProtocolError, internal_error, one_line
from dp2pt.proto import directory as d

log = logging.getLogger("dp2pt.directory")

COMMAND_TIMEOUT = 2.0  # seconds a Redis command may take
START_TIMEOUT = 10.0  # seconds to reach Redis at start before giving up
RETRY = (0.1, 2.0)  # first and largest wait before trying Redis again
REFRESH_BATCH = 1000  # entries refreshed per pipeline
MAX_OUTBOX = 10_000  # messages waiting for Redis; beyond, new ones are dropped (counted)
CLOSE_WAIT = 1.0  # seconds to let the tasks end at close
IN_FLIGHT = 8  # Redis commands (or pipelines) one server has in flight at once: each needs a connection

# One key each (cluster-safe): take over an entry only if it still names the server we found dead;
# delete an entry only if it is still ours.
_TAKE_OVER = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3]) end return false"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"

Msg = dict[str, Any]


def redacted(url: str) -> str:
    """``url`` without its password, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class Directory:
    """This server's side of the shared directory.

    ``on_message(sender, instance, msg)`` is called on the event loop for every envelope that opened.
    """

    def __init__(self, url: str, name: str, secret: bytes, on_message: Callable[[str, str, Msg], None],
                 stats: Counter[str], clock: Callable[[], float] = time.time) -> None:
        try:
            import redis.asyncio  # noqa: F401
        except ImportError:
            raise ConfigError("--directory needs the redis package: pip install 'dp2pt[directory]'") from None
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(f"--directory {redacted(url)!r}: give a redis:// (or rediss://, unix://) URL")
        self.url = url
        self.name = d.check_name(name)
        self.instance = d.new_instance()
        self.sealer = d.Sealer(secret, self.name, self.instance)
        self.instances: dict[str, str] = {}  # server -> the instance its last envelope came from
        self.cluster = False
        self._on_message = on_message
        self._stats = stats
        self._clock = clock
        self._client: Any = None
        self._outbox: asyncio.Queue[tuple[str, bytes, asyncio.Future[int] | None]] = asyncio.Queue(MAX_OUTBOX)
        self._tasks: list[asyncio.Task[None]] = []
        self._take_over: Any = None
        self._release: Any = None
        self._entry = d.entry(self.name, self.instance)
        self._subscribed = asyncio.Event()
        self._in_flight = asyncio.Semaphore(IN_FLIGHT)
        self._closing = False

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self, logins: Callable[[], Iterable[str]], timeout: float = START_TIMEOUT) -> None:
        """Reach Redis, subscribe to our inbox, then claim our name; keep the heartbeat and the entries fresh.

        Raises:
            DirectoryUnavailable: Redis did not answer within ``timeout``.
            ConfigError: a live server already uses our name.
        """
        from redis.exceptions import RedisError

        deadline = time.monotonic() + timeout
        delay = RETRY[0]
        while True:
            try:
                self._client = await self._connect()
                break
            except (RedisError, OSError) as exc:
                if time.monotonic() + delay > deadline:
                    raise DirectoryUnavailable(f"cannot reach the directory {redacted(self.url)}: {one_line(exc)}") from None
                await asyncio.sleep(delay)
                delay = min(2 * delay, RETRY[1])
        self._take_over = self._client.register_script(_TAKE_OVER)
        self._release = self._client.register_script(_RELEASE)
        self._tasks = [asyncio.ensure_future(self._listen()), asyncio.ensure_future(self._send_loop())]
        try:
            await asyncio.wait_for(self._subscribed.wait(), max(deadline - time.monotonic(), COMMAND_TIMEOUT))
            await self._claim_name(deadline)
        except asyncio.TimeoutError:
            await self.close()
            raise DirectoryUnavailable(f"cannot subscribe to our inbox on {redacted(self.url)}") from None
        except BaseException:
            await self.close()
            raise
        self._tasks += [asyncio.ensure_future(self._heartbeat()), asyncio.ensure_future(self._refresh(logins))]

    async def _connect(self) -> Any:
        import redis.asyncio as aioredis
        from redis.asyncio.cluster import RedisCluster

        opts = dict(socket_timeout=COMMAND_TIMEOUT, socket_connect_timeout=COMMAND_TIMEOUT)
        client = aioredis.Redis.from_url(self.url, **opts)
        try:
            info = await client.info("cluster")
        finally:
            await client.aclose()
        if info.get("cluster_enabled"):
            self.cluster = True
            cluster = RedisCluster.from_url(self.url, **opts)
            await cluster.initialize()
            return cluster
        return aioredis.Redis.from_url(self.url, **opts)

    async def _claim_name(self, deadline: float) -> None:
        """Our name is ours once no other live instance holds it (a restarted server waits for its
        predecessor's heartbeat to lapse)."""
        key = d.server_key(self.name)
        deadline = min(deadline, time.monotonic() + d.SERVER_TTL + d.HEARTBEAT)
        while True:
            if await self._client.set(key, self.instance, nx=True, px=_ms(d.SERVER_TTL)):
                return
            if time.monotonic() > deadline:
                raise ConfigError(f"server name {self.name!r} is in use by another live server of the directory; "
                                  "give each server its own --name")
            await asyncio.sleep(d.HEARTBEAT / 2)

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=CLOSE_WAIT)
        self._tasks = []
        if self._client is not None:
            try:
                await asyncio.wait_for(self._client.delete(d.server_key(self.name)), COMMAND_TIMEOUT)
            except Exception:  # going away anyway: the heartbeat lapses by itself
                pass
            await self._client.aclose()
            self._client = None

    # ---- peers -------------------------------------------------------------------------------

    async def claim(self, peer: str) -> bool:
        """Whether ``peer`` may log in here: its entry is free, ours, or names a server that is gone."""
        key = d.peer_key(peer)
        try:
            async with self._in_flight:
                return await self._claim(key)
        except Exception as exc:
            self._error("claim", exc)
            return True  # Redis is down: serve the peer here rather than no one

    async def _claim(self, key: str) -> bool:
        for _ in range(3):
            if await self._client.set(key, self._entry, nx=True, px=_ms(d.ENTRY_TTL)):
                return True
            raw = await self._client.get(key)
            held = d.parse_entry(raw)
            if held is None:
                if raw is None:
                    continue  # it expired meanwhile: try again
            elif held == (self.name, self.instance):
                return True
            elif await self._alive(*held):
                self._stats["directory_claims_refused"] += 1
                return False
            if await self._take_over(keys=[key], args=[raw, self._entry, _ms(d.ENTRY_TTL)]):
                self._stats["directory_takeovers"] += 1
                return True
        return False


    async def release(self, peer: str) -> None:
        if self._closing:
            return  # our heartbeat goes with us: the entries are stale at once, nobody waits for them
        try:
            async with self._in_flight:
                await self._release(keys=[d.peer_key(peer)], args=[self._entry])
        except Exception as exc:
            self._error("release", exc)

    async def locate(self, peer: str) -> str | None:
        """The other server whose entry holds ``peer``, or None."""
        try:
            async with self._in_flight:
                held = d.parse_entry(await self._client.get(d.peer_key(peer)))
        except Exception as exc:
            self._error("lookup", exc)
            return None
        return held[0] if held is not None and held[0] != self.name else None

    async def gone(self, server: str) -> bool:
        """Whether ``server`` went away: no heartbeat, or another instance than the one we heard from."""
        try:
            async with self._in_flight:
                instance = await self._client.get(d.server_key(server))
        except Exception as exc:
            self._error("heartbeat check", exc)
            return False
        if instance is None:
            return True
        known = self.instances.get(server)
        return known is not None and known != instance.decode()

    async def _alive(self, server: str, instance: str) -> bool:
        current = await self._client.get(d.server_key(server))
        return current is not None and current.decode() == instance

    # ---- messages to other servers -----------------------------------------------------------

    def send(self, server: str, msg: Msg, receivers: bool = False) -> asyncio.Future[int] | None:
        """Seal ``msg`` for ``server`` and queue it (order is kept).  With ``receivers``, a future of
        how many servers got it (0: nobody listens on that name, the server is gone)."""
        data = self.sealer.seal(server, msg, self._clock())
        future = asyncio.get_running_loop().create_future() if receivers else None
        try:
            self._outbox.put_nowait((d.inbox(server), data, future))
        except asyncio.QueueFull:
            self._stats["directory_outbox_full"] += 1
            if future is not None:
                future.set_result(0)
        return future

    async def _send_loop(self) -> None:
        """Publish everything queued, in order, one pipeline per batch."""
        while True:
            _go_on()
            batch = [await self._outbox.get()]
            while not self._outbox.empty() and len(batch) < REFRESH_BATCH:
                batch.append(self._outbox.get_nowait())
            try:
                pipe = self._client.pipeline(transaction=False)
                for channel, data, _ in batch:
                    pipe.spublish(channel, data)
                async with self._in_flight:
                    counts = await pipe.execute()
                self._stats["directory_sent"] += len(batch)
            except Exception as exc:
                self._error("publish", exc)
                counts = [0] * len(batch)
            for (_, _, future), count in zip(batch, counts):
                if not count:
                    self._stats["directory_unheard"] += 1
                if future is not None and not future.done():
                    future.set_result(int(count or 0))

    async def _listen(self) -> None:
        """Read our inbox; after an error (Redis restarted, the slot moved) subscribe again."""
        import redis.asyncio as aioredis

        channel = d.inbox(self.name)
        delay = RETRY[0]
        while True:
            _go_on()
            conn = pubsub = None
            try:
                if self.cluster:
                    node = self._client.get_node_from_key(channel)
                    conn = aioredis.Redis.from_url(_node_url(self.url, node.host, node.port),
                                                   socket_connect_timeout=COMMAND_TIMEOUT)
                else:
                    conn = aioredis.Redis(connection_pool=self._client.connection_pool)
                pubsub = conn.pubsub()
                await pubsub.ssubscribe(channel)
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None:
                        continue
                    if msg["type"] == "ssubscribe":
                        self._subscribed.set()
                        delay = RETRY[0]
                    elif msg["type"] == "sunsubscribe":  # the slot moved to another node
                        break
                    elif msg["type"] == "smessage":
                        self._receive(msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._error("inbox", exc)
                await asyncio.sleep(delay)
                delay = min(2 * delay, RETRY[1])
            finally:
                if pubsub is not None:
                    await _quietly(pubsub.aclose())
                if conn is not None and self.cluster:
                    await _quietly(conn.aclose())

    def _receive(self, data: bytes) -> None:
        """One message of our inbox: whatever it holds, it is dropped or served, never the end of the
        subscription (re-subscribing loses what others publish meanwhile)."""
        try:
            sender, instance, msg = self.sealer.open(data, self._clock())
        except RemoteProtocolError as exc:
            self._stats["directory_rejected"] += 1
            log.warning("dropped a message from the directory: %s", exc)
            return
        except Exception as exc:  # a bug met by this message: counted and logged on one line
            internal_error(self._stats, log, "a message from the directory", exc)
            return
        self.instances[sender] = instance
        self._stats["directory_received"] += 1
        self._on_message(sender, instance, msg)

    # ---- upkeep ------------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        key = d.server_key(self.name)
        while True:
            _go_on()
            await asyncio.sleep(d.HEARTBEAT)
            try:
                async with self._in_flight:
                    await self._client.set(key, self.instance, px=_ms(d.SERVER_TTL))
            except Exception as exc:
                self._error("heartbeat", exc)

    async def _refresh(self, logins: Callable[[], Iterable[str]]) -> None:
        """Keep our peers' entries alive; put back the ones that expired (Redis restarted or was away)."""
        while True:
            _go_on()
            await asyncio.sleep(d.REFRESH)
            peers = list(logins())
            for i in range(0, len(peers), REFRESH_BATCH):
                batch = peers[i:i + REFRESH_BATCH]
                try:
                    pipe = self._client.pipeline(transaction=False)
                    for peer in batch:
                        pipe.pexpire(d.peer_key(peer), _ms(d.ENTRY_TTL))
                    async with self._in_flight:
                        kept = await pipe.execute()
                    lost = [peer for peer, ok in zip(batch, kept) if not ok]
                    if lost:
                        pipe = self._client.pipeline(transaction=False)
                        for peer in lost:
                            pipe.set(d.peer_key(peer), self._entry, nx=True, px=_ms(d.ENTRY_TTL))
                        async with self._in_flight:
                            await pipe.execute()
                        self._stats["directory_entries_restored"] += len(lost)
                except Exception as exc:
                    self._error("refresh", exc)

    def _error(self, what: str, exc: BaseException) -> None:
        """Count and log a failed Redis command (unless it failed because we are being cancelled)."""
        _go_on()
        self._stats["directory_errors"] += 1
        log.warning("directory %s failed: %s", what, one_line(exc))


def _go_on() -> None:
    """Raise CancelledError if this task was cancelled: the Redis client may swallow a cancellation
    (or turn it into an error of its own), and a loop must not go on waiting after it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _node_url(url: str, host: str, port: int) -> str:
    """``url`` (credentials, TLS) pointed at one node of a cluster."""
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=(f"{auth}@" if auth else "") + f"{host}:{port}"))


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


async def _quietly(coro: Any) -> None:
    try:
        await coro
    except Exception:
        pass
