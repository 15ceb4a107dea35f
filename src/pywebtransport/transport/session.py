"""`WebTransportSession`: one WebTransport session on a QUIC connection."""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from ..shared.constants import ErrorCodes
from ..shared.events import EventEmitter, EventType
from ..shared.exceptions import (
    DatagramError,
    SessionClosedError,
    StreamError,
    TimeoutError,
)
from ..shared.types import Address, Buffer, SessionState
from .stream import WebTransportReceiveStream, WebTransportSendStream, WebTransportStream

if TYPE_CHECKING:
    from .connection import WebTransportConnection

__all__ = ["SessionCloseInfo", "WebTransportSession"]

logger = logging.getLogger("pywebtransport.session")

# Kinds of incoming streams a wait accepts (bit mask).
_BIDI = 1
_UNI = 2

# HTTP/3 datagram = QUIC DATAGRAM frame: 1 type byte + up to 8 bytes of length
# is not used by aioquic (it sends DATAGRAM_WITH_LENGTH) + quarter stream id.
_DATAGRAM_FRAME_OVERHEAD = 1 + 2


@dataclass(frozen=True, slots=True)
class SessionCloseInfo:
    """How a session ended.

    Attributes:
        error_code: The application code of the close (0 for a clean close).
        reason: The reason text.
        remote: True when the peer closed the session.
        clean: False when the session ended by a reset, a protocol error or a
            lost connection rather than a close capsule or FIN.
    """

    error_code: int
    reason: str
    remote: bool
    clean: bool


