"""WebTransport over HTTP/3 as a sans-I/O state machine on aioquic.

`WebTransportProtocol` sits between one `QuicConnection` and the asyncio layer:
QUIC events go in through `handle_event()`, WebTransport events come out, and
every command leaves its bytes queued on the QUIC object for the caller to
transmit. It never touches the event loop or the clock, so it is tested with
literal bytes and in-memory connection pairs.

Division of labour with aioquic's `H3Connection`: HTTP/3 control streams,
QPACK and the CONNECT request streams go through `H3Connection`; WebTransport
data streams never do. The first bytes of every new peer stream are peeked
here: a WebTransport stream header (0x41 + session id on bidirectional
streams, type 0x54 + session id on unidirectional ones) claims the stream for
WebTransport and its data then goes straight from QUIC to the reader, without
HTTP/3 bookkeeping per chunk. That also fixes aioquic's handling of
server-initiated bidirectional streams, which it would parse as HTTP/3 frames.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, cast

import pylsqpack
from aioquic.buffer import encode_uint_var
from aioquic.h3 import events as h3e
from aioquic.h3.connection import H3Connection, H3Stream, MessageError
from aioquic.quic import events as qe
from aioquic.quic.connection import QuicConnection, stream_is_unidirectional

from ..shared.constants import (
    BIDI_STREAM_SIGNAL,
    CAPSULE_CLOSE_WEBTRANSPORT_SESSION,
    CAPSULE_DRAIN_WEBTRANSPORT_SESSION,
    CAPSULE_WT_DATA_BLOCKED,
    CAPSULE_WT_MAX_DATA,
    CAPSULE_WT_MAX_STREAMS_BIDI,
    CAPSULE_WT_MAX_STREAMS_UNI,
    CAPSULE_WT_STREAMS_BLOCKED_BIDI,
    CAPSULE_WT_STREAMS_BLOCKED_UNI,
    MAX_CLOSE_REASON_BYTES,
    SETTINGS_ENABLE_CONNECT_PROTOCOL,
    SETTINGS_ENABLE_WEBTRANSPORT_DRAFT02,
    SETTINGS_H3_DATAGRAM,
    SETTINGS_H3_DATAGRAM_DRAFT04,
    SETTINGS_MAX_FIELD_SECTION_SIZE,
    SETTINGS_WT_ENABLED,
    SETTINGS_WT_INITIAL_MAX_DATA,
    SETTINGS_WT_INITIAL_MAX_STREAMS_BIDI,
    SETTINGS_WT_INITIAL_MAX_STREAMS_UNI,
    SETTINGS_WT_MAX_SESSIONS,
    UNI_STREAM_TYPE,
    WT_APPLICATION_ERROR_FIRST,
    WT_APPLICATION_ERROR_LAST,
    WT_PROTOCOL_TOKENS,
    ErrorCodes,
)
from ..shared.utils import decode_varint

__all__ = [
    "DIALECTS",
    "DRAFT02",
    "DRAFT07",
    "DRAFT15",
    "DatagramReceived",
    "Dialect",
    "Limits",
    "ProtocolEvent",
    "SessionClosed",
    "SessionCreditUpdated",
    "SessionDraining",
    "SessionEstablished",
    "SessionRejected",
    "SessionRequested",
    "SettingsReceived",
    "StopSendingReceived",
    "StreamDataReceived",
    "StreamOpened",
    "StreamResetReceived",
    "WebTransportProtocol",
    "all_settings",
    "choose_dialect",
    "decode_capsules",
    "encode_capsule",
    "encode_sf_string",
    "http3_to_wt_error",
    "parse_sf_string",
    "parse_sf_string_list",
    "wt_to_http3_error",
]

_MAX_WT_CODE: Final = 0xFFFFFFFF
_GREASE_PERIOD: Final = 0x1F
_MAX_HEADER_PEEK: Final = 16
"""A stream header is at most two 8-byte varints; more unparsed bytes is a protocol error."""
_FLOW_CAPSULES: Final = frozenset(
    {
        CAPSULE_WT_MAX_DATA,
        CAPSULE_WT_MAX_STREAMS_BIDI,
        CAPSULE_WT_MAX_STREAMS_UNI,
        CAPSULE_WT_DATA_BLOCKED,
        CAPSULE_WT_STREAMS_BLOCKED_BIDI,
        CAPSULE_WT_STREAMS_BLOCKED_UNI,
    }
)
_MAX_ORPHAN_STREAMS: Final = 32
"""Streams buffered for a session whose CONNECT has not arrived yet (draft §4.6)."""
_MAX_ORPHAN_BYTES: Final = 64 * 1024
"""Data one held stream may buffer before its session is known (32 x 64 KiB per connection)."""


# --------------------------------------------------------------------------- codes


def wt_to_http3_error(code: int) -> int:
    """Map a WebTransport application error code to its HTTP/3 error code.

    Args:
        code: An application error code, 0 to 2**32-1.

    Returns:
        The HTTP/3 code that carries it on RESET_STREAM / STOP_SENDING.

    Raises:
        ValueError: The code is outside 0..2**32-1.
    """
    if not 0 <= code <= _MAX_WT_CODE:
        raise ValueError(f"WebTransport error codes are 0..{_MAX_WT_CODE}, got {code}")
    return WT_APPLICATION_ERROR_FIRST + code + code // (_GREASE_PERIOD - 1)


def http3_to_wt_error(code: int) -> int | None:
    """Map an HTTP/3 error code back to a WebTransport application error code.

    Args:
        code: The HTTP/3 code received on RESET_STREAM / STOP_SENDING.

    Returns:
        The application code, or None when `code` is outside the WebTransport
        range or is one of its reserved (GREASE) points.
    """
    if not WT_APPLICATION_ERROR_FIRST <= code <= WT_APPLICATION_ERROR_LAST:
        return None
    if (code - 0x21) % _GREASE_PERIOD == 0:
        return None
    shifted = code - WT_APPLICATION_ERROR_FIRST
    return shifted - shifted // _GREASE_PERIOD


# --------------------------------------------------------------------------- capsules


def encode_capsule(capsule_type: int, payload: bytes) -> bytes:
    """Encode one capsule (RFC 9297 §3.2).

    Args:
        capsule_type: The capsule type.
        payload: The capsule value.

    Returns:
        Type, length and value as bytes.
    """
    return encode_uint_var(capsule_type) + encode_uint_var(len(payload)) + payload


def decode_capsules(buffer: bytearray, max_size: int) -> list[tuple[int, bytes]]:
    """Remove every complete capsule from the front of `buffer`.

    Args:
        buffer: Bytes received so far on the CONNECT stream; consumed in place.
        max_size: The largest capsule value accepted.

    Returns:
        The complete capsules as (type, value) pairs; an incomplete tail stays
        in `buffer`.

    Raises:
        ValueError: A capsule announces a value larger than `max_size`.
    """
    capsules: list[tuple[int, bytes]] = []
    offset = 0
    while True:
        head = decode_varint(buffer, offset)
        if head is None:
            break
        capsule_type, pos = head
        length_field = decode_varint(buffer, pos)
        if length_field is None:
            break
        length, pos = length_field
        if length > max_size:
            raise ValueError(f"capsule of {length} bytes exceeds the {max_size}-byte limit")
        if len(buffer) - pos < length:
            break
        capsules.append((capsule_type, bytes(buffer[pos : pos + length])))
        offset = pos + length
    del buffer[:offset]
    return capsules


# --------------------------------------------------------------------------- structured fields


def encode_sf_string(value: str) -> bytes:
    """Encode an RFC 8941 structured-field string (``"a"``).

    Args:
        value: Printable ASCII text.

    Returns:
        The quoted, escaped string.
    """
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'.encode("ascii", "replace")


def parse_sf_string(value: bytes) -> str | None:
    """Decode one RFC 8941 sf-string.

    Args:
        value: The header value.

    Returns:
        The string, or None when the value is not a single sf-string.
    """
    items = parse_sf_string_list(value)
    return items[0] if items is not None and len(items) == 1 else None


def parse_sf_string_list(value: bytes) -> list[str] | None:
    """Decode an RFC 8941 list of sf-strings (``"a", "b"``); parameters are ignored.

    Args:
        value: The header value.

    Returns:
        The strings in order, or None when the value is malformed or holds
        something other than strings.
    """
    text = value.decode("ascii", "replace")
    items: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in " \t":
            i += 1
        if i >= n or text[i] != '"':
            return None
        i += 1
        chars: list[str] = []
        while True:
            if i >= n:
                return None
            char = text[i]
            if char == "\\":
                if i + 1 >= n or text[i + 1] not in '"\\':
                    return None
                chars.append(text[i + 1])
                i += 2
            elif char == '"':
                i += 1
                break
            elif not " " <= char <= "~":
                return None
            else:
                chars.append(char)
                i += 1
        items.append("".join(chars))
        while i < n and text[i] == ";":  # parameters: skip up to the next member
            while i < n and text[i] != ",":
                i += 1
        while i < n and text[i] in " \t":
            i += 1
        if i >= n:
            return items
        if text[i] != ",":
            return None
        i += 1


# --------------------------------------------------------------------------- dialects


@dataclass(frozen=True, slots=True)
class Limits:
    """What this endpoint grants a peer, announced in SETTINGS.

    Attributes:
        max_sessions: Sessions a peer may open on one connection.
        initial_max_data: Session-level receive window (draft-15 flow control).
        initial_max_streams_bidi: Bidirectional streams a peer may open per session (draft-15).
        initial_max_streams_uni: Unidirectional streams a peer may open per session (draft-15).
    """

    max_sessions: int = 1
    initial_max_data: int = 4 * 1024 * 1024
    initial_max_streams_bidi: int = 100
    initial_max_streams_uni: int = 100


@dataclass(frozen=True, slots=True)
class Dialect:
    """What one WebTransport draft puts on the wire.

    Attributes:
        name: Short name, e.g. ``"draft-02"``.
        protocol_token: The `:protocol` value a client sends.
        request_headers: Extra headers on a client's CONNECT.
        response_headers: Extra headers on a server's 2xx answer.
        flow_control: Whether sessions have their own flow control
            (WT_MAX_DATA / WT_MAX_STREAMS capsules, initial values in SETTINGS).
    """

    name: str
    protocol_token: bytes
    request_headers: tuple[tuple[bytes, bytes], ...] = ()
    response_headers: tuple[tuple[bytes, bytes], ...] = ()
    flow_control: bool = False

    def settings(self, limits: Limits) -> dict[int, int]:
        """Return the HTTP/3 SETTINGS this dialect needs beyond aioquic's own.

        Args:
            limits: What this endpoint grants its peer.

        Returns:
            Setting identifiers mapped to values.
        """
        settings = {
            SETTINGS_ENABLE_CONNECT_PROTOCOL: 1,
            SETTINGS_H3_DATAGRAM: 1,
        }
        if self is DRAFT02:
            settings[SETTINGS_H3_DATAGRAM_DRAFT04] = 1
            settings[SETTINGS_ENABLE_WEBTRANSPORT_DRAFT02] = 1
        elif self is DRAFT07:
            settings[SETTINGS_WT_MAX_SESSIONS] = limits.max_sessions
        else:
            settings[SETTINGS_WT_ENABLED] = 1
            settings[SETTINGS_WT_INITIAL_MAX_DATA] = limits.initial_max_data
            settings[SETTINGS_WT_INITIAL_MAX_STREAMS_BIDI] = limits.initial_max_streams_bidi
            settings[SETTINGS_WT_INITIAL_MAX_STREAMS_UNI] = limits.initial_max_streams_uni
        return settings

    def spoken_by(self, settings: dict[int, int]) -> bool:
        """Return whether a peer's SETTINGS show it speaks this dialect.

        Args:
            settings: The peer's HTTP/3 SETTINGS.

        Returns:
            True when the dialect's enabling setting is present and non-zero.
        """
        if self is DRAFT02:
            return settings.get(SETTINGS_ENABLE_WEBTRANSPORT_DRAFT02, 0) == 1
        if self is DRAFT07:
            return settings.get(SETTINGS_WT_MAX_SESSIONS, 0) > 0
        return settings.get(SETTINGS_WT_ENABLED, 0) > 0


DRAFT02: Final = Dialect(
    name="draft-02",
    protocol_token=b"webtransport",
    request_headers=((b"sec-webtransport-http3-draft02", b"1"),),
    response_headers=((b"sec-webtransport-http3-draft", b"draft02"),),
)
"""draft-ietf-webtrans-http3-02, spoken by Chromium and Firefox by default."""

DRAFT07: Final = Dialect(name="draft-07", protocol_token=b"webtransport")
"""draft-ietf-webtrans-http3-07, spoken by Chromium with `EnableWebTransportDraft07`."""

DRAFT15: Final = Dialect(name="draft-15", protocol_token=b"webtransport-h3", flow_control=True)
"""draft-ietf-webtrans-http3-15 (SETTINGS_WT_ENABLED, `webtransport-h3`, session flow
control), spoken by pywebtransport 0.20/0.21 and other current implementations."""

DIALECTS: Final = (DRAFT15, DRAFT07, DRAFT02)
"""Every dialect spoken, newest first: a client picks the first its server advertises."""


def all_settings(limits: Limits) -> dict[int, int]:
    """Return the SETTINGS of every dialect at once (extra settings are harmless to peers).

    Args:
        limits: What this endpoint grants its peer.

    Returns:
        Setting identifiers mapped to values.
    """
    settings: dict[int, int] = {}
    for dialect in reversed(DIALECTS):
        settings.update(dialect.settings(limits))
    return settings


def choose_dialect(settings: dict[int, int]) -> Dialect | None:
    """Pick the newest dialect a server's SETTINGS advertise (client side).

    Args:
        settings: The server's HTTP/3 SETTINGS.

    Returns:
        The dialect, or None when the server speaks no WebTransport.
    """
    for dialect in DIALECTS:
        if dialect.spoken_by(settings):
            return dialect
    return None


class _StaticTableEncoder:
    """A QPACK encoder that never inserts into the dynamic table.

    We encode one CONNECT request or response per session, a few short
    headers, so a dynamic table saves a few bytes per session. Following the
    peer's SETTINGS, lsqpack would instead keep encoder state sized to the
    peer's table (about 4.5 KiB per connection for aioquic's and browsers'
    4096 bytes). RFC 9204 section 3.2.3 lets the encoder choose any capacity
    up to the peer's maximum, 0 included, and header blocks referencing only
    the static table are decodable by every peer and never block a stream.

    A wrapper because `pylsqpack.Encoder` cannot be subclassed; aioquic only
    calls these three methods.
    """

    __slots__ = ("_encoder",)

    def __init__(self, encoder: pylsqpack.Encoder) -> None:
        self._encoder = encoder

    def apply_settings(self, max_table_capacity: int, blocked_streams: int) -> bytes:
        return self._encoder.apply_settings(max_table_capacity=0, blocked_streams=0)

    def encode(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
        return self._encoder.encode(stream_id, headers)

    def feed_decoder(self, data: bytes) -> None:
        self._encoder.feed_decoder(data)


class _H3(H3Connection):
    """`H3Connection` that announces our SETTINGS and keeps malformed requests stream-local.

    Its QPACK encoder uses the static table only (see `_StaticTableEncoder`).
    """

    def __init__(self, quic: QuicConnection, extra_settings: dict[int, int]) -> None:
        self._extra_settings = extra_settings
        self.malformed_requests: list[int] = []
        super().__init__(quic, enable_webtransport=True)
        self._encoder = cast(pylsqpack.Encoder, _StaticTableEncoder(self._encoder))

    def _get_local_settings(self) -> dict[int, int]:
        settings = super()._get_local_settings()
        settings.update(self._extra_settings)
        return settings

    def _receive_request_or_push_data(
        self, stream: H3Stream, data: bytes, stream_ended: bool
    ) -> list[h3e.H3Event]:
        try:
            return super()._receive_request_or_push_data(stream, data, stream_ended)
        except MessageError:
            if self._is_client:
                raise
            # RFC 9114 §4.1.2: a malformed request is a stream error, not a connection
            # error (aioquic would close the connection and every session on it).
            stream.buffer = b""
            stream.receiving_ended = stream.sending_ended = True
            self.malformed_requests.append(stream.stream_id)
            return []


# --------------------------------------------------------------------------- events


class ProtocolEvent:
    """Base class of the events `WebTransportProtocol.handle_event` returns."""

    __slots__ = ()


@dataclass(slots=True)
class SettingsReceived(ProtocolEvent):
    """The peer's HTTP/3 SETTINGS arrived."""

    settings: dict[int, int]
    "The peer's settings."


