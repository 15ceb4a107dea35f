"""Groups: named sets of sessions and broadcast to them, in one process or many.

A `GroupManager` (`app.groups` on a `ServerApp`) keeps which local sessions
belong to which group and publishes messages to every member of a group in
every process that shares its backend:

- `InProcessBackend` (the default): one process, no dependency;
- `RedisBackend`: every worker and host connected to the same Redis sees
  every publish (Redis pub/sub, one channel per group; needs the `redis`
  package, `pip install pywebtransport[redis]`).

Example:
    ```python
    from pywebtransport.framework import GroupManager, RedisBackend, ServerApp

    app = ServerApp(config, groups=GroupManager(backend=RedisBackend("redis://redis:6379/0")))

    @app.pattern_route("/chat/{room}")
    async def chat(session, room):
        await app.groups.join(room, session)  # left automatically when the session closes
        async for stream in session.incoming_unidirectional_streams():
            await app.groups.publish(room, await stream.read_all())
    ```

A stream message reaches each member on one new unidirectional stream that
carries the bytes and FIN; a datagram message is one datagram per member
(unreliable: it may be dropped or be too large for a member's path). Per
publisher, messages arrive at each member in publish order.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import struct
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..shared.exceptions import ServerError
from ..transport.session import WebTransportSession

if TYPE_CHECKING:
    import redis.asyncio

__all__ = [
    "DeliverCallback",
    "GroupBackend",
    "GroupError",
    "GroupManager",
    "HealthCallback",
    "InProcessBackend",
    "RedisBackend",
]

logger = logging.getLogger("pywebtransport.framework.groups")

DeliverCallback = Callable[[str, bytes, bool], None]
"""`deliver(group, data, datagram)`: a backend hands each message it receives to this.

It only queues the message (it never blocks), so backends call it in order
from their reader.
"""

HealthCallback = Callable[[bool], Awaitable[Any] | Any]
"""`on_health_change(healthy)`: sync or async, called when a backend's health flips."""

# Redis message: magic+version, flags (bit 0: datagram), sender id, sequence number, payload.
_HEADER = struct.Struct("!4sB16sQ")
_MAGIC = b"PWG\x01"
_FLAG_DATAGRAM = 0x01


class GroupError(ServerError):
    """A group operation failed, e.g. the backend (Redis) is unavailable.

    Args:
        message: What went wrong.
        **kwargs: Passed to `ServerError`.
    """


@runtime_checkable
class GroupBackend(Protocol):
    """How a `GroupManager` reaches the other processes that share its groups.

    The manager calls `subscribe` when a group gets its first local member and
    `unsubscribe` when it loses its last one; the backend hands every message
    published to a subscribed group (by any process, this one included) to the
    `deliver` callback given to `start`, exactly once, in publish order per
    publisher.
    """

    @property
    def healthy(self) -> bool:
        """Whether publishes can currently reach every process."""
        ...

    async def start(self, deliver: DeliverCallback) -> None:
        """Connect and start delivering messages to `deliver`.

        Args:
            deliver: Called for each message of a subscribed group.
        """
        ...

    async def stop(self) -> None:
        """Disconnect; no more deliveries."""
        ...

    async def subscribe(self, group: str) -> None:
        """Start receiving the messages of `group` (idempotent).

        Args:
            group: The group name.
        """
        ...

    async def unsubscribe(self, group: str) -> None:
        """Stop receiving the messages of `group` (idempotent).

        Args:
            group: The group name.
        """
        ...

    async def publish(self, group: str, data: bytes, *, datagram: bool = False) -> None:
        """Send a message to every subscriber of `group` in every process.

        Args:
            group: The group name.
            data: The message.
            datagram: Deliver as datagrams instead of streams.

        Raises:
            GroupError: The message could not be published.
        """
        ...


