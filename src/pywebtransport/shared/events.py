"""Events and the `EventEmitter` that connections, sessions and streams expose.

Handlers may be plain functions or coroutine functions taking one `Event`.
A handler that raises is logged on the `pywebtransport.events` logger and the
remaining handlers still run.

Example:
    ```python
    from pywebtransport import EventType

    async def on_datagram(event):
        print(event.data["data"])

    session.events.on(EventType.DATAGRAM_RECEIVED, on_datagram)
    ```

`EventType` is defined in `pywebtransport.shared.types` (as in the reference
library) and re-exported here; each member's documentation lists its data keys.
"""

from __future__ import annotations

import asyncio
import collections
import collections.abc
import inspect
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from .types import EventType

__all__ = ["Event", "EventEmitter", "EventHandler", "EventType"]

logger = logging.getLogger("pywebtransport.events")


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One occurrence of an event.

    Attributes:
        type: What happened: an `EventType`, or any string for custom events.
        data: Event-specific payload, usually a dict (see each `EventType`'s
            emitter for its keys).
        source: The object that emitted the event, if any.
        timestamp: Wall-clock time of creation (`time.time()`).
    """

    type: EventType | str
    data: Any = None
    source: Any = None
    timestamp: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        """Returns the event as a plain dict (the type as its string value).

        Returns:
            A dict with the keys `type`, `data`, `source` and `timestamp`.
        """
        return {
            "type": str(self.type),
            "data": self.data,
            "source": self.source,
            "timestamp": self.timestamp,
        }


EventHandler: TypeAlias = Callable[[Event], Awaitable[None] | None]
"""A sync or async callable that receives an `Event`."""

_Condition: TypeAlias = Callable[[Event], bool]


class _Listener:
    __slots__ = ("handler", "once")

    def __init__(self, handler: EventHandler, once: bool) -> None:
        self.handler = handler
        self.once = once


class EventEmitter:
    """Registers handlers per event type and calls them when events are emitted.

    Args:
        max_listeners: Handlers per event type above which a possible leak is
            logged as a warning (0 disables the warning). Adding more still
            works.
        max_history: Number of recent events kept for `get_event_history()`
            (0 keeps none).
        max_queue_size: Events kept while paused; when full, the oldest queued
            event is dropped (and counted in `get_stats()`).

    Raises:
        ValueError: A limit is negative, or `max_queue_size` is 0.
    """

    def __init__(
        self, *, max_listeners: int = 10, max_history: int = 0, max_queue_size: int = 100
    ) -> None:
        for name, value, minimum in (
            ("max_listeners", max_listeners, 0),
            ("max_history", max_history, 0),
            ("max_queue_size", max_queue_size, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        self._max_listeners = max_listeners
        self._max_history = max_history
        self._handlers: dict[str, list[_Listener]] = {}
        self._any_handlers: list[EventHandler] = []
        self._waiters: dict[str, list[tuple[asyncio.Future[Event], _Condition | None]]] = {}
        self._history: collections.deque[Event] = collections.deque(maxlen=max_history or None)
        self._queue: collections.deque[Event] = collections.deque(maxlen=max_queue_size)
        self._tasks: set[asyncio.Task[None]] = set()
        self._warned_types: set[str] = set()
        self._paused = False
        self._closed = False
        self._emitted = 0
        self._handler_calls = 0
        self._handler_errors = 0
        self._dropped = 0

    # Registration

    def on(self, event_type: EventType | str, handler: EventHandler) -> None:
        """Calls `handler` for every event of `event_type`.

        Args:
            event_type: The event to listen for.
            handler: Sync or async callable taking the `Event`.
        """
        self._add(event_type, handler, once=False)

    def once(self, event_type: EventType | str, handler: EventHandler) -> None:
        """Calls `handler` for the next event of `event_type` only.

        Args:
            event_type: The event to listen for.
            handler: Sync or async callable taking the `Event`.
        """
        self._add(event_type, handler, once=True)

    def off(self, event_type: EventType | str, handler: EventHandler | None = None) -> None:
        """Removes a handler, or every handler of `event_type` when `handler` is None.

        Removing a handler that is not registered does nothing.

        Args:
            event_type: The event the handler was registered for.
            handler: The handler to remove, or None for all of them.
        """
        listeners = self._handlers.get(event_type)
        if listeners is None:
            return
        if handler is not None:
            listeners[:] = [entry for entry in listeners if entry.handler != handler]
        if handler is None or not listeners:
            del self._handlers[event_type]

    def on_any(self, handler: EventHandler) -> None:
        """Calls `handler` for every event, whatever its type.

        Args:
            handler: Sync or async callable taking the `Event`.
        """
        self._any_handlers.append(handler)

    def off_any(self, handler: EventHandler | None = None) -> None:
        """Removes a catch-all handler, or all of them when `handler` is None.

        Args:
            handler: The handler passed to `on_any()`, or None.
        """
        if handler is None:
            self._any_handlers.clear()
        else:
            self._any_handlers = [h for h in self._any_handlers if h != handler]

    def remove_all_listeners(self, event_type: EventType | str | None = None) -> None:
        """Removes the handlers of one event type, or every handler (catch-all included).

        Args:
            event_type: The event type to clear, or None for all.
        """
        if event_type is None:
            self._handlers.clear()
            self._any_handlers.clear()
        else:
            self._handlers.pop(event_type, None)

    def set_max_listeners(self, max_listeners: int) -> None:
        """Changes the per-type handler count above which a warning is logged.

        Args:
            max_listeners: The new threshold (0 disables the warning).

        Raises:
            ValueError: `max_listeners` is negative.
        """
        if (
            isinstance(max_listeners, bool)
            or not isinstance(max_listeners, int)
            or max_listeners < 0
        ):
            raise ValueError(f"max_listeners must be an integer >= 0, got {max_listeners!r}")
        self._max_listeners = max_listeners
        self._warned_types.clear()

    # Introspection

    def listeners(self, event_type: EventType | str) -> list[EventHandler]:
        """Returns the handlers registered for `event_type`, in call order.

        Args:
            event_type: The event type.

        Returns:
            A new list (catch-all handlers not included).
        """
        return [entry.handler for entry in self._handlers.get(event_type, ())]

    def listener_count(self, event_type: EventType | str) -> int:
        """Returns how many handlers are registered for `event_type`.

        Args:
            event_type: The event type.

        Returns:
            The number of handlers (catch-all handlers not included).
        """
        return len(self._handlers.get(event_type, ()))

    def has_listeners(self, event_type: EventType | str) -> bool:
        """Tells whether emitting `event_type` would reach anyone.

        Cheap enough for hot paths: check it before building event data.

        Args:
            event_type: The event type.

        Returns:
            True if a handler, a catch-all handler or a `wait_for()` call is
            waiting for this type.
        """
        return bool(
            self._any_handlers or event_type in self._handlers or event_type in self._waiters
        )

    def get_event_history(
        self, event_type: EventType | str | None = None, limit: int = 100
    ) -> list[Event]:
        """Returns recently emitted events, oldest first.

        Only kept when the emitter was created with `max_history > 0`.

        Args:
            event_type: Only return events of this type, or None for all.
            limit: Return at most this many (the most recent).

        Returns:
            A new list of events.
        """
        events = [e for e in self._history if event_type is None or e.type == event_type]
        return events[-limit:] if limit > 0 else []

    def clear_history(self) -> None:
        """Forgets the recorded event history."""
        self._history.clear()

    def get_stats(self) -> dict[str, Any]:
        """Returns counters describing the emitter.

        Returns:
            A dict with `total_events_emitted`, `total_handlers_called`,
            `total_handler_errors`, `events_dropped` (queue overflow while
            paused), `event_types`, `total_listeners`, `any_listeners`,
            `waiters`, `history_size`, `queued_events`, `max_listeners`,
            `paused` and `closed`.
        """
        return {
            "total_events_emitted": self._emitted,
            "total_handlers_called": self._handler_calls,
            "total_handler_errors": self._handler_errors,
            "events_dropped": self._dropped,
            "event_types": len(self._handlers),
            "total_listeners": sum(len(v) for v in self._handlers.values()),
            "any_listeners": len(self._any_handlers),
            "waiters": sum(len(v) for v in self._waiters.values()),
            "history_size": len(self._history),
            "queued_events": len(self._queue),
            "max_listeners": self._max_listeners,
            "paused": self._paused,
            "closed": self._closed,
        }

    @property
    def is_paused(self) -> bool:
        """True between `pause()` and `resume()`."""
        return self._paused

    # Emitting

    async def emit(self, event_type: EventType | str, data: Any = None, source: Any = None) -> None:
        """Emits an event and waits until every handler has run (async ones awaited).

        While paused, the event is queued instead. After `close()` it is dropped.

        Args:
            event_type: The event type.
            data: The payload, available as `event.data`.
            source: The emitting object, available as `event.source`.
        """
        event = self._prepare(event_type, data, source)
        if event is None:
            return
        for awaitable in self._dispatch(event):
            await self._await_handler(event, awaitable)

    def emit_nowait(
        self, event_type: EventType | str, data: Any = None, source: Any = None
    ) -> None:
        """Emits an event without waiting: sync handlers run now, async ones become tasks.

        Works without a running event loop as long as no handler is async.

        Args:
            event_type: The event type.
            data: The payload, available as `event.data`.
            source: The emitting object, available as `event.source`.
        """
        event = self._prepare(event_type, data, source)
        if event is not None:
            self._dispatch_nowait(event)

    async def wait_for(
        self,
        event_type: EventType | str | Iterable[EventType | str],
        condition: Callable[[Event], bool] | None = None,
        timeout: float | None = None,
    ) -> Event:
        """Waits for the next event of a type (or of any of several types).

        Args:
            event_type: One event type or a list of them.
            condition: Only an event for which this returns True completes the
                wait. An exception it raises is re-raised here.
            timeout: Seconds to wait, or None to wait forever.

        Returns:
            The matching event.

        Raises:
            TimeoutError: No matching event arrived within `timeout`.
            RuntimeError: The emitter is closed (or was closed while waiting).
        """
        if self._closed:
            raise RuntimeError("EventEmitter is closed")
        types = [event_type] if isinstance(event_type, str) else list(event_type)
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        entry = (future, condition)
        for key in types:
            self._waiters.setdefault(key, []).append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await future
        finally:
            for key in types:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters[:] = [w for w in waiters if w is not entry]
                    if not waiters:
                        del self._waiters[key]

    def pause(self) -> None:
        """Queues emitted events instead of dispatching them, until `resume()`."""
        self._paused = True

    def resume(self) -> asyncio.Task[None] | None:
        """Dispatches the events queued while paused, in order, and stops queueing.

        Returns:
            A task that finishes once every queued event was handled, or None
            when nothing was queued (or no event loop is running, in which
            case the queued events were dispatched synchronously).
        """
        self._paused = False
        if not self._queue:
            return None
        queued = list(self._queue)
        self._queue.clear()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            for event in queued:
                self._dispatch_nowait(event)
            return None
        task = loop.create_task(self._flush(queued))
        self._track(task)
        return task

    async def close(self) -> None:
        """Stops the emitter: cancels pending handler tasks and waiters, drops handlers.

        Idempotent. Later emits are ignored.
        """
        if self._closed:
            return
        self._closed = True
        self._paused = False
        self._queue.clear()
        for waiters in list(self._waiters.values()):
            for future, _ in waiters:
                if not future.done():
                    future.set_exception(RuntimeError("EventEmitter closed while waiting"))
        tasks = [task for task in self._tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._handlers.clear()
        self._any_handlers.clear()
        self._history.clear()

    # Internals

    def _add(self, event_type: EventType | str, handler: EventHandler, *, once: bool) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {handler!r}")
        listeners = self._handlers.setdefault(event_type, [])
        listeners.append(_Listener(handler, once))
        limit = self._max_listeners
        if limit and len(listeners) > limit and event_type not in self._warned_types:
            # Like Node's emitter: warn once per type, since an ever-growing
            # handler list is usually a leak, but never refuse the handler.
            self._warned_types.add(event_type)
            logger.warning(
                "Possible EventEmitter leak: %d handlers for %r (max_listeners=%d)",
                len(listeners),
                str(event_type),
                limit,
            )

    def _prepare(self, event_type: EventType | str, data: Any, source: Any) -> Event | None:
        if self._closed:
            return None
        self._emitted += 1
        if not (self._paused or self._max_history or self.has_listeners(event_type)):
            # Nobody would see it: skip building the Event at all.
            return None
        event = Event(type=event_type, data=data, source=source)
        if self._max_history:
            self._history.append(event)
        if self._paused:
            if len(self._queue) == self._queue.maxlen:
                self._dropped += 1
            self._queue.append(event)
            return None
        return event

    def _dispatch(self, event: Event) -> list[Awaitable[Any]]:
        """Runs the handlers of `event`; returns the awaitables async handlers produced."""
        pending: list[Awaitable[Any]] = []
        listeners = self._handlers.get(event.type)
        if listeners:
            if any(entry.once for entry in listeners):
                remaining = [entry for entry in listeners if not entry.once]
                if remaining:
                    self._handlers[event.type] = remaining
                else:
                    del self._handlers[event.type]
            for entry in tuple(listeners):
                self._call(entry.handler, event, pending)
        for handler in tuple(self._any_handlers):
            self._call(handler, event, pending)
        waiters = self._waiters.get(event.type)
        if waiters:
            for future, condition in tuple(waiters):
                if future.done():
                    continue
                try:
                    if condition is None or condition(event):
                        future.set_result(event)
                except Exception as exc:
                    future.set_exception(exc)
        return pending

    def _call(self, handler: EventHandler, event: Event, pending: list[Awaitable[Any]]) -> None:
        self._handler_calls += 1
        try:
            result = handler(event)
        except Exception:
            self._handler_errors += 1
            logger.exception("Handler %r failed for event %r", handler, str(event.type))
            return
        if result is not None and inspect.isawaitable(result):
            pending.append(result)

    async def _await_handler(self, event: Event, awaitable: Awaitable[Any]) -> None:
        try:
            await awaitable
        except Exception:
            self._handler_errors += 1
            logger.exception("Async handler failed for event %r", str(event.type))

    def _dispatch_nowait(self, event: Event) -> None:
        pending = self._dispatch(event)
        if not pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            for awaitable in pending:
                # Close it so that no "coroutine was never awaited" warning
                # follows the error below.
                close = getattr(awaitable, "close", None)
                if close is not None:
                    close()
            self._handler_errors += len(pending)
            logger.error(
                "Async handler(s) for event %r skipped: emit_nowait() called without a "
                "running event loop",
                str(event.type),
            )
            return
        for awaitable in pending:
            task = _start_eagerly(loop, self._await_handler(event, awaitable))
            if task is not None:
                self._track(task)

    async def _flush(self, events: list[Event]) -> None:
        for event in events:
            if self._closed:
                return
            for awaitable in self._dispatch(event):
                await self._await_handler(event, awaitable)

    def _track(self, task: asyncio.Task[None]) -> None:
        # The loop only keeps weak references to tasks.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _Continuation(collections.abc.Coroutine[Any, Any, None]):
    """A coroutine whose first step already ran, for a task to carry on.

    The task's first step gets back what that first step yielded (the future
    the coroutine waits for); after that, and for anything thrown in (a
    cancellation before the task ever ran included), it is the coroutine itself.
    """

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, None], yielded: Any) -> None:
        self._coro = coro
        self._first: list[Any] | None = [yielded]

    def send(self, value: Any) -> Any:
        first, self._first = self._first, None
        if first is not None:
            return first[0]
        return self._coro.send(value)

    def throw(self, *args: Any) -> Any:
        self._first = None
        return self._coro.throw(*args)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, Any, None]:
        return self._coro.__await__()


def _start_eagerly(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]
) -> asyncio.Task[None] | None:
    """Run a handler coroutine's first step now; make a task only if it must wait.

    An async handler that finishes without waiting (say one that answers a
    datagram at once) then costs no task and no loop iteration: as cheap as
    a sync handler. Python 3.12 does this itself (`eager_start`); 3.11 steps
    the coroutine here and hands the rest to a task.

    Returns:
        The task still running the handler, or None when it already finished.
    """
    if sys.version_info >= (3, 12):
        task: asyncio.Task[None] = asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
        return None if task.done() else task
    try:
        yielded = coro.send(None)
    except StopIteration:
        return None
    return loop.create_task(_Continuation(coro, yielded))
