"""The active-stream scheduler: packets built from the streams that have something to send."""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Final

from aioquic.buffer import (  # type: ignore[attr-defined]  # re-exported without __all__
    Buffer,
    size_uint_var,
)
from aioquic.quic.connection import QuicConnection, stream_is_client_initiated
from aioquic.quic.packet import QuicFrameType, QuicPacketType
from aioquic.quic.packet_builder import QuicDeliveryState, QuicPacketBuilder, QuicPacketBuilderStop
from aioquic.quic.stream import QuicStream
from aioquic.tls import Epoch

from .checks import Mismatch, has, logic_digest, params, require

# --------------------------------------------------------------------------- stream scheduling

_RESET_STREAM_FRAME_CAPACITY: Final = 1 + 8 + 8 + 8
_STOP_SENDING_FRAME_CAPACITY: Final = 1 + 8 + 8
_STREAM_FRAME_FIXED: Final = 3
"""A STREAM frame's type byte and its 2-byte length, before the id and offset varints."""

_WRITE_APPLICATION_DIGEST: Final = "91b6d1ab13657fcb"
"""`logic_digest` of aioquic's `_write_application` in 1.7.0 to 1.7.2.

`_write_application` below replaces it: it writes the same frames in the same
order and differs only in which streams it visits. Another aioquic whose method
differs (a new frame, a new rule) switches the feature off rather than silently
dropping what changed.
"""


class _NoQueue:
    """Stands in for aioquic's `_streams_queue`, which only its `_write_application` reads."""

    __slots__ = ()

    def append(self, stream: QuicStream) -> None:
        """Drop a new stream: the schedule learns of it when it has something to send."""

    def __iter__(self) -> Iterator[QuicStream]:
        return iter(())


NO_QUEUE: Final = _NoQueue()


class _StreamSchedule:
    """The streams a connection visits when it builds packets.

    A connection has one only while some stream needs a visit; an idle
    connection holds none.

    Attributes:
        ready: Streams with data, a FIN, a RESET_STREAM or a STOP_SENDING to
            send, in service order (served ones go to the back).
        queued: The members of `ready`.
        blocked: Streams with data the peer's stream-level flow control or
            stream limit holds back; woken by MAX_STREAM_DATA or MAX_STREAMS.
        owing: Streams whose receive window may have to be announced.
        finished: Streams done both ways, to be forgotten on the next packet.
    """

    __slots__ = ("blocked", "finished", "owing", "queued", "ready")

    def __init__(self) -> None:
        self.ready: deque[QuicStream] = deque()
        self.queued: set[QuicStream] = set()
        self.blocked: set[QuicStream] = set()
        self.owing: set[QuicStream] = set()
        self.finished: list[QuicStream] = []

    def idle(self) -> bool:
        return not (self.ready or self.blocked or self.owing or self.finished)


def _schedule(self: Any) -> _StreamSchedule:
    schedule: _StreamSchedule | None = self.wt_schedule
    if schedule is None:
        schedule = self.wt_schedule = _StreamSchedule()
    return schedule


def _wake(self: Any, stream: QuicStream) -> None:
    schedule = _schedule(self)
    if stream not in schedule.queued:
        schedule.queued.add(stream)
        schedule.ready.append(stream)
        schedule.blocked.discard(stream)


def owe(self: Any, stream: QuicStream) -> None:
    _schedule(self).owing.add(stream)


def _peek_stream_id(buf: Buffer) -> int:
    start = buf.tell()
    stream_id: int = buf.pull_uint_var()
    buf.seek(start)
    return stream_id


# Public entry points: whatever makes a stream need a visit wakes it.


def _send_stream_data(self: Any, stream_id: int, data: bytes, end_stream: bool = False) -> None:
    QuicConnection.send_stream_data(self, stream_id, data, end_stream)
    _wake(self, self._streams[stream_id])


def _reset_stream(self: Any, stream_id: int, error_code: int) -> None:
    QuicConnection.reset_stream(self, stream_id, error_code)
    stream = self._streams.get(stream_id)
    if stream is not None and stream.sender.reset_pending:
        _wake(self, stream)


def _stop_stream(self: Any, stream_id: int, error_code: int) -> None:
    QuicConnection.stop_stream(self, stream_id, error_code)
    _wake(self, self._streams[stream_id])


