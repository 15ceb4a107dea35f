"""`WebTransportCore`: the WebTransport state of one QUIC connection, without I/O.

QUIC events go in (`receive_stream_data`, `receive_datagram` for the hot paths,
`receive_reset`, `receive_stop_sending`, `protocol_negotiated` and `terminate`
for the rest); protocol events come out of `next_event()`; every command
leaves its bytes queued on the QUIC connection and sets `want_transmit`. It
never touches the event loop or the clock, and it imports no QUIC library: it
talks to QUIC through the `QuicPort` it is handed (`quic.py`), which the fence
implements over aioquic (`transport/_aioquic/port.py`) and a test implements
with dictionaries. So it is tested with literal bytes, with in-memory aioquic
connection pairs and against a fake QUIC.

Division of labour with the HTTP/3 layer below the port: HTTP/3 control
streams, QPACK and the CONNECT request streams go through it; WebTransport
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

The class is assembled from layers, one module per concern (see `base`):
this module is the top one, what the peer sends; `sessions`, `held`,
`halves` and `datagrams` hold the commands and their bookkeeping.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Final

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
from ...shared.exceptions import StreamError
from ...shared.types import ConnectionState, SessionState
from ...shared.utils import decode_varint
from .capsules import decode_capsules
from .codes import http3_to_wt_error
from .dialects import Limits, all_settings, dialect_of_request
from .events import (
    ProtocolEvent,
    SessionCreditUpdated,
    SessionDraining,
    SessionEstablished,
    SessionPeerBlocked,
    SessionRejected,
    SessionRequested,
    SettingsReceived,
    StopSendingReceived,
    StreamOpened,
    StreamResetReceived,
)
from .exchanges import ExchangeLayer
from .flow import FLOW_CAPSULES
from .halves import _UNACKED_PRUNE
from .headers import parse_plain_request, parse_request, parse_response, select_protocol
from .quic import QuicPort, RequestData, RequestHeaders, StreamSignal
from .records import ExchangeRecord, HeldStream, SessionMove, SessionRecord, StreamIds, StreamRecord

__all__ = ["WebTransportCore"]


_MAX_HEADER_PEEK: Final = 16
"""A stream header is at most two 8-byte varints; more unparsed bytes is a protocol error."""
_BLOCKED_CAPSULES: Final = frozenset(
    {CAPSULE_WT_DATA_BLOCKED, CAPSULE_WT_STREAMS_BLOCKED_BIDI, CAPSULE_WT_STREAMS_BLOCKED_UNI}
)
_MAX_EARLY_STOPS: Final = 64
"""STOP_SENDING frames remembered for streams not seen yet (each one byte of state)."""
_MAX_QUARTER_STREAM_ID: Final = 1 << 60
"""RFC 9297 section 2.1: a datagram's quarter stream id is below 2**60."""


def _unidirectional(stream_id: int) -> bool:
    """RFC 9000 section 2.1: bit 0x2 of a stream id marks a unidirectional stream."""
    return bool(stream_id & 2)


