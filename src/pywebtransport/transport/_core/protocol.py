"""`WebTransportProtocol`: the WebTransport state of one QUIC connection, without I/O.

QUIC events go in (`receive_stream_data`, `receive_datagram` for the hot paths,
`handle_event` for the rest); protocol events come out of `next_event()`; every
command leaves its bytes queued on the QUIC object and sets `want_transmit`.
It never touches the event loop or the clock, so it is tested with literal
bytes and in-memory connection pairs.

Division of labour with aioquic's `H3Connection`: HTTP/3 control streams,
QPACK and the CONNECT request streams go through `H3Connection`; WebTransport
data streams never do. The first bytes of every new peer stream are peeked
here: a WebTransport stream header (0x41 + session id on bidirectional
streams, type 0x54 + session id on unidirectional ones) claims the stream for
WebTransport and its data then goes straight from QUIC to the stream's record.
That also fixes aioquic's handling of server-initiated bidirectional streams,
which it would parse as HTTP/3 frames.

Ownership: this object owns every session and stream record (`sessions`,
`streams`), the streams held for sessions not established yet, per-stream
receive credit and session flow control, header validation and subprotocol
negotiation. The asyncio layer only parks waiters on the records.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from aioquic.buffer import encode_uint_var
from aioquic.h3 import events as h3e
from aioquic.quic import events as qe
from aioquic.quic.connection import QuicConnection, stream_is_unidirectional

from ...shared.constants import (
    BIDI_STREAM_SIGNAL,
    CAPSULE_CLOSE_WEBTRANSPORT_SESSION,
    CAPSULE_DRAIN_WEBTRANSPORT_SESSION,
    CAPSULE_WT_DATA_BLOCKED,
    CAPSULE_WT_STREAMS_BLOCKED_BIDI,
    CAPSULE_WT_STREAMS_BLOCKED_UNI,
    MAX_CLOSE_REASON_BYTES,
    SETTINGS_MAX_FIELD_SECTION_SIZE,
    UNI_STREAM_TYPE,
    ErrorCodes,
)
from ...shared.exceptions import FlowControlError, SessionClosedError, StreamError
from ...shared.types import SessionState
from ...shared.utils import decode_varint
from .. import _aioquic
from .capsules import decode_capsules, encode_capsule
from .codes import http3_to_wt_error, wt_to_http3_error
from .dialects import Dialect, Limits, all_settings, dialect_of_request
from .events import (
    ProtocolEvent,
    SessionClosed,
    SessionCreditUpdated,
    SessionDraining,
    SessionEstablished,
    SessionPeerBlocked,
    SessionRejected,
    SessionRequested,
    SettingsReceived,
    StopSendingReceived,
    StreamClosed,
    StreamOpened,
    StreamResetReceived,
)
from .flow import FLOW_CAPSULES, Capsule, SessionFlow
from .headers import build_request, build_response, parse_request, parse_response
from .records import SessionMove, SessionRecord, StreamIds, StreamRecord, fresh

__all__ = ["WebTransportProtocol"]


def _stream_header(rec: StreamRecord) -> bytes:
    """The header a stream we open starts with: its type (or signal), then its session."""
    kind = UNI_STREAM_TYPE if rec.unidirectional else BIDI_STREAM_SIGNAL
    return encode_uint_var(kind) + encode_uint_var(rec.session.session_id)


_MAX_HEADER_PEEK: Final = 16
"""A stream header is at most two 8-byte varints; more unparsed bytes is a protocol error."""
_BLOCKED_CAPSULES: Final = frozenset(
    {CAPSULE_WT_DATA_BLOCKED, CAPSULE_WT_STREAMS_BLOCKED_BIDI, CAPSULE_WT_STREAMS_BLOCKED_UNI}
)
_MAX_ENDED_SESSIONS: Final = 1024
"""Ended session ids remembered exactly; older ones are told apart by their id."""
_MAX_EARLY_STOPS: Final = 64
"""STOP_SENDING frames remembered for streams not seen yet (each one byte of state)."""
_MAX_UNREAD: Final = 1024
"""Stopped streams whose final size is awaited (older ones are given up on)."""
_DATAGRAM_BUDGET: Final = 256
"""Datagrams handed to QUIC ahead of what it sent; the rest wait in session queues."""
_UNACKED_PRUNE: Final = 64
"""Finished streams awaiting their acknowledgement before the acknowledged ones are
dropped from the list (then twice what is left): amortised O(1) per stream."""
_MAX_QUARTER_STREAM_ID: Final = 1 << 60
"""RFC 9297 section 2.1: a datagram's quarter stream id is below 2**60."""


@dataclass(slots=True)
class _Held:
    """A peer stream that arrived before its session was established (draft §4.6)."""

    unidirectional: bool
    since: float
    data: bytearray = field(default_factory=bytearray)
    fin: bool = False
    header_size: int = 0


