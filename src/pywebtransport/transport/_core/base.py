"""The shared state of `WebTransportCore` and the few writes every part of it makes.

`WebTransportCore` is assembled from layers, one module per concern, each a
subclass of the one before: this base (state and wire helpers), `datagrams`,
`halves` (stream reads and writes), `held` (peer streams that arrive before
their session), `sessions` (session life cycle), `exchanges` (plain HTTP/3
requests) and `protocol` (what the peer
sends: HTTP/3, capsules, resets). A layer calls only itself and the layers
below it; the one call upward (`_deliver`) is declared where it is used.
"""

from __future__ import annotations

import contextlib
from collections import deque

from ...shared.types import ConnectionState
from ...shared.utils import encode_varint
from .capsules import encode_capsule
from .dialects import Limits
from .events import ProtocolEvent
from .flow import Capsule
from .quic import QuicPort
from .records import ExchangeRecord, HeldStream, SessionRecord, StreamIds, StreamRecord


class ProtocolBase:
    """State shared by the layers of `WebTransportCore` (see the module)."""

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
        "close_reason",
        "datagram_high_water_mark",
        "datagram_max_age",
        "exchanges",
        "is_client",
        "limits",
        "max_capsule_size",
        "max_field_section_size",
        "max_http_requests",
        "now",
        "quic",
        "serve_http",
        "sessions",
        "state",
        "streams",
        "supported_protocols",
        "want_transmit",
    )

    quic: QuicPort
    limits: Limits
    is_client: bool
    max_capsule_size: int
    max_field_section_size: int
    datagram_high_water_mark: int
    datagram_max_age: float | None
    now: float
    state: ConnectionState
    close_reason: tuple[int, str] | None
    sessions: dict[int, SessionRecord]
    exchanges: dict[int, ExchangeRecord]
    serve_http: bool
    max_http_requests: int
    streams: dict[int, StreamRecord]
    supported_protocols: tuple[str, ...]
    want_transmit: bool
    _stream_window: int
    _half_window: int
    _max_held_streams: int
    _max_held_per_session: int
    _max_held_bytes: int
    _datagram_backlog: dict[int, SessionRecord]
    _events: deque[ProtocolEvent]
    _settings_seen: bool
    _http3: set[int]
    _refused: dict[int, None]
    _peeking: dict[int, bytearray]
    _held: dict[int, dict[int, HeldStream]]
    _held_count: int
    _peer_bidi: StreamIds
    _peer_uni: StreamIds
    _ended: dict[int, None]
    _early_stops: dict[int, int]
    _closed_by_capsule: dict[int, None]
    _unread: dict[int, tuple[SessionRecord, int, int]]
    _unacked: dict[int, SessionRecord]
    _unacked_prune_at: int

    def _safe_reset(self, stream_id: int, code: int) -> None:
        with contextlib.suppress(*self.quic.refusals):
            self.quic.reset_stream(stream_id, code)
        self.want_transmit = True

    def _safe_stop(self, stream_id: int, code: int) -> None:
        with contextlib.suppress(*self.quic.refusals):
            self.quic.stop_stream(stream_id, code)
        self.want_transmit = True

    def _refuse(self, stream_id: int, unidirectional: bool, code: int) -> None:
        self._refused[stream_id] = None
        self._safe_stop(stream_id, code)
        if not unidirectional:
            self._safe_reset(stream_id, code)

    def _send_capsules(self, session: SessionRecord, capsules: list[Capsule]) -> None:
        for capsule_type, value in capsules:
            self._send_raw_capsule(session, encode_capsule(capsule_type, encode_varint(value)))

    def _send_raw_capsule(self, session: SessionRecord, capsule: bytes) -> None:
        if session.fin_sent or session.is_closed:
            return
        with contextlib.suppress(*self.quic.refusals):  # the stream may have been reset meanwhile
            self.quic.send_data(session.session_id, capsule, False)
            self.want_transmit = True