class WebTransportCore(ExchangeLayer):
    """The WebTransport state of one QUIC connection, without I/O.

    Args:
        quic: The QUIC connection (client or server side), through its port;
            the core starts its HTTP/3 layer with every dialect's SETTINGS.
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
        supported_protocols: Subprotocols this server speaks, in its order: a
            requested session starts with the client's first offered one that
            is among them (`choose_protocol` may change it before `accept`).
        max_http_requests: Plain HTTP/3 requests in flight at once when
            `serve_http` is set (more are answered 429).

    Attributes:
        quic: The QUIC connection, through its port.
        is_client: Which side we are.
        sessions: Sessions not closed yet, by session id.
        exchanges: Plain HTTP/3 requests in flight, by stream id.
        serve_http: Server side: plain HTTP/3 requests become exchanges
            (`HttpRequestReceived`) instead of being answered 404/405.
        streams: WebTransport streams delivered to sessions, by stream id.
        want_transmit: Set whenever bytes were queued on `quic`; the I/O layer
            clears it when it transmits.
    """

    __slots__ = ()

    def __init__(
        self,
        quic: QuicPort,
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
        supported_protocols: Sequence[str] = (),
        max_http_requests: int = 16,
    ) -> None:
        self.quic = quic
        self.limits = limits if limits is not None else Limits()
        self.is_client: bool = quic.is_client
        self.max_capsule_size = max_capsule_size
        self.max_field_section_size = max_field_section_size
        self._stream_window = stream_window
        self._half_window = max(1, stream_window // 2)
        self._max_held_streams = max_held_streams
        self._max_held_per_session = max_held_per_session
        self.datagram_high_water_mark = datagram_high_water_mark
        self.datagram_max_age = datagram_max_age
        self.supported_protocols = tuple(supported_protocols)
        self._datagram_backlog: dict[int, SessionRecord] = {}
        """Sessions with queued outgoing datagrams, in round-robin order."""
        self.now = 0.0
        """Time of the event being handled, set by the I/O layer (the core reads no clock)."""
        self._max_held_bytes = max_held_bytes
        settings = all_settings(self.limits)
        settings[SETTINGS_MAX_FIELD_SECTION_SIZE] = max_field_section_size
        quic.start_http3(settings)
        self.state = ConnectionState.CONNECTING
        """The QUIC connection's state (`handshake_completed`, `begin_closing`, `terminate`)."""
        self.close_reason: tuple[int, str] | None = None
        """(error code, reason) the connection closed with, once known."""
        self.sessions: dict[int, SessionRecord] = {}
        self.exchanges: dict[int, ExchangeRecord] = {}
        self.serve_http = False
        self.max_http_requests = max_http_requests
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
        self._held: dict[int, dict[int, HeldStream]] = {}
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
        return self.quic.peer_settings

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

    def protocol_negotiated(self) -> None:
        """Take QUIC's ProtocolNegotiated event: the server's early streams may leave."""
        if not self.is_client:
            self.quic.protocol_negotiated()
            self.want_transmit = True

    def _receive_other(self, stream_id: int, data: bytes, fin: bool) -> None:
        if stream_id in self._http3:
            self._to_h3(stream_id, data, fin)
            return
        if stream_id in self._refused:
            if fin:
                self._refused.pop(stream_id, None)
            return
        if (stream_id & 1) == (0 if self.is_client else 1):
            # One of our streams that is no longer tracked: late data, dropped.
            return
        tracker = self._peer_uni if _unidirectional(stream_id) else self._peer_bidi
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
        unidirectional = _unidirectional(stream_id)
        head = decode_varint(view, 0)
        if head is not None:
            kind, pos = head
            if kind != (UNI_STREAM_TYPE if unidirectional else BIDI_STREAM_SIGNAL):
                # Not a WebTransport stream: HTTP/3 owns it from its first byte.
                self._peeking.pop(stream_id, None)
                self._http3.add(stream_id)
                self._to_h3(stream_id, bytes(view), fin)
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
            self.receive_stop_sending(stream_id, early_stop)

    # ------------------------------------------------------------------ HTTP/3

    def _to_h3(self, stream_id: int, data: bytes, fin: bool) -> None:
        quic = self.quic
        if self.exchanges:
            exchange = self.exchanges.get(stream_id)
            if exchange is not None:
                exchange.received += len(data)
        h3_events = quic.h3_stream_data(stream_id, data, fin)
        for stream_id in quic.malformed_requests():
            self._refused[stream_id] = None
            self._http3.discard(stream_id)
            self._safe_stop(stream_id, ErrorCodes.H3_MESSAGE_ERROR)
            self._safe_reset(stream_id, ErrorCodes.H3_MESSAGE_ERROR)
        if not self._settings_seen and quic.peer_settings is not None:
            self._settings_seen = True
            peer = quic.peer_settings
            for session in self.sessions.values():
                # Sessions requested before the peer's SETTINGS arrived start from them now.
                if session.flow is not None:
                    session.flow.apply_peer_settings(peer)
            self._events.append(SettingsReceived(dict(peer)))
        for h3_event in h3_events:
            if isinstance(h3_event, RequestHeaders):
                self._receive_headers(h3_event)
                if h3_event.ended:
                    self._request_stream_ended(h3_event.stream_id)
            elif isinstance(h3_event, RequestData):
                exchange = self.exchanges.get(h3_event.stream_id) if self.exchanges else None
                if exchange is not None:
                    self._exchange_data(exchange, h3_event.data, h3_event.ended)
                else:
                    self._receive_connect_data(h3_event.stream_id, h3_event.data, h3_event.ended)
                if h3_event.ended:
                    self._request_stream_ended(h3_event.stream_id)
            elif isinstance(h3_event, StreamSignal):
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

    def _receive_headers(self, event: RequestHeaders) -> None:
        stream_id = event.stream_id
        session = self.sessions.get(stream_id)
        if self.is_client:
            if session is None or session.state is not SessionState.CONNECTING:
                return
            status, protocol = parse_response(list(event.headers), session.offered_protocols)
            session.headers = list(event.headers)
            if 200 <= status < 300 and not event.ended:
                session.protocol = protocol
                session.move(SessionMove.ESTABLISH)
                self._events.append(SessionEstablished(session))
                self._release_held(session)
                return
            if not event.ended:
                self._safe_stop(stream_id, ErrorCodes.H3_REQUEST_CANCELLED)
            session.fin_sent = True
            session.rejected_with = status
            self._events.append(SessionRejected(session, status))
            self._end_session(session, status, "rejected", by_peer=True, clean=True)
            return
        if session is not None:
            # Trailers on a CONNECT stream: nothing to do with them but a possible FIN.
            if event.ended:
                self._peer_finished(session)
            return
        exchange = self.exchanges.get(stream_id) if self.exchanges else None
        if exchange is not None:
            # Trailers after a request body: dropped, but they may end the request.
            if event.ended:
                self._exchange_data(exchange, b"", True)
            return
        request = parse_request(
            list(event.headers),
            stream_ended=event.ended,
            max_field_section_size=self.max_field_section_size,
        )
        if isinstance(request, int):
            if request in (404, 405) and self.serve_http:
                plain = parse_plain_request(list(event.headers))
                if not isinstance(plain, int):
                    self._new_exchange(stream_id, plain, event.ended)
                    return
                request = plain
            self._answer(stream_id, request)
            return
        if len(self.sessions) >= self.limits.max_sessions:
            self._answer(stream_id, 429)
            return
        dialect = dialect_of_request(request.protocol_token, self.quic.peer_settings or {})
        session = self._new_session(stream_id, dialect)
        session.request = request
        session.path = request.path
        session.authority = request.authority
        session.headers = request.headers
        session.offered_protocols = request.offered_protocols
        if self.supported_protocols and request.offered_protocols:
            # The client's first offered protocol that the server speaks wins.
            session.protocol = select_protocol(request.offered_protocols, self.supported_protocols)
        self._events.append(SessionRequested(session))

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

    def _connection_error(self, code: int, reason: str) -> None:
        # QUIC's closing period follows; `terminate` comes when it ends.
        self.quic.close(code, reason)
        self.want_transmit = True
        if self.close_reason is None:
            self.close_reason = (code, reason)
        self.begin_closing()
        self._end_all_sessions(code, reason)

    def receive_reset(self, stream_id: int, error_code: int) -> None:
        """Take QUIC's StreamReset event: the peer reset a stream's sending half.

        Args:
            stream_id: The stream.
            error_code: The RESET_STREAM's application error code.
        """
        header_incomplete = self._peeking.pop(stream_id, None) is not None
        unread = self._unread.pop(stream_id, None) if self._unread else None
        if unread is not None:
            stopped_session, header_size, counted = unread
            self._release_unread(stopped_session, stream_id, header_size, counted)
        rec = self.streams.get(stream_id)
        if rec is not None:
            if not rec.read_done:
                code = http3_to_wt_error(error_code)
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
        exchange = self.exchanges.get(stream_id) if self.exchanges else None
        if exchange is not None:
            self._fail_exchange(
                exchange, f"the client reset request stream {stream_id}", error_code
            )
        self._closed_by_capsule.pop(stream_id, None)
        if stream_id in self._http3:
            self._http3.discard(stream_id)
            self.quic.h3_stream_reset(stream_id, error_code)
        elif session is None and (stream_id & 1) != (0 if self.is_client else 1):
            tracker = self._peer_uni if _unidirectional(stream_id) else self._peer_bidi
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
        unidirectional = _unidirectional(stream_id)
        flow.admit(unidirectional)
        self._send_capsules(session, flow.peer_stream_done(unidirectional))

    def receive_stop_sending(self, stream_id: int, error_code: int) -> None:
        """Take QUIC's StopSendingReceived event: the peer stopped reading a stream.

        Args:
            stream_id: The stream.
            error_code: The STOP_SENDING's application error code.
        """
        rec = self.streams.get(stream_id)
        if rec is not None:
            if not rec.write_done:
                code = http3_to_wt_error(error_code)
                # QUIC already reset the sending half in answer.
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
        exchange = self.exchanges.get(stream_id) if self.exchanges else None
        if exchange is not None:
            # The client no longer wants the response (QUIC reset our sending half).
            if not exchange.body_ended:
                self._safe_stop(stream_id, ErrorCodes.H3_REQUEST_CANCELLED)
            self._fail_exchange(
                exchange, f"the client stopped the response on stream {stream_id}", error_code
            )
        if stream_id in self._http3:
            self.quic.h3_stop_sending(stream_id, error_code)
        elif self._may_be_unclaimed_peer_bidi(stream_id):
            # A STOP_SENDING that overtook the stream's first bytes: apply it once the
            # stream is claimed (QUIC already reset our sending half).
            self._early_stops[stream_id] = error_code

    def _may_be_unclaimed_peer_bidi(self, stream_id: int) -> bool:
        return (
            (stream_id & 1) != (0 if self.is_client else 1)
            and not _unidirectional(stream_id)
            and stream_id not in self._peer_bidi
            and len(self._early_stops) < _MAX_EARLY_STOPS
        )

    # ------------------------------------------------------------------ stream halves

    # ------------------------------------------------------------------ sessions

    # ------------------------------------------------------------------ streams and datagrams