class WebTransportSession:
    """A WebTransport session: streams and datagrams between two endpoints.

    Sessions are created by `WebTransportClient.connect()` (client side) or
    handed to the server's handler. Use `async with session:` to close it on exit.
    """

    def __init__(
        self,
        conn: WebTransportConnection,
        session_id: int,
        *,
        path: str,
        headers: list[tuple[bytes, bytes]],
        authority: str = "",
    ) -> None:
        self._conn = conn
        self._config = conn.config
        self._session_id = session_id
        self._path = path
        self._authority = authority
        self._headers = headers
        self._state = SessionState.CONNECTING
        # Created on first use: most sessions never register a listener.
        self._events: EventEmitter | None = None
        loop = conn._loop
        self._ready: asyncio.Future[None] = loop.create_future()
        self._closed: asyncio.Future[SessionCloseInfo] = loop.create_future()
        self._streams: dict[int, WebTransportReceiveStream | WebTransportSendStream] = {}
        # The queues are created on first use: a deque costs 0.8 KiB even when
        # empty, and most sessions use one kind of stream, or no datagrams.
        self._incoming_bidi: deque[WebTransportStream] | None = None
        self._incoming_uni: deque[WebTransportReceiveStream] | None = None
        self._incoming_waiter: asyncio.Future[None] | None = None
        self._datagrams: deque[bytes] | None = None
        self._datagram_waiter: asyncio.Future[None] | None = None
        self._datagram_prefix = conn._protocol.datagram_prefix(session_id)
        self._dialect = conn._protocol.session_dialect(session_id)
        self._wt_protocol: str | None = None
        self._wt_available_protocols: list[str] | None = None
        self._reject_status: int | None = None
        self._max_datagram = 0
        self.key: tuple[int, int] = (conn.handle, session_id)
        """Unique key of this session across all connections: (connection handle, session id)."""
        self.stats: dict[str, int] = {
            "streams_opened": 0,
            "streams_accepted": 0,
            "datagrams_sent": 0,
            "datagrams_received": 0,
            "datagrams_dropped": 0,
            "bytes_datagrams_sent": 0,
            "bytes_datagrams_received": 0,
        }
        """Counters: streams opened/accepted, datagrams sent/received/dropped."""
        self._handler_task: asyncio.Task[Any] | None = None

    # ------------------------------------------------------------------ properties

    @property
    def session_id(self) -> int:
        """The session id (the stream id of its CONNECT request)."""
        return self._session_id

    @property
    def connection(self) -> WebTransportConnection:
        """The QUIC connection that carries this session."""
        return self._conn

    @property
    def path(self) -> str:
        """The request path, query string included."""
        return self._path

    @property
    def query_params(self) -> dict[str, list[str]]:
        """The query string of the request path, parsed."""
        return parse_qs(urlsplit(self._path).query)

    @property
    def authority(self) -> str:
        """The request's `:authority` (host:port)."""
        return self._authority

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """Request (server side) or response (client side) headers, pseudo-headers included."""
        return self._headers

    def header(self, name: str, default: str | None = None) -> str | None:
        """Return the first value of a header, decoded.

        Args:
            name: Header name, case-insensitive.
            default: Returned when the header is absent.

        Returns:
            The value, or `default`.
        """
        wanted = name.lower().encode()
        for key, value in self._headers:
            if key == wanted:
                return value.decode("utf-8", "replace")
        return default

    @property
    def state(self) -> SessionState:
        """The session's state."""
        return self._state

    @property
    def is_closed(self) -> bool:
        """True once the session is closed."""
        return self._state is SessionState.CLOSED

    @property
    def is_ready(self) -> bool:
        """True once the session is established and not closed."""
        return self._state in (SessionState.CONNECTED, SessionState.DRAINING)

    @property
    def ready(self) -> asyncio.Future[None]:
        """Awaitable that completes when the session is established (the browser API's `ready`)."""
        return self._ready

    @property
    def closed(self) -> asyncio.Future[SessionCloseInfo]:
        """Awaitable that resolves with `SessionCloseInfo` when the session ends."""
        return self._closed

    @property
    def close_info(self) -> SessionCloseInfo | None:
        """How the session ended, or None while it is open."""
        return self._closed.result() if self._closed.done() else None

    @property
    def events(self) -> EventEmitter:
        """Session events (`SESSION_READY`, `SESSION_CLOSED`, `DATAGRAM_RECEIVED`, ...)."""
        if self._events is None:
            self._events = EventEmitter(max_listeners=self._config.max_event_listeners)
        return self._events

    def _listening(self, event_type: EventType) -> EventEmitter | None:
        events = self._events
        return events if events is not None and events.has_listeners(event_type) else None

    @property
    def remote_address(self) -> Address | None:
        """The peer's address."""
        return self._conn.remote_address

    @property
    def wt_protocol(self) -> str | None:
        """The negotiated subprotocol, or None."""
        return self._wt_protocol

    @wt_protocol.setter
    def wt_protocol(self, value: str | None) -> None:
        self._wt_protocol = value

    @property
    def wt_available_protocols(self) -> list[str] | None:
        """Subprotocols offered in the CONNECT (`wt-available-protocols`), in preference order.

        On the server, set `wt_protocol` to one of them before accepting to
        select it (or let `ServerConfig.wt_supported_protocols` choose).
        """
        return self._wt_available_protocols

    @property
    def protocol(self) -> str:
        """The negotiated subprotocol as the browser API reports it (`""` when none)."""
        return self._wt_protocol or ""

    @property
    def dialect(self) -> str:
        """The WebTransport draft spoken on this session, e.g. ``"draft-02"``."""
        return self._dialect.name

    @property
    def _has_flow_control(self) -> bool:
        return self._dialect.flow_control

    def _cache_max_datagram(self) -> int:
        self._max_datagram = self.max_datagram_size
        return self._max_datagram

    @property
    def max_datagram_size(self) -> int:
        """Largest datagram payload that fits in one QUIC packet right now."""
        quic = self._conn._quic
        remote = quic._remote_max_datagram_frame_size or 0
        packet = quic._max_datagram_size - 50  # short header, AEAD tag, packet number, slack
        return max(0, min(remote, packet) - _DATAGRAM_FRAME_OVERHEAD - len(self._datagram_prefix))

    # ------------------------------------------------------------------ lifecycle (server)

    async def accept(self) -> None:
        """Accept a requested session (server side)."""
        if self._state is not SessionState.CONNECTING:
            return
        self._conn._accept_session(self)

    async def reject(self, status_code: int = 403) -> None:
        """Refuse a requested session with an HTTP status (server side).

        Args:
            status_code: The HTTP status, 4xx or 5xx.
        """
        if self._state is not SessionState.CONNECTING:
            return
        self._conn._reject_session(self, status_code)

    async def ensure_ready(self, timeout: float | None = None) -> None:
        """Wait until the session is established.

        Args:
            timeout: Seconds to wait, or None for no limit.

        Raises:
            SessionClosedError: The session closed before it was ready.
            TimeoutError: It did not become ready in time.
        """
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._ready)
        except builtins.TimeoutError as exc:
            raise TimeoutError("session did not become ready in time", operation="ready") from exc

    def _set_ready(self) -> None:
        self._state = SessionState.CONNECTED
        if not self._ready.done():
            self._ready.set_result(None)
        if (events := self._listening(EventType.SESSION_READY)) is not None:
            events.emit_nowait(EventType.SESSION_READY, {"session_id": self._session_id}, self)

    def _set_draining(self) -> None:
        if self._state is SessionState.CONNECTED:
            self._state = SessionState.DRAINING
        if (events := self._listening(EventType.SESSION_DRAINING)) is not None:
            events.emit_nowait(EventType.SESSION_DRAINING, {"session_id": self._session_id}, self)

    def _set_closed(self, info: SessionCloseInfo) -> None:
        if self._state is SessionState.CLOSED:
            return
        self._state = SessionState.CLOSED
        error = SessionClosedError(
            f"session {self._session_id} closed"
            + (f" by the peer: {info.reason!r}" if info.remote else ""),
            session_id=self._session_id,
            error_code=info.error_code,
            reason=info.reason,
            remote=info.remote,
        )
        if not self._ready.done():
            self._ready.set_exception(error)
            self._ready.exception()  # mark retrieved: nobody may be waiting
        if not self._closed.done():
            self._closed.set_result(info)
        stream_error = StreamError(
            f"session {self._session_id} closed",
            error_code=ErrorCodes.WT_SESSION_GONE,
            remote=info.remote,
        )
        for stream in list(self._streams.values()):
            stream._abort(stream_error)
        self._streams.clear()
        self._wake_incoming()
        self._wake_datagrams()
        if (events := self._listening(EventType.SESSION_CLOSED)) is not None:
            events.emit_nowait(
                EventType.SESSION_CLOSED,
                {
                    "session_id": self._session_id,
                    "error_code": info.error_code,
                    "reason": info.reason,
                    "remote": info.remote,
                    "clean": info.clean,
                },
                self,
            )

    async def close(self, error_code: int = 0, reason: str | None = None) -> None:
        """Close the session: CLOSE_WEBTRANSPORT_SESSION capsule, FIN, streams reset.

        Idempotent. Streams whose data was fully written (FIN sent) are not
        reset, so data written before `close()` still reaches the peer.

        Args:
            error_code: Application error code (0..2**32-1) the peer sees.
            reason: Reason text the peer sees (cut to 1024 UTF-8 bytes).
        """
        if self._state is SessionState.CLOSED:
            return
        if self._state is SessionState.CONNECTING and not self._conn.is_client:
            await self.reject(status_code=500)
            return
        self._state = SessionState.CLOSING
        self._conn._close_session(self, error_code, reason or "")

    async def drain(self) -> None:
        """Ask the peer to finish up (DRAIN_WEBTRANSPORT_SESSION); the session stays open."""
        self._conn._protocol.drain_session(self._session_id)
        self._conn._transmit_soon()

    async def wait_closed(self) -> SessionCloseInfo:
        """Wait until the session ends.

        Returns:
            How it ended.
        """
        return await asyncio.shield(self._closed)

    async def __aenter__(self) -> WebTransportSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ streams

    def _check_open(self) -> None:
        if self._state is not SessionState.CONNECTED and self._state is not SessionState.DRAINING:
            info = self.close_info
            raise SessionClosedError(
                f"session {self._session_id} is {self._state.value}",
                session_id=self._session_id,
                error_code=info.error_code if info else None,
                reason=info.reason if info else "",
            )

    async def create_bidirectional_stream(self) -> WebTransportStream:
        """Open a bidirectional stream.

        Returns:
            The new stream.

        Raises:
            SessionClosedError: The session is closed.
            TimeoutError: The peer granted no stream credit within `stream_creation_timeout`.
        """
        stream = await self._conn._create_stream(self, unidirectional=False)
        assert isinstance(stream, WebTransportStream)
        return stream

    async def create_unidirectional_stream(self) -> WebTransportSendStream:
        """Open a unidirectional (send-only) stream.

        Returns:
            The new stream.

        Raises:
            SessionClosedError: The session is closed.
            TimeoutError: The peer granted no stream credit within `stream_creation_timeout`.
        """
        return await self._conn._create_stream(self, unidirectional=True)

    def _add_incoming(self, stream: WebTransportReceiveStream) -> None:
        self._streams[stream.stream_id] = stream
        self.stats["streams_accepted"] += 1
        if isinstance(stream, WebTransportStream):
            if self._incoming_bidi is None:
                self._incoming_bidi = deque()
            self._incoming_bidi.append(stream)
        else:
            if self._incoming_uni is None:
                self._incoming_uni = deque()
            self._incoming_uni.append(stream)
        self._wake_incoming()
        if (events := self._listening(EventType.STREAM_OPENED)) is not None:
            events.emit_nowait(
                EventType.STREAM_OPENED, {"stream": stream, "stream_id": stream.stream_id}, self
            )

    def _wake_incoming(self) -> None:
        waiter = self._incoming_waiter
        if waiter is not None:
            self._incoming_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _pop_incoming(self, kinds: int) -> WebTransportReceiveStream | None:
        if kinds & _BIDI and self._incoming_bidi:
            return self._incoming_bidi.popleft()
        if kinds & _UNI and self._incoming_uni:
            return self._incoming_uni.popleft()
        return None

    async def _next_incoming(
        self, kinds: int, timeout: float | None
    ) -> WebTransportReceiveStream | None:
        if timeout is not None:
            async with asyncio.timeout(timeout):
                return await self._next_incoming(kinds, None)
        # Without a timeout, no timeout context and no shield: a server handler
        # idles here for the whole session, holding whatever this wait allocates.
        while True:
            stream = self._pop_incoming(kinds)
            if stream is not None:
                return stream
            if self._state is SessionState.CLOSED:
                return None
            waiter = self._incoming_waiter
            if waiter is None or waiter.done():
                waiter = self._incoming_waiter = self._conn._loop.create_future()
            try:
                await waiter
            except asyncio.CancelledError:
                # Every task waiting here shares `waiter`, and cancelling one of
                # them cancels it: only a task that was cancelled itself stops.
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise

    async def accept_bidirectional_stream(self, timeout: float | None = None) -> WebTransportStream:
        """Wait for the peer to open a bidirectional stream.

        Args:
            timeout: Seconds to wait, or None for no limit.

        Returns:
            The stream.

        Raises:
            SessionClosedError: The session closed first.
            TimeoutError: No stream arrived in time.
        """
        stream = await self._accept(_BIDI, timeout)
        assert isinstance(stream, WebTransportStream)
        return stream

    async def accept_unidirectional_stream(
        self, timeout: float | None = None
    ) -> WebTransportReceiveStream:
        """Wait for the peer to open a unidirectional stream.

        Args:
            timeout: Seconds to wait, or None for no limit.

        Returns:
            The (receive-only) stream.

        Raises:
            SessionClosedError: The session closed first.
            TimeoutError: No stream arrived in time.
        """
        return await self._accept(_UNI, timeout)

    async def accept_stream(
        self, timeout: float | None = None
    ) -> WebTransportStream | WebTransportReceiveStream:
        """Wait for the peer to open a stream of either kind.

        Args:
            timeout: Seconds to wait, or None for no limit.

        Returns:
            The stream: `WebTransportStream` or `WebTransportReceiveStream`.
        """
        return await self._accept(_BIDI | _UNI, timeout)

    async def _accept(self, kinds: int, timeout: float | None) -> WebTransportReceiveStream:
        try:
            stream = await self._next_incoming(kinds, timeout)
        except builtins.TimeoutError as exc:
            raise TimeoutError("no incoming stream in time", operation="accept_stream") from exc
        if stream is None:
            self._check_open()
            raise SessionClosedError(session_id=self._session_id)
        return stream

    async def _iterate(self, kinds: int) -> AsyncIterator[Any]:
        while True:
            stream = await self._next_incoming(kinds, None)
            if stream is None:
                return
            yield stream

    def incoming_streams(self) -> AsyncIterator[WebTransportStream | WebTransportReceiveStream]:
        """Iterate over streams the peer opens, of both kinds; ends when the session closes.

        Returns:
            An async iterator of streams.
        """
        return self._iterate(_BIDI | _UNI)

    def incoming_bidirectional_streams(self) -> AsyncIterator[WebTransportStream]:
        """Iterate over bidirectional streams the peer opens; ends when the session closes.

        Returns:
            An async iterator of streams.
        """
        return self._iterate(_BIDI)

    def incoming_unidirectional_streams(self) -> AsyncIterator[WebTransportReceiveStream]:
        """Iterate over unidirectional streams the peer opens; ends when the session closes.

        Returns:
            An async iterator of streams.
        """
        return self._iterate(_UNI)

    # ------------------------------------------------------------------ datagrams

    async def send_datagram(self, data: Buffer | str) -> None:
        """Send an unreliable datagram.

        Args:
            data: The payload (`str` is encoded as UTF-8).

        Raises:
            DatagramError: The payload is larger than `max_datagram_size`.
            SessionClosedError: The session is closed.
        """
        self.send_datagram_nowait(data)

    def send_datagram_nowait(self, data: Buffer | str) -> None:
        """Send an unreliable datagram without awaiting (same checks as `send_datagram`).

        Args:
            data: The payload.
        """
        if isinstance(data, str):
            data = data.encode("utf-8")
        state = self._state
        if state is not SessionState.CONNECTED and state is not SessionState.DRAINING:
            self._check_open()
        size = len(data)
        # Fixed once the handshake is done (peer's frame limit and our packet size).
        limit = self._max_datagram if self._max_datagram else self._cache_max_datagram()
        if size > limit:
            raise DatagramError(
                f"datagram of {size} bytes exceeds max_datagram_size ({limit} bytes); "
                "send large payloads on a stream",
                datagram_size=size,
                max_size=limit,
            )
        conn = self._conn
        conn._quic.send_datagram_frame(self._datagram_prefix + data)
        conn._transmit_soon()
        stats = self.stats
        stats["datagrams_sent"] += 1
        stats["bytes_datagrams_sent"] += size

    def _on_datagram(self, data: bytes) -> None:
        stats = self.stats
        stats["datagrams_received"] += 1
        stats["bytes_datagrams_received"] += len(data)
        events = self._events
        if events is not None and events.has_listeners(EventType.DATAGRAM_RECEIVED):
            events.emit_nowait(
                EventType.DATAGRAM_RECEIVED, {"data": data, "session_id": self._session_id}, self
            )
            return
        queue = self._datagrams
        if queue is None:
            queue = self._datagrams = deque(maxlen=self._config.max_pending_datagrams)
        elif len(queue) == queue.maxlen:
            stats["datagrams_dropped"] += 1
        queue.append(data)
        waiter = self._datagram_waiter
        if waiter is not None:
            self._datagram_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _wake_datagrams(self) -> None:
        waiter = self._datagram_waiter
        if waiter is not None:
            self._datagram_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def receive_datagram(self, timeout: float | None = None) -> bytes:
        """Wait for the next datagram.

        Datagrams are queued (up to `max_pending_datagrams`, oldest dropped
        and counted in `stats["datagrams_dropped"]`) while no
        `DATAGRAM_RECEIVED` listener is registered.

        Args:
            timeout: Seconds to wait, or None for no limit.

        Returns:
            The payload.

        Raises:
            SessionClosedError: The session closed and the queue is empty.
            TimeoutError: Nothing arrived in time.
        """
        queue = self._datagrams
        if queue:
            # Hot path: no timeout context, no waiter when a datagram is queued.
            return queue.popleft()
        if timeout is None:
            return await self._wait_datagram()
        try:
            async with asyncio.timeout(timeout):
                return await self._wait_datagram()
        except builtins.TimeoutError as exc:
            raise TimeoutError("no datagram in time", operation="receive_datagram") from exc

    async def _wait_datagram(self) -> bytes:
        while True:
            queue = self._datagrams
            if queue:
                return queue.popleft()
            if self._state is SessionState.CLOSED:
                raise SessionClosedError(session_id=self._session_id)
            waiter = self._conn._loop.create_future()
            self._datagram_waiter = waiter
            await waiter

    async def incoming_datagrams(self) -> AsyncIterator[bytes]:
        """Iterate over received datagrams; ends when the session closes.

        Yields:
            Each payload.
        """
        while True:
            queue = self._datagrams  # created by the first datagram
            if queue:
                yield queue.popleft()
                continue
            try:
                yield await self.receive_datagram()
            except SessionClosedError:
                return

    # ------------------------------------------------------------------ diagnostics

    async def diagnostics(self) -> dict[str, Any]:
        """Return a snapshot of the session's state and counters.

        Returns:
            State, path, open streams, queued datagrams and the counters in `stats`.
        """
        return {
            "session_id": self._session_id,
            "state": self._state.value,
            "path": self._path,
            "dialect": self.dialect,
            "open_streams": len(self._streams),
            "pending_datagrams": len(self._datagrams or ()),
            **self.stats,
        }

    def __repr__(self) -> str:
        state = self._state.value
        return f"<WebTransportSession id={self._session_id} path={self._path!r} state={state}>"