# Frames from the peer.


def _handle_stream_frame(self: Any, context: Any, frame_type: int, buf: Buffer) -> None:
    stream_id = _peek_stream_id(buf)
    QuicConnection._handle_stream_frame(self, context, frame_type, buf)
    stream = self._streams.get(stream_id)
    if stream is None:
        return
    if stream.is_finished:
        _schedule(self).finished.append(stream)
        return
    # A managed window moves with its reader (`set_stream_window`); aioquic's own
    # doubles once the peer has sent past half of it.
    local = stream.max_stream_data_local
    managed = self.wt_managed
    if (managed is None or stream_id not in managed) and stream.receiver.highest_offset * 2 > local:
        owe(self, stream)


def _handle_reset_stream_frame(self: Any, context: Any, frame_type: int, buf: Buffer) -> None:
    stream_id = _peek_stream_id(buf)
    QuicConnection._handle_reset_stream_frame(self, context, frame_type, buf)
    stream = self._streams.get(stream_id)
    if stream is not None and stream.is_finished:
        _schedule(self).finished.append(stream)


def _handle_stop_sending_frame(self: Any, context: Any, frame_type: int, buf: Buffer) -> None:
    stream_id = _peek_stream_id(buf)
    QuicConnection._handle_stop_sending_frame(self, context, frame_type, buf)
    stream = self._streams.get(stream_id)
    if stream is not None and stream.sender.reset_pending:
        _wake(self, stream)


def _handle_max_stream_data_frame(self: Any, context: Any, frame_type: int, buf: Buffer) -> None:
    stream_id = _peek_stream_id(buf)
    QuicConnection._handle_max_stream_data_frame(self, context, frame_type, buf)
    schedule: _StreamSchedule | None = self.wt_schedule
    stream = self._streams.get(stream_id)
    if schedule is not None and stream in schedule.blocked:
        _wake(self, stream)


def _unblock_streams(self: Any, is_unidirectional: bool) -> None:
    QuicConnection._unblock_streams(self, is_unidirectional)
    schedule: _StreamSchedule | None = self.wt_schedule
    if schedule is not None and schedule.blocked:
        for stream in [s for s in schedule.blocked if not s.is_blocked]:
            _wake(self, stream)


# Acknowledgements and losses of what we sent.


def _on_stream_delivery(
    self: Any, delivery: QuicDeliveryState, stream: QuicStream, start: int, stop: int, fin: bool
) -> None:
    stream.sender.on_data_delivery(delivery, start, stop, fin)
    if delivery == QuicDeliveryState.ACKED:
        if stream.is_finished:
            _schedule(self).finished.append(stream)
    elif not stream.sender.buffer_is_empty:
        _wake(self, stream)


def _on_reset_delivery(self: Any, delivery: QuicDeliveryState, stream: QuicStream) -> None:
    stream.sender.on_reset_delivery(delivery)
    if stream.sender.reset_pending:
        _wake(self, stream)
    elif stream.is_finished:
        _schedule(self).finished.append(stream)


def _on_stop_sending_delivery(self: Any, delivery: QuicDeliveryState, stream: QuicStream) -> None:
    stream.receiver.on_stop_sending_delivery(delivery)
    if stream.receiver.stop_pending:
        _wake(self, stream)


def _on_max_stream_data_delivery(
    self: Any, delivery: QuicDeliveryState, stream: QuicStream
) -> None:
    QuicConnection._on_max_stream_data_delivery(self, delivery, stream)
    if stream.max_stream_data_local_sent != stream.max_stream_data_local:
        owe(self, stream)


# Building packets.


