"""Type aliases and enums shared by every layer of pywebtransport.

`StreamId` and `SessionId` are plain `int` aliases (as in the reference
library) so that user code passing integers type-checks without casts.
`EventType` lives here, as in the reference library's types module, and is
also importable from `pywebtransport.shared.events` and `pywebtransport`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias

__all__ = [
    "Address",
    "Buffer",
    "ConnectionState",
    "ErrorCode",
    "EventType",
    "Headers",
    "SessionId",
    "SessionState",
    "StreamDirection",
    "StreamId",
    "StreamState",
]

Address: TypeAlias = tuple[str, int]
"""A network address: host and port."""

Buffer: TypeAlias = bytes | bytearray | memoryview
"""Anything that can be written to a stream or sent as a datagram."""

Headers: TypeAlias = dict[str | bytes, str | bytes] | list[tuple[str | bytes, str | bytes]]
"""HTTP headers as a mapping or as a list of name/value pairs."""

StreamId: TypeAlias = int
"""A QUIC stream identifier."""

SessionId: TypeAlias = int
"""A WebTransport session identifier (the stream id of its CONNECT request)."""

ErrorCode: TypeAlias = int
"""A numeric error code as carried on the wire."""


class ConnectionState(StrEnum):
    """Lifecycle of a QUIC connection (`WebTransportConnection.state`)."""

    IDLE = "idle"
    """Created, no packet sent or received yet."""
    CONNECTING = "connecting"
    """The QUIC and TLS handshake is under way."""
    CONNECTED = "connected"
    """The handshake completed: sessions can be opened."""
    CLOSING = "closing"
    """CONNECTION_CLOSE was sent or received; waiting out the closing period."""
    CLOSED = "closed"
    """The connection is gone; its sessions are closed."""


class SessionState(StrEnum):
    """Lifecycle of a WebTransport session (`WebTransportSession.state`)."""

    CONNECTING = "connecting"
    """The CONNECT request is sent (client) or received and not yet answered (server)."""
    CONNECTED = "connected"
    """The CONNECT request was accepted with a 2xx: streams and datagrams flow."""
    DRAINING = "draining"
    """The peer sent DRAIN_WEBTRANSPORT_SESSION: finish up, then close."""
    CLOSING = "closing"
    """`close()` was called: the close capsule is queued and the CONNECT stream ends."""
    CLOSED = "closed"
    """Closed by either side, refused, or lost with its connection."""


class StreamState(StrEnum):
    """Lifecycle of a WebTransport stream (RFC 9000 terms, seen from this endpoint)."""

    OPEN = "open"
    """Both directions that the stream has are open."""
    HALF_CLOSED_LOCAL = "half_closed_local"
    """We sent FIN: we can only read."""
    HALF_CLOSED_REMOTE = "half_closed_remote"
    """The peer sent FIN and it was read to the end: we can only write."""
    RESET_SENT = "reset_sent"
    """We reset the stream (`reset()` or `close(error_code=...)`)."""
    RESET_RECEIVED = "reset_received"
    """The peer reset the stream; reads raise `StreamError` with its code."""
    CLOSED = "closed"
    """Both directions are finished."""


class StreamDirection(StrEnum):
    """Which way data flows on a stream, seen from this endpoint."""

    BIDIRECTIONAL = "bidirectional"
    """Both ways (`WebTransportStream`)."""
    SEND_ONLY = "send_only"
    """A unidirectional stream we opened (`WebTransportSendStream`)."""
    RECEIVE_ONLY = "receive_only"
    """A unidirectional stream the peer opened (`WebTransportReceiveStream`)."""


class EventType(StrEnum):
    """Names of the events emitted by the library (values match the reference library).

    Listen with `emitter.on(EventType.X, handler)`; the handler receives an `Event`
    whose `data` is a dict with the keys listed under each member. Events are built
    only while a listener is registered, so unused ones cost nothing.
    """

    CONNECTION_ESTABLISHED = "connection_established"
    """A QUIC handshake completed, on the `WebTransportServer` (each connection) and the
    `WebTransportClient` (each connection it opened); `source` is the server or client.

    Data keys: `handle` and `connection_handle` (int, the connection's handle),
    `connection` (`WebTransportConnection`), `remote_address` (the peer's address)."""
    CONNECTION_CLOSED = "connection_closed"
    """A QUIC connection closed, on `connection.events` (`source`: the connection) and
    on the `WebTransportServer` / `WebTransportClient` that owns it (`source`: it).

    Data keys: `error_code` (int, the QUIC or HTTP/3 code of the close), `reason`
    (str), `handle` and `connection_handle` (int, the connection's handle),
    `connection` (`WebTransportConnection`)."""
    SESSION_REQUEST = "session_request"
    """A client asked for a session, on the `WebTransportServer`; `source` is the server.

    Handlers may `await session.accept()` or `await session.reject(status_code=...)`;
    a session nobody answered goes to the server's handler (or is refused with 404).
    Data keys: `session` (`WebTransportSession`), `connection`
    (`WebTransportConnection`), `session_id` (int), `path` (str, with the query
    string), `headers` (list of `(bytes, bytes)` pairs, pseudo-headers included)."""
    SESSION_PENDING = "session_pending"
    """A client sent a session's CONNECT, on the `WebTransportClient`; `source` is the
    client. `SESSION_READY` (on the session) or an exception from `connect()` follows.

    Data keys: `session_id` (int), `path` (str), `headers` (list of `(bytes, bytes)`,
    empty until the answer), `session` (`WebTransportSession`)."""
    SESSION_READY = "session_ready"
    """The session was accepted (server) or its CONNECT answered with a 2xx (client),
    on `session.events`; `source` is the session.

    Data keys: `session_id` (int)."""
    SESSION_CLOSED = "session_closed"
    """The session closed, on `session.events`; `source` is the session.

    Data keys: `session_id` (int), `error_code` (int, the application code),
    `reason` (str), `remote` (bool, True when the peer closed it), `clean` (bool,
    False after a reset, a protocol error or a lost connection)."""
    SESSION_DRAINING = "session_draining"
    """The peer asked to wind the session down (DRAIN), on `session.events`.

    Data keys: `session_id` (int)."""
    SESSION_DATA_BLOCKED = "session_data_blocked"
    """The peer reported it is blocked by the session's data limit (WT_DATA_BLOCKED,
    draft-15), on `session.events`; the library grants more as the application reads.

    Data keys: `session_id` (int), `max_data` (int, the limit it is blocked at)."""
    SESSION_STREAMS_BLOCKED = "session_streams_blocked"
    """The peer reported it is blocked by the session's stream limit
    (WT_STREAMS_BLOCKED_BIDI/UNI, draft-15), on `session.events`.

    Data keys: `session_id` (int), `max_streams` (int), `is_unidirectional` (bool)."""
    SESSION_MAX_DATA_UPDATED = "session_max_data_updated"
    """The peer raised the data the session may send (WT_MAX_DATA, draft-15), on
    `session.events`.

    Data keys: `session_id` (int), `max_data` (int, the new limit)."""
    SESSION_MAX_STREAMS_BIDI_UPDATED = "session_max_streams_bidi_updated"
    """The peer raised the bidirectional streams the session may open
    (WT_MAX_STREAMS_BIDI, draft-15), on `session.events`.

    Data keys: `session_id` (int), `max_streams` (int, the new limit)."""
    SESSION_MAX_STREAMS_UNI_UPDATED = "session_max_streams_uni_updated"
    """The peer raised the unidirectional streams the session may open
    (WT_MAX_STREAMS_UNI, draft-15), on `session.events`.

    Data keys: `session_id` (int), `max_streams` (int, the new limit)."""
    DATAGRAM_RECEIVED = "datagram_received"
    """A datagram arrived, on `session.events`; `source` is the session.

    Emitted only while a listener is registered, and then instead of queueing the
    datagram for `receive_datagram()`. Data keys: `data` (bytes), `session_id` (int)."""
    STREAM_OPENED = "stream_opened"
    """The peer opened a stream, on `session.events`; `source` is the session.

    Data keys: `stream` (`WebTransportStream` or `WebTransportReceiveStream`),
    `stream_id` (int)."""
    STREAM_CLOSED = "stream_closed"
    """Both halves of a stream are done (FIN or reset each way, or the session ended),
    on `stream.events` and `session.events`; `source` is the stream.

    Data keys: `stream_id` (int), `session_id` (int), `stream` (the stream object)."""
    STREAM_RESET_RECEIVED = "stream_reset_received"
    """The peer reset a stream (RESET_STREAM), on `stream.events` and `session.events`;
    `source` is the stream. Reads then raise `StreamError` with the code.

    Data keys: `stream_id` (int), `error_code` (int, the peer's application code, or
    None when it sent no WebTransport code), `stream` (the stream object)."""
    STOP_SENDING_RECEIVED = "stop_sending_received"
    """The peer asked us to stop sending (STOP_SENDING), on `stream.events` and
    `session.events`; `source` is the stream. Writes then raise `StreamError`.

    Data keys: `stream_id` (int), `error_code` (int or None, as above), `stream`
    (the stream object)."""


@dataclass(frozen=True, slots=True)
class SessionCloseInfo:
    """How a session ended.

    Attributes:
        error_code: The application code of the close (0 for a clean close; the
            HTTP status for a refused CONNECT; the QUIC code for a lost connection).
        reason: The reason text.
        remote: True when the peer closed the session.
        clean: False when the session ended by a reset, a protocol error or a
            lost connection rather than a close capsule or FIN.
    """

    error_code: int
    reason: str
    remote: bool
    clean: bool