@dataclass(slots=True)
class SessionRequested(ProtocolEvent):
    """A client asked to open a session (server side); answer with accept or reject."""

    session_id: int
    "The CONNECT stream id."
    path: str
    "The request's `:path` (with query)."
    authority: str
    "The request's `:authority`."
    headers: list[tuple[bytes, bytes]]
    "Every header, pseudo-headers included."
    protocol_token: bytes
    "The `:protocol` value."
    dialect: Dialect
    "The dialect the session is served in."
    protocols: list[str]
    "Subprotocols the client offered (`wt-available-protocols`), in its order."


@dataclass(slots=True)
class SessionEstablished(ProtocolEvent):
    """The server accepted our CONNECT (client side)."""

    session_id: int
    "The CONNECT stream id."
    headers: list[tuple[bytes, bytes]]
    "The response headers."


@dataclass(slots=True)
class SessionRejected(ProtocolEvent):
    """The server answered our CONNECT with a non-2xx status (client side)."""

    session_id: int
    "The CONNECT stream id."
    status_code: int
    "The HTTP status (0 when the stream ended without a valid answer)."
    headers: list[tuple[bytes, bytes]]
    "The response headers."


@dataclass(slots=True)
class SessionClosed(ProtocolEvent):
    """A session ended: capsule, FIN or reset of its CONNECT stream."""

    session_id: int
    "The CONNECT stream id."
    error_code: int
    "The application code the peer sent (0 without a capsule)."
    reason: str
    "The peer's reason."
    clean: bool
    "True for CLOSE_WEBTRANSPORT_SESSION or a plain FIN, False for a reset or protocol error."
    by_peer: bool = True
    "False when this endpoint closed the session because the peer broke a rule."