def _write_stream_data(self: Any, builder: Any, stream: Any, limit: int) -> int:
    sender = stream.sender
    stream_id = stream.stream_id
    offset = sender.next_offset
    overhead = (
        _STREAM_FRAME_FIXED + size_uint_var(stream_id) + (size_uint_var(offset) if offset else 0)
    )
    before = sender.highest_offset
    frame = sender.get_frame(builder.remaining_flight_space - overhead, limit)
    if frame is None:
        return 0
    size = len(frame.data)
    frame_type = (
        QuicFrameType.STREAM_BASE | 2 | (4 if frame.offset else 0) | (1 if frame.fin else 0)
    )
    buf = builder.start_frame(
        frame_type,
        capacity=overhead,
        handler=self._wt_on_stream_delivery,
        handler_args=(stream, frame.offset, frame.offset + size, frame.fin),
    )
    buf.push_uint_var(stream_id)
    if frame.offset:
        buf.push_uint_var(frame.offset)
    buf.push_uint16(size | 0x4000)
    buf.push_bytes(frame.data)
    if self._quic_logger is not None:
        builder.quic_logger_frames.append(
            self._quic_logger.encode_stream_frame(frame, stream_id=stream_id)
        )
    return int(sender.highest_offset - before)


def _write_reset(self: Any, builder: Any, stream: Any) -> None:
    buf = builder.start_frame(
        QuicFrameType.RESET_STREAM,
        capacity=_RESET_STREAM_FRAME_CAPACITY,
        handler=self._wt_on_reset_delivery,
        handler_args=(stream,),
    )
    frame = stream.sender.get_reset_frame()
    buf.push_uint_var(frame.stream_id)
    buf.push_uint_var(frame.error_code)
    buf.push_uint_var(frame.final_size)
    if self._quic_logger is not None:
        builder.quic_logger_frames.append(
            self._quic_logger.encode_reset_stream_frame(
                error_code=frame.error_code, final_size=frame.final_size, stream_id=frame.stream_id
            )
        )


def _write_stop_sending(self: Any, builder: Any, stream: Any) -> None:
    buf = builder.start_frame(
        QuicFrameType.STOP_SENDING,
        capacity=_STOP_SENDING_FRAME_CAPACITY,
        handler=self._wt_on_stop_sending_delivery,
        handler_args=(stream,),
    )
    frame = stream.receiver.get_stop_frame()
    buf.push_uint_var(frame.stream_id)
    buf.push_uint_var(frame.error_code)
    if self._quic_logger is not None:
        builder.quic_logger_frames.append(
            self._quic_logger.encode_stop_sending_frame(
                error_code=frame.error_code, stream_id=frame.stream_id
            )
        )


def _forget_finished(self: Any, schedule: _StreamSchedule) -> bool:
    # What aioquic does when its walk meets a finished stream: forget it and,
    # for a peer's stream, let the peer open one more (RFC 9000 section 4.6).
    forgot = False
    streams = self._streams
    for stream in schedule.finished:
        if streams.get(stream.stream_id) is not stream:
            continue
        del streams[stream.stream_id]
        forgot = True
        if stream_is_client_initiated(stream.stream_id) != self._is_client:
            self._stream_limit(stream.stream_id).value += 1
        if stream in schedule.queued:
            schedule.queued.discard(stream)
            schedule.ready.remove(stream)
        schedule.blocked.discard(stream)
        schedule.owing.discard(stream)
    schedule.finished.clear()
    return forgot


def _write_owed_limits(
    self: Any, builder: QuicPacketBuilder, space: Any, schedule: _StreamSchedule
) -> None:
    owing = schedule.owing
    managed = self.wt_managed
    for stream in list(owing):
        self._write_stream_limits(builder=builder, space=space, stream=stream)
        local = stream.max_stream_data_local
        if stream.max_stream_data_local_sent == local and (
            (managed is not None and stream.stream_id in managed)
            or stream.receiver.highest_offset * 2 <= local
        ):
            owing.discard(stream)


def _write_streams(self: Any, builder: QuicPacketBuilder, schedule: _StreamSchedule) -> None:
    ready, queued = schedule.ready, schedule.queued
    visits = len(ready)
    while visits and builder.remaining_flight_space > _STREAM_FRAME_FIXED:
        visits -= 1
        stream = ready.popleft()
        sender, receiver = stream.sender, stream.receiver
        try:
            if stream.is_finished:
                queued.discard(stream)
                schedule.finished.append(stream)
                continue
            if receiver.stop_pending:
                self._wt_write_stop_sending(builder, stream)
            if sender.reset_pending:
                self._wt_write_reset(builder, stream)
            elif not sender.buffer_is_empty and not stream.is_blocked:
                limit = min(
                    sender.highest_offset + self._remote_max_data - self._remote_max_data_used,
                    stream.max_stream_data_remote,
                )
                self._remote_max_data_used += self._wt_write_stream_data(builder, stream, limit)
        except BaseException:
            ready.appendleft(stream)
            raise
        if sender.buffer_is_empty and not sender.reset_pending and not receiver.stop_pending:
            queued.discard(stream)
        elif (
            not sender.reset_pending
            and not receiver.stop_pending
            and (
                stream.is_blocked
                or (len(sender._pending) and sender.next_offset >= stream.max_stream_data_remote)
            )
        ):
            queued.discard(stream)
            schedule.blocked.add(stream)
        else:
            ready.append(stream)


