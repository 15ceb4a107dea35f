"""`WebTransportSession`: one WebTransport session on a QUIC connection.

The session's state lives in its protocol record (`_core.records.SessionRecord`);
this object is its public face. How the engine tells sessions and streams
what the protocol reported is `_dispatch`.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from ..shared.events import EventEmitter
from ..shared.exceptions import (
    DatagramError,
    SessionClosedError,
    SessionError,
    StreamError,
    TimeoutError,
    WebTransportError,
)
from ..shared.types import Address, Buffer, Headers, SessionCloseInfo, SessionState
from . import _aioquic
from ._core.datagrams import max_datagram_payload
from ._core.headers import checked_headers
from ._core.records import SessionRecord, StreamBlocker, StreamRecord
from .stream import WebTransportReceiveStream, WebTransportSendStream, WebTransportStream

if TYPE_CHECKING:
    from ._engine import ConnectionEngine
    from .connection import WebTransportConnection

__all__ = ["SessionCloseInfo", "WebTransportSession", "ended_by_peer"]

logger = logging.getLogger("pywebtransport.session")

# Kinds of incoming streams a wait accepts (bit mask).
_BIDI = 1
_UNI = 2


class WebTransportSession:
    """A WebTransport session: streams and datagrams between two endpoints.

    Sessions are created by `WebTransportClient.connect()` (client side) or
    handed to the server's handler. Use `async with session:` to close it on exit.
    """

    def __init__(self, engine: ConnectionEngine, record: SessionRecord) -> None:
        self._engine = engine
        self._rec = record
        self._config = engine.config
        record.owner = self
        loop = engine.loop
        record.ready = loop.create_future()
        record.ended = loop.create_future()
        self._max_datagram = 0
        self.key: tuple[int, int] = (engine.handle, record.session_id)
        """Unique key of this session across all connections: (connection handle, session id)."""
        record.counters = {
            "streams_opened": 0,
            "streams_accepted": 0,
            "datagrams_sent": 0,
            "datagrams_received": 0,
            "datagrams_dropped": 0,
            "bytes_datagrams_sent": 0,
            "bytes_datagrams_received": 0,
        }

    @property
    def stats(self) -> dict[str, int]:
        """Counters of this session.

        `streams_opened`, `streams_accepted`; `datagrams_sent`,
        `bytes_datagrams_sent`; `datagrams_received`, `bytes_datagrams_received`;
        `datagrams_dropped` (received ones the full receive queue dropped);
        `datagrams_send_dropped` (queued outgoing ones `send_datagram_nowait()`
        dropped to make room); `datagrams_expired` (queued outgoing ones older
        than `outgoing_datagram_max_age`); `datagrams_queued` (waiting to be sent).
        """
        rec = self._rec
        return {
            **rec.counters,
            "datagrams_send_dropped": rec.datagrams_send_dropped,
            "datagrams_expired": rec.datagrams_expired,
            "datagrams_queued": len(rec.outgoing or ()),
        }

    # ------------------------------------------------------------------ properties

    @property
    def session_id(self) -> int:
        """The session id (the stream id of its CONNECT request)."""
        return self._rec.session_id

    @property
    def connection(self) -> WebTransportConnection:
        """The QUIC connection that carries this session."""
        connection = self._engine.connection
        assert connection is not None
        return connection

    @property
    def path(self) -> str:
        """The request path, query string included."""
        return self._rec.path

    @property
    def query_params(self) -> dict[str, list[str]]:
        """The query string of the request path, parsed."""
        return parse_qs(urlsplit(self._rec.path).query)

    @property
    def authority(self) -> str:
        """The request's `:authority` (host:port)."""
        return self._rec.authority

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """Request (server side) or response (client side) headers, pseudo-headers included."""
        return self._rec.headers

    def header(self, name: str, default: str | None = None) -> str | None:
        """Return the first value of a header, decoded.

        Args:
            name: Header name, case-insensitive.
            default: Returned when the header is absent.

        Returns:
            The value, or `default`.
        """
        wanted = name.lower().encode()
        for key, value in self._rec.headers:
            if key == wanted:
                return value.decode("utf-8", "replace")
        return default

    @property
    def state(self) -> SessionState:
        """The session's state."""
        return self._rec.state

    @property
    def is_closed(self) -> bool:
        """True once the session is closed."""
        return self._rec.is_closed

    @property
    def is_ready(self) -> bool:
        """True once the session is established and not closed."""
        return self._rec.is_established

    @property
    def ready(self) -> asyncio.Future[None]:
        """Awaitable that completes when the session is established (the browser API's `ready`)."""
        future: asyncio.Future[None] = self._rec.ready
        return future

    @property
    def closed(self) -> asyncio.Future[SessionCloseInfo]:
        """Awaitable that resolves with `SessionCloseInfo` when the session ends.

        The browser API's `closed`. Awaiting it directly lets a cancellation of
        the awaiting task cancel the shared future; `wait_closed()` shields it.
        """
        future: asyncio.Future[SessionCloseInfo] = self._rec.ended
        return future

    @property
    def close_info(self) -> SessionCloseInfo | None:
        """How the session ended, or None while it is open."""
        ended = self._rec.ended
        return ended.result() if ended.done() and not ended.cancelled() else None

    @property
    def events(self) -> EventEmitter:
        """Session events: `SESSION_READY`, `SESSION_CLOSED`, `DATAGRAM_RECEIVED`, ...

        Created on first use; see `EventType` for each event's data keys.
        """
        rec = self._rec
        if rec.emitter is None:
            rec.emitter = self._engine.new_emitter()
        emitter: EventEmitter = rec.emitter
        return emitter

    @property
    def remote_address(self) -> Address | None:
        """The peer's address."""
        return self.connection.remote_address

    @property
    def wt_protocol(self) -> str | None:
        """The negotiated subprotocol, or None.

        On the server it may be set before the session is accepted to select
        one of `wt_available_protocols` (setting anything else raises
        `ValueError`).
        """
        return self._rec.protocol

    @wt_protocol.setter
    def wt_protocol(self, value: str | None) -> None:
        self._engine.core.choose_protocol(self._rec, value)

    @property
    def wt_available_protocols(self) -> list[str] | None:
        """Subprotocols offered in the CONNECT (`wt-available-protocols`), in preference order.

        On the server, set `wt_protocol` to one of them before accepting to
        select it (or let `ServerConfig.wt_supported_protocols` choose).
        """
        return self._rec.offered_protocols

    @property
    def protocol(self) -> str:
        """The negotiated subprotocol as the browser API reports it (`""` when none)."""
        return self._rec.protocol or ""

    @property
    def dialect(self) -> str:
        """The WebTransport draft spoken on this session, e.g. ``"draft-02"``."""
        return self._rec.dialect.name

    @property
    def max_datagram_size(self) -> int:
        """Largest datagram payload that fits in one QUIC packet now.

        It follows from the packet size (`max_datagram_size` of the config,
        the whole UDP payload) minus the QUIC packet overhead, the DATAGRAM
        frame header and the session's quarter stream id, and from the peer's
        `max_datagram_frame_size`.
        """
        engine = self._engine
        prefix = len(self._rec.datagram_prefix)
        limits = _aioquic.datagram_limits(engine.quic)
        if limits is None:
            return max_datagram_payload(engine.config.max_datagram_size, None, prefix)
        return max_datagram_payload(limits[1], limits[0], prefix)

    # ------------------------------------------------------------------ lifecycle

    async def accept(self, headers: Headers | None = None) -> None:
        """Accept a requested session (server side).

        Args:
            headers: Extra response headers (names are lower-cased). The selected
                subprotocol (`wt_protocol`) is added as `wt-protocol`.

        Raises:
            ValueError: A header is not valid in HTTP/3 (e.g. a pseudo-header,
                surrounding whitespace); the session stays pending.
        """
        rec = self._rec
        if rec.state is not SessionState.CONNECTING or rec.is_client:
            return
        items = headers.items() if isinstance(headers, dict) else headers or ()
        extra = checked_headers(items, "response")
        engine = self._engine
        engine.core.accept(rec, protocol=rec.protocol, headers=extra)
        engine.after_command()
        logger.debug(
            "connection %d: session %d accepted (%s, subprotocol %r)",
            engine.handle,
            rec.session_id,
            rec.dialect.name,
            rec.protocol,
        )

    async def reject(self, status_code: int = 403) -> None:
        """Refuse a requested session with an HTTP status (server side).

        Args:
            status_code: The HTTP status, 4xx or 5xx.
        """
        rec = self._rec
        if rec.state is not SessionState.CONNECTING or rec.is_client:
            return
        self._engine.reject(rec, status_code)

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
                await asyncio.shield(self._rec.ready)
        except builtins.TimeoutError as exc:
            raise TimeoutError("session did not become ready in time", operation="ready") from exc

    async def close(
        self, error_code: int = 0, reason: str | None = None, *, timeout: float | None = None
    ) -> None:
        """Close the session gracefully: what was written reaches the peer first.

        The session stops opening streams and sending datagrams at once. Then
        this waits until the peer has acknowledged every stream this side
        finished (`write(..., end_stream=True)` or `close()` of a stream): its
        data and its FIN, so the peer's reader gets all of it. Then the
        CLOSE_WEBTRANSPORT_SESSION capsule and the CONNECT stream's FIN go
        out, and streams still open (not finished by this side) are reset
        with `WT_SESSION_GONE`; the peer does the same to its own. The wait
        ends early when the peer closes the session or the connection; after
        `timeout` the close goes ahead and the peer's readers of streams still
        in flight get a `StreamError`. For an immediate close, see `abort()`.

        Idempotent: a second call waits for the first to finish. A session not
        established yet is cancelled instead (a server answers 500).

        Args:
            error_code: Application error code (0..2**32-1) the peer sees.
            reason: Reason text the peer sees (cut to 1024 UTF-8 bytes).
            timeout: Longest wait for the peer's acknowledgements, in seconds
                (default: the config's `close_timeout`).
        """
        rec = self._rec
        if rec.is_closed:
            return
        if rec.state is SessionState.CLOSING:
            await self.wait_closed()
            return
        wait = self._config.close_timeout if timeout is None else timeout
        await self._engine.finish_sessions([(rec, error_code, reason or "")], wait)

    def abort(self, error_code: int = 0, reason: str | None = None) -> None:
        """Close the session now, without waiting for written data to arrive.

        The close capsule is queued and sent at once and the streams this side
        has not finished are reset (`WT_SESSION_GONE`). The peer stops reading
        every stream whose data has not all arrived when it reads the capsule,
        finished ones included: their readers get a `StreamError`. Idempotent.

        Args:
            error_code: Application error code (0..2**32-1) the peer sees.
            reason: Reason text the peer sees (cut to 1024 UTF-8 bytes).
        """
        rec = self._rec
        if rec.is_closed:
            return
        engine = self._engine
        engine.core.close_session(rec, error_code, reason or "")
        engine.after_command()

    async def drain(self) -> None:
        """Ask the peer to finish up (DRAIN_WEBTRANSPORT_SESSION); the session stays open."""
        engine = self._engine
        engine.core.drain_session(self._rec)
        engine.after_command()

    async def wait_closed(self) -> SessionCloseInfo:
        """Wait until the session ends (a cancelled waiter leaves `closed` intact).

        Returns:
            How it ended.
        """
        ended: asyncio.Future[SessionCloseInfo] = self._rec.ended
        return await asyncio.shield(ended)

    async def __aenter__(self) -> WebTransportSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ streams

    def _check_open(self) -> None:
        rec = self._rec
        if not rec.is_established:
            info = self.close_info
            raise SessionClosedError(
                f"session {rec.session_id} is {rec.state.value}",
                session_id=rec.session_id,
                error_code=info.error_code if info else None,
                reason=info.reason if info else "",
            )

    async def _create_stream(self, unidirectional: bool) -> StreamRecord:
        self._check_open()
        rec = self._rec
        engine = self._engine
        core = engine.core
        blocker = core.stream_blocker(rec, unidirectional=unidirectional)
        if blocker is not None:
            logger.debug(
                "session %d: opening a stream waits for the peer's %s stream credit",
                rec.session_id,
                blocker.value,
            )
            timeout = self._config.stream_creation_timeout
            try:
                async with asyncio.timeout(timeout):
                    while blocker is not None:
                        engine.after_command()  # a WT_STREAMS_BLOCKED capsule may be queued
                        if blocker is StreamBlocker.QUIC:
                            await engine.wait_stream_credit()
                        else:
                            await engine.wait_session_credit(rec)
                        self._check_open()
                        blocker = core.stream_blocker(rec, unidirectional=unidirectional)
            except builtins.TimeoutError as exc:
                kind = "uni" if unidirectional else "bi"
                raise TimeoutError(
                    f"the peer granted no new {kind}directional stream within "
                    f"stream_creation_timeout={timeout}s",
                    operation="create_stream",
                ) from exc
        stream = core.open_stream(rec, unidirectional=unidirectional)
        # The stream header waits for the first write (one packet, sent at once);
        # a stream opened and left empty still goes out on the next iteration.
        engine.after_command(defer=True)
        logger.debug(
            "session %d: opened %s stream %d",
            rec.session_id,
            "unidirectional" if unidirectional else "bidirectional",
            stream.stream_id,
        )
        rec.counters["streams_opened"] += 1
        return stream

    async def create_bidirectional_stream(self) -> WebTransportStream:
        """Open a bidirectional stream.

        Returns:
            The new stream.

        Raises:
            SessionClosedError: The session is closed.
            TimeoutError: The peer granted no stream credit within `stream_creation_timeout`.
        """
        record = await self._create_stream(False)
        return WebTransportStream(self, record, self._engine)

    async def create_unidirectional_stream(self) -> WebTransportSendStream:
        """Open a unidirectional (send-only) stream.

        Returns:
            The new stream.

        Raises:
            SessionClosedError: The session is closed.
            TimeoutError: The peer granted no stream credit within `stream_creation_timeout`.
        """
        record = await self._create_stream(True)
        return WebTransportSendStream(self, record, self._engine)

    def _pop_incoming(self, kinds: int) -> WebTransportReceiveStream | None:
        rec = self._rec
        if kinds & _BIDI and rec.incoming_bidi:
            stream: WebTransportReceiveStream = rec.incoming_bidi.popleft()
            return stream
        if kinds & _UNI and rec.incoming_uni:
            stream = rec.incoming_uni.popleft()
            return stream
        return None

    async def _next_incoming(
        self, kinds: int, timeout: float | None
    ) -> WebTransportReceiveStream | None:
        if timeout is not None:
            async with asyncio.timeout(timeout):
                return await self._next_incoming(kinds, None)
        # Without a timeout, no timeout context and no shield: a server handler
        # idles here for the whole session, holding whatever this wait allocates.
        rec = self._rec
        while True:
            stream = self._pop_incoming(kinds)
            if stream is not None:
                return stream
            if rec.is_closed:
                return None
            waiter = rec.incoming_waiter
            if waiter is None or waiter.done():
                waiter = rec.incoming_waiter = self._engine.loop.create_future()
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
            raise SessionClosedError(session_id=self.session_id)
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
        """Send an unreliable datagram, waiting while the outgoing queue is full.

        Datagrams QUIC cannot send yet (congestion) wait in a queue of
        `outgoing_datagram_high_water_mark` datagrams; while it is full this
        waits, so a fast sender is held to what the path carries. Queued
        datagrams older than `outgoing_datagram_max_age` are dropped before
        sending (`stats["datagrams_expired"]`).

        Args:
            data: The payload (`str` is encoded as UTF-8).

        Raises:
            DatagramError: The payload is larger than `max_datagram_size`.
            SessionClosedError: The session is closed.
        """
        rec = self._rec
        mark = self._config.outgoing_datagram_high_water_mark
        while rec.outgoing is not None and len(rec.outgoing) >= mark:
            self._check_open()
            await self._engine.wait_datagram_room(rec)
        self.send_datagram_nowait(data)

    def send_datagram_nowait(self, data: Buffer | str) -> None:
        """Send an unreliable datagram without waiting.

        When the outgoing queue is full the oldest queued datagram is dropped
        to make room (`stats["datagrams_send_dropped"]`): fresh data wins.

        Args:
            data: The payload (`str` is encoded as UTF-8).

        Raises:
            DatagramError: The payload is larger than `max_datagram_size`.
            SessionClosedError: The session is closed.
        """
        if isinstance(data, str):
            data = data.encode("utf-8")
        rec = self._rec
        if not rec.is_established:
            self._check_open()
        size = len(data)
        # Fixed once the handshake is done (peer's frame limit and our packet size).
        limit = self._max_datagram or self._cache_max_datagram()
        if size > limit:
            raise DatagramError(
                f"datagram of {size} bytes exceeds the {limit}-byte payload limit of this "
                f"session (max_datagram_size={self._config.max_datagram_size} is the whole "
                "QUIC packet, headers included); send large payloads on a stream",
                datagram_size=size,
                max_size=limit,
            )
        self._engine.send_datagram(rec, data)
        stats = rec.counters
        stats["datagrams_sent"] += 1
        stats["bytes_datagrams_sent"] += size

    def _cache_max_datagram(self) -> int:
        self._max_datagram = self.max_datagram_size
        return self._max_datagram

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
        queue = self._rec.datagrams
        if queue:
            # Hot path: no timeout context, no waiter when a datagram is queued.
            data: bytes = queue.popleft()
            return data
        if timeout is None:
            return await self._wait_datagram()
        try:
            async with asyncio.timeout(timeout):
                return await self._wait_datagram()
        except builtins.TimeoutError as exc:
            raise TimeoutError("no datagram in time", operation="receive_datagram") from exc

    async def _wait_datagram(self) -> bytes:
        rec = self._rec
        while True:
            queue = rec.datagrams
            if queue:
                data: bytes = queue.popleft()
                return data
            if rec.is_closed:
                raise SessionClosedError(session_id=rec.session_id)
            waiter = self._engine.loop.create_future()
            rec.datagram_waiter = waiter
            await waiter

    async def incoming_datagrams(self) -> AsyncIterator[bytes]:
        """Iterate over received datagrams; ends when the session closes.

        Yields:
            Each payload.
        """
        while True:
            queue = self._rec.datagrams  # created by the first datagram
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
        rec = self._rec
        return {
            "session_id": rec.session_id,
            "state": rec.state.value,
            "path": rec.path,
            "dialect": rec.dialect.name,
            "open_streams": len(rec.streams),
            "pending_datagrams": len(rec.datagrams or ()),
            **self.stats,
        }

    def __repr__(self) -> str:
        rec = self._rec
        return (
            f"<WebTransportSession id={rec.session_id} path={rec.path!r} state={rec.state.value}>"
        )


def ended_by_peer(session: WebTransportSession, exc: BaseException) -> bool:
    """Return whether `exc` only reports that the peer left or gave up.

    True for an error of this library that the peer caused (a stream it
    reset or stopped, a session it closed) or that the session's end by the
    peer or by a vanished connection caused. Such an error ending a handler
    is no bug of the handler: a closed browser tab looks like this.

    Args:
        session: The session the handler served.
        exc: What the handler raised.

    Returns:
        The answer.
    """
    if not isinstance(exc, WebTransportError) or isinstance(exc, TimeoutError):
        return False
    if exc.remote:
        return True
    info = session.close_info
    return info is not None and info.remote and isinstance(exc, StreamError | SessionError)
