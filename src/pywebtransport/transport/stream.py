"""WebTransport streams: send, receive and bidirectional.

Backpressure works both ways through QUIC flow control:

* `write()` hands data to QUIC and then waits while more than
  `max_stream_write_buffer_size` bytes are buffered but not yet acknowledged
  by the peer, so a fast writer cannot make memory grow without bound.
* Received data is granted new QUIC credit only as the application reads it:
  a slow reader makes the peer's writer wait, not this process's memory grow.

A stream's state lives in its protocol record; these objects read it and wait
on the engine. A stream object the application no longer references, while the
stream is open, is closed for it: its sending half reset and its receiving half
stopped (code 0), so that it does not hold the peer's stream credit until the
session ends.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ..shared.events import EventEmitter
from ..shared.exceptions import StreamError, TimeoutError
from ..shared.types import Buffer, StreamDirection, StreamState
from ._core.records import ExchangeRecord, StreamRecord, fresh

if TYPE_CHECKING:
    from ._engine import ConnectionEngine
    from .session import WebTransportSession

__all__ = ["WebTransportReceiveStream", "WebTransportSendStream", "WebTransportStream"]

logger = logging.getLogger("pywebtransport.stream")

_DEFAULT_READ_ALL_LIMIT = 64 * 1024 * 1024


class _StreamBase:
    """What every stream has: identity, state and an event emitter."""

    def __init__(
        self, session: WebTransportSession, record: StreamRecord, engine: ConnectionEngine
    ) -> None:
        self._session = session
        self._rec = record
        self._engine = engine
        record.owner = self

    def __del__(self) -> None:
        # The application let go of a stream it can no longer finish: like a socket,
        # it is closed for it (on the loop, not inside whatever the collector interrupted).
        rec = self._rec
        if not rec.is_finished and not rec.session.is_closed:
            engine = self._engine
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                engine.loop.call_soon(engine.abandon_stream, rec)

    @property
    def stream_id(self) -> int:
        """The QUIC stream id."""
        return self._rec.stream_id

    @property
    def session(self) -> WebTransportSession:
        """The session this stream belongs to."""
        return self._session

    @property
    def is_remote(self) -> bool:
        """True when the peer opened this stream."""
        return not self._rec.local

    @property
    def direction(self) -> StreamDirection:
        """Which way data flows, seen from this endpoint."""
        raise NotImplementedError

    @property
    def events(self) -> EventEmitter:
        """Stream events: `STREAM_RESET_RECEIVED`, `STOP_SENDING_RECEIVED`, `STREAM_CLOSED`.

        Created on first use; see `EventType` for each event's data keys.
        """
        rec = self._rec
        if rec.emitter is None:
            rec.emitter = self._engine.new_emitter()
        emitter: EventEmitter = rec.emitter
        return emitter

    @property
    def state(self) -> StreamState:
        """The stream's state, seen from this endpoint."""
        rec = self._rec
        if rec.reset_received:
            return StreamState.RESET_RECEIVED
        if rec.reset_sent:
            return StreamState.RESET_SENT
        receive_done = rec.read_done and not rec.buffered
        if receive_done and rec.write_done:
            return StreamState.CLOSED
        if rec.write_done:
            return StreamState.HALF_CLOSED_LOCAL
        if receive_done:
            return StreamState.HALF_CLOSED_REMOTE
        return StreamState.OPEN

    @property
    def is_closed(self) -> bool:
        """True when neither direction can carry more data."""
        rec = self._rec
        return rec.read_done and not rec.buffered and rec.write_done

    async def diagnostics(self) -> dict[str, object]:
        """Return a snapshot of the stream.

        Returns:
            Id, state, direction, buffered and consumed byte counts.
        """
        rec = self._rec
        return {
            "stream_id": rec.stream_id,
            "session_id": rec.session.session_id,
            "state": self.state.value,
            "direction": self.direction.value,
            "is_remote": not rec.local,
            "buffered": rec.buffered,
            "consumed": rec.consumed,
            "send_buffered": self._engine.send_buffered(rec),
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self._rec.stream_id} state={self.state.value}>"


