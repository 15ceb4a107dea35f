"""Stream halves: reads and the credit they grant, writes, resets, stops, opening streams."""

from __future__ import annotations

from typing import Final

from ...shared.constants import (
    BIDI_STREAM_SIGNAL,
    UNI_STREAM_TYPE,
)
from ...shared.exceptions import SessionClosedError, StreamError
from ...shared.utils import encode_varint
from .codes import wt_to_http3_error
from .datagrams import DatagramLayer
from .events import StreamClosed
from .records import SessionRecord, StreamBlocker, StreamRecord, fresh


def _stream_header(rec: StreamRecord) -> bytes:
    """The header a stream we open starts with: its type (or signal), then its session."""
    kind = UNI_STREAM_TYPE if rec.unidirectional else BIDI_STREAM_SIGNAL
    return encode_varint(kind) + encode_varint(rec.session.session_id)


_MAX_UNREAD: Final = 1024
"""Stopped streams whose final size is awaited (older ones are given up on)."""
_UNACKED_PRUNE: Final = 64
"""Finished streams awaiting their acknowledgement before the acknowledged ones are
dropped from the list (then twice what is left): amortised O(1) per stream."""


class StreamLayer(DatagramLayer):
    """Stream reads and writes (see `base` for how the layers fit)."""

    __slots__ = ()

    def _new_stream(
        self, session: SessionRecord, stream_id: int, *, unidirectional: bool, local: bool
    ) -> StreamRecord:
        rec = StreamRecord(stream_id, session, unidirectional=unidirectional, local=local)
        if rec.readable and self.quic.manage_stream_window(stream_id):
            rec.window_sent = self._stream_window
        self.streams[stream_id] = rec
        session.streams[stream_id] = rec
        return rec

    def _fail_read(self, rec: StreamRecord, error: StreamError) -> None:
        if rec.read_error is None and not (rec.fin_received and rec.buffered == 0):
            rec.read_error = error
        rec.read_done = True
        if rec.write_done:
            self._forget(rec)

    def _fail_write(self, rec: StreamRecord, error: StreamError) -> None:
        if rec.write_error is None:
            rec.write_error = error
        rec.write_done = True
        if rec.read_done:
            self._forget(rec)

    def _forget(self, rec: StreamRecord) -> None:
        stream_id = rec.stream_id
        if self.streams.pop(stream_id, None) is None:
            return
        session = rec.session
        session.streams.pop(stream_id, None)
        if (
            rec.fin_sent
            and rec.write_error is None
            and not session.is_closed
            and self.quic.tracks_delivery
            and not self.quic.send_finished(stream_id)
        ):
            self._unacked[stream_id] = session
            if len(self._unacked) > self._unacked_prune_at:
                self._prune_unacked()
        self.quic.forget_stream_window(stream_id)
        self._events.append(StreamClosed(rec))
        flow = session.flow
        if flow is not None and not rec.local and not session.is_closed:
            self._send_capsules(session, flow.peer_stream_done(rec.unidirectional))

    def _prune_unacked(self) -> None:
        quic = self.quic
        for stream_id in [i for i in self._unacked if quic.send_finished(i)]:
            del self._unacked[stream_id]
        self._unacked_prune_at = max(_UNACKED_PRUNE, 2 * len(self._unacked))

    def read(self, rec: StreamRecord, max_bytes: int = -1) -> bytes | None:
        """Take buffered data from a stream, granting the peer credit for it.

        Args:
            rec: The stream.
            max_bytes: Upper bound; negative for everything buffered.

        Returns:
            The data; `b""` once the peer finished and everything was read;
            None when nothing is buffered yet (wait for the reader to be woken).

        Raises:
            StreamError: The stream was reset, stopped, or its session or
                connection ended.
        """
        if rec.buffered:
            data = rec.take(max_bytes)
            self._consumed(rec, len(data))
            if not rec.buffered and rec.fin_received:
                rec.read_done = True
                if rec.write_done:
                    self._forget(rec)
            return data
        if rec.read_error is not None:
            raise fresh(rec.read_error)
        if rec.fin_received:
            if not rec.read_done:
                rec.read_done = True
                if rec.write_done:
                    self._forget(rec)
            return b""
        return None

    def put_back(self, rec: StreamRecord, data: bytes) -> None:
        """Put bytes taken by `read` back in front of a stream's buffer.

        The credit their reading granted stays granted: at most what one
        read took is buffered beyond the window.

        Args:
            rec: The stream.
            data: The bytes, as `read` returned them (or their tail).
        """
        if data:
            rec.chunks.appendleft(data)
            rec.buffered += len(data)

    def _release_unread(
        self, session: SessionRecord, stream_id: int, header_size: int, counted: int
    ) -> None:
        # Data the peer sent on a stream that ended unread still counts against the
        # session's credit on its side: count it as read, up to the final size.
        if session.flow is None or session.is_closed:
            return
        final = self.quic.reset_final_size(stream_id)
        if final is None:
            # Unknown (QUIC's internals differ): the peer sent at most what its
            # stream window allowed. Giving that back may over-credit by one
            # window, never starve the session.
            final = header_size + counted + self._stream_window
        self._count_read(session, final - header_size - counted)

    def _count_read(self, session: SessionRecord, count: int) -> None:
        flow = session.flow
        if flow is not None and count > 0:
            self._send_capsules(session, flow.consumed(count))

    def _consumed(self, rec: StreamRecord, count: int) -> None:
        rec.consumed += count
        self._count_read(rec.session, count)
        if rec.window_sent >= 0:
            limit = rec.consumed + self._stream_window
            if limit - rec.window_sent >= self._half_window:
                rec.window_sent = limit
                self.quic.set_stream_window(rec.stream_id, limit)
                self.want_transmit = True

    def _settle_unsent(self, rec: StreamRecord) -> None:
        # Our sending half was reset: the peer counts it up to the final size
        # (what left), so data queued behind that no longer counts against the
        # session's credit here either (draft-15). Unknown final size: it keeps
        # counting (the fallback of `stream_state`).
        flow = rec.session.flow
        if flow is None or not rec.queued:
            return
        sent = self.quic.sent_offset(rec.stream_id)
        if sent is None:
            return
        header = len(_stream_header(rec)) if rec.local else 0
        unsent = rec.queued - max(0, sent - header)
        if unsent > 0:
            flow.sent -= unsent
            rec.queued -= unsent

    def stop_receiving(self, rec: StreamRecord, error_code: int) -> None:
        """Stop the receiving half (STOP_SENDING) and discard what is buffered.

        Args:
            rec: The stream.
            error_code: Application error code sent to the peer.
        """
        if rec.read_done:
            return
        self._safe_stop(rec.stream_id, wt_to_http3_error(error_code))
        self.want_transmit = True
        if rec.session.flow is not None and not rec.fin_received:
            # The peer's RESET_STREAM in answer carries the final size: what it sent
            # that we never read is counted as read then (session credit, draft-15).
            unread = self._unread
            if len(unread) >= _MAX_UNREAD:
                del unread[next(iter(unread))]
            unread[rec.stream_id] = (rec.session, rec.header_size, rec.consumed)
        elif rec.buffered:
            self._count_read(rec.session, rec.buffered)
        rec.chunks.clear()
        rec.buffered = 0
        rec.fin_received = False
        self._fail_read(
            rec,
            StreamError(
                f"stream {rec.stream_id} stopped locally", stream_id=rec.stream_id, remote=False
            ),
        )

    def send(self, rec: StreamRecord, data: bytes | memoryview, fin: bool = False) -> None:
        """Queue data on a stream's sending half.

        Args:
            rec: The stream.
            data: The bytes (may be empty with `fin`).
            fin: Finish the sending half after them.

        Raises:
            StreamError: The sending half is finished, reset or stopped by the peer.
        """
        rec.check_writable()
        try:
            self.quic.send_stream_data(rec.stream_id, data, fin)
        except self.quic.refusals as exc:
            # QUIC refuses data after the stream was reset or finished: a
            # STOP_SENDING it answered before we knew of it.
            error = StreamError(
                f"stream {rec.stream_id} cannot send: {exc}", stream_id=rec.stream_id, remote=True
            )
            self._settle_unsent(rec)
            self._fail_write(rec, error)
            raise error from exc
        flow = rec.session.flow
        if flow is not None:
            flow.sent += len(data)
            rec.queued += len(data)
        self.want_transmit = True
        if fin:
            rec.fin_sent = True
            rec.write_done = True
            if rec.read_done:
                self._forget(rec)

    def send_allowance(self, rec: StreamRecord, wanted: int) -> int:
        """Return how much of `wanted` bytes session flow control lets the stream send now.

        Args:
            rec: The stream.
            wanted: Bytes the writer has.

        Returns:
            Up to `wanted`; 0 when the session is blocked (WT_DATA_BLOCKED was
            queued the first time the current limit blocked it).
        """
        flow = rec.session.flow
        if flow is None:
            return wanted
        credit, capsules = flow.send_credit()
        self._send_capsules(rec.session, capsules)
        return min(wanted, credit)

    def reset_needs_flush(self, rec: StreamRecord) -> bool:
        """Return whether a stream's queued bytes must leave before `reset` is called.

        A stream we opened and reset before any of its bytes left would never
        show the peer its header: the peer could not tell which session it
        belonged to, nor give back the session's stream credit (draft-15).
        The I/O layer transmits first when this says so (for any stream with
        bytes queued of which none left: what was written goes out before the
        reset, as it would have a moment later).

        Args:
            rec: The stream about to be reset.

        Returns:
            True when nothing of the stream's queued bytes has left yet.
        """
        return not rec.write_done and self.quic.nothing_sent(rec.stream_id)

    def reset(self, rec: StreamRecord, error_code: int) -> None:
        """Abort the sending half (RESET_STREAM) with an application error code.

        Args:
            rec: The stream.
            error_code: Code the peer receives (0..2**32-1).
        """
        if rec.write_done:
            return
        self._safe_reset(rec.stream_id, wt_to_http3_error(error_code))
        self._settle_unsent(rec)
        self.want_transmit = True
        rec.reset_sent = True
        self._fail_write(
            rec,
            StreamError(
                f"stream {rec.stream_id} was reset locally with code {error_code}",
                stream_id=rec.stream_id,
                error_code=error_code,
                remote=False,
            ),
        )

    def stream_blocker(
        self, session: SessionRecord, *, unidirectional: bool
    ) -> StreamBlocker | None:
        """Return what keeps the session from opening another stream now, if anything.

        Checks QUIC stream credit and, with session flow control, the
        session's stream limit (WT_STREAMS_BLOCKED is queued the first time a
        given limit blocks it).

        Args:
            session: The session.
            unidirectional: The kind of stream.

        Returns:
            None when a stream may be opened, else whose credit is used up.
        """
        if not self.quic.can_open_stream(unidirectional):
            return StreamBlocker.QUIC
        flow = session.flow
        if flow is None:
            return None
        allowed, capsules = flow.can_open(unidirectional)
        self._send_capsules(session, capsules)
        return None if allowed else StreamBlocker.SESSION

    def open_stream(self, session: SessionRecord, *, unidirectional: bool) -> StreamRecord:
        """Open a WebTransport stream in a session and write its header.

        Args:
            session: An established session.
            unidirectional: True for a send-only stream.

        Returns:
            The new stream.

        Raises:
            SessionClosedError: The session is not established.
        """
        if not session.is_established:
            raise SessionClosedError(
                f"session {session.session_id} is {session.state.value}",
                session_id=session.session_id,
            )
        quic = self.quic
        stream_id = quic.next_stream_id(unidirectional)
        if session.flow is not None:
            session.flow.opened(unidirectional)
        rec = self._new_stream(session, stream_id, unidirectional=unidirectional, local=True)
        quic.send_stream_data(stream_id, _stream_header(rec), False)
        self.want_transmit = True
        return rec
