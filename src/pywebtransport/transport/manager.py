"""`ConnectionManager` and `SessionManager`: bounded registries of live resources.

Both keep only open resources: a closed connection or session leaves its
manager as soon as it closes (the server and client report it), and a periodic
clean-up task removes anything that closed without notice. Sessions are keyed
by `(connection handle, session id)`, so sessions of different connections
(which all start at session id 0) never collide.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Hashable
from typing import Any, Generic, Protocol, TypeVar

from .connection import WebTransportConnection
from .session import WebTransportSession

__all__ = ["ConnectionManager", "SessionManager"]

logger = logging.getLogger("pywebtransport.manager")


class _Resource(Protocol):
    @property
    def is_closed(self) -> bool: ...


R = TypeVar("R", bound=_Resource)
K = TypeVar("K", bound=Hashable)


class _ResourceManager(Generic[K, R]):
    """Shared machinery of the two managers."""

    _kind = "resource"

    def __init__(self, *, limit: int, cleanup_interval: float = 15.0) -> None:
        if limit <= 0:
            raise ValueError(f"max_{self._kind}s must be positive, got {limit}")
        self._limit = limit
        self._resources: dict[K, R] = {}
        self._cleanup_interval = cleanup_interval
        self._cleanup_task: asyncio.Task[None] | None = None
        self._total_created = 0
        self._total_closed = 0
        self._max_concurrent = 0

    def _key(self, resource: R) -> K:
        raise NotImplementedError

    def _close(self, resource: R) -> Any:
        raise NotImplementedError

    @property
    def limit(self) -> int:
        """How many resources may be registered at once."""
        return self._limit

    @property
    def is_full(self) -> bool:
        """True when the limit is reached."""
        return len(self._resources) >= self._limit

    def try_add(self, resource: R) -> bool:
        """Register a resource unless the limit is reached.

        Args:
            resource: The resource.

        Returns:
            False when the manager is full (nothing registered).
        """
        if len(self._resources) >= self._limit:
            return False
        self._resources[self._key(resource)] = resource
        self._total_created += 1
        self._max_concurrent = max(self._max_concurrent, len(self._resources))
        return True

    def discard(self, resource: R) -> None:
        """Forget a resource (no error when it is unknown).

        Args:
            resource: The resource.
        """
        key = self._key(resource)
        if self._resources.get(key) is resource:
            del self._resources[key]
            self._total_closed += 1

    async def _add(self, resource: R) -> K:
        if not self.try_add(resource):
            await self._close(resource)
            raise RuntimeError(f"{self._kind} limit of {self._limit} reached; {self._kind} closed")
        return self._key(resource)

    async def _remove(self, key: K) -> R | None:
        resource = self._resources.pop(key, None)
        if resource is not None:
            self._total_closed += 1
        return resource

    async def get_resource(self, resource_id: K) -> R | None:
        """Return a registered resource.

        Args:
            resource_id: Its key.

        Returns:
            The resource, or None.
        """
        return self._resources.get(resource_id)

    async def get_all_resources(self) -> list[R]:
        """Return every registered resource.

        Returns:
            The resources.
        """
        return list(self._resources.values())

    def cleanup_closed(self) -> int:
        """Drop resources that closed without notice.

        Returns:
            How many were dropped.
        """
        closed = [key for key, resource in self._resources.items() if resource.is_closed]
        for key in closed:
            del self._resources[key]
        self._total_closed += len(closed)
        return len(closed)

    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(self._cleanup_interval)
            self.cleanup_closed()

    async def get_stats(self) -> dict[str, Any]:
        """Return counters.

        Returns:
            `total_created`, `total_closed`, `current_count`, `max_concurrent`,
            `active`, `max_<kind>s`.
        """
        return {
            "total_created": self._total_created,
            "total_closed": self._total_closed,
            "current_count": len(self._resources),
            "max_concurrent": self._max_concurrent,
            "active": sum(1 for r in self._resources.values() if not r.is_closed),
            f"max_{self._kind}s": self._limit,
        }

    async def shutdown(self) -> None:
        """Close every registered resource and stop the clean-up task."""
        if self._cleanup_task is not None:
            self._cleanup_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cleanup_task
            self._cleanup_task = None
        resources = list(self._resources.values())
        self._resources.clear()
        self._total_closed += len(resources)
        # Concurrently: each graceful close may wait for its peer's acknowledgements.
        open_resources = [resource for resource in resources if not resource.is_closed]
        results = await asyncio.gather(
            *(self._close(resource) for resource in open_resources), return_exceptions=True
        )
        for resource, result in zip(open_resources, results, strict=True):
            if isinstance(result, Exception):
                logger.error("closing %r failed during shutdown", resource, exc_info=result)

    async def __aenter__(self) -> _ResourceManager[K, R]:
        if self._cleanup_task is None:
            self._cleanup_task = asyncio.get_running_loop().create_task(self._cleanup_loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    def __len__(self) -> int:
        return len(self._resources)


class ConnectionManager(_ResourceManager[int, WebTransportConnection]):
    """The open connections of a client or server, at most `max_connections`.

    Args:
        max_connections: Limit on registered connections.
        cleanup_interval: Seconds between sweeps for closed connections.
    """

    _kind = "connection"

    def __init__(self, *, max_connections: int = 100, cleanup_interval: float = 15.0) -> None:
        super().__init__(limit=max_connections, cleanup_interval=cleanup_interval)

    def _key(self, resource: WebTransportConnection) -> int:
        return resource.handle

    async def _close(self, resource: WebTransportConnection) -> None:
        # Graceful close, then no closing period: whoever shuts a manager down is
        # done with its connections, and their sockets must not outlive it.
        await resource.close()
        resource.abort()

    async def add_connection(self, connection: WebTransportConnection) -> int:
        """Register a connection.

        Args:
            connection: The connection.

        Returns:
            Its handle.

        Raises:
            RuntimeError: The limit is reached (the connection is closed).
        """
        return await self._add(connection)

    async def remove_connection(self, connection_handle: int) -> WebTransportConnection | None:
        """Unregister a connection (it is not closed).

        Args:
            connection_handle: Its handle.

        Returns:
            The connection, or None when unknown.
        """
        return await self._remove(connection_handle)

    def connections(self) -> list[WebTransportConnection]:
        """Return the registered connections.

        Returns:
            The connections.
        """
        return list(self._resources.values())


class SessionManager(_ResourceManager[tuple[int, int], WebTransportSession]):
    """The open sessions of a client or server, at most `max_sessions`.

    Sessions are keyed by `session.key` = (connection handle, session id).

    Args:
        max_sessions: Limit on registered sessions.
        cleanup_interval: Seconds between sweeps for closed sessions.
    """

    _kind = "session"

    def __init__(self, *, max_sessions: int = 10, cleanup_interval: float = 15.0) -> None:
        super().__init__(limit=max_sessions, cleanup_interval=cleanup_interval)

    def _key(self, resource: WebTransportSession) -> tuple[int, int]:
        return resource.key

    async def _close(self, resource: WebTransportSession) -> None:
        await resource.close()

    async def add_session(self, session: WebTransportSession) -> tuple[int, int]:
        """Register a session.

        Args:
            session: The session.

        Returns:
            Its key, (connection handle, session id).

        Raises:
            RuntimeError: The limit is reached (the session is closed).
        """
        return await self._add(session)

    async def remove_session(self, session_id: tuple[int, int]) -> WebTransportSession | None:
        """Unregister a session (it is not closed).

        Args:
            session_id: Its key, `session.key`.

        Returns:
            The session, or None when unknown.
        """
        return await self._remove(session_id)

    async def get_sessions_by_state(self, state: Any) -> list[WebTransportSession]:
        """Return the registered sessions in a state.

        Args:
            state: A `SessionState`.

        Returns:
            The sessions.
        """
        return [s for s in self._resources.values() if s.state == state]

    def sessions(self) -> list[WebTransportSession]:
        """Return the registered sessions.

        Returns:
            The sessions.
        """
        return list(self._resources.values())
