"""WebTransport streams: send, receive and bidirectional.

Backpressure works both ways through QUIC flow control:

* `write()` hands data to QUIC and then waits while more than
  `max_stream_write_buffer_size` bytes are buffered but not yet acknowledged
  by the peer, so a fast writer cannot make memory grow without bound.
* Received data is granted new QUIC credit only as the application reads it:
  a slow reader makes the peer's writer wait, not this process's memory grow.
"""

from __future__ import annotations

import asyncio
import builtins
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ..shared.events import EventEmitter
from ..shared.exceptions import StreamError, TimeoutError
from ..shared.types import Buffer, StreamDirection, StreamState

if TYPE_CHECKING:
    from .session import WebTransportSession

__all__ = ["WebTransportReceiveStream", "WebTransportSendStream", "WebTransportStream"]

_DEFAULT_READ_ALL_LIMIT = 64 * 1024 * 1024


class _StreamBase:
    """What every stream has: identity, state and an event emitter."""

    def __init__(self, session: WebTransportSession, stream_id: int, *, is_remote: bool) -> None:
        self._session = session
        self._conn = session._conn
        self._stream_id = stream_id
        self._is_remote = is_remote
        self._events: EventEmitter | None = None
        self._recv_done = True
        self._send_done = True
        self._reset_sent = False
        self._reset_received = False

    @property
    def stream_id(self) -> int:
        """The QUIC stream id."""
        return self._stream_id

    @property
    def session(self) -> WebTransportSession:
        """The session this stream belongs to."""
        return self._session

    @property
    def is_remote(self) -> bool:
        """True when the peer opened this stream."""
        return self._is_remote

    @property
    def direction(self) -> StreamDirection:
        """Which way data flows, seen from this endpoint."""
        raise NotImplementedError

    @property
    def events(self) -> EventEmitter:
        """This stream's event emitter (created on first use)."""
        if self._events is None:
            self._events = EventEmitter()
        return self._events

    @property
    def state(self) -> StreamState:
        """The stream's state, seen from this endpoint."""
        if self._reset_received:
            return StreamState.RESET_RECEIVED
        if self._reset_sent:
            return StreamState.RESET_SENT
        if self._recv_done and self._send_done:
            return StreamState.CLOSED
        if self._send_done:
            return StreamState.HALF_CLOSED_LOCAL
        if self._recv_done:
            return StreamState.HALF_CLOSED_REMOTE
        return StreamState.OPEN

    @property
    def is_closed(self) -> bool:
        """True when neither direction can carry more data."""
        return self._recv_done and self._send_done

    def _maybe_finished(self) -> None:
        if self._recv_done and self._send_done:
            self._conn._stream_finished(self)

    def _abort(self, error: StreamError) -> None:
        """Fail every pending and future operation (session or connection ended)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self._stream_id} state={self.state.value}>"


class WebTransportReceiveStream(_StreamBase):
    """The receiving half of a WebTransport stream.

    Reads return data in the order it was sent, at most what is buffered, and
    `b""` once the peer ended the stream. A reset from the peer raises
    `StreamError` whose `error_code` is the peer's application code.
    """

    def __init__(self, session: WebTransportSession, stream_id: int, *, is_remote: bool) -> None:
        super().__init__(session, stream_id, is_remote=is_remote)
        self._recv_done = False
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False
        self._read_error: StreamError | None = None
        self._read_waiter: asyncio.Future[None] | None = None
        self._read_timeout = session._config.read_timeout
        self._read_timer: asyncio.TimerHandle | None = None
        self._read_wait_started = 0.0

    @property
    def direction(self) -> StreamDirection:
        """Which way data flows, seen from this endpoint."""
        return StreamDirection.RECEIVE_ONLY

    @property
    def can_read(self) -> bool:
        """True while reading may still return data."""
        return not self._recv_done or self._buffered > 0

    def _maybe_finished(self) -> None:
        if self._recv_done and self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        super()._maybe_finished()

    # -- fed by the connection (hot path: no task, no event, no copy)

    def _feed(self, data: bytes, end_stream: bool) -> None:
        if data:
            self._chunks.append(data)
            self._buffered += len(data)
        if end_stream:
            self._eof = True
        waiter = self._read_waiter
        if waiter is not None:
            self._read_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _fail_read(self, error: StreamError) -> None:
        if self._read_error is None and not self._eof:
            self._read_error = error
        self._recv_done = True
        waiter = self._read_waiter
        if waiter is not None:
            self._read_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        self._maybe_finished()

    def _abort(self, error: StreamError) -> None:
        self._fail_read(error)

    # -- reading

    async def _wait_readable(self) -> None:
        if self._read_waiter is not None:
            raise StreamError(
                "another coroutine is already reading this stream", stream_id=self._stream_id
            )
        loop = self._conn._loop
        waiter = loop.create_future()
        self._read_waiter = waiter
        if self._read_timeout is not None:
            # One lazily re-armed timer per stream instead of a timeout context
            # per wait: a reader woken for every datagram would otherwise create
            # and cancel a timer handle per datagram.
            self._read_wait_started = loop.time()
            if self._read_timer is None:
                self._read_timer = loop.call_at(
                    self._read_wait_started + self._read_timeout, self._on_read_timer
                )
        try:
            await waiter
        finally:
            if self._read_waiter is waiter:
                self._read_waiter = None

    def _on_read_timer(self) -> None:
        self._read_timer = None
        waiter = self._read_waiter
        timeout = self._read_timeout
        if waiter is None or waiter.done() or timeout is None:
            return
        due = self._read_wait_started + timeout
        loop = self._conn._loop
        if loop.time() < due:
            self._read_timer = loop.call_at(due, self._on_read_timer)
            return
        self._read_waiter = None
        waiter.set_exception(
            TimeoutError(
                f"no data on stream {self._stream_id} within read_timeout={timeout}s",
                operation="read",
            )
        )

    def _check_readable(self) -> bool:
        """Return True when data or EOF is available; raise on reset."""
        if self._buffered:
            return True
        if self._read_error is not None:
            raise self._read_error
        if self._eof:
            self._recv_done = True
            self._maybe_finished()
            return True
        return False

    def _take(self, max_bytes: int) -> bytes:
        chunks = self._chunks
        if max_bytes < 0 or max_bytes >= self._buffered:
            if len(chunks) == 1:
                data = chunks.popleft()
            else:
                data = b"".join(chunks)
                chunks.clear()
        else:
            first = chunks[0]
            if len(first) > max_bytes:
                data = first[:max_bytes]
                chunks[0] = first[max_bytes:]
            else:
                parts = []
                need = max_bytes
                while need:
                    chunk = chunks[0]
                    if len(chunk) <= need:
                        parts.append(chunks.popleft())
                        need -= len(chunk)
                    else:
                        parts.append(chunk[:need])
                        chunks[0] = chunk[need:]
                        need = 0
                data = b"".join(parts)
        self._buffered -= len(data)
        self._conn._consumed(self._stream_id, len(data), self._session._session_id)
        if not self._buffered and self._eof:
            self._recv_done = True
            self._maybe_finished()
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
        while not self._check_readable():
            await self._wait_readable()
        if not self._buffered:
            return b""
        return self._take(max_bytes)

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
                    f"stream {self._stream_id} sent more than read_all(max_size={max_size}) bytes",
                    stream_id=self._stream_id,
                )
            parts.append(chunk)

    async def readexactly(self, n: int) -> bytes:
        """Read exactly `n` bytes.

        Args:
            n: Number of bytes.

        Returns:
            Exactly `n` bytes.

        Raises:
            asyncio.IncompleteReadError: The stream ended first (`.partial` has what came).
            StreamError: The stream was reset.
        """
        if n < 0:
            raise ValueError("readexactly() needs n >= 0")
        while self._buffered < n:
            if self._read_error is not None:
                raise self._read_error
            if self._eof:
                partial = self._take(-1) if self._buffered else b""
                raise asyncio.IncompleteReadError(partial, n)
            await self._wait_readable()
        return self._take(n) if n else b""

    async def readuntil(self, separator: bytes = b"\n", limit: int = -1) -> bytes:
        """Read up to and including `separator`.

        Args:
            separator: The byte sequence to stop after.
            limit: Most bytes to buffer while searching; negative means 64 KiB.

        Returns:
            The data including the separator.

        Raises:
            asyncio.IncompleteReadError: The stream ended before the separator.
            StreamError: The separator was not found within `limit` bytes, or a reset.
        """
        if not separator:
            raise ValueError("separator must not be empty")
        bound = limit if limit > 0 else 65536
        searched = 0
        while True:
            if self._buffered:
                joined = b"".join(self._chunks)
                if len(self._chunks) > 1:
                    self._chunks.clear()
                    self._chunks.append(joined)
                index = joined.find(separator, max(0, searched - len(separator) + 1))
                if index >= 0:
                    end = index + len(separator)
                    if end > bound:
                        break
                    return self._take(end)
                searched = len(joined)
                if searched > bound:
                    break
            if self._read_error is not None:
                raise self._read_error
            if self._eof:
                partial = self._take(-1) if self._buffered else b""
                raise asyncio.IncompleteReadError(partial, None)
            await self._wait_readable()
        raise StreamError(
            f"separator not found within {bound} bytes on stream {self._stream_id}",
            stream_id=self._stream_id,
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
        if self._recv_done:
            return
        self._conn._protocol.stop_stream(self._stream_id, error_code)
        self._conn._transmit_soon()
        self._chunks.clear()
        self._buffered = 0
        self._fail_read(
            StreamError(
                f"stream {self._stream_id} stopped locally", stream_id=self._stream_id, remote=False
            )
        )

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
    peer's acknowledgement.
    """

    def __init__(self, session: WebTransportSession, stream_id: int, *, is_remote: bool) -> None:
        super().__init__(session, stream_id, is_remote=is_remote)
        self._init_sending(session)

    def _init_sending(self, session: WebTransportSession) -> None:
        self._send_done = False
        self._fin_sent = False
        self._write_error: StreamError | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        self._write_timeout = session._config.write_timeout
        self._high_water = session._config.max_stream_write_buffer_size
        self._low_mark = self._high_water // 2
        self._session_flow = session._has_flow_control

    @property
    def direction(self) -> StreamDirection:
        """Which way data flows, seen from this endpoint."""
        return StreamDirection.SEND_ONLY

    @property
    def can_write(self) -> bool:
        """True while `write()` may be called."""
        return not self._fin_sent and self._write_error is None and not self._reset_sent

    def _check_writable(self) -> None:
        if self._write_error is not None:
            raise self._write_error
        if self._fin_sent or self._reset_sent:
            raise StreamError(
                f"stream {self._stream_id} is closed for writing (write after close)",
                stream_id=self._stream_id,
                remote=False,
            )

    def _fail_write(self, error: StreamError) -> None:
        if self._write_error is None:
            self._write_error = error
        self._send_done = True
        self._wake_writer()
        self._maybe_finished()

    def _abort(self, error: StreamError) -> None:
        self._fail_write(error)

    def _wake_writer(self) -> None:
        waiter = self._write_waiter
        if waiter is not None:
            self._write_waiter = None
            if not waiter.done():
                waiter.set_result(None)

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
        view = memoryview(data)
        size = len(view)
        high = self._high_water
        offset = 0
        conn = self._conn
        limited = self._session_flow
        while True:
            # Hand QUIC at most one buffer's worth at a time so memory stays bounded.
            step = min(size - offset, high)
            if limited and step:
                step = await self._session_credit(step)
            last = offset + step >= size
            conn._send(self._stream_id, view[offset : offset + step], end_stream and last)
            if limited:
                conn._protocol.data_sent(self._session._session_id, step)
            offset += step
            if last:
                break
            await self._drain()
            self._check_writable()
        if end_stream:
            self._fin_sent = True
            self._send_done = True
            self._maybe_finished()
        elif conn._send_buffered(self._stream_id) > high:
            await self._drain()

    async def _session_credit(self, wanted: int) -> int:
        """Wait until the session's flow control (draft-15) allows sending; return how much."""
        conn = self._conn
        session_id = self._session._session_id
        while True:
            credit = conn._protocol.send_credit(session_id)
            if credit is None:
                return wanted
            if credit > 0:
                return min(wanted, credit)
            conn._transmit_soon()  # WT_DATA_BLOCKED was queued
            waiter = conn._loop.create_future()
            conn._credit_waiters.append(waiter)
            try:
                async with asyncio.timeout(self._write_timeout):
                    await waiter
            except builtins.TimeoutError as exc:
                raise TimeoutError(
                    f"stream {self._stream_id}: the peer granted no session credit within "
                    f"write_timeout={self._write_timeout}s",
                    operation="write",
                ) from exc
            self._check_writable()

    async def _drain(self) -> None:
        conn = self._conn
        low = self._high_water // 2
        while conn._send_buffered(self._stream_id) > low:
            if self._write_error is not None:
                raise self._write_error
            waiter = conn._loop.create_future()
            self._write_waiter = waiter
            conn._wait_writable(self)
            try:
                if self._write_timeout is None:
                    await waiter
                else:
                    async with asyncio.timeout(self._write_timeout):
                        await waiter
            except builtins.TimeoutError as exc:
                raise TimeoutError(
                    f"stream {self._stream_id}: peer accepted no data within "
                    f"write_timeout={self._write_timeout}s",
                    operation="write",
                ) from exc
            finally:
                if self._write_waiter is waiter:
                    self._write_waiter = None
        if self._write_error is not None:
            raise self._write_error

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
        """Wait until the peer acknowledged everything written so far."""
        conn = self._conn
        while conn._send_buffered(self._stream_id) > 0 and self._write_error is None:
            waiter = conn._loop.create_future()
            self._write_waiter = waiter
            conn._wait_writable(self, low=0)
            await waiter

    async def reset(self, error_code: int = 0) -> None:
        """Abort sending (RESET_STREAM) with an application error code.

        Args:
            error_code: Code the peer receives (0..2**32-1).
        """
        if self._send_done:
            return
        self._conn._protocol.reset_stream(self._stream_id, error_code)
        self._conn._transmit_soon()
        self._reset_sent = True
        self._fail_write(
            StreamError(
                f"stream {self._stream_id} was reset locally with code {error_code}",
                stream_id=self._stream_id,
                error_code=error_code,
                remote=False,
            )
        )

    async def close(self, error_code: int | None = None) -> None:
        """Finish sending: FIN when `error_code` is None, else reset with it.

        Args:
            error_code: None for a clean end, or a reset code.
        """
        if error_code is not None:
            await self.reset(error_code)
        elif not self._send_done:
            await self.write(b"", end_stream=True)

    async def __aenter__(self) -> WebTransportSendStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class WebTransportStream(WebTransportReceiveStream, WebTransportSendStream):
    """A bidirectional WebTransport stream: both `read*` and `write*` methods."""

    def __init__(self, session: WebTransportSession, stream_id: int, *, is_remote: bool) -> None:
        WebTransportReceiveStream.__init__(self, session, stream_id, is_remote=is_remote)
        self._init_sending(session)

    @property
    def direction(self) -> StreamDirection:
        """Which way data flows, seen from this endpoint."""
        return StreamDirection.BIDIRECTIONAL

    def _abort(self, error: StreamError) -> None:
        self._fail_read(error)
        self._fail_write(error)

    async def close(self, error_code: int | None = None) -> None:
        """Finish sending: FIN, or with `error_code` reset and also stop receiving.

        Args:
            error_code: None for a clean end, or a reset code.
        """
        await WebTransportSendStream.close(self, error_code)
        if not self._recv_done and error_code is not None:
            await self.stop_receiving(error_code)

    async def __aenter__(self) -> WebTransportStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
