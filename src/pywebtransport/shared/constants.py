"""Protocol codepoints, error codes and library defaults.

Every number that appears on the wire is defined here once; the rest of the
library refers to these names.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

__all__ = [
    "BIDI_STREAM_SIGNAL",
    "CAPSULE_CLOSE_WEBTRANSPORT_SESSION",
    "CAPSULE_DRAIN_WEBTRANSPORT_SESSION",
    "CAPSULE_WT_DATA_BLOCKED",
    "CAPSULE_WT_MAX_DATA",
    "CAPSULE_WT_MAX_STREAMS_BIDI",
    "CAPSULE_WT_MAX_STREAMS_UNI",
    "CAPSULE_WT_STREAMS_BLOCKED_BIDI",
    "CAPSULE_WT_STREAMS_BLOCKED_UNI",
    "DEFAULT_ALPN_PROTOCOLS",
    "DEFAULT_BIND_HOST",
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_DATAGRAM_SIZE",
    "DEFAULT_PORT",
    "MAX_CLOSE_REASON_BYTES",
    "MAX_QUIC_DATAGRAM_SIZE",
    "SETTINGS_ENABLE_CONNECT_PROTOCOL",
    "SETTINGS_ENABLE_WEBTRANSPORT_DRAFT02",
    "SETTINGS_H3_DATAGRAM",
    "SETTINGS_H3_DATAGRAM_DRAFT04",
    "SETTINGS_MAX_FIELD_SECTION_SIZE",
    "SETTINGS_WT_ENABLED",
    "SETTINGS_WT_INITIAL_MAX_DATA",
    "SETTINGS_WT_INITIAL_MAX_STREAMS_BIDI",
    "SETTINGS_WT_INITIAL_MAX_STREAMS_UNI",
    "SETTINGS_WT_MAX_SESSIONS",
    "UNI_STREAM_TYPE",
    "WT_APPLICATION_ERROR_FIRST",
    "WT_APPLICATION_ERROR_LAST",
    "WT_PROTOCOL_TOKENS",
    "ErrorCodes",
]

# Stream headers (draft-ietf-webtrans-http3).
BIDI_STREAM_SIGNAL: Final = 0x41
"""`0x41`: First varint of a WebTransport bidirectional stream (WEBTRANSPORT_STREAM signal)."""
UNI_STREAM_TYPE: Final = 0x54
"""`0x54`: Stream type of a WebTransport unidirectional stream."""

# Capsules on the CONNECT stream (RFC 9297 capsule protocol).
CAPSULE_CLOSE_WEBTRANSPORT_SESSION: Final = 0x2843
"""`0x2843`: CLOSE_WEBTRANSPORT_SESSION capsule: closes a session with a code and a reason."""
CAPSULE_DRAIN_WEBTRANSPORT_SESSION: Final = 0x78AE
"""`0x78AE`: DRAIN_WEBTRANSPORT_SESSION capsule: asks the peer to wind the session down."""
# Session-level flow control (draft-15): the same codepoints as WebTransport over HTTP/2.
CAPSULE_WT_MAX_DATA: Final = 0x190B4D3D
"""`0x190B4D3D`: WT_MAX_DATA capsule (draft-15): raises the session's data limit."""
CAPSULE_WT_MAX_STREAMS_BIDI: Final = 0x190B4D3F
"""`0x190B4D3F`: WT_MAX_STREAMS capsule for bidirectional streams (draft-15)."""
CAPSULE_WT_MAX_STREAMS_UNI: Final = 0x190B4D40
"""`0x190B4D40`: WT_MAX_STREAMS capsule for unidirectional streams (draft-15)."""
CAPSULE_WT_DATA_BLOCKED: Final = 0x190B4D41
"""`0x190B4D41`: WT_DATA_BLOCKED capsule (draft-15): blocked by the session's data limit."""
CAPSULE_WT_STREAMS_BLOCKED_BIDI: Final = 0x190B4D43
"""`0x190B4D43`: WT_STREAMS_BLOCKED capsule for bidirectional streams (draft-15)."""
CAPSULE_WT_STREAMS_BLOCKED_UNI: Final = 0x190B4D44
"""`0x190B4D44`: WT_STREAMS_BLOCKED capsule for unidirectional streams (draft-15)."""
MAX_CLOSE_REASON_BYTES: Final = 1024
"""Upper bound on the UTF-8 reason of CLOSE_WEBTRANSPORT_SESSION."""