@dataclass(slots=True)
class SessionCreditUpdated(ProtocolEvent):
    """The peer raised a session-level limit (WT_MAX_DATA / WT_MAX_STREAMS, draft-15)."""

    session_id: int
    "The session."


@dataclass(slots=True)
class SessionDraining(ProtocolEvent):
    """The peer sent DRAIN_WEBTRANSPORT_SESSION."""

    session_id: int
    "The CONNECT stream id."


@dataclass(slots=True)
class StreamOpened(ProtocolEvent):
    """The peer opened a WebTransport stream in a session."""

    session_id: int
    "The session the stream belongs to."
    stream_id: int
    "The QUIC stream id."
    unidirectional: bool
    "True for a receive-only stream."
    data: bytes
    "Data that followed the stream header."
    end_stream: bool
    "Whether the peer already ended the stream."


@dataclass(slots=True)
class StreamDataReceived(ProtocolEvent):
    """Data arrived on a known WebTransport stream."""

    stream_id: int
    "The QUIC stream id."
    data: bytes
    "The data."
    end_stream: bool
    "Whether the peer ended the stream."


@dataclass(slots=True)
class StreamResetReceived(ProtocolEvent):
    """The peer reset a WebTransport stream (RESET_STREAM)."""

    stream_id: int
    "The QUIC stream id."
    error_code: int | None
    "The application code, or None when the HTTP/3 code was not a WebTransport one."


@dataclass(slots=True)
class StopSendingReceived(ProtocolEvent):
    """The peer asked us to stop sending on a WebTransport stream."""

    stream_id: int
    "The QUIC stream id."
    error_code: int | None
    "The application code, or None when the HTTP/3 code was not a WebTransport one."


@dataclass(slots=True)
class DatagramReceived(ProtocolEvent):
    """A datagram arrived for a session."""

    session_id: int
    "The session."
    data: bytes
    "The payload."


# --------------------------------------------------------------------------- state


@dataclass(slots=True)
class _Session:
    session_id: int
    is_client: bool
    established: bool = False
    closed: bool = False
    capsules: bytearray = field(default_factory=bytearray)
    close_received: tuple[int, str] | None = None
    local_closed: bool = False
    streams: set[int] = field(default_factory=set)
    dialect: Dialect = DRAFT02
    flow: _Flow | None = None


