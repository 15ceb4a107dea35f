"""Events `WebTransportCore` emits (drained with `next_event()`).

Each carries the record it is about; the record holds the details (close
codes, stream buffers), so an event is one small object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .records import ExchangeRecord, SessionRecord, StreamRecord

__all__ = [
    "ExchangeUpdated",
    "HttpRequestReceived",
    "ProtocolEvent",
    "SessionClosed",
    "SessionCreditUpdated",
    "SessionDraining",
    "SessionEstablished",
    "SessionPeerBlocked",
    "SessionRejected",
    "SessionRequested",
    "SettingsReceived",
    "StopSendingReceived",
    "StreamClosed",
    "StreamOpened",
    "StreamResetReceived",
]


class ProtocolEvent:
    """Base class of the protocol's events."""

    __slots__ = ()


@dataclass(slots=True)
class SettingsReceived(ProtocolEvent):
    """The peer's HTTP/3 SETTINGS arrived."""

    settings: dict[int, int]
    "The peer's settings."


@dataclass(slots=True)
class SessionRequested(ProtocolEvent):
    """A client asked to open a session (server side); answer with `accept` or `reject`."""

    session: SessionRecord
    "The requested session (its `request` holds path, headers and offered subprotocols)."


@dataclass(slots=True)
class SessionEstablished(ProtocolEvent):
    """The session is established: the server's 2xx arrived (client), or `accept` (server)."""

    session: SessionRecord
    "The session (its `headers` hold the response, `protocol` the selected subprotocol)."


@dataclass(slots=True)
class SessionRejected(ProtocolEvent):
    """The server answered our CONNECT with a non-2xx status (client side)."""

    session: SessionRecord
    "The session, now closed."
    status_code: int
    "The HTTP status (0 when the stream ended without a valid answer)."


@dataclass(slots=True)
class SessionClosed(ProtocolEvent):
    """A session ended (capsule, FIN, reset, protocol error or lost connection).

    The record's `close_code`, `close_reason`, `closed_by_peer` and
    `closed_cleanly` say how.
    """

    session: SessionRecord
    "The closed session."


@dataclass(slots=True)
class SessionDraining(ProtocolEvent):
    """The peer sent DRAIN_WEBTRANSPORT_SESSION."""

    session: SessionRecord
    "The session."


@dataclass(slots=True)
class SessionCreditUpdated(ProtocolEvent):
    """The peer raised a session-level limit (WT_MAX_DATA / WT_MAX_STREAMS, draft-15)."""

    session: SessionRecord
    "The session."
    capsule_type: int
    "Which limit: CAPSULE_WT_MAX_DATA, CAPSULE_WT_MAX_STREAMS_BIDI or _UNI."
    value: int
    "The new limit."


@dataclass(slots=True)
class SessionPeerBlocked(ProtocolEvent):
    """The peer reported it is blocked by a session limit (WT_DATA_BLOCKED / WT_STREAMS_BLOCKED_*).

    We answer with a fresh limit when the application's reading allows it.
    """

    session: SessionRecord
    "The session."
    capsule_type: int
    "CAPSULE_WT_DATA_BLOCKED, CAPSULE_WT_STREAMS_BLOCKED_BIDI or _UNI."
    value: int
    "The limit the peer is blocked at."


@dataclass(slots=True)
class StreamOpened(ProtocolEvent):
    """The peer opened a WebTransport stream in an established session.

    Data that arrived with it is already in the record's receive buffer.
    """

    stream: StreamRecord
    "The new stream."


@dataclass(slots=True)
class StreamResetReceived(ProtocolEvent):
    """The peer reset a stream (RESET_STREAM); its receiving half failed."""

    stream: StreamRecord
    "The stream (`read_error` holds the error with the peer's code)."


@dataclass(slots=True)
class StopSendingReceived(ProtocolEvent):
    """The peer asked us to stop sending (STOP_SENDING); the sending half failed."""

    stream: StreamRecord
    "The stream (`write_error` holds the error with the peer's code)."


@dataclass(slots=True)
class StreamClosed(ProtocolEvent):
    """Both halves of a stream are done; the protocol forgot it."""

    stream: StreamRecord
    "The stream."


@dataclass(slots=True)
class HttpRequestReceived(ProtocolEvent):
    """A plain HTTP/3 request arrived (server side, `serve_http`); answer it with `respond`."""

    exchange: ExchangeRecord
    "The request (its `request` holds method, path and headers)."


@dataclass(slots=True)
class ExchangeUpdated(ProtocolEvent):
    """Request body arrived on an exchange, the request or the response ended, or it failed."""

    exchange: ExchangeRecord
    "The exchange (wake its reader, and its writers when it failed)."