# HTTP/3 SETTINGS identifiers.
SETTINGS_MAX_FIELD_SECTION_SIZE: Final = 0x6
"""`0x6`: SETTINGS_MAX_FIELD_SECTION_SIZE (RFC 9114): largest header section accepted."""
SETTINGS_ENABLE_CONNECT_PROTOCOL: Final = 0x8
"""`0x8`: SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 9220): extended CONNECT is allowed."""
SETTINGS_H3_DATAGRAM: Final = 0x33
"""`0x33`: SETTINGS_H3_DATAGRAM (RFC 9297): HTTP datagrams are supported."""
SETTINGS_H3_DATAGRAM_DRAFT04: Final = 0xFFD277
"""`0xFFD277`: The draft-04 codepoint of SETTINGS_H3_DATAGRAM, still sent by draft-02 peers."""
SETTINGS_ENABLE_WEBTRANSPORT_DRAFT02: Final = 0x2B603742
"""`0x2B603742`: SETTINGS_ENABLE_WEBTRANSPORT of draft-02 (the browsers' default)."""
SETTINGS_WT_MAX_SESSIONS: Final = 0xC671706A
"""`0xC671706A`: SETTINGS_WT_MAX_SESSIONS (draft-07): sessions accepted per connection."""
SETTINGS_WT_ENABLED: Final = 0x2C7CF000
"""`0x2C7CF000`: SETTINGS_WT_ENABLED (draft-15): WebTransport is supported."""
SETTINGS_WT_INITIAL_MAX_DATA: Final = 0x2B61
"""`0x2B61`: SETTINGS_WT_INITIAL_MAX_DATA (draft-15): a session's initial data limit."""
SETTINGS_WT_INITIAL_MAX_STREAMS_UNI: Final = 0x2B64
"""`0x2B64`: SETTINGS_WT_INITIAL_MAX_STREAMS_UNI (draft-15): initial unidirectional stream limit."""
SETTINGS_WT_INITIAL_MAX_STREAMS_BIDI: Final = 0x2B65
"""`0x2B65`: SETTINGS_WT_INITIAL_MAX_STREAMS_BIDI (draft-15): initial bidirectional stream limit."""

WT_PROTOCOL_TOKENS: Final = (b"webtransport", b"webtransport-h3")
"""Values of the `:protocol` pseudo-header that open a WebTransport session."""

# Application error codes 0..2**32-1 are carried in this HTTP/3 code range,
# skipping the reserved (GREASE) points 0x1f * N + 0x21.
WT_APPLICATION_ERROR_FIRST: Final = 0x52E4A40FA8DB
"""`0x52E4A40FA8DB`: First HTTP/3 code of the range carrying application codes."""
WT_APPLICATION_ERROR_LAST: Final = 0x52E5AC983162
"""`0x52E5AC983162`: Last HTTP/3 code of the range carrying application codes."""

MAX_QUIC_DATAGRAM_SIZE: Final = 16383
"""Largest `max_datagram_size` (QUIC packet size) accepted: aioquic encodes STREAM frame
lengths in two bytes, so larger packets break bulk transfer."""

DEFAULT_ALPN_PROTOCOLS: Final = ("h3",)
"""Default `alpn_protocols` of both configs."""
DEFAULT_BIND_HOST: Final = "::"
"""Default `ServerConfig.bind_host`: every IPv6 and (dual-stack) IPv4 address."""
DEFAULT_PORT: Final = 4433
"""Default `ServerConfig.bind_port`."""
DEFAULT_CLOSE_TIMEOUT: Final = 5.0
"""Default `close_timeout` in seconds: how long a graceful close or shutdown may take."""
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
"""Default `ClientConfig.connect_timeout` in seconds (the reference library uses 30).

Ten seconds, like the opening timeout of `websockets`: long enough for a lost first
flight to be sent again several times (aioquic starts with a 0.2 s probe timeout and
doubles it), short enough that a mistyped host or port, where nothing answers over UDP,
fails while the user is still waiting for it."""
DEFAULT_MAX_DATAGRAM_SIZE: Final = 1350
"""Default `max_datagram_size`: the largest QUIC packet sent, in bytes."""