def _write_application(
    self: Any, builder: QuicPacketBuilder, network_path: Any, now: float
) -> None:
    # aioquic's method, frame for frame (see _WRITE_APPLICATION_DIGEST), except
    # that streams come from the schedule rather than a walk over all of them.
    if self._cryptos[Epoch.ONE_RTT].send.is_valid():
        crypto = self._cryptos[Epoch.ONE_RTT]
        crypto_stream = self._crypto_streams[Epoch.ONE_RTT]
        packet_type = QuicPacketType.ONE_RTT
    elif self._cryptos[Epoch.ZERO_RTT].send.is_valid():
        crypto = self._cryptos[Epoch.ZERO_RTT]
        crypto_stream = None
        packet_type = QuicPacketType.ZERO_RTT
    else:
        return
    space = self._spaces[Epoch.ONE_RTT]
    pacer = self._loss._pacer
    schedule: _StreamSchedule | None = self.wt_schedule
    if schedule is not None and schedule.finished:
        _forget_finished(self, schedule)
    try:
        while True:
            # Pacing does not hold back ACKs that are due.
            if space.ack_at is None or space.ack_at >= now:
                self._pacing_at = pacer.next_send_time(now=now)
                if self._pacing_at is not None:
                    break
            builder.start_packet(packet_type, crypto)
            # Never in 0-RTT packets (RFC 9000 section 13.2.1).
            if (
                packet_type == QuicPacketType.ONE_RTT
                and space.ack_at is not None
                and space.ack_at <= now
            ):
                self._write_ack_frame(builder=builder, space=space, now=now)
            if self._handshake_complete:
                _write_connection_frames(self, builder, network_path, space, now)
            schedule = self.wt_schedule
            if schedule is not None and schedule.owing:
                _write_owed_limits(self, builder, space, schedule)
            if self._ping_pending:
                self._write_ping_frame(builder, self._ping_pending)
                self._ping_pending.clear()
            if self._probe_pending:
                self._write_ping_frame(builder, comment="probe")
                self._probe_pending = False
            if crypto_stream is not None and not crypto_stream.sender.buffer_is_empty:
                self._write_crypto_frame(builder=builder, space=space, stream=crypto_stream)
            pending = self._datagrams_pending
            while pending:
                try:
                    self._write_datagram_frame(
                        builder=builder,
                        data=pending[0],
                        frame_type=QuicFrameType.DATAGRAM_WITH_LENGTH,
                    )
                except QuicPacketBuilderStop:
                    break
                pending.popleft()
            if schedule is not None and schedule.ready:
                _write_streams(self, builder, schedule)
            if builder.packet_is_empty:
                # Forgotten peer streams are re-credited by MAX_STREAMS in the next packet.
                if (
                    schedule is None
                    or not schedule.finished
                    or not _forget_finished(self, schedule)
                ):
                    break
            else:
                pacer.update_after_send(now=now)
    finally:
        schedule = self.wt_schedule
        if schedule is not None and schedule.idle():
            self.wt_schedule = None


