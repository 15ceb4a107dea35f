"""How the engine tells sessions and streams what the protocol reported.

The one place where core events (`_core.events`) reach the public objects:
futures resolved, waiters woken, incoming streams queued, events emitted.
`session_event` takes every protocol event but the hot ones;
`deliver_datagram` takes each received datagram (no task, no copy).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Final

from ..shared.constants import (
    CAPSULE_WT_DATA_BLOCKED,
    CAPSULE_WT_MAX_DATA,
    CAPSULE_WT_MAX_STREAMS_BIDI,
    CAPSULE_WT_STREAMS_BLOCKED_UNI,
)
from ..shared.events import EventEmitter, EventType
from ..shared.exceptions import SessionClosedError
from ..shared.types import SessionCloseInfo
from ..shared.utils import wake
from ._core import events as pe
from ._core.records import SessionRecord, StreamRecord
from ._engine import ConnectionEngine, Dispatch
from .session import WebTransportSession
from .stream import WebTransportReceiveStream, WebTransportStream

__all__ = ["FACADES", "deliver_datagram", "new_session", "session_event"]

logger = logging.getLogger("pywebtransport.session")


def _emitter(rec: SessionRecord | StreamRecord, event_type: EventType) -> EventEmitter | None:
    emitter: EventEmitter | None = rec.emitter
    return emitter if emitter is not None and emitter.has_listeners(event_type) else None


def new_session(engine: ConnectionEngine, rec: SessionRecord) -> None:
    """Create the public object of a session the peer requested (server side).

    Args:
        engine: The connection's engine.
        rec: The requested session.
    """
    WebTransportSession(engine, rec)


def _set_ready(rec: SessionRecord) -> None:
    """Resolve a session's `ready` future and emit `SESSION_READY`.

    Args:
        rec: The session, just established.
    """
    if not rec.ready.done():
        rec.ready.set_result(None)
    if (emitter := _emitter(rec, EventType.SESSION_READY)) is not None:
        emitter.emit_nowait(EventType.SESSION_READY, {"session_id": rec.session_id}, rec.owner)


def deliver_datagram(rec: SessionRecord, data: bytes, queue_limit: int) -> None:
    """Hand a received datagram to its session (engine hot path: no task, no copy).

    With a `DATAGRAM_RECEIVED` listener the event is emitted; otherwise the
    datagram is queued for `receive_datagram()`, the oldest dropped when full.

    Args:
        rec: The session.
        data: The payload.
        queue_limit: Datagrams the queue holds (`max_pending_datagrams`).
    """
    session: WebTransportSession = rec.owner
    stats = rec.counters
    stats["datagrams_received"] += 1
    stats["bytes_datagrams_received"] += len(data)
    emitter = rec.emitter
    if emitter is not None and emitter.has_listeners(EventType.DATAGRAM_RECEIVED):
        emitter.emit_nowait(
            EventType.DATAGRAM_RECEIVED, {"data": data, "session_id": rec.session_id}, session
        )
        return
    queue = rec.datagrams
    if queue is None:
        queue = rec.datagrams = deque(maxlen=queue_limit)
    elif len(queue) == queue.maxlen:
        stats["datagrams_dropped"] += 1
    queue.append(data)
    waiter = rec.datagram_waiter
    if waiter is not None:
        rec.datagram_waiter = None
        wake(waiter)


def _close_info(rec: SessionRecord) -> SessionCloseInfo:
    return SessionCloseInfo(
        rec.close_code, rec.close_reason, rec.closed_by_peer, rec.closed_cleanly
    )


def _session_closed(engine: ConnectionEngine, rec: SessionRecord) -> None:
    info = _close_info(rec)
    error = SessionClosedError(
        f"session {rec.session_id} closed"
        + (f" by the peer: {info.reason!r}" if info.remote else ""),
        session_id=rec.session_id,
        error_code=info.error_code,
        reason=info.reason,
        remote=info.remote,
    )
    if not rec.ready.done():
        rec.ready.set_exception(error)
        rec.ready.exception()  # mark retrieved: nobody may be waiting
    if not rec.ended.done():
        rec.ended.set_result(info)
    for stream_rec in list(rec.streams.values()):
        engine.wake_stream(stream_rec)
    wake(rec.incoming_waiter)
    rec.incoming_waiter = None
    wake(rec.datagram_waiter)
    rec.datagram_waiter = None
    engine.wake_session_credit(rec)
    logger.debug(
        "session %d closed (%s) with code %#x: %s",
        rec.session_id,
        "by the peer" if info.remote else "locally",
        info.error_code,
        info.reason or "-",
    )
    if (emitter := _emitter(rec, EventType.SESSION_CLOSED)) is not None:
        emitter.emit_nowait(
            EventType.SESSION_CLOSED,
            {
                "session_id": rec.session_id,
                "error_code": info.error_code,
                "reason": info.reason,
                "remote": info.remote,
                "clean": info.clean,
            },
            rec.owner,
        )


def _stream_opened(engine: ConnectionEngine, stream_rec: StreamRecord) -> None:
    rec = stream_rec.session
    session: WebTransportSession = rec.owner
    stream: WebTransportReceiveStream
    if stream_rec.unidirectional:
        stream = WebTransportReceiveStream(session, stream_rec, engine)
        if rec.incoming_uni is None:
            rec.incoming_uni = deque()
        rec.incoming_uni.append(stream)
    else:
        stream = WebTransportStream(session, stream_rec, engine)
        if rec.incoming_bidi is None:
            rec.incoming_bidi = deque()
        rec.incoming_bidi.append(stream)
    rec.counters["streams_accepted"] += 1
    logger.debug(
        "session %d: peer opened %s stream %d",
        rec.session_id,
        "unidirectional" if stream_rec.unidirectional else "bidirectional",
        stream_rec.stream_id,
    )
    waiter = rec.incoming_waiter
    if waiter is not None:
        rec.incoming_waiter = None
        wake(waiter)
    if (emitter := _emitter(rec, EventType.STREAM_OPENED)) is not None:
        emitter.emit_nowait(
            EventType.STREAM_OPENED, {"stream": stream, "stream_id": stream_rec.stream_id}, session
        )


_CREDIT_EVENTS = {
    CAPSULE_WT_MAX_DATA: EventType.SESSION_MAX_DATA_UPDATED,
    CAPSULE_WT_MAX_STREAMS_BIDI: EventType.SESSION_MAX_STREAMS_BIDI_UPDATED,
}


def session_event(engine: ConnectionEngine, event: pe.ProtocolEvent) -> None:
    """Apply a protocol event to the public session and stream objects.

    Args:
        engine: The connection's engine.
        event: An event from `WebTransportCore.next_event()`.
    """
    if isinstance(event, pe.StreamOpened):
        _stream_opened(engine, event.stream)
    elif isinstance(event, pe.StreamResetReceived | pe.StopSendingReceived):
        stream_rec = event.stream
        engine.wake_stream(stream_rec)
        reset = isinstance(event, pe.StreamResetReceived)
        error = stream_rec.read_error if reset else stream_rec.write_error
        code = error.error_code if error is not None else None
        logger.debug(
            "stream %d: %s by the peer with code %s",
            stream_rec.stream_id,
            "reset" if reset else "stopped",
            code,
        )
        event_type = EventType.STREAM_RESET_RECEIVED if reset else EventType.STOP_SENDING_RECEIVED
        data = {"stream_id": stream_rec.stream_id, "error_code": code, "stream": stream_rec.owner}
        for rec in (stream_rec, stream_rec.session):
            if (emitter := _emitter(rec, event_type)) is not None:
                emitter.emit_nowait(event_type, data, stream_rec.owner)
    elif isinstance(event, pe.StreamClosed):
        stream_rec = event.stream
        logger.debug(
            "session %d: stream %d closed", stream_rec.session.session_id, stream_rec.stream_id
        )
        if stream_rec.reader is not None or stream_rec.writers:
            engine.wake_stream(stream_rec)
        data = {
            "stream_id": stream_rec.stream_id,
            "session_id": stream_rec.session.session_id,
            "stream": stream_rec.owner,
        }
        for rec in (stream_rec, stream_rec.session):
            if (emitter := _emitter(rec, EventType.STREAM_CLOSED)) is not None:
                emitter.emit_nowait(EventType.STREAM_CLOSED, data, stream_rec.owner)
    elif isinstance(event, pe.SessionEstablished):
        logger.debug(
            "session %d established (%s)", event.session.session_id, event.session.dialect.name
        )
        _set_ready(event.session)
    elif isinstance(event, pe.SessionClosed):
        _session_closed(engine, event.session)
    elif isinstance(event, pe.SessionDraining):
        rec = event.session
        if (emitter := _emitter(rec, EventType.SESSION_DRAINING)) is not None:
            emitter.emit_nowait(
                EventType.SESSION_DRAINING, {"session_id": rec.session_id}, rec.owner
            )
    elif isinstance(event, pe.SessionCreditUpdated):
        rec = event.session
        engine.wake_session_credit(rec)
        event_type = _CREDIT_EVENTS.get(
            event.capsule_type, EventType.SESSION_MAX_STREAMS_UNI_UPDATED
        )
        if (emitter := _emitter(rec, event_type)) is not None:
            key = "max_data" if event_type is EventType.SESSION_MAX_DATA_UPDATED else "max_streams"
            emitter.emit_nowait(
                event_type, {"session_id": rec.session_id, key: event.value}, rec.owner
            )
    elif isinstance(event, pe.SessionPeerBlocked):
        rec = event.session
        blocked_data = event.capsule_type == CAPSULE_WT_DATA_BLOCKED
        event_type = (
            EventType.SESSION_DATA_BLOCKED if blocked_data else EventType.SESSION_STREAMS_BLOCKED
        )
        if (emitter := _emitter(rec, event_type)) is not None:
            blocked: dict[str, Any] = {"session_id": rec.session_id}
            if blocked_data:
                blocked["max_data"] = event.value
            else:
                blocked["max_streams"] = event.value
                blocked["is_unidirectional"] = event.capsule_type == CAPSULE_WT_STREAMS_BLOCKED_UNI
            emitter.emit_nowait(event_type, blocked, rec.owner)


FACADES: Final = Dispatch(
    new_session=new_session, session_event=session_event, deliver_datagram=deliver_datagram
)
"""What every engine is built with: protocol events go to the public objects."""