class InProcessBackend:
    """The default backend: groups live in this process only.

    With `workers > 1` or several hosts, each process has its own groups; use
    `RedisBackend` to share them.
    """

    def __init__(self) -> None:
        self._deliver: DeliverCallback | None = None

    @property
    def healthy(self) -> bool:
        """Always true once started: there is nothing to lose."""
        return self._deliver is not None

    async def start(self, deliver: DeliverCallback) -> None:
        """Start delivering published messages to `deliver`.

        Args:
            deliver: The manager's delivery callback.
        """
        self._deliver = deliver

    async def stop(self) -> None:
        """Stop delivering."""
        self._deliver = None

    async def subscribe(self, group: str) -> None:
        """Nothing to do: every group of this process is delivered.

        Args:
            group: The group name.
        """

    async def unsubscribe(self, group: str) -> None:
        """Nothing to do.

        Args:
            group: The group name.
        """

    async def publish(self, group: str, data: bytes, *, datagram: bool = False) -> None:
        """Deliver a message to the local members of `group`.

        Args:
            group: The group name.
            data: The message.
            datagram: Deliver as datagrams instead of streams.

        Raises:
            GroupError: The backend is not started.
        """
        if self._deliver is None:
            raise GroupError("the in-process group backend is not started")
        self._deliver(group, data, datagram)