def _write_connection_frames(
    self: Any, builder: QuicPacketBuilder, network_path: Any, space: Any, now: float
) -> None:
    if not (network_path.is_validated or network_path.local_challenge_sent):
        # A server whose client moved to a new path validates it (RFC 9000 section 9.3)
        # and gives up after 3 PTOs of the larger of the two paths (section 8.2.4).
        self._write_path_challenge_frame(builder=builder, network_path=network_path)
        if network_path.validation_deadline is None:
            network_path.validation_deadline = now + 3 * max(
                self._loss.get_probe_timeout(), 2 * self._configuration.initial_rtt
            )
    if self._handshake_done_pending:
        self._write_handshake_done_frame(builder=builder)
        self._handshake_done_pending = False
    challenges = network_path.remote_challenges
    while challenges:
        self._write_path_response_frame(builder=builder, challenge=challenges[0])
        challenges.popleft()
    for connection_id in self._host_cids:
        if not connection_id.was_sent:
            self._write_new_connection_id_frame(builder=builder, connection_id=connection_id)
    retiring = self._retire_connection_ids
    while retiring:
        self._write_retire_connection_id_frame(builder=builder, sequence_number=retiring[0])
        retiring.pop(0)
    if self._streams_blocked_pending:
        if self._streams_blocked_bidi:
            self._write_streams_blocked_frame(
                builder=builder,
                frame_type=QuicFrameType.STREAMS_BLOCKED_BIDI,
                limit=self._remote_max_streams_bidi,
            )
        if self._streams_blocked_uni:
            self._write_streams_blocked_frame(
                builder=builder,
                frame_type=QuicFrameType.STREAMS_BLOCKED_UNI,
                limit=self._remote_max_streams_uni,
            )
        self._streams_blocked_pending = False
    self._write_connection_limits(builder=builder, space=space)


SCHEDULING_METHODS: Final[dict[str, Callable[..., Any]]] = {
    "send_stream_data": _send_stream_data,
    "reset_stream": _reset_stream,
    "stop_stream": _stop_stream,
    "_handle_stream_frame": _handle_stream_frame,
    "_handle_reset_stream_frame": _handle_reset_stream_frame,
    "_handle_stop_sending_frame": _handle_stop_sending_frame,
    "_handle_max_stream_data_frame": _handle_max_stream_data_frame,
    "_unblock_streams": _unblock_streams,
    "_on_max_stream_data_delivery": _on_max_stream_data_delivery,
    "_write_application": _write_application,
    "_wt_on_stream_delivery": _on_stream_delivery,
    "_wt_on_reset_delivery": _on_reset_delivery,
    "_wt_on_stop_sending_delivery": _on_stop_sending_delivery,
    "_wt_write_stream_data": _write_stream_data,
    "_wt_write_reset": _write_reset,
    "_wt_write_stop_sending": _write_stop_sending,
}
"""The methods `stream_scheduling` replaces or adds on the connection class."""


def check_stream_scheduling(quic: QuicConnection, stream: QuicStream) -> None:
    try:
        digest = logic_digest(QuicConnection._write_application)
        source = inspect.getsource(QuicConnection)
    except (OSError, TypeError, SyntaxError) as exc:
        raise Mismatch(f"cannot read QuicConnection._write_application: {exc}") from exc
    require(
        digest == _WRITE_APPLICATION_DIGEST,
        "QuicConnection._write_application differs from aioquic 1.7's",
    )
    require(source.count("_streams_queue") == 7, "_streams_queue is used beyond 1.7's places")
    for name in SCHEDULING_METHODS:
        if not name.startswith("_wt_"):
            has(QuicConnection, name)
    params(QuicConnection.send_stream_data, "stream_id", "data", "end_stream")
    params(QuicConnection.reset_stream, "stream_id", "error_code")
    params(QuicConnection.stop_stream, "stream_id", "error_code")
    params(QuicConnection._stream_limit, "stream_id")
    params(QuicConnection._on_max_stream_data_delivery, "delivery", "stream")
    has(quic, "_streams", "_streams_queue", "_remote_max_data", "_remote_max_data_used")
    has(stream, "is_blocked", "max_stream_data_remote", "is_finished")
    has(stream.sender, "_pending", "next_offset", "highest_offset", "reset_pending")
    has(stream.sender, "buffer_is_empty", "get_frame", "get_reset_frame", "on_data_delivery")
    has(stream.sender, "on_reset_delivery")
    has(stream.receiver, "stop_pending", "get_stop_frame", "on_stop_sending_delivery")
    params(type(stream.sender).get_frame, "max_size", "max_offset")
    params(type(stream.sender).on_data_delivery, "delivery", "start", "stop", "fin")
    has(QuicPacketBuilder, "remaining_flight_space")
