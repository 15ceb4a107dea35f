"""Type aliases and enums shared by every layer of pywebtransport.

`StreamId` and `SessionId` are plain `int` aliases (as in the reference
library) so that user code passing integers type-checks without casts.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeAlias

__all__ = [
    "Address",
    "Buffer",
    "ConnectionState",
    "ErrorCode",
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
    """Lifecycle of a QUIC connection."""

    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSING = "closing"
    CLOSED = "closed"


class SessionState(StrEnum):
    """Lifecycle of a WebTransport session."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    DRAINING = "draining"
    CLOSING = "closing"
    CLOSED = "closed"


class StreamState(StrEnum):
    """Lifecycle of a WebTransport stream (RFC 9000 terms, seen from this endpoint)."""

    OPEN = "open"
    HALF_CLOSED_LOCAL = "half_closed_local"
    HALF_CLOSED_REMOTE = "half_closed_remote"
    RESET_SENT = "reset_sent"
    RESET_RECEIVED = "reset_received"
    CLOSED = "closed"


class StreamDirection(StrEnum):
    """Which way data flows on a stream, seen from this endpoint."""

    BIDIRECTIONAL = "bidirectional"
    SEND_ONLY = "send_only"
    RECEIVE_ONLY = "receive_only"