class ErrorCodes(IntEnum):
    """Error codes of QUIC, HTTP/3, QPACK, WebTransport, applications and this library.

    Names and values are those of the reference library (pywebtransport 0.20/0.21 on
    PyPI). A few members are aliases: a second name for the same value (`QUIC_NO_ERROR`
    and `APP_NO_ERROR` are both 0; `QUIC_CRYPTO_ERROR_FIRST` is `H3_NO_ERROR`; this
    library's older names `APP_TIMEOUT`, `APP_INTERNAL_ERROR` and `APP_PROTOCOL_VIOLATION`
    stand for `APP_OPERATION_TIMEOUT`, `APP_GENERIC_ERROR` and `APP_INVALID_REQUEST`).
    `ErrorCodes(value).name` gives the first name listed here.

    Where each kind of code travels: `QUIC_*` in a QUIC CONNECTION_CLOSE frame; `H3_*` and
    `QPACK_*` in an HTTP/3 connection close or stream reset; `WT_*` in HTTP/3 closes and
    resets about WebTransport; `APP_*` are application codes for `session.close()` and
    stream resets; `LIB_*` appear only in this library's exceptions, never on the wire.
    """

    # QUIC transport (RFC 9000 §20.1).
    QUIC_NO_ERROR = 0x0
    """`0x0`: The connection closed without an error."""
    QUIC_INTERNAL_ERROR = 0x1
    """`0x1`: The endpoint hit an internal error."""
    QUIC_CONNECTION_REFUSED = 0x2
    """`0x2`: The server refused the connection."""
    QUIC_FLOW_CONTROL_ERROR = 0x3
    """`0x3`: The peer sent more data than its flow-control credit allowed."""
    QUIC_STREAM_LIMIT_ERROR = 0x4
    """`0x4`: The peer opened more streams than allowed."""
    QUIC_STREAM_STATE_ERROR = 0x5
    """`0x5`: A frame arrived for a stream in a state that does not allow it."""
    QUIC_FINAL_SIZE_ERROR = 0x6
    """`0x6`: A stream's final size changed or was exceeded."""
    QUIC_FRAME_ENCODING_ERROR = 0x7
    """`0x7`: A frame was badly formatted."""
    QUIC_TRANSPORT_PARAMETER_ERROR = 0x8
    """`0x8`: Transport parameters were invalid."""
    QUIC_CONNECTION_ID_LIMIT_ERROR = 0x9
    """`0x9`: The peer issued more connection IDs than allowed."""
    QUIC_PROTOCOL_VIOLATION = 0xA
    """`0xA`: A generic QUIC protocol violation."""
    QUIC_INVALID_TOKEN = 0xB
    """`0xB`: An invalid Retry or NEW_TOKEN token was received."""
    QUIC_APPLICATION_ERROR = 0xC
    """`0xC`: The application (here: HTTP/3) closed the connection."""
    QUIC_CRYPTO_BUFFER_EXCEEDED = 0xD
    """`0xD`: Too much buffered CRYPTO data."""
    QUIC_KEY_UPDATE_ERROR = 0xE
    """`0xE`: A key update failed."""
    QUIC_AEAD_LIMIT_REACHED = 0xF
    """`0xF`: The AEAD confidentiality or integrity limit was reached."""
    QUIC_NO_VIABLE_PATH = 0x10
    """`0x10`: No network path is usable."""

    # HTTP/3 (RFC 9114 §8.1, RFC 9297).
    H3_DATAGRAM_ERROR = 0x33
    """`0x33`: An HTTP datagram was malformed or not allowed (RFC 9297)."""
    H3_NO_ERROR = 0x100
    """`0x100`: The HTTP/3 connection or stream closed without an error."""
    H3_GENERAL_PROTOCOL_ERROR = 0x101
    """`0x101`: A generic HTTP/3 protocol violation."""
    H3_INTERNAL_ERROR = 0x102
    """`0x102`: An internal error of the HTTP/3 stack."""
    H3_STREAM_CREATION_ERROR = 0x103
    """`0x103`: The peer created a stream that is not acceptable."""
    H3_CLOSED_CRITICAL_STREAM = 0x104
    """`0x104`: A control or QPACK stream was closed."""
    H3_FRAME_UNEXPECTED = 0x105
    """`0x105`: A frame arrived where it is not allowed."""
    H3_FRAME_ERROR = 0x106
    """`0x106`: A frame was badly formatted or too large."""
    H3_EXCESSIVE_LOAD = 0x107
    """`0x107`: The peer generates excessive load."""
    H3_ID_ERROR = 0x108
    """`0x108`: A stream or push ID was used incorrectly."""
    H3_SETTINGS_ERROR = 0x109
    """`0x109`: The SETTINGS frame was invalid."""
    H3_MISSING_SETTINGS = 0x10A
    """`0x10A`: No SETTINGS frame came first on the control stream."""
    H3_REQUEST_REJECTED = 0x10B
    """`0x10B`: The server rejected the request without processing it (also a refused CONNECT)."""
    H3_REQUEST_CANCELLED = 0x10C
    """`0x10C`: The request or its response was cancelled."""
    H3_REQUEST_INCOMPLETE = 0x10D
    """`0x10D`: The request stream ended before the request was complete."""
    H3_MESSAGE_ERROR = 0x10E
    """`0x10E`: A malformed HTTP message."""
    H3_CONNECT_ERROR = 0x10F
    """`0x10F`: The CONNECT request's tunnel was reset or closed abnormally."""
    H3_VERSION_FALLBACK = 0x110
    """`0x110`: The request should be retried over HTTP/1.1."""
    # Defined after H3_NO_ERROR so that 0x100 keeps its HTTP/3 name.
    QUIC_CRYPTO_ERROR_FIRST = 0x100
    """`0x100`: First QUIC CRYPTO_ERROR code (0x100 + TLS alert); = `H3_NO_ERROR`."""
    QUIC_CRYPTO_ERROR_LAST = 0x1FF
    """`0x1FF`: Last QUIC CRYPTO_ERROR code (0x100 + TLS alert 255)."""

    # QPACK (RFC 9204 §6).
    QPACK_DECOMPRESSION_FAILED = 0x200
    """`0x200`: A header section could not be decompressed."""
    QPACK_ENCODER_STREAM_ERROR = 0x201
    """`0x201`: An instruction on the QPACK encoder stream was invalid."""
    QPACK_DECODER_STREAM_ERROR = 0x202
    """`0x202`: An instruction on the QPACK decoder stream was invalid."""

    # WebTransport over HTTP/3.
    WT_SESSION_GONE = 0x170D7B68
    """`0x170D7B68`: A stream's session is gone: resets the streams of a closed session."""
    WT_BUFFERED_STREAM_REJECTED = 0x3994BD84
    """`0x3994BD84`: A stream that arrived before its session was buffered and then refused."""
    WT_FLOW_CONTROL_ERROR = 0x045D4487
    """`0x045D4487`: The peer exceeded a session flow-control limit (draft-15)."""
    WT_ALPN_ERROR = 0x0817B3DD
    """`0x0817B3DD`: Subprotocol negotiation failed."""
    WT_REQUIREMENTS_NOT_MET = 0x212C0D48
    """`0x212C0D48`: The peer's SETTINGS lack what WebTransport needs."""
    WT_APPLICATION_ERROR_FIRST = WT_APPLICATION_ERROR_FIRST
    """`0x52E4A40FA8DB`: First HTTP/3 code carrying an application code (application code 0)."""
    WT_APPLICATION_ERROR_LAST = WT_APPLICATION_ERROR_LAST
    """`0x52E5AC983162`: Last HTTP/3 code carrying an application code (code 2**32 - 1)."""
    WT_STREAM_BUFFER_EXCEEDED = 0x52E4A40FA8DC
    """`0x52E4A40FA8DC`: A stream's buffer limit was exceeded (the reference library's name).

    The value is `WT_APPLICATION_ERROR_FIRST + 1`, the HTTP/3 code that carries
    application code 1, as in the reference library."""

    # Application codes for session closes and stream resets (values of the reference).
    APP_NO_ERROR = 0x0
    """`0x0`: A normal close."""
    APP_CANCELLED = 0x1000
    """`0x1000`: The operation was cancelled."""
    APP_GENERIC_ERROR = 0x1001
    """`0x1001`: An unspecified application error. `ServerApp` closes a session whose handler
    raised with it; exceptions default to it."""
    APP_CONNECTION_TIMEOUT = 0x1002
    """`0x1002`: A connection timed out."""
    APP_OPERATION_TIMEOUT = 0x1003
    """`0x1003`: An operation timed out (the default code of `TimeoutError`)."""
    APP_AUTHENTICATION_FAILED = 0x1004
    """`0x1004`: Authentication failed (the default code of `AuthenticationError`)."""
    APP_PERMISSION_DENIED = 0x1005
    """`0x1005`: The peer is authenticated but not allowed to do this."""
    APP_RESOURCE_EXHAUSTED = 0x1006
    """`0x1006`: A resource limit was reached."""
    APP_INVALID_REQUEST = 0x1007
    """`0x1007`: The request was invalid (the default code of `ClientError`)."""
    APP_SERVICE_UNAVAILABLE = 0x1008
    """`0x1008`: Sent by a server that shuts down ("going away")."""
    # This library's earlier names, kept as aliases.
    APP_TIMEOUT = APP_OPERATION_TIMEOUT
    """Alias of `APP_OPERATION_TIMEOUT`."""
    APP_INTERNAL_ERROR = APP_GENERIC_ERROR
    """Alias of `APP_GENERIC_ERROR`: the code of a session whose handler raised."""
    APP_PROTOCOL_VIOLATION = APP_INVALID_REQUEST
    """Alias of `APP_INVALID_REQUEST`: the peer broke the application's protocol."""

    # Library conditions surfaced in exceptions (never sent on the wire).
    LIB_INTERNAL_ERROR = 0x10000001
    """`0x10000001`: An internal error of this library."""
    LIB_CONNECTION_STATE_ERROR = 0x11000001
    """`0x11000001`: The connection is not in a state that allows the operation."""
    LIB_CONNECTION_LIMIT_EXCEEDED = 0x11000002
    """`0x11000002`: A connection limit was reached."""
    LIB_SESSION_STATE_ERROR = 0x12000001
    """`0x12000001`: The session is not in a state that allows the operation (the default code of
    `SessionError`)."""
    LIB_STREAM_STATE_ERROR = 0x13000001
    """`0x13000001`: The stream is not in a state that allows the operation (the default code of
    `StreamError`)."""
