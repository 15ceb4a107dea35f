"""Type aliases and enums shared by every layer of pywebtransport.

`StreamId` and `SessionId` are plain `int` aliases (as in the reference
library) so that user code passing integers type-checks without casts.
`EventType` lives here, as in the reference library's types module, and is
also importable from `pywebtransport.shared.events` and `pywebtransport`.
"""

from __future__ import annotations

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
    whose `data` is a dict with the keys listed under each member. Some members are
    defined for compatibility with the reference library but not emitted yet: they
    say so.
    """

    CONNECTION_ESTABLISHED = "connection_established"
    """Not emitted yet."""
    CONNECTION_CLOSED = "connection_closed"
    """A QUIC connection closed, on `connection.events`; `source` is the connection.

    Data keys: `error_code` (int, the QUIC or HTTP/3 code of the close), `reason`
    (str), `handle` (int, the connection's handle)."""
    SESSION_REQUEST = "session_request"
    """A client asked for a session, on the `WebTransportServer`; `source` is the server.

    Handlers may `await session.accept()` or `await session.reject(status_code=...)`;
    a session nobody answered goes to the server's handler (or is refused with 404).
    Data keys: `session` (`WebTransportSession`), `connection`
    (`WebTransportConnection`), `session_id` (int), `path` (str, with the query
    string), `headers` (list of `(bytes, bytes)` pairs, pseudo-headers included)."""
    SESSION_PENDING = "session_pending"
    """Not emitted yet."""
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
    """Not emitted yet."""
    SESSION_STREAMS_BLOCKED = "session_streams_blocked"
    """Not emitted yet."""
    SESSION_MAX_DATA_UPDATED = "session_max_data_updated"
    """Not emitted yet."""
    SESSION_MAX_STREAMS_BIDI_UPDATED = "session_max_streams_bidi_updated"
    """Not emitted yet."""
    SESSION_MAX_STREAMS_UNI_UPDATED = "session_max_streams_uni_updated"
    """Not emitted yet."""
    DATAGRAM_RECEIVED = "datagram_received"
    """A datagram arrived, on `session.events`; `source` is the session.

    Emitted only while a listener is registered, and then instead of queueing the
    datagram for `receive_datagram()`. Data keys: `data` (bytes), `session_id` (int)."""
    STREAM_OPENED = "stream_opened"
    """The peer opened a stream, on `session.events`; `source` is the session.

    Data keys: `stream` (`WebTransportStream` or `WebTransportReceiveStream`),
    `stream_id` (int)."""
    STREAM_CLOSED = "stream_closed"
    """Not emitted yet."""
    STREAM_RESET_RECEIVED = "stream_reset_received"
    """Not emitted yet."""
    STOP_SENDING_RECEIVED = "stop_sending_received"
    """Not emitted yet."""
