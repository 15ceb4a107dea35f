"""What every ASGI scope here shares: the app's type, message fields, and the `lifespan` scope.

`asgi` builds on it; the `lifespan` scope lives here because it is the one scope
that belongs to the app as a whole rather than to a session or a request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..shared.exceptions import ServerError

__all__ = ["ASGI_VERSION", "ASGIApp", "Lifespan", "Message", "message_field"]

logger = logging.getLogger("pywebtransport.framework.asgi")

ASGIApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[MutableMapping[str, Any]]],
        Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]
"""An ASGI 3 application: `async def app(scope, receive, send)`."""

Message = MutableMapping[str, Any]
"""An ASGI message or scope."""

ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}


def message_field(
    message: Message, key: str, kind: type | tuple[type, ...], default: Any = ...
) -> Any:
    """Return a field of an app's message, checked.

    Args:
        message: The message.
        key: The field.
        kind: The type(s) it must have (a bool is no int here).
        default: The value when it is absent; `...` makes it required.

    Returns:
        The value.

    Raises:
        ValueError: The field is missing or of the wrong type (names both).
    """
    value = message.get(key, default)
    if value is ...:
        raise ValueError(f"ASGI message {message.get('type')!r} needs a {key!r} field")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(
            f"ASGI message {message.get('type')!r}: {key!r} must be "
            f"{getattr(kind, '__name__', kind)}, got {type(value).__name__}"
        )
    return value


# --------------------------------------------------------------------------- lifespan


class Lifespan:
    """Runs an ASGI application's `lifespan` scope: startup before serving, shutdown after.

    As ASGI servers do (uvicorn's and hypercorn's "auto" mode): the app is called once
    with `{"type": "lifespan", "asgi": ..., "state": {}}` and receives
    `lifespan.startup`, later `lifespan.shutdown`. `lifespan.startup.failed` stops the
    server with the app's message. An app that raises before answering the startup,
    or returns without answering, does not use lifespan: that is logged at debug
    level and serving goes on. What the app puts in `scope["state"]` reaches every
    session's scope as a shallow copy (`scope["state"]`), as Starlette's
    `request.state` expects.

    Args:
        app: The ASGI application.
        timeout: Longest wait for the app's answer to the startup and to the
            shutdown, in seconds.
    """

    def __init__(self, app: ASGIApp, *, timeout: float = 60.0) -> None:
        self.app = app
        self.timeout = timeout
        self.state: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._messages: asyncio.Queue[Message] | None = None
        # phase -> (answered "complete", the app's message)
        self._answers: dict[str, asyncio.Future[tuple[bool, str]]] = {}

    async def startup(self) -> None:
        """Send `lifespan.startup` and wait for the app's answer.

        Raises:
            ServerError: The app answered `lifespan.startup.failed` (its
                message is in the error), or did not answer within `timeout`.
        """
        if self._task is not None:
            return
        loop = asyncio.get_running_loop()
        self._messages = asyncio.Queue()
        self._answers = {phase: loop.create_future() for phase in ("startup", "shutdown")}
        self._messages.put_nowait({"type": "lifespan.startup"})
        scope = {"type": "lifespan", "asgi": dict(ASGI_VERSION), "state": self.state}
        self._task = loop.create_task(self._run(scope))
        answer = self._answers["startup"]
        waited: set[asyncio.Future[Any]] = {answer, self._task}
        done, _ = await asyncio.wait(
            waited, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if not answer.done():
            if done:
                return  # it ended without answering: it does not use lifespan
            await self._end_task()
            raise ServerError(
                f"the ASGI application did not answer lifespan.startup within {self.timeout:g} s"
            )
        complete, reason = answer.result()
        if not complete:
            await self._end_task()  # no shutdown follows a failed startup
            raise ServerError(f"the ASGI application's startup failed: {reason or 'no message'}")

    async def shutdown(self) -> None:
        """Send `lifespan.shutdown` and wait (at most `timeout`) for the app's answer.

        A failure the app reports is logged; shutdown goes on.
        """
        task, messages = self._task, self._messages
        if task is None or messages is None:
            return
        if not task.done():
            messages.put_nowait({"type": "lifespan.shutdown"})
            answer = self._answers["shutdown"]
            waited: set[asyncio.Future[Any]] = {answer, task}
            await asyncio.wait(waited, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED)
            if answer.done() and not answer.result()[0]:
                reason = answer.result()[1] or "no message"
                logger.error("the ASGI application's shutdown failed: %s", reason)
        await self._end_task()

    async def _end_task(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self, scope: dict[str, Any]) -> None:
        try:
            await self.app(scope, self._receive, self._send)
        except Exception as exc:
            if self._answers["startup"].done():
                logger.exception("the ASGI application's lifespan failed")
            else:
                logger.debug(
                    "the ASGI application does not use lifespan (%s: %s)", type(exc).__name__, exc
                )

    async def _receive(self) -> Message:
        assert self._messages is not None
        return await self._messages.get()

    async def _send(self, message: Message) -> None:
        kind = message_field(message, "type", str)
        for phase in ("startup", "shutdown"):
            answer = self._answers[phase]
            if kind in (f"lifespan.{phase}.complete", f"lifespan.{phase}.failed"):
                if not answer.done():
                    answer.set_result((kind.endswith("complete"), str(message.get("message", ""))))
                return
        raise ServerError(f"unexpected lifespan message {kind!r}")