@dataclass(slots=True)
class _Flow:
    """Session-level flow control state (draft-15), both directions."""

    # What we grant the peer.
    window: int
    max_data_sent: int
    consumed: int = 0
    max_bidi_sent: int = 0
    max_uni_sent: int = 0
    initial_bidi: int = 0
    initial_uni: int = 0
    peer_bidi: int = 0
    peer_uni: int = 0
    peer_bidi_done: int = 0
    peer_uni_done: int = 0
    # What the peer grants us.
    remote_max_data: int = 0
    remote_max_bidi: int = 0
    remote_max_uni: int = 0
    sent: int = 0
    opened_bidi: int = 0
    opened_uni: int = 0
    blocked_data_at: int = -1
    blocked_bidi_at: int = -1
    blocked_uni_at: int = -1


@dataclass(slots=True)
class _PendingStream:
    data: bytearray = field(default_factory=bytearray)
    end_stream: bool = False


_REJECT: Final = -1
"""Marks a peer stream we refused: its later data is dropped."""
_HTTP3: Final = -2
"""Marks a stream owned by HTTP/3 (control, QPACK, request streams)."""


class WebTransportProtocol:
    """The WebTransport state of one QUIC connection, without I/O.

    Args:
        quic: The QUIC connection (client or server side).
        limits: What this endpoint grants its peer; announced in SETTINGS for
            every dialect at once, so each session can be served in the dialect
            its peer speaks.
        max_capsule_size: Largest capsule value accepted on a CONNECT stream.
        max_field_section_size: Largest request header block accepted (RFC 9114
            field section size: names + values + 32 per field); larger gets 431.
    """

    def __init__(
        self,
        quic: QuicConnection,
        *,
        limits: Limits | None = None,
        max_capsule_size: int = 65536,
        max_field_section_size: int = 65536,
    ) -> None:
        self.quic = quic
        self.limits = limits if limits is not None else Limits()
        self.is_client = quic.configuration.is_client
        self.max_capsule_size = max_capsule_size
        self.max_field_section_size = max_field_section_size
        settings = all_settings(self.limits)
        settings[SETTINGS_MAX_FIELD_SECTION_SIZE] = max_field_section_size
        self._h3 = _H3(quic, settings)
        self._settings_seen = False
        self._sessions: dict[int, _Session] = {}
        # stream id -> session id (or _REJECT / _HTTP3) once a stream is classified
        self._stream_owner: dict[int, int] = {}
        # peer streams whose header is still incomplete
        self._peeking: dict[int, bytearray] = {}
        # streams for sessions not (yet) known: session id -> stream id -> buffer
        self._orphans: dict[int, dict[int, _PendingStream]] = {}
        self._orphan_count = 0
        self._unidirectional: set[int] = set()

    # ------------------------------------------------------------------ queries

    @property
    def peer_settings(self) -> dict[int, int] | None:
        """The peer's HTTP/3 SETTINGS, or None before they arrived."""
        return self._h3.received_settings

    def stream_session(self, stream_id: int) -> int | None:
        """Return the session a WebTransport stream belongs to, if any.

        Args:
            stream_id: The QUIC stream id.

        Returns:
            The session id, or None for streams that are not WebTransport streams.
        """
        owner = self._stream_owner.get(stream_id)
        return owner if owner is not None and owner >= 0 else None

    def session_dialect(self, session_id: int) -> Dialect:
        """Return the dialect a session is served in.

        Args:
            session_id: The session.

        Returns:
            Its dialect (draft-02 for unknown sessions).
        """
        session = self._sessions.get(session_id)
        return session.dialect if session is not None else DRAFT02

    def datagram_prefix(self, session_id: int) -> bytes:
        """Return the bytes that start every datagram of a session.

        Args:
            session_id: The session.

        Returns:
            The quarter stream id as a varint.
        """
        return encode_uint_var(session_id // 4)

    # ------------------------------------------------------------------ input

    def handle_event(self, event: qe.QuicEvent) -> list[ProtocolEvent]:
        """Process one QUIC event.

        Args:
            event: An event from `QuicConnection.next_event()`.

        Returns:
            The WebTransport events it produced, in order.
        """
        if isinstance(event, qe.StreamDataReceived):
            owner = self._stream_owner.get(event.stream_id)
            if owner is not None and owner >= 0:
                if self._orphan_count and self.orphan_data(
                    event.stream_id, event.data, event.end_stream
                ):
                    return []
                return [StreamDataReceived(event.stream_id, event.data, event.end_stream)]
            if owner == _HTTP3:
                return self._to_h3(event)
            if owner == _REJECT:
                return []
            return self._peek_stream(event)
        if isinstance(event, qe.DatagramFrameReceived):
            return self._receive_datagram(event.data)
        if isinstance(event, qe.StreamReset):
            return self._receive_reset(event)
        if isinstance(event, qe.StopSendingReceived):
            return self._receive_stop_sending(event)
        if isinstance(event, qe.ProtocolNegotiated) and not self.is_client:
            # Our control and QPACK streams were opened before the client's
            # transport parameters arrived, so aioquic holds them as blocked
            # until the handshake completes. Release them now: SETTINGS then
            # leave in the server's first flight (0.5-RTT data) and the client
            # can send CONNECT as soon as its handshake completes, one round
            # trip earlier.
            self.quic._unblock_streams(is_unidirectional=True)
        return []

    def _peek_stream(self, event: qe.StreamDataReceived) -> list[ProtocolEvent]:
        stream_id = event.stream_id
        local = (stream_id & 1) == (0 if self.is_client else 1)
        if local:
            # Our own streams are classified when created; anything else is HTTP/3.
            self._stream_owner[stream_id] = _HTTP3
            return self._to_h3(event)
        buffer = self._peeking.get(stream_id)
        if buffer is None:
            data: bytes | bytearray = event.data
        else:
            buffer += event.data
            data = buffer
        unidirectional = stream_is_unidirectional(stream_id)
        head = decode_varint(data, 0)
        if head is not None:
            kind, pos = head
            expected = UNI_STREAM_TYPE if unidirectional else BIDI_STREAM_SIGNAL
            if kind != expected:
                self._peeking.pop(stream_id, None)
                self._stream_owner[stream_id] = _HTTP3
                return self._to_h3(
                    qe.StreamDataReceived(
                        data=bytes(data), end_stream=event.end_stream, stream_id=stream_id
                    )
                )
            session_field = decode_varint(data, pos)
            if session_field is not None:
                session_id, pos = session_field
                self._peeking.pop(stream_id, None)
                return self._claim_stream(
                    session_id, stream_id, unidirectional, bytes(data[pos:]), event.end_stream
                )
        if event.end_stream or len(data) > _MAX_HEADER_PEEK:
            # A stream that ends (or runs on) before its header is complete is useless.
            self._peeking.pop(stream_id, None)
            self._refuse_stream(stream_id, unidirectional, ErrorCodes.H3_STREAM_CREATION_ERROR)
            return []
        if buffer is None:
            self._peeking[stream_id] = bytearray(data)
        return []

    def _claim_stream(
        self, session_id: int, stream_id: int, unidirectional: bool, data: bytes, end: bool
    ) -> list[ProtocolEvent]:
        if unidirectional:
            self._unidirectional.add(stream_id)
        session = self._sessions.get(session_id)
        if session is not None and not session.closed and session.established:
            if session.flow is not None and not self._admit(session.flow, unidirectional):
                self._refuse_stream(stream_id, unidirectional, ErrorCodes.WT_FLOW_CONTROL_ERROR)
                return self._flow_violation(session)
            self._stream_owner[stream_id] = session_id
            session.streams.add(stream_id)
            return [StreamOpened(session_id, stream_id, unidirectional, data, end)]
        if (session is None and self._orphan_count < _MAX_ORPHAN_STREAMS) or (
            session is not None and not session.closed
        ):
            # The CONNECT (or its answer) may still be on its way: hold the stream.
            self._stream_owner[stream_id] = session_id
            pending = _PendingStream(bytearray(data), end)
            self._orphans.setdefault(session_id, {})[stream_id] = pending
            self._orphan_count += 1
            return []
        code = (
            ErrorCodes.WT_SESSION_GONE
            if session is not None
            else ErrorCodes.WT_BUFFERED_STREAM_REJECTED
        )
        self._refuse_stream(stream_id, unidirectional, code)
        return []

    def _refuse_stream(self, stream_id: int, unidirectional: bool, code: int) -> None:
        self._stream_owner[stream_id] = _REJECT
        self._unidirectional.discard(stream_id)
        self._safe_stop(stream_id, code)
        if not unidirectional:
            self._safe_reset(stream_id, code)

    def _release_orphans(self, session_id: int) -> list[ProtocolEvent]:
        pending = self._orphans.pop(session_id, None)
        if not pending:
            return []
        self._orphan_count -= len(pending)
        session = self._sessions[session_id]
        events: list[ProtocolEvent] = []
        for stream_id, held in pending.items():
            unidirectional = stream_id in self._unidirectional
            if session.flow is not None and not self._admit(session.flow, unidirectional):
                self._refuse_stream(stream_id, unidirectional, ErrorCodes.WT_FLOW_CONTROL_ERROR)
                return [*events, *self._flow_violation(session)]
            session.streams.add(stream_id)
            events.append(
                StreamOpened(
                    session_id,
                    stream_id,
                    stream_id in self._unidirectional,
                    bytes(held.data),
                    held.end_stream,
                )
            )
        return events

    def _drop_orphans(self, session_id: int, code: int) -> None:
        pending = self._orphans.pop(session_id, None)
        if not pending:
            return
        self._orphan_count -= len(pending)
        for stream_id in pending:
            self._refuse_stream(stream_id, stream_id in self._unidirectional, code)

    def _to_h3(self, event: qe.QuicEvent) -> list[ProtocolEvent]:
        out: list[ProtocolEvent] = []
        h3_events = self._h3.handle_event(event)
        if self._h3.malformed_requests:
            for stream_id in self._h3.malformed_requests:
                self._stream_owner[stream_id] = _REJECT
                self._safe_stop(stream_id, ErrorCodes.H3_MESSAGE_ERROR)
                self._safe_reset(stream_id, ErrorCodes.H3_MESSAGE_ERROR)
            self._h3.malformed_requests.clear()
        for h3_event in h3_events:
            if isinstance(h3_event, h3e.HeadersReceived):
                out.extend(self._receive_headers(h3_event))
            elif isinstance(h3_event, h3e.DataReceived):
                out.extend(self._receive_connect_data(h3_event))
        if not self._settings_seen and self._h3.received_settings is not None:
            self._settings_seen = True
            peer = self._h3.received_settings
            for session in self._sessions.values():
                # Sessions requested before the peer's SETTINGS arrived start from them now.
                flow = session.flow
                if flow is not None:
                    flow.remote_max_data = max(
                        flow.remote_max_data, peer.get(SETTINGS_WT_INITIAL_MAX_DATA, 0)
                    )
                    flow.remote_max_bidi = max(
                        flow.remote_max_bidi, peer.get(SETTINGS_WT_INITIAL_MAX_STREAMS_BIDI, 0)
                    )
                    flow.remote_max_uni = max(
                        flow.remote_max_uni, peer.get(SETTINGS_WT_INITIAL_MAX_STREAMS_UNI, 0)
                    )
            out.insert(0, SettingsReceived(dict(peer)))
        return out

    def _receive_headers(self, event: h3e.HeadersReceived) -> list[ProtocolEvent]:
        stream_id = event.stream_id
        session = self._sessions.get(stream_id)
        if self.is_client:
            if session is None or session.established or session.closed:
                return []
            status = 0
            for name, value in event.headers:
                if name == b":status":
                    status = int(value) if value.isdigit() else 0
            if 200 <= status < 300 and not event.stream_ended:
                session.established = True
                return [
                    SessionEstablished(stream_id, list(event.headers)),
                    *self._release_orphans(stream_id),
                ]
            session.closed = True
            self._drop_orphans(stream_id, ErrorCodes.WT_SESSION_GONE)
            if not event.stream_ended:
                self._safe_stop(stream_id, ErrorCodes.H3_REQUEST_CANCELLED)
            return [SessionRejected(stream_id, status, list(event.headers))]
        # server
        if session is not None:
            # Trailers on a CONNECT stream: nothing to do with them.
            return self._maybe_peer_fin(session, event.stream_ended)
        size = sum(len(name) + len(value) + 32 for name, value in event.headers)
        if size > self.max_field_section_size:
            self._answer(stream_id, b"431")
            return []
        pseudo: dict[bytes, bytes] = {}
        for name, value in event.headers:
            if name.startswith(b":"):
                pseudo[name] = value
        method = pseudo.get(b":method")
        protocol = pseudo.get(b":protocol")
        path = pseudo.get(b":path")
        authority = pseudo.get(b":authority")
        if method != b"CONNECT" or protocol is None:
            # Not a WebTransport request: this server serves nothing else.
            self._answer(stream_id, b"404" if method in (b"GET", b"HEAD") else b"405")
            return []
        if (
            protocol not in WT_PROTOCOL_TOKENS
            or not path
            or not authority
            or pseudo.get(b":scheme") != b"https"
            or event.stream_ended
        ):
            self._answer(stream_id, b"400")
            return []
        dialect = self._dialect_of_request(protocol)
        session = _Session(stream_id, is_client=False, dialect=dialect)
        if dialect.flow_control:
            session.flow = self._new_flow()
        self._sessions[stream_id] = session
        offered: list[str] = []
        for name, value in event.headers:
            if name == b"wt-available-protocols":
                offered = parse_sf_string_list(value) or []
        return [
            SessionRequested(
                stream_id,
                path.decode("utf-8", "replace"),
                authority.decode("utf-8", "replace"),
                list(event.headers),
                protocol,
                dialect,
                offered,
            )
        ]

    def _dialect_of_request(self, protocol: bytes) -> Dialect:
        if protocol == DRAFT15.protocol_token:
            return DRAFT15
        # The newest draft the client's SETTINGS show: Chromium in draft-07 mode
        # announces both the draft-02 and the draft-07 setting.
        peer = self._h3.received_settings or {}
        return DRAFT07 if DRAFT07.spoken_by(peer) else DRAFT02

    def _new_flow(self) -> _Flow:
        peer = self._h3.received_settings or {}
        limits = self.limits
        return _Flow(
            window=limits.initial_max_data,
            max_data_sent=limits.initial_max_data,
            max_bidi_sent=limits.initial_max_streams_bidi,
            max_uni_sent=limits.initial_max_streams_uni,
            initial_bidi=limits.initial_max_streams_bidi,
            initial_uni=limits.initial_max_streams_uni,
            remote_max_data=peer.get(SETTINGS_WT_INITIAL_MAX_DATA, 0),
            remote_max_bidi=peer.get(SETTINGS_WT_INITIAL_MAX_STREAMS_BIDI, 0),
            remote_max_uni=peer.get(SETTINGS_WT_INITIAL_MAX_STREAMS_UNI, 0),
        )

    # ------------------------------------------------------------------ session flow control

    @staticmethod
    def _admit(flow: _Flow, unidirectional: bool) -> bool:
        """Count a peer-opened stream; False when it exceeds what we granted."""
        if unidirectional:
            flow.peer_uni += 1
            return flow.peer_uni <= flow.max_uni_sent
        flow.peer_bidi += 1
        return flow.peer_bidi <= flow.max_bidi_sent

    def _flow_violation(self, session: _Session) -> list[ProtocolEvent]:
        reason = "session flow control limit exceeded"
        events = self.close_session(session.session_id, ErrorCodes.WT_FLOW_CONTROL_ERROR, reason)
        for event in events:
            if isinstance(event, SessionClosed):
                event.by_peer = False
        return events

    def _send_capsule(self, session: _Session, capsule_type: int, value: int) -> None:
        if session.local_closed or session.closed:
            return
        with contextlib.suppress(Exception):  # the stream may have been reset meanwhile
            self._h3.send_data(
                session.session_id,
                encode_capsule(capsule_type, encode_uint_var(value)),
                end_stream=False,
            )

    def _grant_data(self, session: _Session, flow: _Flow, *, force: bool = False) -> bool:
        target = flow.consumed + flow.window
        if target > flow.max_data_sent and (
            force or target - flow.max_data_sent >= flow.window // 2
        ):
            flow.max_data_sent = target
            self._send_capsule(session, CAPSULE_WT_MAX_DATA, target)
            return True
        return False

    def _grant_streams(self, session: _Session, flow: _Flow, *, force: bool = False) -> None:
        target = flow.peer_bidi_done + flow.initial_bidi
        if target > flow.max_bidi_sent and (
            force or flow.max_bidi_sent - flow.peer_bidi < max(1, flow.initial_bidi // 2)
        ):
            flow.max_bidi_sent = target
            self._send_capsule(session, CAPSULE_WT_MAX_STREAMS_BIDI, target)
        target = flow.peer_uni_done + flow.initial_uni
        if target > flow.max_uni_sent and (
            force or flow.max_uni_sent - flow.peer_uni < max(1, flow.initial_uni // 2)
        ):
            flow.max_uni_sent = target
            self._send_capsule(session, CAPSULE_WT_MAX_STREAMS_UNI, target)

    def _receive_flow_capsule(
        self, session: _Session, flow: _Flow, capsule_type: int, payload: bytes
    ) -> bool | None:
        """Apply a flow-control capsule; True when our credit grew, None when malformed."""
        field = decode_varint(payload, 0)
        if field is None or field[1] != len(payload):
            return None
        value = field[0]
        if capsule_type == CAPSULE_WT_MAX_DATA:
            if value > flow.remote_max_data:
                flow.remote_max_data = value
                return True
        elif capsule_type == CAPSULE_WT_MAX_STREAMS_BIDI:
            if value > flow.remote_max_bidi:
                flow.remote_max_bidi = value
                return True
        elif capsule_type == CAPSULE_WT_MAX_STREAMS_UNI:
            if value > flow.remote_max_uni:
                flow.remote_max_uni = value
                return True
        elif capsule_type == CAPSULE_WT_DATA_BLOCKED:
            self._grant_data(session, flow, force=True)
        else:
            self._grant_streams(session, flow, force=True)
        return False

    def can_open_stream(self, session_id: int, *, unidirectional: bool) -> bool:
        """Return whether the peer's session limit lets us open another stream.

        When it does not, WT_STREAMS_BLOCKED is sent (once per limit value).

        Args:
            session_id: The session.
            unidirectional: The kind of stream.

        Returns:
            True when a stream may be opened now (always, without session flow control).
        """
        session = self._sessions.get(session_id)
        flow = session.flow if session is not None else None
        if session is None or flow is None:
            return True
        if unidirectional:
            if flow.opened_uni < flow.remote_max_uni:
                return True
            if flow.blocked_uni_at != flow.remote_max_uni:
                flow.blocked_uni_at = flow.remote_max_uni
                self._send_capsule(session, CAPSULE_WT_STREAMS_BLOCKED_UNI, flow.remote_max_uni)
            return False
        if flow.opened_bidi < flow.remote_max_bidi:
            return True
        if flow.blocked_bidi_at != flow.remote_max_bidi:
            flow.blocked_bidi_at = flow.remote_max_bidi
            self._send_capsule(session, CAPSULE_WT_STREAMS_BLOCKED_BIDI, flow.remote_max_bidi)
        return False

    def send_credit(self, session_id: int) -> int | None:
        """Return how many more stream bytes the peer lets this session send.

        When it is zero, WT_DATA_BLOCKED is sent (once per limit value).

        Args:
            session_id: The session.

        Returns:
            The byte count, or None when the session has no session flow control.
        """
        session = self._sessions.get(session_id)
        flow = session.flow if session is not None else None
        if session is None or flow is None:
            return None
        credit = flow.remote_max_data - flow.sent
        if credit <= 0 and flow.blocked_data_at != flow.remote_max_data:
            flow.blocked_data_at = flow.remote_max_data
            self._send_capsule(session, CAPSULE_WT_DATA_BLOCKED, flow.remote_max_data)
        return max(0, credit)

    def data_sent(self, session_id: int, count: int) -> None:
        """Account stream bytes sent in a session with session flow control.

        Args:
            session_id: The session.
            count: Bytes handed to QUIC.
        """
        session = self._sessions.get(session_id)
        if session is not None and session.flow is not None:
            session.flow.sent += count

    def data_consumed(self, session_id: int, count: int) -> bool:
        """Account stream bytes the application read; may grant the peer more (WT_MAX_DATA).

        Args:
            session_id: The session.
            count: Bytes read.

        Returns:
            True when a WT_MAX_DATA capsule was queued (the caller should transmit).
        """
        session = self._sessions.get(session_id)
        if session is None or session.flow is None:
            return False
        session.flow.consumed += count
        return self._grant_data(session, session.flow)

    def _answer(self, stream_id: int, status: bytes) -> None:
        try:
            self._h3.send_headers(stream_id, [(b":status", status)], end_stream=True)
        except Exception:
            self._safe_reset(stream_id, ErrorCodes.H3_REQUEST_REJECTED)

    def _receive_connect_data(self, event: h3e.DataReceived) -> list[ProtocolEvent]:
        session = self._sessions.get(event.stream_id)
        if session is None or session.closed:
            return []
        if event.data:
            session.capsules += event.data
            try:
                capsules = decode_capsules(session.capsules, self.max_capsule_size)
            except ValueError:
                return self._session_protocol_error(session)
            events: list[ProtocolEvent] = []
            for capsule_type, payload in capsules:
                if capsule_type == CAPSULE_CLOSE_WEBTRANSPORT_SESSION:
                    if len(payload) < 4 or len(payload) - 4 > MAX_CLOSE_REASON_BYTES:
                        return self._session_protocol_error(session)
                    code = int.from_bytes(payload[:4], "big")
                    reason = payload[4:].decode("utf-8", "replace")
                    session.close_received = (code, reason)
                    break  # the first close wins; nothing after it counts
                elif capsule_type == CAPSULE_DRAIN_WEBTRANSPORT_SESSION:
                    events.append(SessionDraining(session.session_id))
                elif session.flow is not None and capsule_type in _FLOW_CAPSULES:
                    grew = self._receive_flow_capsule(session, session.flow, capsule_type, payload)
                    if grew is None:
                        return [*events, *self._session_protocol_error(session)]
                    if grew:
                        events.append(SessionCreditUpdated(session.session_id))
                # Unknown (GREASE) capsule types are skipped, as RFC 9297 requires.
            if session.close_received is not None:
                # Nothing may follow CLOSE_WEBTRANSPORT_SESSION: the session is over.
                events.extend(self._finish_session(session, clean=True, send_fin=True))
                return events
            events.extend(self._maybe_peer_fin(session, event.stream_ended))
            return events
        return self._maybe_peer_fin(session, event.stream_ended)

    def _maybe_peer_fin(self, session: _Session, ended: bool) -> list[ProtocolEvent]:
        if not ended:
            return []
        return self._finish_session(session, clean=True, send_fin=True)

    def _session_protocol_error(self, session: _Session) -> list[ProtocolEvent]:
        sid = session.session_id
        self._safe_stop(sid, ErrorCodes.H3_MESSAGE_ERROR)
        self._safe_reset(sid, ErrorCodes.H3_MESSAGE_ERROR)
        session.local_closed = True
        return self._finish_session(
            session, clean=False, send_fin=False, code=0, reason="malformed capsule"
        )

    def _finish_session(
        self,
        session: _Session,
        *,
        clean: bool,
        send_fin: bool,
        code: int | None = None,
        reason: str | None = None,
    ) -> list[ProtocolEvent]:
        if session.closed:
            return []
        session.closed = True
        if send_fin and not session.local_closed:
            session.local_closed = True
            with contextlib.suppress(Exception):
                self._h3.send_data(session.session_id, b"", end_stream=True)
        self._reset_session_streams(session)
        self._drop_orphans(session.session_id, ErrorCodes.WT_SESSION_GONE)
        got_code, got_reason = session.close_received or (0, "")
        return [
            SessionClosed(
                session.session_id,
                got_code if code is None else code,
                got_reason if reason is None else reason,
                clean,
            )
        ]

    def _reset_session_streams(self, session: _Session) -> None:
        for stream_id in session.streams:
            self._stream_owner[stream_id] = _REJECT
            unidirectional = stream_id in self._unidirectional
            ours = (stream_id & 1) == (0 if self.is_client else 1)
            if not unidirectional or ours:
                self._safe_reset(stream_id, ErrorCodes.WT_SESSION_GONE)
            if not unidirectional or not ours:
                self._safe_stop(stream_id, ErrorCodes.WT_SESSION_GONE)
            self._unidirectional.discard(stream_id)
        session.streams.clear()

    def _receive_datagram(self, data: bytes) -> list[ProtocolEvent]:
        head = decode_varint(data, 0)
        if head is None:
            self._h3.handle_event(qe.DatagramFrameReceived(data=data))  # lets H3 close it
            return []
        quarter, pos = head
        session = self._sessions.get(quarter * 4)
        if session is None or session.closed or not session.established:
            # Datagrams are unreliable: one for an unknown session is simply dropped.
            return []
        return [DatagramReceived(quarter * 4, data[pos:])]

    def _receive_reset(self, event: qe.StreamReset) -> list[ProtocolEvent]:
        stream_id = event.stream_id
        self._peeking.pop(stream_id, None)
        owner = self._stream_owner.get(stream_id)
        if owner is not None and owner >= 0:
            self._forget_orphan(owner, stream_id)
            return [StreamResetReceived(stream_id, http3_to_wt_error(event.error_code))]
        session = self._sessions.get(stream_id)
        if session is not None:
            session.local_closed = True
            return self._finish_session(session, clean=False, send_fin=False)
        if owner == _HTTP3 or owner is None:
            self._h3.handle_event(event)
        return []

    def _forget_orphan(self, session_id: int, stream_id: int) -> None:
        pending = self._orphans.get(session_id)
        if pending is not None and pending.pop(stream_id, None) is not None:
            self._orphan_count -= 1

    def _receive_stop_sending(self, event: qe.StopSendingReceived) -> list[ProtocolEvent]:
        owner = self._stream_owner.get(event.stream_id)
        if owner is not None and owner >= 0:
            return [StopSendingReceived(event.stream_id, http3_to_wt_error(event.error_code))]
        if owner == _HTTP3 or owner is None:
            self._h3.handle_event(event)
        return []

    def orphan_data(self, stream_id: int, data: bytes, end_stream: bool) -> bool:
        """Buffer data for a held stream whose session is not established yet.

        Args:
            stream_id: The stream.
            data: The data that arrived.
            end_stream: Whether the peer ended the stream.

        Returns:
            True when the stream is held and the data was buffered.
        """
        owner = self._stream_owner.get(stream_id)
        if owner is None or owner < 0:
            return False
        pending = self._orphans.get(owner)
        held = pending.get(stream_id) if pending else None
        if held is None:
            return False
        if len(held.data) + len(data) > _MAX_ORPHAN_BYTES:
            # Held streams are not flow-controlled by a reader: cap what each may buffer.
            self._forget_orphan(owner, stream_id)
            self._refuse_stream(
                stream_id, stream_id in self._unidirectional, ErrorCodes.WT_BUFFERED_STREAM_REJECTED
            )
            return True
        held.data += data
        held.end_stream = held.end_stream or end_stream
        return True

    # ------------------------------------------------------------------ commands

    def connect(
        self,
        *,
        authority: str,
        path: str,
        headers: Iterable[tuple[bytes, bytes]] = (),
        dialect: Dialect = DRAFT02,
    ) -> int:
        """Send a CONNECT request for a new session (client side).

        Args:
            authority: The `:authority` (host:port).
            path: The `:path` (with query).
            headers: Extra request headers.
            dialect: The dialect to speak (see `choose_dialect`).

        Returns:
            The new session's id.
        """
        stream_id = self.quic.get_next_available_stream_id()
        self._stream_owner[stream_id] = _HTTP3
        session = _Session(stream_id, is_client=True, dialect=dialect)
        if dialect.flow_control:
            session.flow = self._new_flow()
        self._sessions[stream_id] = session
        request = [
            (b":method", b"CONNECT"),
            (b":protocol", dialect.protocol_token),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            *dialect.request_headers,
            *headers,
        ]
        self._h3.send_headers(stream_id, request, end_stream=False)
        return stream_id

    def accept(
        self, session_id: int, headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> list[ProtocolEvent]:
        """Accept a requested session with a 200 answer (server side).

        Args:
            session_id: The session from `SessionRequested`.
            headers: Extra response headers.

        Returns:
            Events for streams that arrived before the answer.
        """
        session = self._sessions[session_id]
        self._h3.send_headers(
            session_id,
            [(b":status", b"200"), *session.dialect.response_headers, *headers],
            end_stream=False,
        )
        self._stream_owner[session_id] = _HTTP3
        session.established = True
        return self._release_orphans(session_id)

    def reject(self, session_id: int, status_code: int) -> None:
        """Refuse a requested session with an HTTP status (server side).

        Args:
            session_id: The session from `SessionRequested`.
            status_code: A non-2xx HTTP status.
        """
        session = self._sessions.pop(session_id, None)
        if session is not None:
            session.closed = True
        self._drop_orphans(session_id, ErrorCodes.WT_SESSION_GONE)
        self._answer(session_id, str(status_code).encode())

    def close_session(
        self, session_id: int, error_code: int = 0, reason: str = ""
    ) -> list[ProtocolEvent]:
        """Close a session: CLOSE_WEBTRANSPORT_SESSION, then FIN, then reset its streams.

        Args:
            session_id: The session.
            error_code: Application error code (0..2**32-1).
            reason: UTF-8 reason, cut to 1024 bytes.

        Returns:
            The `SessionClosed` event for this end, or nothing when already closed.
        """
        session = self._sessions.get(session_id)
        if session is None or session.closed:
            return []
        encoded = reason.encode("utf-8")[:MAX_CLOSE_REASON_BYTES]
        encoded = encoded.decode("utf-8", "ignore").encode("utf-8")
        payload = (error_code & 0xFFFFFFFF).to_bytes(4, "big") + encoded
        if session.established and not session.local_closed:
            session.local_closed = True
            with contextlib.suppress(Exception):
                self._h3.send_data(
                    session_id,
                    encode_capsule(CAPSULE_CLOSE_WEBTRANSPORT_SESSION, payload),
                    end_stream=True,
                )
        elif not session.established and not session.local_closed:
            session.local_closed = True
            self._safe_reset(session_id, ErrorCodes.H3_REQUEST_CANCELLED)
        return self._finish_session(
            session, clean=True, send_fin=False, code=error_code, reason=reason
        )

    def drain_session(self, session_id: int) -> None:
        """Send DRAIN_WEBTRANSPORT_SESSION: ask the peer to wrap up the session.

        Args:
            session_id: The session.
        """
        session = self._sessions.get(session_id)
        if session is None or session.closed or session.local_closed or not session.established:
            return
        self._h3.send_data(
            session_id, encode_capsule(CAPSULE_DRAIN_WEBTRANSPORT_SESSION, b""), end_stream=False
        )

    def forget_session(self, session_id: int) -> None:
        """Drop the bookkeeping of a closed session.

        Args:
            session_id: The session.
        """
        session = self._sessions.get(session_id)
        if session is not None and session.closed:
            del self._sessions[session_id]

    def create_stream(self, session_id: int, *, unidirectional: bool) -> int:
        """Open a WebTransport stream in a session and write its header.

        Args:
            session_id: The session.
            unidirectional: True for a send-only stream.

        Returns:
            The new stream's id.
        """
        session = self._sessions[session_id]
        quic = self.quic
        stream_id = quic.get_next_available_stream_id(is_unidirectional=unidirectional)
        if unidirectional:
            header = encode_uint_var(UNI_STREAM_TYPE) + encode_uint_var(session_id)
            self._unidirectional.add(stream_id)
        else:
            header = encode_uint_var(BIDI_STREAM_SIGNAL) + encode_uint_var(session_id)
        self._stream_owner[stream_id] = session_id
        session.streams.add(stream_id)
        if session.flow is not None:
            if unidirectional:
                session.flow.opened_uni += 1
            else:
                session.flow.opened_bidi += 1
        quic.send_stream_data(stream_id, header)
        return stream_id

    def stream_finished(self, stream_id: int) -> None:
        """Forget a WebTransport stream both sides are done with.

        Args:
            stream_id: The stream.
        """
        owner = self._stream_owner.pop(stream_id, None)
        unidirectional = stream_id in self._unidirectional
        self._unidirectional.discard(stream_id)
        if owner is not None and owner >= 0:
            session = self._sessions.get(owner)
            if session is not None:
                session.streams.discard(stream_id)
                flow = session.flow
                ours = (stream_id & 1) == (0 if self.is_client else 1)
                if flow is not None and not ours:
                    if unidirectional:
                        flow.peer_uni_done += 1
                    else:
                        flow.peer_bidi_done += 1
                    self._grant_streams(session, flow)

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        """Abort sending on a stream with an application error code.

        Args:
            stream_id: The stream.
            error_code: Application error code (0..2**32-1).
        """
        self._safe_reset(stream_id, wt_to_http3_error(error_code))

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        """Ask the peer to stop sending on a stream.

        Args:
            stream_id: The stream.
            error_code: Application error code (0..2**32-1).
        """
        self._safe_stop(stream_id, wt_to_http3_error(error_code))

    def _safe_reset(self, stream_id: int, code: int) -> None:
        with contextlib.suppress(Exception):
            self.quic.reset_stream(stream_id, code)

    def _safe_stop(self, stream_id: int, code: int) -> None:
        with contextlib.suppress(Exception):
            self.quic.stop_stream(stream_id, code)
