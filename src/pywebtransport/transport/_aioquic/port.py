"""The core's `QuicPort` over aioquic: `AioquicPort`, and `feed_event` for QUIC's events.

The WebTransport core (`transport/_core/`) imports no QUIC library; this is
the one place that connects it to aioquic's `QuicConnection` and
`H3Connection`. The hot commands are aioquic's own bound methods; the queries
go to the feature-checked functions of `queries` and `connection`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from aioquic.h3 import events as h3e
from aioquic.h3.connection import H3Connection
from aioquic.quic import events as qe
from aioquic.quic.connection import QuicConnection

from .._core.quic import H3Event, RequestData, RequestHeaders, StreamSignal
from .connection import (
    forget_stream_window,
    manage_stream_window,
    release_early_streams,
    set_stream_window,
)
from .features import REFUSALS, enabled
from .h3 import malformed_requests, new_h3
from .queries import (
    can_open_stream,
    nothing_sent,
    pending_datagrams,
    reset_final_size,
    send_finished,
    sent_offset,
)

if TYPE_CHECKING:
    from .._core.protocol import WebTransportCore

__all__ = ["AioquicPort", "feed_event"]


class AioquicPort:
    """The QUIC connection and its HTTP/3 layer as the core uses them (`QuicPort`).

    Args:
        quic: The aioquic connection (client or server side).

    Attributes:
        quic: The aioquic connection.
        h3: Its HTTP/3 layer, once the core started it.
    """

    __slots__ = (
        "h3",
        "is_client",
        "quic",
        "refusals",
        "reset_stream",
        "send_datagram_frame",
        "send_stream_data",
        "stop_stream",
    )

    h3: H3Connection
    send_stream_data: Callable[[int, bytes | memoryview, bool], None]
    reset_stream: Callable[[int, int], None]
    stop_stream: Callable[[int, int], None]
    send_datagram_frame: Callable[[bytes | bytearray | memoryview], None]

    def __init__(self, quic: QuicConnection) -> None:
        self.quic = quic
        self.is_client: bool = quic.configuration.is_client
        self.refusals = REFUSALS
        # The hot commands are aioquic's bound methods: no call layer per chunk.
        # aioquic's annotations say bytes; it takes any buffer (it slices and copies).
        self.send_stream_data = cast(Any, quic.send_stream_data)
        self.reset_stream = quic.reset_stream
        self.stop_stream = quic.stop_stream
        self.send_datagram_frame = cast(Any, quic.send_datagram_frame)

    # ------------------------------------------------------------------ commands

    def start_http3(self, settings: dict[int, int]) -> None:
        """Create the H3Connection, announcing `settings` beyond aioquic's own."""
        self.h3 = new_h3(self.quic, settings)

    def next_stream_id(self, unidirectional: bool) -> int:
        """Return the id of the next stream this side opens."""
        return self.quic.get_next_available_stream_id(is_unidirectional=unidirectional)

    def close(self, error_code: int, reason: str) -> None:
        """Close the connection with CONNECTION_CLOSE."""
        self.quic.close(error_code=error_code, reason_phrase=reason)

    def send_headers(
        self, stream_id: int, headers: Sequence[tuple[bytes, bytes]], end_stream: bool
    ) -> None:
        """Send a HEADERS frame on a request stream."""
        self.h3.send_headers(stream_id, list(headers), end_stream=end_stream)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        """Send DATA on a request stream, or only its FIN."""
        self.h3.send_data(stream_id, data, end_stream=end_stream)

    def set_stream_window(self, stream_id: int, limit: int) -> None:
        """Grant the peer credit on a managed stream up to `limit`."""
        set_stream_window(self.quic, stream_id, limit)

    def forget_stream_window(self, stream_id: int) -> None:
        """Stop managing a stream's receive window."""
        forget_stream_window(self.quic, stream_id)

    def protocol_negotiated(self) -> None:
        """Let a server's control and QPACK streams leave in its first flight."""
        release_early_streams(self.quic)

    # ------------------------------------------------------------------ HTTP/3 input

    def h3_stream_data(self, stream_id: int, data: bytes, fin: bool) -> list[H3Event]:
        """Hand the H3Connection a stream's bytes; return its request events."""
        received = self.h3.handle_event(
            qe.StreamDataReceived(data=data, end_stream=fin, stream_id=stream_id)
        )
        events: list[H3Event] = []
        for event in received:
            if isinstance(event, h3e.HeadersReceived):
                events.append(RequestHeaders(event.stream_id, event.headers, event.stream_ended))
            elif isinstance(event, h3e.DataReceived):
                events.append(RequestData(event.stream_id, event.data, event.stream_ended))
            elif isinstance(event, h3e.WebTransportStreamDataReceived):
                events.append(StreamSignal(event.stream_id))
        return events

    def h3_stream_reset(self, stream_id: int, error_code: int) -> None:
        """Tell the H3Connection that the peer reset one of its streams."""
        self.h3.handle_event(qe.StreamReset(error_code=error_code, stream_id=stream_id))

    def h3_stop_sending(self, stream_id: int, error_code: int) -> None:
        """Tell the H3Connection that the peer stopped one of its streams."""
        self.h3.handle_event(qe.StopSendingReceived(error_code=error_code, stream_id=stream_id))

    def malformed_requests(self) -> list[int]:
        """Return (and forget) the request streams found malformed since the last call."""
        return list(malformed_requests(self.h3))

    # ------------------------------------------------------------------ queries

    @property
    def peer_settings(self) -> dict[int, int] | None:
        """The peer's HTTP/3 SETTINGS, or None before they arrived."""
        return self.h3.received_settings

    def manage_stream_window(self, stream_id: int) -> bool:
        """Take over a stream's receive window (False when the feature is off)."""
        return manage_stream_window(self.quic, stream_id)

    def can_open_stream(self, unidirectional: bool) -> bool:
        """Whether the peer's stream limit lets this side open another stream."""
        return can_open_stream(self.quic, unidirectional)

    def pending_datagrams(self) -> int:
        """Datagrams handed to aioquic and not sent yet."""
        return pending_datagrams(self.quic)

    @property
    def tracks_delivery(self) -> bool:
        """Whether `send_finished` can tell (the `stream_state` feature)."""
        return enabled("stream_state")

    def nothing_sent(self, stream_id: int) -> bool:
        """Whether a stream has bytes queued of which none has left yet."""
        return nothing_sent(self.quic, stream_id)

    def send_finished(self, stream_id: int) -> bool:
        """Whether the peer acknowledged a finished or reset stream."""
        return send_finished(self.quic, stream_id)

    def sent_offset(self, stream_id: int) -> int | None:
        """How far a stream's data left; None when unknown."""
        return sent_offset(self.quic, stream_id)

    def reset_final_size(self, stream_id: int) -> int | None:
        """The final size of a peer's RESET_STREAM; None when unknown."""
        return reset_final_size(self.quic, stream_id)


def feed_event(core: WebTransportCore, event: qe.QuicEvent) -> None:
    """Hand one of aioquic's QUIC events to the core.

    Args:
        core: The connection's WebTransport core.
        event: An event from `QuicConnection.next_event()`; those the core
            has no use for (handshake, connection ids, pings) are ignored.
    """
    if isinstance(event, qe.StreamDataReceived):
        core.receive_stream_data(event.stream_id, event.data, event.end_stream)
    elif isinstance(event, qe.DatagramFrameReceived):
        core.receive_datagram(event.data)
    elif isinstance(event, qe.StreamReset):
        core.receive_reset(event.stream_id, event.error_code)
    elif isinstance(event, qe.StopSendingReceived):
        core.receive_stop_sending(event.stream_id, event.error_code)
    elif isinstance(event, qe.ProtocolNegotiated):
        core.protocol_negotiated()
    elif isinstance(event, qe.HandshakeCompleted):
        core.handshake_completed()
    elif isinstance(event, qe.ConnectionTerminated):
        core.terminate(event.error_code, event.reason_phrase)