class WebTransportReceiveStream(_StreamBase):
    """The receiving half of a WebTransport stream.

    Reads return data in the order it was sent, at most what is buffered, and
    `b""` once the peer ended the stream. A reset from the peer raises
    `StreamError` whose `error_code` is the peer's application code.
    """

    def __init__(
        self, session: WebTransportSession, record: StreamRecord, engine: ConnectionEngine
    ) -> None:
        super().__init__(session, record, engine)
        self._read_timeout = engine.config.read_timeout
        self._read_timer: asyncio.TimerHandle | None = None
        self._read_wait_started = 0.0

    @property
    def direction(self) -> StreamDirection:
        """Which way data flows, seen from this endpoint."""
        return StreamDirection.RECEIVE_ONLY

    @property
    def can_read(self) -> bool:
        """True while reading may still return data."""
        return not self._rec.read_done or self._rec.buffered > 0

    async def _wait_readable(self) -> None:
        rec = self._rec
        if rec.reader is not None:
            raise StreamError(
                "another coroutine is already reading this stream", stream_id=rec.stream_id
            )
        loop = self._engine.loop
        waiter: asyncio.Future[None] = loop.create_future()
        rec.reader = waiter
        if self._read_timeout is not None:
            # One lazily re-armed timer per stream instead of a timeout context
            # per wait: a reader woken for every chunk would otherwise create
            # and cancel a timer handle per chunk.
            self._read_wait_started = loop.time()
            if self._read_timer is None:
                self._read_timer = loop.call_at(
                    self._read_wait_started + self._read_timeout, self._on_read_timer
                )
        try:
            await waiter
        finally:
            if rec.reader is waiter:
                rec.reader = None

    def _on_read_timer(self) -> None:
        self._read_timer = None
        rec = self._rec
        waiter = rec.reader
        timeout = self._read_timeout
        if waiter is None or waiter.done() or timeout is None:
            return
        due = self._read_wait_started + timeout
        loop = self._engine.loop
        if loop.time() < due:
            self._read_timer = loop.call_at(due, self._on_read_timer)
            return
        rec.reader = None
        waiter.set_exception(
            TimeoutError(
                f"no data on stream {rec.stream_id} within read_timeout={timeout}s",
                operation="read",
            )
        )

    def _take(self, max_bytes: int) -> bytes | None:
        engine = self._engine
        data = engine.core.read(self._rec, max_bytes)
        if data is not None:
            engine.after_command()
            if self._rec.read_done and self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None
        return data

    async def read(self, max_bytes: int = -1) -> bytes:
        """Read up to `max_bytes` bytes (all that is buffered when negative).

        Waits until at least one byte is available or the peer ended the stream.

        Args:
            max_bytes: Upper bound on the returned size; negative for no bound.

        Returns:
            The data, or `b""` once the peer ended the stream.

        Raises:
            StreamError: The peer reset the stream (`error_code` is its code),
                or the session or connection closed.
            TimeoutError: Nothing arrived within `read_timeout`.
        """
        if max_bytes == 0:
            return b""
        while (data := self._take(max_bytes)) is None:
            await self._wait_readable()
        return data

    async def read_all(self, max_size: int = _DEFAULT_READ_ALL_LIMIT) -> bytes:
        """Read until the peer ends the stream.

        Args:
            max_size: Largest total accepted; more raises (the stream is then
                stopped so the peer stops sending).

        Returns:
            Everything the peer sent.

        Raises:
            StreamError: More than `max_size` bytes arrived, or the stream was reset.
            TimeoutError: A read waited longer than `read_timeout`.
        """
        parts: list[bytes] = []
        total = 0
        while True:
            chunk = await self.read()
            if not chunk:
                return b"".join(parts)
            total += len(chunk)
            if total > max_size:
                await self.stop_receiving()
                raise StreamError(
                    f"stream {self.stream_id} sent more than read_all(max_size={max_size}) bytes",
                    stream_id=self.stream_id,
                )
            parts.append(chunk)

    async def readexactly(self, n: int) -> bytes:
        """Read exactly `n` bytes.

        Works for any `n`, also larger than the stream's receive window: the
        bytes are taken in steps as they arrive, so the peer keeps getting
        credit. Waits (each step within `read_timeout`) until `n` bytes
        arrived or the stream ended.

        Args:
            n: Number of bytes.

        Returns:
            Exactly `n` bytes.

        Raises:
            asyncio.IncompleteReadError: The stream ended first (`.partial` has what came).
            StreamError: The stream was reset, or its session or connection closed.
            TimeoutError: A step waited longer than `read_timeout`.
        """
        if n < 0:
            raise ValueError("readexactly() needs n >= 0")
        rec = self._rec
        if rec.buffered >= n:
            return (self._take(n) or b"") if n else b""
        parts: list[bytes] = []
        missing = n
        while missing:
            chunk = await self.read(missing)
            if not chunk:
                raise asyncio.IncompleteReadError(b"".join(parts), n)
            parts.append(chunk)
            missing -= len(chunk)
        return b"".join(parts)

    async def readuntil(self, separator: bytes = b"\n", limit: int = -1) -> bytes:
        """Read up to and including `separator`.

        Works for any `limit`, also larger than the stream's receive window:
        bytes are taken as they arrive (the peer keeps getting credit) and
        what follows the separator stays buffered for the next read.

        Args:
            separator: The byte sequence to stop after.
            limit: Most bytes to take while searching; negative means 64 KiB.

        Returns:
            The data including the separator.

        Raises:
            asyncio.IncompleteReadError: The stream ended before the separator.
            StreamError: The separator was not found within `limit` bytes, or
                the stream was reset, or its session or connection closed.
            TimeoutError: A step waited longer than `read_timeout`.
        """
        if not separator:
            raise ValueError("separator must not be empty")
        rec = self._rec
        bound = limit if limit > 0 else 65536
        taken = bytearray()
        while True:
            if rec.buffered:
                searched = max(0, len(taken) - len(separator) + 1)
                taken += self._take(max(1, bound + len(separator) - len(taken))) or b""
                index = taken.find(separator, searched)
                if index >= 0:
                    end = index + len(separator)
                    if end <= bound:
                        self._engine.core.put_back(rec, bytes(taken[end:]))
                        return bytes(taken[:end])
                    break
                if len(taken) > bound:
                    break
            if rec.read_error is not None:
                raise fresh(rec.read_error)
            if rec.fin_received:
                raise asyncio.IncompleteReadError(bytes(taken), None)
            await self._wait_readable()
        self._engine.core.put_back(rec, bytes(taken))
        raise StreamError(
            f"separator not found within {bound} bytes on stream {rec.stream_id}",
            stream_id=rec.stream_id,
        )

    async def readline(self, limit: int = -1) -> bytes:
        """Read one line, including its ``\\n``.

        Args:
            limit: Most bytes to buffer while searching; negative means 64 KiB.

        Returns:
            The line; at EOF a final line without newline, or `b""`.
        """
        try:
            return await self.readuntil(b"\n", limit)
        except asyncio.IncompleteReadError as exc:
            return exc.partial

    async def stop_receiving(self, error_code: int = 0) -> None:
        """Tell the peer to stop sending (STOP_SENDING) and discard what is buffered.

        Args:
            error_code: Application error code sent to the peer.
        """
        rec = self._rec
        if rec.read_done:
            return
        engine = self._engine
        engine.core.stop_receiving(rec, error_code)
        engine.after_command()
        engine.wake_stream(rec)
        logger.debug("stream %d: stopped receiving with code %d", rec.stream_id, error_code)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iter_chunks()

    async def _iter_chunks(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self.read()
            if not chunk:
                return
            yield chunk

    async def close(self) -> None:
        """Stop receiving if the stream is still open."""
        await self.stop_receiving()

    async def __aenter__(self) -> WebTransportReceiveStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class WebTransportSendStream(_StreamBase):
    """The sending half of a WebTransport stream.

    `write()` applies backpressure: it returns once the data is handed to
    QUIC and no more than `max_stream_write_buffer_size` bytes wait for the
    peer's acknowledgement. Several tasks may write or flush the same stream
    at once; each waits for its own condition.
    """

    def __init__(
        self, session: WebTransportSession, record: StreamRecord, engine: ConnectionEngine
    ) -> None:
        super().__init__(session, record, engine)
        self._init_sending(engine)

    def _init_sending(self, engine: ConnectionEngine) -> None:
        self._write_timeout = engine.config.write_timeout
        self._high_water = engine.config.max_stream_write_buffer_size

    @property
    def direction(self) -> StreamDirection:
        """Which way data flows, seen from this endpoint."""
        return StreamDirection.SEND_ONLY

    @property
    def can_write(self) -> bool:
        """True while `write()` may be called."""
        return not self._rec.write_done

    def _check_writable(self) -> None:
        self._rec.check_writable()

    async def write(self, data: Buffer | str, end_stream: bool = False) -> None:
        """Send data, waiting while the peer's flow control or the local buffer is full.

        Args:
            data: Bytes to send (`str` is encoded as UTF-8).
            end_stream: Send FIN after the data.

        Raises:
            StreamError: The stream was closed or reset locally, or the peer
                sent STOP_SENDING (`error_code` is its code).
            TimeoutError: The buffer stayed full longer than `write_timeout`.
        """
        if isinstance(data, str):
            data = data.encode("utf-8")
        self._check_writable()
        rec = self._rec
        engine = self._engine
        core = engine.core
        view = memoryview(data)
        size = len(view)
        high = self._high_water
        limited = rec.session.flow is not None
        offset = 0
        while True:
            # Hand QUIC at most one buffer's worth at a time so memory stays bounded.
            step = min(size - offset, high)
            if limited and step:
                step = await self._session_credit(step)
            last = offset + step >= size
            core.send(rec, view[offset : offset + step], end_stream and last)
            engine.after_command()
            offset += step
            if last:
                break
            await self._drain()
            self._check_writable()
        if not end_stream and engine.send_buffered(rec) > high:
            await self._drain()

    async def _session_credit(self, wanted: int) -> int:
        """Wait until session flow control (draft-15) allows sending; return how much."""
        rec = self._rec
        engine = self._engine
        while True:
            allowed = engine.core.send_allowance(rec, wanted)
            if allowed > 0:
                # A WT_DATA_BLOCKED capsule it queued leaves with the caller's data.
                return allowed
            engine.after_command()  # the WT_DATA_BLOCKED capsule
            logger.debug("stream %d: blocked by session flow control", rec.stream_id)
            waiter = engine.wait_session_credit(rec.session)
            try:
                async with asyncio.timeout(self._write_timeout):
                    await waiter
            except builtins.TimeoutError as exc:
                raise TimeoutError(
                    f"stream {rec.stream_id}: the peer granted no session credit within "
                    f"write_timeout={self._write_timeout}s",
                    operation="write",
                ) from exc
            self._check_writable()

    async def _wait_acknowledged(self, threshold: int, timeout: float | None) -> None:
        await wait_acknowledged(self._engine, self._rec, threshold, timeout)

    async def _drain(self) -> None:
        await self._wait_acknowledged(self._high_water // 2, self._write_timeout)

    async def write_all(
        self, data: Buffer | str, chunk_size: int = 65536, end_stream: bool = True
    ) -> None:
        """Send all of `data` in chunks of `chunk_size`, then (by default) FIN.

        Args:
            data: Bytes to send.
            chunk_size: Size of each hand-off to QUIC.
            end_stream: Send FIN after the data.
        """
        if isinstance(data, str):
            data = data.encode("utf-8")
        view = memoryview(data)
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        for start in range(0, len(view), chunk_size):
            await self.write(view[start : start + chunk_size])
        if end_stream:
            await self.write(b"", end_stream=True)

    async def flush(self) -> None:
        """Wait until the peer acknowledged everything written so far.

        Raises:
            StreamError: The sending half failed (reset, STOP_SENDING, session
                or connection end) before everything was acknowledged.
        """
        await self._wait_acknowledged(0, None)

    async def reset(self, error_code: int = 0) -> None:
        """Abort sending (RESET_STREAM) with an application error code.

        Args:
            error_code: Code the peer receives (0..2**32-1).
        """
        rec = self._rec
        if rec.write_done:
            return
        engine = self._engine
        engine.reset_stream(rec, error_code)
        engine.wake_stream(rec)
        logger.debug("stream %d: reset with code %d", rec.stream_id, error_code)

    async def close(self, error_code: int | None = None) -> None:
        """Finish sending: FIN when `error_code` is None, else reset with it.

        Args:
            error_code: None for a clean end, or a reset code.
        """
        if error_code is not None:
            await self.reset(error_code)
        elif not self._rec.write_done:
            await self.write(b"", end_stream=True)

    async def __aenter__(self) -> WebTransportSendStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class WebTransportStream(WebTransportReceiveStream, WebTransportSendStream):
    """A bidirectional WebTransport stream: both `read*` and `write*` methods."""

    def __init__(
        self, session: WebTransportSession, record: StreamRecord, engine: ConnectionEngine
    ) -> None:
        WebTransportReceiveStream.__init__(self, session, record, engine)
        self._init_sending(engine)

    @property
    def direction(self) -> StreamDirection:
        """Which way data flows, seen from this endpoint."""
        return StreamDirection.BIDIRECTIONAL

    async def close(self, error_code: int | None = None) -> None:
        """Finish sending: FIN, or with `error_code` reset and also stop receiving.

        Args:
            error_code: None for a clean end, or a reset code.
        """
        await WebTransportSendStream.close(self, error_code)
        if error_code is not None:
            await self.stop_receiving(error_code)

    async def __aenter__(self) -> WebTransportStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def wait_acknowledged(
    engine: ConnectionEngine,
    rec: StreamRecord | ExchangeRecord,
    threshold: int,
    timeout: float | None,
) -> None:
    """Wait until at most `threshold` bytes of a stream's sending half are unacknowledged.

    Args:
        engine: The stream's connection.
        rec: The stream (or plain HTTP/3 exchange).
        threshold: Bytes that may stay in flight.
        timeout: Seconds the peer may take to acknowledge, or None.

    Raises:
        StreamError: The sending half failed meanwhile.
        TimeoutError: The peer accepted no data within `timeout`.
    """
    while engine.send_buffered(rec) > threshold:
        if rec.write_error is not None:
            raise fresh(rec.write_error)
        waiter = engine.wait_writable(rec)
        if timeout is None:
            await waiter
            continue
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except builtins.TimeoutError as exc:
            raise TimeoutError(
                f"stream {rec.stream_id}: peer accepted no data within write_timeout={timeout}s",
                operation="write",
            ) from exc
    if rec.write_error is not None:
        raise fresh(rec.write_error)