class RedisBackend:
    """Groups shared by every process connected to one Redis (pub/sub).

    Each group is the channel `channel_prefix + "group:" + name`. Each message
    carries this backend's sender id and a sequence number: a process delivers
    its own publishes through its subscription like everyone else's (never
    twice), and a retried publish that reached Redis twice is dropped.

    When the connection to Redis is lost the loss is logged, reconnecting is
    retried with exponential backoff (from `initial_backoff` doubling up to
    `max_backoff` seconds), `healthy` turns false and `on_health_change(False)`
    is called; `publish` raises `GroupError("Redis unavailable: ...")` until the
    subscriptions are restored (`on_health_change(True)`). Messages published
    by others during an outage are not replayed (Redis pub/sub keeps none).

    Args:
        url: The Redis URL (`redis://`, `rediss://` or `unix://`).
        channel_prefix: Prefix of every channel name, to share one Redis
            between applications.
        on_health_change: Called (sync or async) with the new `healthy` value
            each time it changes.
        initial_backoff: First reconnect delay in seconds.
        max_backoff: Cap of the reconnect delay in seconds.
        connect_timeout: Seconds to wait for Redis when connecting, and for a
            subscription to be confirmed by `subscribe`.
        publish_timeout: Seconds a publish may take before it fails.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        channel_prefix: str = "pywebtransport:",
        on_health_change: HealthCallback | None = None,
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
        connect_timeout: float = 5.0,
        publish_timeout: float = 5.0,
    ) -> None:
        if initial_backoff <= 0 or max_backoff < initial_backoff:
            raise ValueError("need 0 < initial_backoff <= max_backoff")
        self.url = url
        self.channel_prefix = channel_prefix
        self.on_health_change = on_health_change
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.connect_timeout = connect_timeout
        self.publish_timeout = publish_timeout
        self._sender = uuid.uuid4().bytes
        self._seq = 0
        self._last_seen: dict[bytes, int] = {}
        self._control = f"{channel_prefix}control"
        self._channels: dict[str, str] = {}  # channel -> group, the wanted subscriptions
        self._confirmed: dict[str, asyncio.Future[None]] = {}
        self._deliver: DeliverCallback | None = None
        self._client: redis.asyncio.Redis | None = None
        self._sub_client: redis.asyncio.Redis | None = None
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._command_lock = asyncio.Lock()
        self._publish_lock = asyncio.Lock()
        self._healthy = False
        self._became_healthy: asyncio.Event | None = None
        self._last_error: BaseException | None = None
        self._health_tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ state

    @property
    def healthy(self) -> bool:
        """True while connected to Redis with every subscription in place."""
        return self._healthy

    @property
    def sender_id(self) -> str:
        """This backend's id in the messages it publishes (hex)."""
        return self._sender.hex()

    def _channel(self, group: str) -> str:
        return f"{self.channel_prefix}group:{group}"

    def _set_healthy(self, healthy: bool) -> None:
        if healthy == self._healthy:
            return
        self._healthy = healthy
        if healthy and self._became_healthy is not None:
            self._became_healthy.set()
        callback = self.on_health_change
        if callback is None:
            return
        try:
            result = callback(healthy)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._health_tasks.add(task)
                task.add_done_callback(self._health_done)
        except Exception:
            logger.exception("on_health_change callback %r failed", callback)

    def _health_done(self, task: asyncio.Task[Any]) -> None:
        self._health_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("on_health_change callback failed", exc_info=task.exception())

    def _unavailable(self, exc: BaseException | None) -> GroupError:
        reason = f"{type(exc).__name__}: {exc}" if exc is not None else "not connected"
        return GroupError(f"Redis unavailable: {reason} ({self.url})")

    # ------------------------------------------------------------------ lifecycle

    async def start(self, deliver: DeliverCallback) -> None:
        """Connect to Redis and start the subscription reader.

        Args:
            deliver: The manager's delivery callback.

        Raises:
            GroupError: The `redis` package is missing, or Redis cannot be
                reached within `connect_timeout`.
        """
        if self._reader is not None:
            return
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError as exc:
            raise GroupError(
                "RedisBackend needs the redis package: pip install 'pywebtransport[redis]'"
            ) from exc
        self._deliver = deliver
        # Publishes may retry once on a fresh connection (a duplicate is dropped by
        # sequence number); the subscriber never retries: the reader reconnects.
        self._client = aioredis.Redis.from_url(
            self.url,
            retry=Retry(NoBackoff(), 1),
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=self.publish_timeout,
        )
        self._sub_client = aioredis.Redis.from_url(
            self.url,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=self.connect_timeout,
            socket_keepalive=True,
            health_check_interval=15,
        )
        self._became_healthy = asyncio.Event()
        try:
            await asyncio.wait_for(self._client.ping(), self.connect_timeout)
        except Exception as exc:
            await self._close_clients()
            raise self._unavailable(exc) from exc
        self._reader = asyncio.create_task(self._read_loop(), name="pywebtransport-redis-groups")
        try:
            await asyncio.wait_for(self._became_healthy.wait(), self.connect_timeout)
        except TimeoutError as exc:
            await self.stop()
            raise self._unavailable(self._last_error) from exc
        logger.info("group backend connected to %s", self.url)

    async def stop(self) -> None:
        """Stop the reader and close the connections to Redis."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        self._healthy = False
        self._deliver = None
        for future in self._confirmed.values():
            if not future.done():
                future.cancel()
        self._confirmed.clear()
        self._channels.clear()
        await self._close_clients()

    async def _close_clients(self) -> None:
        for client in (self._client, self._sub_client):
            if client is not None:
                try:
                    await client.aclose()
                except Exception as exc:
                    logger.debug("closing the Redis client failed: %r", exc)
        self._client = self._sub_client = None

    # ------------------------------------------------------------------ subscriptions

    async def subscribe(self, group: str) -> None:
        """Subscribe to `group`'s channel; wait for Redis to confirm it.

        During an outage the subscription is recorded and made on reconnect.

        Args:
            group: The group name.

        Raises:
            GroupError: The backend is not started.
        """
        if self._reader is None:
            raise GroupError("the Redis group backend is not started")
        channel = self._channel(group)
        future = self._confirmed.get(channel)
        if future is None:
            self._channels[channel] = group
            future = self._confirmed[channel] = asyncio.get_running_loop().create_future()
            pubsub = self._pubsub
            if pubsub is not None:
                try:
                    async with self._command_lock:
                        await pubsub.subscribe(channel)
                except Exception as exc:  # the reader notices and resubscribes everything
                    logger.debug("SUBSCRIBE %s failed: %r", channel, exc)
                    return
        if not future.done() and self._healthy:
            try:
                await asyncio.wait_for(asyncio.shield(future), self.connect_timeout)
            except TimeoutError as exc:
                raise GroupError(f"Redis did not confirm the subscription to {channel!r}") from exc

    async def unsubscribe(self, group: str) -> None:
        """Unsubscribe from `group`'s channel.

        Args:
            group: The group name.
        """
        channel = self._channel(group)
        if self._channels.pop(channel, None) is None:
            return
        future = self._confirmed.pop(channel, None)
        if future is not None and not future.done():
            future.cancel()
        pubsub = self._pubsub
        if pubsub is not None:
            try:
                async with self._command_lock:
                    await pubsub.unsubscribe(channel)
            except Exception as exc:
                logger.debug("UNSUBSCRIBE %s failed: %r", channel, exc)

    # ------------------------------------------------------------------ publish

    async def publish(self, group: str, data: bytes, *, datagram: bool = False) -> None:
        """Publish a message to `group` in every process.

        Args:
            group: The group name.
            data: The message.
            datagram: Deliver as datagrams instead of streams.

        Raises:
            GroupError: Redis is unavailable (`"Redis unavailable: ..."`) or
                the backend is not started.
        """
        client = self._client
        if client is None or self._reader is None:
            raise GroupError("the Redis group backend is not started")
        if not self._healthy:
            raise self._unavailable(self._last_error)
        async with self._publish_lock:  # one at a time: publish order is delivery order
            self._seq += 1
            flags = _FLAG_DATAGRAM if datagram else 0
            payload = _HEADER.pack(_MAGIC, flags, self._sender, self._seq) + data
            try:
                await client.publish(self._channel(group), payload)
            except Exception as exc:
                raise self._unavailable(exc) from exc

    # ------------------------------------------------------------------ reader

    async def _read_loop(self) -> None:
        delay = self.initial_backoff
        failures = 0
        while True:
            assert self._sub_client is not None
            pubsub: Any = self._sub_client.pubsub()
            try:
                async with self._command_lock:
                    # Set together with the snapshot: a later subscribe() sends its own.
                    self._pubsub = pubsub
                    # The control channel last: its confirmation means all are in place.
                    await pubsub.subscribe(*self._channels, self._control)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if self._handle(message):
                        if failures:
                            logger.info("reconnected to Redis at %s", self.url)
                        delay = self.initial_backoff
                        failures = 0
                        self._last_error = None
                        self._set_healthy(True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self._last_error = exc
                self._set_healthy(False)
                if failures == 1:
                    logger.warning(
                        "lost the Redis connection (%s): %s; reconnecting", self.url, exc
                    )
                else:
                    logger.debug("reconnecting to Redis failed (attempt %d): %r", failures, exc)
            finally:
                self._pubsub = None
                try:
                    await pubsub.aclose()
                except Exception as exc:
                    logger.debug("closing the pub/sub connection failed: %r", exc)
            # Subscriptions of the lost connection must be confirmed again.
            for channel, future in list(self._confirmed.items()):
                if future.done():
                    self._confirmed[channel] = asyncio.get_running_loop().create_future()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff)

    def _handle(self, message: dict[str, Any]) -> bool:
        """Process one pub/sub message; return True on the control confirmation."""
        kind = message.get("type")
        raw_channel = message.get("channel")
        channel = raw_channel.decode() if isinstance(raw_channel, bytes) else str(raw_channel)
        if kind == "subscribe":
            if channel == self._control:
                return True
            future = self._confirmed.get(channel)
            if future is not None and not future.done():
                future.set_result(None)
            return False
        if kind != "message":
            return False
        group = self._channels.get(channel)
        data = message.get("data")
        if group is None or not isinstance(data, bytes) or len(data) < _HEADER.size:
            return False
        magic, flags, sender, seq = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            logger.debug("ignoring a foreign message on %s", channel)
            return False
        if seq <= self._last_seen.get(sender, 0):
            return False  # a retried publish that reached Redis twice
        self._last_seen[sender] = seq
        deliver = self._deliver
        if deliver is not None:
            try:
                deliver(group, data[_HEADER.size :], bool(flags & _FLAG_DATAGRAM))
            except Exception:
                logger.exception("delivering a message of group %r failed", group)
        return False


class _Outbox:
    """One session's queue of stream messages, sent in order by one task."""

    def __init__(self, session: WebTransportSession, limit: int) -> None:
        self.session = session
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=limit)
        self.task = asyncio.create_task(self._pump(), name="pywebtransport-group-outbox")

    async def _pump(self) -> None:
        session = self.session
        while True:
            data = await self.queue.get()
            try:
                stream = await session.create_unidirectional_stream()
                await stream.write(data, end_stream=True)
            except Exception as exc:  # a member leaving must not break the group
                if session.is_closed:
                    return
                logger.debug("group delivery to %r failed: %r", session, exc)


