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
from typing import Final

from aioquic.buffer import encode_uint_var
from aioquic.h3 import events as h3e
from aioquic.h3.connection import H3Connection
from aioquic.quic import events as qe
from aioquic.quic.connection import QuicConnection, stream_is_unidirectional

from ..shared.constants import (
    BIDI_STREAM_SIGNAL,
    CAPSULE_CLOSE_WEBTRANSPORT_SESSION,
    CAPSULE_DRAIN_WEBTRANSPORT_SESSION,
    MAX_CLOSE_REASON_BYTES,
    SETTINGS_ENABLE_CONNECT_PROTOCOL,
    SETTINGS_ENABLE_WEBTRANSPORT_DRAFT02,
    SETTINGS_H3_DATAGRAM,
    SETTINGS_H3_DATAGRAM_DRAFT04,
    SETTINGS_WT_MAX_SESSIONS,
    UNI_STREAM_TYPE,
    WT_APPLICATION_ERROR_FIRST,
    WT_APPLICATION_ERROR_LAST,
    WT_PROTOCOL_TOKENS,
    ErrorCodes,
)
from ..shared.utils import decode_varint

__all__ = [
    "DRAFT02",
    "DatagramReceived",
    "Dialect",
    "ProtocolEvent",
    "SessionClosed",
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
    "decode_capsules",
    "encode_capsule",
    "http3_to_wt_error",
    "wt_to_http3_error",
]

_MAX_WT_CODE: Final = 0xFFFFFFFF
_GREASE_PERIOD: Final = 0x1F
_MAX_HEADER_PEEK: Final = 16
"""A stream header is at most two 8-byte varints; more unparsed bytes is a protocol error."""
_MAX_ORPHAN_STREAMS: Final = 32
"""Streams buffered for a session whose CONNECT has not arrived yet (draft §4.6)."""


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


# --------------------------------------------------------------------------- dialects


@dataclass(frozen=True, slots=True)
class Dialect:
    """What one WebTransport draft puts on the wire.

    Attributes:
        name: Short name, e.g. ``"draft-02"``.
        protocol_token: The `:protocol` value a client sends.
        request_headers: Extra headers on a client's CONNECT.
        response_headers: Extra headers on a server's 2xx answer.
    """

    name: str
    protocol_token: bytes
    request_headers: tuple[tuple[bytes, bytes], ...] = ()
    response_headers: tuple[tuple[bytes, bytes], ...] = ()

    def settings(self, *, max_sessions: int) -> dict[int, int]:
        """Return the HTTP/3 SETTINGS this dialect needs beyond aioquic's own.

        Args:
            max_sessions: Sessions a peer may open on one connection.

        Returns:
            Setting identifiers mapped to values.
        """
        return {
            SETTINGS_ENABLE_CONNECT_PROTOCOL: 1,
            SETTINGS_H3_DATAGRAM: 1,
            SETTINGS_H3_DATAGRAM_DRAFT04: 1,
            SETTINGS_ENABLE_WEBTRANSPORT_DRAFT02: 1,
            SETTINGS_WT_MAX_SESSIONS: max_sessions,
        }


DRAFT02: Final = Dialect(
    name="draft-02",
    protocol_token=b"webtransport",
    request_headers=((b"sec-webtransport-http3-draft02", b"1"),),
    response_headers=((b"sec-webtransport-http3-draft", b"draft02"),),
)
"""draft-ietf-webtrans-http3-02, spoken by Chromium and Firefox by default."""


class _H3(H3Connection):
    """`H3Connection` that announces the dialect's SETTINGS."""

    def __init__(self, quic: QuicConnection, extra_settings: dict[int, int]) -> None:
        self._extra_settings = extra_settings
        super().__init__(quic, enable_webtransport=True)

    def _get_local_settings(self) -> dict[int, int]:
        settings = super()._get_local_settings()
        settings.update(self._extra_settings)
        return settings


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
        dialect: The WebTransport draft spoken on this connection.
        max_sessions: Sessions a peer may open on this connection (announced
            in SETTINGS).
        max_capsule_size: Largest capsule value accepted on a CONNECT stream.
    """

    def __init__(
        self,
        quic: QuicConnection,
        *,
        dialect: Dialect = DRAFT02,
        max_sessions: int = 1,
        max_capsule_size: int = 65536,
    ) -> None:
        self.quic = quic
        self.dialect = dialect
        self.is_client = quic.configuration.is_client
        self.max_capsule_size = max_capsule_size
        self._h3 = _H3(quic, dialect.settings(max_sessions=max_sessions))
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
        if isinstance(event, qe.ProtocolNegotiated | qe.HandshakeCompleted):
            return []
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
        for h3_event in self._h3.handle_event(event):
            if isinstance(h3_event, h3e.HeadersReceived):
                out.extend(self._receive_headers(h3_event))
            elif isinstance(h3_event, h3e.DataReceived):
                out.extend(self._receive_connect_data(h3_event))
        if not self._settings_seen and self._h3.received_settings is not None:
            self._settings_seen = True
            out.insert(0, SettingsReceived(dict(self._h3.received_settings)))
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
        self._sessions[stream_id] = _Session(stream_id, is_client=False)
        return [
            SessionRequested(
                stream_id,
                path.decode("utf-8", "replace"),
                authority.decode("utf-8", "replace"),
                list(event.headers),
                protocol,
            )
        ]

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
                elif capsule_type == CAPSULE_DRAIN_WEBTRANSPORT_SESSION:
                    events.append(SessionDraining(session.session_id))
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
    ) -> int:
        """Send a CONNECT request for a new session (client side).

        Args:
            authority: The `:authority` (host:port).
            path: The `:path` (with query).
            headers: Extra request headers.

        Returns:
            The new session's id.
        """
        stream_id = self.quic.get_next_available_stream_id()
        self._stream_owner[stream_id] = _HTTP3
        self._sessions[stream_id] = _Session(stream_id, is_client=True)
        request = [
            (b":method", b"CONNECT"),
            (b":protocol", self.dialect.protocol_token),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            *self.dialect.request_headers,
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
            [(b":status", b"200"), *self.dialect.response_headers, *headers],
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
        quic.send_stream_data(stream_id, header)
        return stream_id

    def stream_finished(self, stream_id: int) -> None:
        """Forget a WebTransport stream both sides are done with.

        Args:
            stream_id: The stream.
        """
        owner = self._stream_owner.pop(stream_id, None)
        self._unidirectional.discard(stream_id)
        if owner is not None and owner >= 0:
            session = self._sessions.get(owner)
            if session is not None:
                session.streams.discard(stream_id)

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
