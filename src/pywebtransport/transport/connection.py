"""`WebTransportConnection`: one QUIC connection carrying WebTransport sessions.

The connection's machinery is its engine (`_engine.ConnectionEngine`: the
pump, timers and waiters) over the sans-I/O protocol (`_core`); this object is
its public face.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from typing import Any

from ..shared.config import ClientConfig, ServerConfig
from ..shared.constants import ErrorCodes
from ..shared.events import EventEmitter
from ..shared.exceptions import (
    ClientError,
    ConnectionError,
    HandshakeError,
    SessionClosedError,
    TimeoutError,
)
from ..shared.types import Address, ConnectionState
from ..shared.version import __version__
from . import _aioquic
from ._core.dialects import choose_dialect
from ._core.headers import HeaderError
from ._engine import ConnectionEngine
from .session import WebTransportSession

__all__ = ["WebTransportConnection"]


class WebTransportConnection:
    """One QUIC connection and the WebTransport sessions it carries.

    Created by `WebTransportClient` and `WebTransportServer`; users reach it
    as `session.connection`.
    """

    def __init__(self, engine: ConnectionEngine) -> None:
        self._engine = engine
        # Set while a graceful close runs: a second close() waits for it.
        self._closed_gracefully: asyncio.Future[None] | None = None
        engine.connection = self

    # ------------------------------------------------------------------ properties

    @property
    def config(self) -> ClientConfig | ServerConfig:
        """The configuration this connection was made with."""
        return self._engine.config

    @property
    def handle(self) -> int:
        """A process-unique number identifying this connection."""
        return self._engine.handle

    @property
    def is_client(self) -> bool:
        """True on the client side."""
        return self._engine.is_client

    @property
    def state(self) -> ConnectionState:
        """The connection's state."""
        return self._engine.state

    @property
    def is_connected(self) -> bool:
        """True while the connection is up."""
        return self._engine.state is ConnectionState.CONNECTED

    @property
    def is_closing(self) -> bool:
        """True while the connection is closing."""
        return self._engine.state is ConnectionState.CLOSING

    @property
    def is_closed(self) -> bool:
        """True once the connection has terminated."""
        return self._engine.state is ConnectionState.CLOSED

    @property
    def events(self) -> EventEmitter:
        """Connection events: `CONNECTION_ESTABLISHED`, `CONNECTION_CLOSED`.

        Created on first use; see `EventType` for each event's data keys.
        """
        engine = self._engine
        if engine.emitter is None:
            engine.emitter = engine.new_emitter()
        return engine.emitter

    @property
    def remote_address(self) -> Address | None:
        """The peer's address."""
        addr = _aioquic.peer_address(self._engine.quic)
        return (str(addr[0]), int(addr[1])) if addr else None

    @property
    def local_address(self) -> Address | None:
        """The local socket address."""
        transport = self._engine.transport
        if transport is None:
            return None
        sockname = transport.get_extra_info("sockname")
        return (str(sockname[0]), int(sockname[1])) if sockname else None

    @property
    def sessions(self) -> list[WebTransportSession]:
        """The sessions open (or being opened) on this connection."""
        return [s.owner for s in self._engine.core.sessions.values() if s.owner is not None]

    def get_all_sessions(self) -> list[WebTransportSession]:
        """Return the sessions on this connection.

        Returns:
            The sessions.
        """
        return self.sessions

    @property
    def idle_for(self) -> float:
        """Seconds since this connection last carried a session or opened one."""
        engine = self._engine
        if engine.core.sessions:
            return 0.0
        return engine.loop.time() - engine.last_activity

    @property
    def close_reason(self) -> tuple[int, str] | None:
        """The (error code, reason) the connection closed with, once closed."""
        return self._engine.close_reason

    def get_stats(self) -> dict[str, Any]:
        """Return RTT, byte and packet statistics.

        Returns:
            `rtt_smoothed`, `rtt_min`, `rtt_latest` (seconds), `bytes_sent`,
            `bytes_received`, `packets_sent`, `congestion_window` (None where
            the aioquic in use does not expose them), `sessions`, `streams`,
            `uptime`.
        """
        engine = self._engine
        return {
            **_aioquic.stats(engine.quic),
            "sessions": len(engine.core.sessions),
            "streams": len(engine.core.streams),
            "uptime": engine.loop.time() - engine.created_at,
        }

    async def diagnostics(self) -> dict[str, Any]:
        """Return `get_stats()` plus state and addresses.

        Returns:
            A snapshot of the connection.
        """
        engine = self._engine
        return {
            "handle": engine.handle,
            "state": engine.state.value,
            "remote_address": self.remote_address,
            "local_address": self.local_address,
            "dialects": sorted({s.dialect.name for s in engine.core.sessions.values()}),
            **self.get_stats(),
        }

    # ------------------------------------------------------------------ sessions

    async def wait_settings(self, timeout: float | None = None) -> dict[int, int]:
        """Wait for the peer's HTTP/3 SETTINGS.

        Args:
            timeout: Seconds to wait.

        Returns:
            The settings.
        """
        async with asyncio.timeout(timeout):
            return await asyncio.shield(self._engine.settings)

    async def create_session(
        self,
        path: str = "/",
        *,
        authority: str | None = None,
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
        wt_available_protocols: list[str] | None = None,
        timeout: float | None = None,
    ) -> WebTransportSession:
        """Open another WebTransport session on this connection (client side).

        Args:
            path: Request path with query.
            authority: `:authority`; defaults to the one the connection was opened for.
            headers: Extra request headers (added to `ClientConfig.headers`).
            wt_available_protocols: Subprotocols offered, in preference order
                (default: `ClientConfig.wt_available_protocols`).
            timeout: Seconds to wait for the server's answer (default: `connect_timeout`).

        Returns:
            The established session.

        Raises:
            ClientError: A header name or value is not valid in HTTP/3.
            HandshakeError: The server answered with a non-2xx status, or speaks
                no WebTransport.
            TimeoutError: No answer in time.
            ConnectionError: The connection is closed.
        """
        engine = self._engine
        if not engine.is_client:
            raise ConnectionError("create_session() is for client connections")
        if engine.state in (ConnectionState.CLOSING, ConnectionState.CLOSED):
            reason = engine.close_reason
            raise ConnectionError("connection is closed", error_code=reason[0] if reason else None)
        config = engine.config
        assert isinstance(config, ClientConfig)
        wait = config.connect_timeout if timeout is None else timeout
        all_headers: list[tuple[str | bytes, str | bytes]] = [
            (b"user-agent", (config.user_agent or f"pywebtransport/{__version__}").encode()),
            *config.headers.items(),
        ]
        if headers:
            all_headers.extend(headers.items() if isinstance(headers, dict) else headers)
        protocols = (
            wt_available_protocols
            if wt_available_protocols is not None
            else config.wt_available_protocols
        )
        try:
            async with asyncio.timeout(wait):
                settings = await asyncio.shield(engine.settings)
                dialect = choose_dialect(settings)
                if dialect is None:
                    raise HandshakeError(
                        "the server does not support WebTransport (no WebTransport SETTINGS)",
                        error_code=ErrorCodes.WT_REQUIREMENTS_NOT_MET,
                    )
                try:
                    record = engine.core.open_session(
                        authority=authority or engine.authority,
                        path=path,
                        dialect=dialect,
                        headers=all_headers,
                        protocols=protocols or (),
                    )
                except HeaderError as exc:
                    raise ClientError(str(exc)) from exc
                session = WebTransportSession(engine, record)
                engine.last_activity = engine.loop.time()
                engine.after_command()
                if engine.on_session_pending is not None:
                    engine.on_session_pending(record)
                try:
                    await asyncio.shield(session.ready)
                except SessionClosedError as exc:
                    status = record.rejected_with
                    if status is None:
                        raise ConnectionError(
                            f"connection lost while opening the session at {path!r}",
                            error_code=exc.error_code,
                        ) from exc
                    raise HandshakeError(
                        f"server refused the session at {path!r} with HTTP status {status}",
                        status_code=status,
                        error_code=ErrorCodes.H3_REQUEST_REJECTED,
                    ) from exc
        except builtins.TimeoutError as exc:
            raise TimeoutError(
                f"no answer to the WebTransport CONNECT within {wait}s", operation="connect"
            ) from exc
        return session

    # ------------------------------------------------------------------ closing

    async def close(
        self,
        error_code: int = 0,
        reason: str = "",
        *,
        linger: float = 0.0,
        timeout: float | None = None,
    ) -> None:
        """Close the QUIC connection gracefully, and with it every session.

        Every open session is closed as `WebTransportSession.close()` does:
        first the peer acknowledges every stream this side finished (its data
        and FIN), then each session's close capsule leaves and its unfinished
        streams are reset. Queued stream data, the capsules included, is then
        flushed until the peer acknowledged it (one round trip plus the
        peer's ACK delay; at most half of `timeout`); then, after `linger`,
        CONNECTION_CLOSE is sent and this returns. The QUIC closing period
        runs on in the background and frees the socket when it ends. For an
        immediate close, see `abort()`. A second call while one runs waits
        for it to finish.

        Args:
            error_code: QUIC application error code.
            reason: Reason phrase.
            linger: Seconds to wait after the acknowledgement (ended early if
                the peer closes the connection itself). Chromium tells the page
                that a session closed one task after it read the capsule; a
                CONNECTION_CLOSE read before that task runs turns the clean
                close into "Connection lost" there. The server's graceful
                shutdown lingers 50 ms.
            timeout: Longest wait for the sessions' finished streams to be
                acknowledged, in seconds (default: the config's `close_timeout`).
        """
        engine = self._engine
        if engine.state is ConnectionState.CLOSED:
            return
        if self._closed_gracefully is not None:
            # Another close() is waiting for the peer: returning (and perhaps
            # aborting) before it sent CONNECTION_CLOSE would cut that wait short.
            await asyncio.shield(self._closed_gracefully)
            return
        if not engine.core.begin_closing():
            return
        done = self._closed_gracefully = engine.loop.create_future()
        try:
            wait = engine.config.close_timeout if timeout is None else timeout
            closes = [(r, 0, reason) for r in engine.core.sessions.values() if r.is_open]
            await engine.finish_sessions(closes, wait)
            await engine.flush_streams(wait / 2)
            if linger > 0 and not engine.terminated.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(engine.terminated), linger)
        finally:
            engine.close_quic(error_code, reason)
            done.set_result(None)

    def abort(self) -> None:
        """Drop the connection at once, without waiting for the peer."""
        self._engine.abort()

    async def wait_closed(self) -> None:
        """Wait until the connection has terminated (after its closing period)."""
        await asyncio.shield(self._engine.terminated)

    def __repr__(self) -> str:
        engine = self._engine
        return f"<WebTransportConnection handle={engine.handle} state={engine.state.value}>"