class GroupManager:
    """Named groups of sessions with broadcast, local or across processes.

    Membership is local (this process's sessions); `publish` reaches the
    members in every process sharing the backend. A session leaves all its
    groups when it closes.

    Stream messages for a member are queued (at most `max_pending` each) and
    sent in order on new unidirectional streams; when a member's queue is full
    (it reads too slowly) further messages to it are dropped with a warning.

    Args:
        backend: The `GroupBackend` (default: a new `InProcessBackend`).
        max_pending: Per-member limit of queued stream messages.
    """

    def __init__(self, backend: GroupBackend | None = None, *, max_pending: int = 1024) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self._backend: GroupBackend = backend if backend is not None else InProcessBackend()
        self.max_pending = max_pending
        self._members: dict[str, set[WebTransportSession]] = {}
        self._groups_of: dict[WebTransportSession, set[str]] = {}
        self._outboxes: dict[WebTransportSession, _Outbox] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._state = "new"  # new -> started -> stopped (-> started)
        self._start_lock: asyncio.Lock | None = None

    @property
    def backend(self) -> GroupBackend:
        """The backend in use."""
        return self._backend

    @property
    def healthy(self) -> bool:
        """The backend's health (False before start)."""
        return self._state == "started" and self._backend.healthy

    @property
    def started(self) -> bool:
        """Whether `start()` has run (and `stop()` not since)."""
        return self._state == "started"

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the backend (idempotent). `ServerApp.startup()` calls it.

        Raises:
            GroupError: The backend could not start (e.g. Redis unreachable).
        """
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._state == "started":
                return
            await self._backend.start(self._deliver)
            self._state = "started"

    async def stop(self) -> None:
        """Stop the backend, forget every membership, drop queued messages."""
        if self._state != "started":
            self._state = "stopped" if self._state != "new" else "new"
            return
        self._state = "stopped"
        for outbox in self._outboxes.values():
            outbox.task.cancel()
        tasks = [outbox.task for outbox in self._outboxes.values()] + list(self._tasks)
        self._outboxes.clear()
        self._members.clear()
        self._groups_of.clear()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self._backend.stop()
        except Exception:
            logger.exception("stopping the group backend failed")

    async def _ensure_started(self) -> None:
        if self._state == "stopped":
            raise GroupError("the group manager is stopped")
        if self._state == "new":
            await self.start()

    # ------------------------------------------------------------------ membership

    async def join(self, group: str, session: WebTransportSession) -> None:
        """Add a session to a group (idempotent).

        Once this returns, every message published afterwards to `group`, by
        any process, reaches the session (unless Redis is unavailable at the
        time: the subscription is then made on reconnect).

        Args:
            group: The group name (non-empty).
            session: A session of this process.

        Raises:
            GroupError: The session is closed or the manager is stopped.
            ValueError: `group` is empty.
        """
        if not group:
            raise ValueError("group name must not be empty")
        await self._ensure_started()
        if session.is_closed:
            raise GroupError(f"cannot join {group!r}: the session is closed")
        if session not in self._groups_of:
            self._groups_of[session] = set()
            self._outboxes[session] = _Outbox(session, self.max_pending)
            session.closed.add_done_callback(lambda _: self._forget(session))
        self._groups_of[session].add(group)
        self._members.setdefault(group, set()).add(session)
        await self._backend.subscribe(group)

    async def leave(self, group: str, session: WebTransportSession) -> None:
        """Remove a session from a group (no error when it is not a member).

        Messages already queued for the session are still sent.

        Args:
            group: The group name.
            session: The session.
        """
        groups = self._groups_of.get(session)
        if groups is not None:
            groups.discard(group)
        if self._remove(group, session):
            await self._backend.unsubscribe(group)

    def members(self, group: str) -> frozenset[WebTransportSession]:
        """The sessions of this process in a group.

        Args:
            group: The group name.

        Returns:
            The local members (empty when none).
        """
        return frozenset(self._members.get(group, ()))

    def groups(self, session: WebTransportSession | None = None) -> frozenset[str]:
        """The groups with local members, or those a session belongs to.

        Args:
            session: Restrict to this session's groups.

        Returns:
            Group names.
        """
        if session is None:
            return frozenset(self._members)
        return frozenset(self._groups_of.get(session, ()))

    def _remove(self, group: str, session: WebTransportSession) -> bool:
        """Drop a membership; True when the group has no local member left."""
        members = self._members.get(group)
        if members is None:
            return False
        members.discard(session)
        if members:
            return False
        del self._members[group]
        return True

    def _forget(self, session: WebTransportSession) -> None:
        groups = self._groups_of.pop(session, set())
        outbox = self._outboxes.pop(session, None)
        if outbox is not None:
            outbox.task.cancel()
        if self._state != "started":
            return
        emptied = [group for group in groups if self._remove(group, session)]
        if emptied:
            self._spawn(self._unsubscribe_if_empty(emptied))

    async def _unsubscribe_if_empty(self, groups: Iterable[str]) -> None:
        for group in groups:
            if group not in self._members:  # nobody joined again meanwhile
                await self._backend.unsubscribe(group)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("group task failed", exc_info=task.exception())

    # ------------------------------------------------------------------ messages

    async def publish(self, group: str, data: bytes | str, *, datagram: bool = False) -> None:
        """Send a message to every member of `group` in every process.

        Streams (default): each member gets one new unidirectional stream with
        the bytes and FIN. `datagram=True`: each member gets one datagram
        (unreliable; skipped for a member whose path cannot carry its size).
        Per publisher, members receive messages in publish order. Returns once
        the message is handed to the backend, not when members have it.

        Args:
            group: The group name.
            data: The message (`str` is encoded as UTF-8).
            datagram: Deliver as datagrams.

        Raises:
            GroupError: The backend cannot publish (e.g. "Redis unavailable:
                ...") or the manager is stopped.
        """
        if isinstance(data, str):
            data = data.encode("utf-8")
        await self._ensure_started()
        await self._backend.publish(group, bytes(data), datagram=datagram)

    def _deliver(self, group: str, data: bytes, datagram: bool) -> None:
        # Only queues: backends call it in order from their reader.
        members = self._members.get(group)
        if not members:
            return
        for member in list(members):
            if datagram:
                try:
                    member.send_datagram_nowait(data)
                except Exception as exc:
                    logger.debug("group datagram to %r failed: %r", member, exc)
                continue
            outbox = self._outboxes.get(member)
            if outbox is None:
                continue
            try:
                outbox.queue.put_nowait(data)
            except asyncio.QueueFull:
                logger.warning(
                    "group %r: %r reads too slowly (%d messages queued); message dropped",
                    group,
                    member,
                    self.max_pending,
                )