class WebTransportProtocol:
    """The WebTransport state of one QUIC connection, without I/O.

    Args:
        quic: The QUIC connection (client or server side).
        limits: What this endpoint grants its peer; announced in SETTINGS for
            every dialect at once, so each session is served in the dialect
            its peer speaks. `max_sessions` also caps the sessions a peer may
            hold open on this connection (more are answered 429).
        stream_window: Receive window of each WebTransport stream: the peer may
            send this far past what the reader consumed.
        max_capsule_size: Largest capsule value accepted on a CONNECT stream.
        max_field_section_size: Largest request header block accepted (RFC 9114
            field section size: names + values + 32 per field); larger gets 431.
        max_held_streams: Peer streams held for sessions not established yet,
            per connection (more are refused with WT_BUFFERED_STREAM_REJECTED).
        max_held_per_session: The same, per session.
        max_held_bytes: Data one held stream may buffer before it is refused.
        datagram_high_water_mark: Datagrams a session queues while QUIC cannot
            send them; past it the oldest is dropped (`queue_datagram`).
        datagram_max_age: Seconds a queued datagram stays sendable, or None.

    Attributes:
        quic: The QUIC connection.
        h3: Its HTTP/3 layer.
        is_client: Which side we are.
        sessions: Sessions not closed yet, by session id.
        streams: WebTransport streams delivered to sessions, by stream id.
        want_transmit: Set whenever bytes were queued on `quic`; the I/O layer
            clears it when it transmits.
    """

    __slots__ = (
        "_closed_by_capsule",
        "_datagram_backlog",
        "_early_stops",
        "_ended",
        "_events",
        "_half_window",
        "_held",
        "_held_count",
        "_http3",
        "_max_held_bytes",
        "_max_held_per_session",
        "_max_held_streams",
        "_peeking",
        "_peer_bidi",
        "_peer_uni",
        "_refused",
        "_settings_seen",
        "_stream_window",
        "_unacked",
        "_unacked_prune_at",
        "_unread",
        "datagram_high_water_mark",
        "datagram_max_age",
        "h3",
        "is_client",
        "limits",
        "max_capsule_size",
        "max_field_section_size",
        "now",
        "quic",
        "sessions",
        "streams",
        "want_transmit",
    )

    def __init__(
        self,
        quic: QuicConnection,
        *,
        limits: Limits | None = None,
        stream_window: int = 1024 * 1024,
        max_capsule_size: int = 65536,
        max_field_section_size: int = 65536,
        max_held_streams: int = 32,
        max_held_per_session: int = 10,
        max_held_bytes: int = 64 * 1024,
        datagram_high_water_mark: int = 32,
        datagram_max_age: float | None = None,
    ) -> None:
        self.quic = quic
        self.limits = limits if limits is not None else Limits()
        self.is_client: bool = quic.configuration.is_client
        self.max_capsule_size = max_capsule_size
        self.max_field_section_size = max_field_section_size
        self._stream_window = stream_window
        self._half_window = max(1, stream_window // 2)
        self._max_held_streams = max_held_streams
        self._max_held_per_session = max_held_per_session
        self.datagram_high_water_mark = datagram_high_water_mark
        self.datagram_max_age = datagram_max_age
        self._datagram_backlog: dict[int, SessionRecord] = {}
        """Sessions with queued outgoing datagrams, in round-robin order."""
        self.now = 0.0
        """Time of the event being handled, set by the I/O layer (the core reads no clock)."""
        self._max_held_bytes = max_held_bytes
        settings = all_settings(self.limits)
        settings[SETTINGS_MAX_FIELD_SECTION_SIZE] = max_field_section_size
        self.h3 = _aioquic.new_h3(quic, settings)
        self.sessions: dict[int, SessionRecord] = {}
        self.streams: dict[int, StreamRecord] = {}
        self.want_transmit = True
        self._events: deque[ProtocolEvent] = deque()
        self._settings_seen = False
        self._http3: set[int] = set()
        """Streams owned by HTTP/3: control, QPACK and request streams."""
        # Sets kept as dicts (keys only): an empty dict costs 64 bytes, an empty set 216,
        # and most connections never put anything in these.
        self._refused: dict[int, None] = {}
        """Peer streams we refused: their later data is dropped."""
        self._peeking: dict[int, bytearray] = {}
        """Peer streams whose header is still incomplete."""
        self._held: dict[int, dict[int, _Held]] = {}
        """Streams for sessions not established yet: session id -> stream id -> data."""
        self._held_count = 0
        self._peer_bidi = StreamIds(1 if self.is_client else 0)
        self._peer_uni = StreamIds(3 if self.is_client else 2)
        self._ended: dict[int, None] = {}
        """The last sessions that ended, oldest first."""
        self._early_stops: dict[int, int] = {}
        """STOP_SENDING codes for peer streams whose first bytes have not arrived yet."""
        self._closed_by_capsule: dict[int, None] = {}
        """CONNECT streams whose peer sent CLOSE_WEBTRANSPORT_SESSION and has not finished."""
        self._unread: dict[int, tuple[SessionRecord, int, int]] = {}
        """Streams we stopped reading: session, header size, bytes counted as read."""
        self._unacked: dict[int, SessionRecord] = {}
        """Streams this side finished and forgot whose FIN the peer has not acknowledged
        yet (a graceful close waits for them): stream id -> session."""
        self._unacked_prune_at = _UNACKED_PRUNE

    # ------------------------------------------------------------------ queries

    @property
    def peer_settings(self) -> dict[int, int] | None:
        """The peer's HTTP/3 SETTINGS, or None before they arrived."""
        return self.h3.received_settings

    def next_event(self) -> ProtocolEvent | None:
        """Return the next protocol event, or None when there is none.

        Returns:
            The oldest pending event.
        """
        events = self._events
        return events.popleft() if events else None

    def has_events(self) -> bool:
        """Return whether events are pending.

        Returns:
            True when `next_event()` would return one.
        """
        return bool(self._events)

    # ------------------------------------------------------------------ input: hot paths

    def receive_stream_data(self, stream_id: int, data: bytes, fin: bool) -> StreamRecord | None:
        """Take the data of a QUIC StreamDataReceived event.

        Args:
            stream_id: The QUIC stream.
            data: The bytes.
            fin: Whether the peer finished the stream.

        Returns:
            The stream's record when the data went to a delivered WebTransport
            stream (wake its reader); None otherwise (events may be pending).
        """
        rec = self.streams.get(stream_id)
        if rec is not None:
            if not rec.read_done:
                if data:
                    rec.chunks.append(data)
                    rec.buffered += len(data)
                if fin:
                    rec.fin_received = True
            return rec
        self._receive_other(stream_id, data, fin)
        return None

    def receive_datagram(self, data: bytes) -> tuple[SessionRecord, bytes] | None:
        """Take the payload of a QUIC DATAGRAM frame.

        Args:
            data: The frame's payload (quarter stream id + datagram).

        Returns:
            The session and the datagram, or None when it belongs to no
            established session (datagrams are unreliable: it is dropped).
        """
        first = data[0] if data else 0xFF
        if first < 0x40:  # one-byte quarter stream id: session ids below 256
            session = self.sessions.get(first * 4)
            if session is not None and session.is_open:
                return session, data[1:]
            return None
        head = decode_varint(data, 0)
        if head is None:
            self._connection_error(ErrorCodes.H3_DATAGRAM_ERROR, "malformed datagram")
            return None
        quarter, pos = head
        if quarter >= _MAX_QUARTER_STREAM_ID:
            # RFC 9297 section 2.1: no stream id can be this large.
            self._connection_error(ErrorCodes.H3_DATAGRAM_ERROR, "quarter stream id >= 2**60")
            return None
        session = self.sessions.get(quarter * 4)
        if session is None or not session.is_open:
            return None
        return session, data[pos:]

    # ------------------------------------------------------------------ input: everything else

    def handle_event(self, event: qe.QuicEvent) -> None:
        """Process a QUIC event other than stream data and datagrams.

        Args:
            event: An event from `QuicConnection.next_event()`.
        """
        if isinstance(event, qe.StreamDataReceived):
            self.receive_stream_data(event.stream_id, event.data, event.end_stream)
        elif isinstance(event, qe.DatagramFrameReceived):
            self.receive_datagram(event.data)
        elif isinstance(event, qe.StreamReset):
            self._receive_reset(event)
        elif isinstance(event, qe.StopSendingReceived):
            self._receive_stop_sending(event)
        elif isinstance(event, qe.ProtocolNegotiated) and not self.is_client:
            _aioquic.release_early_streams(self.quic)
            self.want_transmit = True
        elif isinstance(event, qe.ConnectionTerminated):
            self.terminate(event.error_code, event.reason_phrase)

    def _receive_other(self, stream_id: int, data: bytes, fin: bool) -> None:
        if stream_id in self._http3:
            self._to_h3(qe.StreamDataReceived(data=data, end_stream=fin, stream_id=stream_id))
            return
        if stream_id in self._refused:
            if fin:
                self._refused.pop(stream_id, None)
            return
        if (stream_id & 1) == (0 if self.is_client else 1):
            # One of our streams that is no longer tracked: late data, dropped.
            return
        tracker = self._peer_uni if stream_is_unidirectional(stream_id) else self._peer_bidi
        if not tracker.add(stream_id) and stream_id not in self._peeking:
            if self._is_held(stream_id):
                self._hold_more(stream_id, data, fin)
            return  # a stream we already finished with: late data
        self._peek_stream(stream_id, data, fin)

    def _peek_stream(self, stream_id: int, data: bytes, fin: bool) -> None:
        buffer = self._peeking.get(stream_id)
        view: bytes | bytearray
        if buffer is None:
            view = data
        else:
            buffer += data
            view = buffer
        unidirectional = stream_is_unidirectional(stream_id)
        head = decode_varint(view, 0)
        if head is not None:
            kind, pos = head
            if kind != (UNI_STREAM_TYPE if unidirectional else BIDI_STREAM_SIGNAL):
                # Not a WebTransport stream: HTTP/3 owns it from its first byte.
                self._peeking.pop(stream_id, None)
                self._http3.add(stream_id)
                self._to_h3(
                    qe.StreamDataReceived(data=bytes(view), end_stream=fin, stream_id=stream_id)
                )
                return
            session_field = decode_varint(view, pos)
            if session_field is not None:
                session_id, pos = session_field
                self._peeking.pop(stream_id, None)
                if session_id & 3:
                    # draft §4.2/4.3: a session id must be a client-initiated bidirectional stream.
                    self._connection_error(
                        ErrorCodes.H3_ID_ERROR, f"stream {stream_id}: invalid session id"
                    )
                    return
                self._claim(session_id, stream_id, unidirectional, bytes(view[pos:]), fin, pos)
                return
        if fin or len(view) > _MAX_HEADER_PEEK:
            # A stream that ends (or runs on) before its header is complete is useless.
            self._peeking.pop(stream_id, None)
            self._refuse(stream_id, unidirectional, ErrorCodes.H3_STREAM_CREATION_ERROR)
            return
        if buffer is None:
            self._peeking[stream_id] = bytearray(view)

    def _claim(
        self,
        session_id: int,
        stream_id: int,
        unidirectional: bool,
        data: bytes,
        fin: bool,
        header_size: int,
    ) -> None:
        session = self.sessions.get(session_id)
        if session is not None and session.is_open:
            self._deliver(session, stream_id, unidirectional, data, fin, header_size)
            return
        if session is None and self._session_ended(session_id):
            self._refuse(stream_id, unidirectional, ErrorCodes.WT_SESSION_GONE)
            return
        held_here = self._held.get(session_id)
        if (
            self._held_count >= self._max_held_streams
            or (held_here is not None and len(held_here) >= self._max_held_per_session)
            or len(data) > self._max_held_bytes
        ):
            self._refuse(stream_id, unidirectional, ErrorCodes.WT_BUFFERED_STREAM_REJECTED)
            return
        # The CONNECT (or its answer) may still be on its way: hold the stream.
        self._held.setdefault(session_id, {})[stream_id] = _Held(
            unidirectional, self.now, bytearray(data), fin, header_size
        )
        self._held_count += 1

    @property
    def held_count(self) -> int:
        """Peer streams held for sessions that are not established yet."""
        return self._held_count

    def expire_held(self, before: float) -> None:
        """Refuse held streams that arrived before `before` (their session never came).

        Args:
            before: Streams held since earlier than this are refused with
                WT_BUFFERED_STREAM_REJECTED.
        """
        for session_id, held in list(self._held.items()):
            for stream_id, entry in list(held.items()):
                if entry.since < before:
                    del held[stream_id]
                    self._held_count -= 1
                    code = ErrorCodes.WT_BUFFERED_STREAM_REJECTED
                    self._refuse(stream_id, entry.unidirectional, code)
            if not held:
                del self._held[session_id]

    def _is_held(self, stream_id: int) -> bool:
        return any(stream_id in held for held in self._held.values())

    def _hold_more(self, stream_id: int, data: bytes, fin: bool) -> None:
        for session_id, held in self._held.items():
            entry = held.get(stream_id)
            if entry is None:
                continue
            if len(entry.data) + len(data) > self._max_held_bytes:
                # Held streams are not flow-controlled by a reader: cap what each may buffer.
                del held[stream_id]
                self._held_count -= 1
                if not held:
                    del self._held[session_id]
                self._refuse(
                    stream_id, entry.unidirectional, ErrorCodes.WT_BUFFERED_STREAM_REJECTED
                )
                return
            entry.data += data
            entry.fin = entry.fin or fin
            return

    def _deliver(
        self,
        session: SessionRecord,
        stream_id: int,
        unidirectional: bool,
        data: bytes,
        fin: bool,
        header_size: int,
    ) -> None:
        flow = session.flow
        if flow is not None and not flow.admit(unidirectional):
            self._refuse(stream_id, unidirectional, ErrorCodes.WT_FLOW_CONTROL_ERROR)
            self._close(
                session,
                ErrorCodes.WT_FLOW_CONTROL_ERROR,
                "session flow control limit exceeded",
                by_peer=False,
                clean=False,
            )
            return
        rec = self._new_stream(session, stream_id, unidirectional=unidirectional, local=False)
        rec.header_size = header_size
        if data:
            rec.chunks.append(data)
            rec.buffered = len(data)
        rec.fin_received = fin
        self._events.append(StreamOpened(rec))
        early_stop = self._early_stops.pop(stream_id, None) if self._early_stops else None
        if early_stop is not None:
            self._receive_stop_sending(
                qe.StopSendingReceived(error_code=early_stop, stream_id=stream_id)
            )

    def _new_stream(
        self, session: SessionRecord, stream_id: int, *, unidirectional: bool, local: bool
    ) -> StreamRecord:
        rec = StreamRecord(stream_id, session, unidirectional=unidirectional, local=local)
        if rec.readable and _aioquic.manage_stream_window(self.quic, stream_id):
            rec.window_sent = self._stream_window
        self.streams[stream_id] = rec
        session.streams[stream_id] = rec
        return rec

    def _refuse(self, stream_id: int, unidirectional: bool, code: int) -> None:
        self._refused[stream_id] = None
        self._safe_stop(stream_id, code)
        if not unidirectional:
            self._safe_reset(stream_id, code)

    def _release_held(self, session: SessionRecord) -> None:
        held = self._held.pop(session.session_id, None)
        if not held:
            return
        self._held_count -= len(held)
        for stream_id, entry in held.items():
            if session.is_closed:
                self._refuse(stream_id, entry.unidirectional, ErrorCodes.WT_SESSION_GONE)
            else:
                self._deliver(
                    session,
                    stream_id,
                    entry.unidirectional,
                    bytes(entry.data),
                    entry.fin,
                    entry.header_size,
                )

    def _drop_held(self, session_id: int, code: int) -> None:
        held = self._held.pop(session_id, None)
        if held:
            self._held_count -= len(held)
            for stream_id, entry in held.items():
                self._refuse(stream_id, entry.unidirectional, code)

    def _session_ended(self, session_id: int) -> bool:
        if session_id in self._ended:
            return True
        # Beyond the exactly remembered ones, anything older than the oldest of them ended.
        return (
            bool(self._ended)
            and len(self._ended) >= _MAX_ENDED_SESSIONS
            and (session_id < min(self._ended))
        )

    def _remember_ended(self, session_id: int) -> None:
        ended = self._ended
        ended[session_id] = None
        if len(ended) > _MAX_ENDED_SESSIONS:
            del ended[next(iter(ended))]

    # ------------------------------------------------------------------ HTTP/3

    def _to_h3(self, event: qe.QuicEvent) -> None:
        h3_events = self.h3.handle_event(event)
        for stream_id in _aioquic.malformed_requests(self.h3):
            self._refused[stream_id] = None
            self._http3.discard(stream_id)
            self._safe_stop(stream_id, ErrorCodes.H3_MESSAGE_ERROR)
            self._safe_reset(stream_id, ErrorCodes.H3_MESSAGE_ERROR)
        if not self._settings_seen and self.h3.received_settings is not None:
            self._settings_seen = True
            peer = self.h3.received_settings
            for session in self.sessions.values():
                # Sessions requested before the peer's SETTINGS arrived start from them now.
                if session.flow is not None:
                    session.flow.apply_peer_settings(peer)
            self._events.append(SettingsReceived(dict(peer)))
        for h3_event in h3_events:
            if isinstance(h3_event, h3e.HeadersReceived):
                self._receive_headers(h3_event)
                if h3_event.stream_ended:
                    self._request_stream_ended(h3_event.stream_id)
            elif isinstance(h3_event, h3e.DataReceived):
                self._receive_connect_data(h3_event.stream_id, h3_event.data, h3_event.stream_ended)
                if h3_event.stream_ended:
                    self._request_stream_ended(h3_event.stream_id)
            elif isinstance(h3_event, h3e.WebTransportStreamDataReceived):
                # Only a WEBTRANSPORT_STREAM signal after a request's HEADERS reaches
                # HTTP/3 as such (real WebTransport streams are claimed before it).
                self._connection_error(
                    ErrorCodes.H3_FRAME_ERROR,
                    f"WebTransport stream signal on request stream {h3_event.stream_id}",
                )
                return
        self.want_transmit = True

    def _request_stream_ended(self, stream_id: int) -> None:
        # The peer finished a request stream: once its session is gone too, HTTP/3
        # has nothing more to read on it.
        if stream_id not in self.sessions:
            self._http3.discard(stream_id)
            self._closed_by_capsule.pop(stream_id, None)

    def _receive_headers(self, event: h3e.HeadersReceived) -> None:
        stream_id = event.stream_id
        session = self.sessions.get(stream_id)
        if self.is_client:
            if session is None or session.state is not SessionState.CONNECTING:
                return
            status, protocol = parse_response(list(event.headers), session.offered_protocols)
            session.headers = list(event.headers)
            if 200 <= status < 300 and not event.stream_ended:
                session.protocol = protocol
                session.move(SessionMove.ESTABLISH)
                self._events.append(SessionEstablished(session))
                self._release_held(session)
                return
            if not event.stream_ended:
                self._safe_stop(stream_id, ErrorCodes.H3_REQUEST_CANCELLED)
            session.fin_sent = True
            session.rejected_with = status
            self._events.append(SessionRejected(session, status))
            self._end_session(session, status, "rejected", by_peer=True, clean=True)
            return
        if session is not None:
            # Trailers on a CONNECT stream: nothing to do with them but a possible FIN.
            if event.stream_ended:
                self._peer_finished(session)
            return
        request = parse_request(
            list(event.headers),
            stream_ended=event.stream_ended,
            max_field_section_size=self.max_field_section_size,
        )
        if isinstance(request, int):
            self._answer(stream_id, request)
            return
        if len(self.sessions) >= self.limits.max_sessions:
            self._answer(stream_id, 429)
            return
        dialect = dialect_of_request(request.protocol_token, self.h3.received_settings or {})
        session = self._new_session(stream_id, dialect)
        session.request = request
        session.path = request.path
        session.authority = request.authority
        session.headers = request.headers
        session.offered_protocols = request.offered_protocols
        self._events.append(SessionRequested(session))

    def _new_session(self, session_id: int, dialect: Dialect) -> SessionRecord:
        session = SessionRecord(session_id, is_client=self.is_client, dialect=dialect)
        session.datagram_prefix = encode_uint_var(session_id // 4)
        if dialect.flow_control:
            session.flow = SessionFlow(self.limits, self.h3.received_settings or {})
        self.sessions[session_id] = session
        return session

    def _receive_connect_data(self, stream_id: int, data: bytes, ended: bool) -> None:
        if stream_id in self._closed_by_capsule:
            if data:
                # draft §6: nothing may follow CLOSE_WEBTRANSPORT_SESSION.
                self._closed_by_capsule.pop(stream_id, None)
                self._safe_stop(stream_id, ErrorCodes.H3_MESSAGE_ERROR)
                self._safe_reset(stream_id, ErrorCodes.H3_MESSAGE_ERROR)
            elif ended:
                self._closed_by_capsule.pop(stream_id, None)
            return
        session = self.sessions.get(stream_id)
        if session is None:
            return
        if data:
            if session.capsules is None:
                session.capsules = bytearray()
            session.capsules += data
            try:
                capsules = decode_capsules(session.capsules, self.max_capsule_size)
            except ValueError:
                self._session_protocol_error(session, "capsule too large")
                return
            trailing = False
            for capsule_type, payload in capsules:
                if session.close_received is not None:
                    trailing = True  # capsules after CLOSE_WEBTRANSPORT_SESSION
                    break
                if not self._receive_capsule(session, capsule_type, payload):
                    return
            if session.close_received is not None:
                code, reason = session.close_received
                if trailing or session.capsules:
                    # draft section 6: nothing may follow CLOSE_WEBTRANSPORT_SESSION.
                    session.fin_sent = True
                    self._safe_stop(stream_id, ErrorCodes.H3_MESSAGE_ERROR)
                    self._safe_reset(stream_id, ErrorCodes.H3_MESSAGE_ERROR)
                elif not ended:
                    self._closed_by_capsule[stream_id] = None
                self._end_session(session, code, reason, by_peer=True, clean=True)
                return
        if ended:
            self._peer_finished(session)

    def _receive_capsule(self, session: SessionRecord, capsule_type: int, payload: bytes) -> bool:
        """Apply one capsule; False when the session ended over it."""
        if capsule_type == CAPSULE_CLOSE_WEBTRANSPORT_SESSION:
            if len(payload) < 4 or len(payload) - 4 > MAX_CLOSE_REASON_BYTES:
                self._session_protocol_error(session, "malformed CLOSE_WEBTRANSPORT_SESSION")
                return False
            code = int.from_bytes(payload[:4], "big")
            session.close_received = (code, payload[4:].decode("utf-8", "replace"))
        elif capsule_type == CAPSULE_DRAIN_WEBTRANSPORT_SESSION:
            if session.is_established:
                session.move(SessionMove.DRAIN)
            self._events.append(SessionDraining(session))
        elif session.flow is not None and capsule_type in FLOW_CAPSULES:
            result = session.flow.receive_capsule(capsule_type, payload)
            if result is None:
                self._session_protocol_error(session, "malformed flow-control capsule")
                return False
            grew, answer = result
            self._send_capsules(session, answer)
            value = decode_varint(payload, 0)
            limit = value[0] if value is not None else 0
            if grew:
                self._events.append(SessionCreditUpdated(session, capsule_type, limit))
            elif capsule_type in _BLOCKED_CAPSULES:
                self._events.append(SessionPeerBlocked(session, capsule_type, limit))
        # Unknown (GREASE) capsule types are skipped, as RFC 9297 requires.
        return True

    def _peer_finished(self, session: SessionRecord) -> None:
        code, reason = session.close_received or (0, "")
        self._end_session(session, code, reason, by_peer=True, clean=True)

    def _session_protocol_error(self, session: SessionRecord, reason: str) -> None:
        sid = session.session_id
        self._safe_stop(sid, ErrorCodes.H3_MESSAGE_ERROR)
        self._safe_reset(sid, ErrorCodes.H3_MESSAGE_ERROR)
        session.fin_sent = True
        self._end_session(session, 0, reason, by_peer=False, clean=False)

    def _answer(self, stream_id: int, status: int) -> None:
        self._http3.discard(stream_id)
        try:
            self.h3.send_headers(stream_id, [(b":status", str(status).encode())], end_stream=True)
        except _aioquic.REFUSALS:  # the request stream is gone or already answered
            self._safe_reset(stream_id, ErrorCodes.H3_REQUEST_REJECTED)
        self.want_transmit = True

    def _connection_error(self, code: int, reason: str) -> None:
        self.quic.close(error_code=code, reason_phrase=reason)
        self.want_transmit = True
        self.terminate(code, reason)

    def _receive_reset(self, event: qe.StreamReset) -> None:
        stream_id = event.stream_id
        header_incomplete = self._peeking.pop(stream_id, None) is not None
        unread = self._unread.pop(stream_id, None) if self._unread else None
        if unread is not None:
            stopped_session, header_size, counted = unread
            self._release_unread(stopped_session, stream_id, header_size, counted)
        rec = self.streams.get(stream_id)
        if rec is not None:
            if not rec.read_done:
                code = http3_to_wt_error(event.error_code)
                rec.reset_received = True
                rec.chunks.clear()
                rec.buffered = 0
                self._release_unread(rec.session, stream_id, rec.header_size, rec.consumed)
                self._fail_read(
                    rec,
                    StreamError(
                        f"stream {stream_id} was reset by the peer with code {code}",
                        stream_id=stream_id,
                        error_code=code,
                        remote=True,
                    ),
                )
                self._events.append(StreamResetReceived(rec))
            return
        if stream_id in self._refused:
            self._refused.pop(stream_id, None)
            return
        for session_id, held in list(self._held.items()):
            if held.pop(stream_id, None) is not None:
                self._held_count -= 1
                if not held:
                    del self._held[session_id]
                return
        session = self.sessions.get(stream_id)
        if session is not None:
            session.fin_sent = True
            self._end_session(session, 0, "CONNECT stream reset", by_peer=True, clean=False)
        self._closed_by_capsule.pop(stream_id, None)
        if stream_id in self._http3:
            self._http3.discard(stream_id)
            self.h3.handle_event(event)
        elif session is None and (stream_id & 1) != (0 if self.is_client else 1):
            tracker = self._peer_uni if stream_is_unidirectional(stream_id) else self._peer_bidi
            if tracker.add(stream_id) or header_incomplete:
                self._early_stops.pop(stream_id, None)
                self._reset_before_header(stream_id)

    def _reset_before_header(self, stream_id: int) -> None:
        # A peer stream reset before its header arrived (the packet carrying it was
        # lost, and a plain RESET_STREAM stops its retransmission: only
        # RESET_STREAM_AT would not). The peer counted it against its session's
        # stream credit (draft-15), which no one could otherwise give back. With
        # a single session on the connection it can only be that session's.
        flow_sessions = [s for s in self.sessions.values() if s.flow is not None]
        if len(flow_sessions) != 1 or not flow_sessions[0].is_open:
            return
        session = flow_sessions[0]
        flow = session.flow
        assert flow is not None
        unidirectional = stream_is_unidirectional(stream_id)
        flow.admit(unidirectional)
        self._send_capsules(session, flow.peer_stream_done(unidirectional))

    def _receive_stop_sending(self, event: qe.StopSendingReceived) -> None:
        stream_id = event.stream_id
        rec = self.streams.get(stream_id)
        if rec is not None:
            if not rec.write_done:
                code = http3_to_wt_error(event.error_code)
                # aioquic already reset the sending half in answer.
                self._settle_unsent(rec)
                self._fail_write(
                    rec,
                    StreamError(
                        f"peer stopped stream {stream_id} with code {code}",
                        stream_id=stream_id,
                        error_code=code,
                        remote=True,
                    ),
                )
                self._events.append(StopSendingReceived(rec))
            return
        if stream_id in self._http3:
            self.h3.handle_event(event)
        elif self._may_be_unclaimed_peer_bidi(stream_id):
            # A STOP_SENDING that overtook the stream's first bytes: apply it once the
            # stream is claimed (aioquic already reset our sending half).
            self._early_stops[stream_id] = event.error_code

    def _may_be_unclaimed_peer_bidi(self, stream_id: int) -> bool:
        return (
            (stream_id & 1) != (0 if self.is_client else 1)
            and not stream_is_unidirectional(stream_id)
            and stream_id not in self._peer_bidi
            and len(self._early_stops) < _MAX_EARLY_STOPS
        )

    # ------------------------------------------------------------------ stream halves

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
            and _aioquic.enabled("stream_state")
            and not _aioquic.send_finished(self.quic, stream_id)
        ):
            self._unacked[stream_id] = session
            if len(self._unacked) > self._unacked_prune_at:
                self._prune_unacked()
        _aioquic.forget_stream_window(self.quic, stream_id)
        self._events.append(StreamClosed(rec))
        flow = session.flow
        if flow is not None and not rec.local and not session.is_closed:
            self._send_capsules(session, flow.peer_stream_done(rec.unidirectional))

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
        final = _aioquic.reset_final_size(self.quic, stream_id)
        if final is None:
            # Unknown (aioquic's internals differ): the peer sent at most what its
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
                _aioquic.set_stream_window(self.quic, rec.stream_id, limit)
                self.want_transmit = True

    def _settle_unsent(self, rec: StreamRecord) -> None:
        # Our sending half was reset: the peer counts it up to the final size
        # (what left), so data queued behind that no longer counts against the
        # session's credit here either (draft-15). Unknown final size: it keeps
        # counting (the fallback of `stream_state`).
        flow = rec.session.flow
        if flow is None or not rec.queued:
            return
        sent = _aioquic.sent_offset(self.quic, rec.stream_id)
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
            self.quic.send_stream_data(rec.stream_id, data, fin)  # type: ignore[arg-type]
        except (RuntimeError, ValueError) as exc:
            # aioquic refuses data after the stream was reset or finished: a
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

    # ------------------------------------------------------------------ sessions

    def open_session(
        self,
        *,
        authority: str,
        path: str,
        dialect: Dialect,
        headers: Iterable[tuple[str | bytes, str | bytes]] = (),
        protocols: Sequence[str] = (),
    ) -> SessionRecord:
        """Send a CONNECT request for a new session (client side).

        Args:
            authority: The `:authority` (host:port).
            path: The `:path` (with query).
            dialect: The dialect to speak (see `dialects.choose_dialect`).
            headers: Extra request headers.
            protocols: Subprotocols offered, in preference order.

        Returns:
            The new session, connecting.

        Raises:
            HeaderError: A header is not valid in HTTP/3 (nothing was sent).
        """
        request = build_request(
            authority=authority, path=path, dialect=dialect, headers=headers, protocols=protocols
        )
        stream_id = self.quic.get_next_available_stream_id()
        self._http3.add(stream_id)
        session = self._new_session(stream_id, dialect)
        session.path = path
        session.authority = authority
        session.offered_protocols = list(protocols)
        self.h3.send_headers(stream_id, request, end_stream=False)
        self.want_transmit = True
        return session

    def accept(
        self,
        session: SessionRecord,
        *,
        protocol: str | None = None,
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        """Accept a requested session with a 200 answer (server side).

        Streams that arrived for it before are delivered now (`StreamOpened`).

        Args:
            session: The session from `SessionRequested`.
            protocol: The selected subprotocol (answered as `wt-protocol`).
            headers: Extra response headers.
        """
        if session.state is not SessionState.CONNECTING or self.is_client:
            return
        response = build_response(session.dialect, protocol=protocol, headers=headers)
        self.h3.send_headers(session.session_id, response, end_stream=False)
        session.protocol = protocol
        session.move(SessionMove.ESTABLISH)
        self.want_transmit = True
        self._release_held(session)

    def reject(self, session: SessionRecord, status_code: int) -> None:
        """Refuse a requested session with an HTTP status (server side).

        Args:
            session: The session from `SessionRequested`.
            status_code: A non-2xx HTTP status.
        """
        if session.state is not SessionState.CONNECTING or self.is_client:
            return
        self._answer(session.session_id, status_code)
        session.fin_sent = True
        self._end_session(session, status_code, "rejected", by_peer=False, clean=True)

    def close_session(self, session: SessionRecord, error_code: int = 0, reason: str = "") -> None:
        """Close a session: CLOSE_WEBTRANSPORT_SESSION, then FIN, then reset its streams.

        A session not established yet is cancelled instead: a client resets
        its CONNECT stream, a server answers 500.

        Args:
            session: The session.
            error_code: Application error code (0..2**32-1).
            reason: UTF-8 reason, cut to 1024 bytes.
        """
        self._close(session, error_code, reason, by_peer=False, clean=True)

    def begin_close(self, session: SessionRecord) -> bool:
        """Start a graceful close: no new streams or datagrams, written data goes on.

        The session moves to CLOSING. Its streams keep sending what was
        written; `writes_delivered` tells when the peer has all of it, and
        `close_session` then sends the close capsule (draft section 6: a peer
        resets and stops every stream of a session it learns is closed, so
        data still in flight then would be lost).

        Args:
            session: The session.

        Returns:
            True when the session is closing (now or already) and there may be
            something to wait for; False when `close_session` may follow at
            once (not established yet, or closed).
        """
        if session.state is SessionState.CLOSING:
            return True
        if not session.is_established:
            return False
        session.move(SessionMove.FINISH)
        return True

    def writes_delivered(self, session: SessionRecord) -> bool:
        """Return whether the peer acknowledged every stream this side finished.

        A stream counts once its FIN was acknowledged, or once it was reset or
        stopped (its writer was told). Streams still being written (no FIN)
        are not waited for: the close resets them.

        Args:
            session: The session.

        Returns:
            The answer (always True for a session no longer open).
        """
        if not session.is_open:
            return True
        if not _aioquic.enabled("stream_state"):
            return False  # unknowable: the close waits for its bound
        quic = self.quic
        for rec in session.streams.values():
            if (
                rec.fin_sent
                and rec.write_error is None
                and not _aioquic.send_finished(quic, rec.stream_id)
            ):
                return False
        self._prune_unacked()
        return session not in self._unacked.values()

    def _prune_unacked(self) -> None:
        quic = self.quic
        for stream_id in [i for i in self._unacked if _aioquic.send_finished(quic, i)]:
            del self._unacked[stream_id]
        self._unacked_prune_at = max(_UNACKED_PRUNE, 2 * len(self._unacked))

    def _close(
        self, session: SessionRecord, code: int, reason: str, *, by_peer: bool, clean: bool
    ) -> None:
        if session.is_closed:
            return
        sid = session.session_id
        if session.is_open:
            if not session.fin_sent:
                encoded = reason.encode("utf-8")[:MAX_CLOSE_REASON_BYTES]
                encoded = encoded.decode("utf-8", "ignore").encode("utf-8")
                payload = (code & 0xFFFFFFFF).to_bytes(4, "big") + encoded
                session.fin_sent = True
                with contextlib.suppress(*_aioquic.REFUSALS):  # the stream may be reset meanwhile
                    self.h3.send_data(
                        sid, encode_capsule(CAPSULE_CLOSE_WEBTRANSPORT_SESSION, payload), True
                    )
        elif self.is_client:
            session.fin_sent = True
            self._safe_reset(sid, ErrorCodes.H3_REQUEST_CANCELLED)
        else:
            self._answer(sid, 500)
            session.fin_sent = True
        self.want_transmit = True
        self._end_session(session, code, reason, by_peer=by_peer, clean=clean)

    def drain_session(self, session: SessionRecord) -> None:
        """Send DRAIN_WEBTRANSPORT_SESSION: ask the peer to wrap up the session.

        Args:
            session: The session.
        """
        if not session.is_established or session.fin_sent:
            return
        self._send_raw_capsule(session, encode_capsule(CAPSULE_DRAIN_WEBTRANSPORT_SESSION, b""))

    def _end_session(
        self,
        session: SessionRecord,
        code: int,
        reason: str,
        *,
        by_peer: bool,
        clean: bool,
        stream_error: StreamError | None = None,
    ) -> None:
        if session.is_closed:
            return
        session.move(SessionMove.CLOSE)
        session.close_code = code
        session.close_reason = reason
        session.closed_by_peer = by_peer
        session.closed_cleanly = clean
        sid = session.session_id
        if not session.fin_sent:
            session.fin_sent = True
            with contextlib.suppress(*_aioquic.REFUSALS):
                self.h3.send_data(sid, b"", end_stream=True)
        error = stream_error
        if error is None and code == ErrorCodes.WT_FLOW_CONTROL_ERROR:
            # Either side found a session flow-control limit overstepped (draft-15).
            error = FlowControlError(
                f"session {sid} closed: {reason or 'flow control violated'}",
                error_code=ErrorCodes.WT_FLOW_CONTROL_ERROR,
                remote=by_peer,
            )
        if error is None:
            error = StreamError(
                f"session {sid} closed",
                error_code=ErrorCodes.WT_SESSION_GONE,
                remote=by_peer,
            )
        for rec in list(session.streams.values()):
            if stream_error is None:
                # draft §6: streams of a closed session are reset / stopped with SESSION_GONE.
                if rec.writable and not rec.write_done:
                    self._safe_reset(rec.stream_id, ErrorCodes.WT_SESSION_GONE)
                if rec.readable and not rec.read_done and not rec.fin_received:
                    self._safe_stop(rec.stream_id, ErrorCodes.WT_SESSION_GONE)
                    self._refused[rec.stream_id] = None
            # A stream whose FIN arrived holds all its data: the reader still gets
            # it. Nothing is left to abort on the wire (its receiving half is
            # complete), so this departs from the draft's "abort reading" only
            # locally, and it is what makes write-then-close deliver.
            if not rec.fin_received:
                rec.read_done = True
                if rec.read_error is None:
                    rec.read_error = error
            elif rec.buffered == 0:
                rec.read_done = True
            if rec.write_error is None and not rec.fin_sent:
                rec.write_error = error
            rec.write_done = True
            self._forget(rec)
        self._drop_held(sid, ErrorCodes.WT_SESSION_GONE)
        if self._unacked:
            for stream_id in [i for i, s in self._unacked.items() if s is session]:
                del self._unacked[stream_id]
        self._datagram_backlog.pop(sid, None)
        session.outgoing = None
        del self.sessions[sid]
        self._remember_ended(sid)
        self.want_transmit = True
        self._events.append(SessionClosed(session))

    def terminate(self, error_code: int, reason: str) -> None:
        """Mark every session closed because the QUIC connection ended.

        Args:
            error_code: The connection's close code.
            reason: Its reason phrase.
        """
        error = StreamError(f"connection closed: {reason or 'no reason'}", error_code=error_code)
        for session in list(self.sessions.values()):
            session.fin_sent = True
            self._end_session(
                session,
                error_code,
                reason or "connection lost",
                by_peer=True,
                clean=False,
                stream_error=error,
            )

    def _send_capsules(self, session: SessionRecord, capsules: list[Capsule]) -> None:
        for capsule_type, value in capsules:
            self._send_raw_capsule(session, encode_capsule(capsule_type, encode_uint_var(value)))

    def _send_raw_capsule(self, session: SessionRecord, capsule: bytes) -> None:
        if session.fin_sent or session.is_closed:
            return
        with contextlib.suppress(*_aioquic.REFUSALS):  # the stream may have been reset meanwhile
            self.h3.send_data(session.session_id, capsule, end_stream=False)
            self.want_transmit = True

    # ------------------------------------------------------------------ streams and datagrams

    def stream_blocker(self, session: SessionRecord, *, unidirectional: bool) -> str | None:
        """Return what keeps the session from opening another stream now, if anything.

        Checks QUIC stream credit and, with session flow control, the
        session's stream limit (WT_STREAMS_BLOCKED is queued the first time a
        given limit blocks it).

        Args:
            session: The session.
            unidirectional: The kind of stream.

        Returns:
            None when a stream may be opened; `"quic"` when the connection's
            stream credit is used up; `"session"` when the session's is.
        """
        if not _aioquic.can_open_stream(self.quic, unidirectional):
            return "quic"
        flow = session.flow
        if flow is None:
            return None
        allowed, capsules = flow.can_open(unidirectional)
        self._send_capsules(session, capsules)
        return None if allowed else "session"

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
        stream_id = quic.get_next_available_stream_id(is_unidirectional=unidirectional)
        if session.flow is not None:
            session.flow.opened(unidirectional)
        rec = self._new_stream(session, stream_id, unidirectional=unidirectional, local=True)
        quic.send_stream_data(stream_id, _stream_header(rec))
        self.want_transmit = True
        return rec

    def send_datagram(self, session: SessionRecord, data: bytes | bytearray | memoryview) -> bool:
        """Hand a datagram to QUIC at once, when nothing waits in the session's queue.

        QUIC gets at most a few hundred datagrams ahead of what it can send;
        past that, datagrams wait in the session's queue (`queue_datagram`).

        Args:
            session: An established session.
            data: The payload (its size is checked by the caller).

        Returns:
            False when the datagram must be queued instead (nothing was done).
        """
        if session.outgoing or _aioquic.pending_datagrams(self.quic) >= _DATAGRAM_BUDGET:
            return False
        self.quic.send_datagram_frame(session.datagram_prefix + data)
        self.want_transmit = True
        return True

    def queue_datagram(
        self, session: SessionRecord, data: bytes | bytearray | memoryview, now: float
    ) -> bool:
        """Queue a datagram until QUIC can take it (`feed_datagrams` moves it on).

        When the queue holds `datagram_high_water_mark` datagrams, the oldest
        is dropped and counted in `session.datagrams_send_dropped`.

        Args:
            session: An established session.
            data: The payload.
            now: The current time (the datagram's age starts here).

        Returns:
            True when the queue is below its high-water mark afterwards.
        """
        queue = session.outgoing
        if queue is None:
            queue = session.outgoing = deque()
        if len(queue) >= self.datagram_high_water_mark:
            queue.popleft()
            session.datagrams_send_dropped += 1
        queue.append((now, bytes(data)))
        self._datagram_backlog[session.session_id] = session
        self.want_transmit = True
        return len(queue) < self.datagram_high_water_mark

    @property
    def has_datagram_backlog(self) -> bool:
        """True while sessions have datagrams queued for sending."""
        return bool(self._datagram_backlog)

    def feed_datagrams(self, now: float) -> None:
        """Hand queued datagrams to QUIC, round-robin across sessions, up to its budget.

        Datagrams older than `datagram_max_age` are dropped first (counted in
        `session.datagrams_expired`).

        Args:
            now: The current time.
        """
        quic = self.quic
        budget = _DATAGRAM_BUDGET - _aioquic.pending_datagrams(quic)
        max_age = self.datagram_max_age
        backlog = self._datagram_backlog
        while budget > 0 and backlog:
            for session_id, session in list(backlog.items()):
                queue = session.outgoing
                while queue:
                    queued_at, data = queue.popleft()
                    if max_age is not None and now - queued_at > max_age:
                        session.datagrams_expired += 1
                        continue
                    quic.send_datagram_frame(session.datagram_prefix + data)
                    budget -= 1
                    break
                if not queue or session.is_closed:
                    del backlog[session_id]
                if budget <= 0:
                    break
        self.want_transmit = True

    def _safe_reset(self, stream_id: int, code: int) -> None:
        with contextlib.suppress(*_aioquic.REFUSALS):
            self.quic.reset_stream(stream_id, code)
        self.want_transmit = True

    def _safe_stop(self, stream_id: int, code: int) -> None:
        with contextlib.suppress(*_aioquic.REFUSALS):
            self.quic.stop_stream(stream_id, code)
        self.want_transmit = True
