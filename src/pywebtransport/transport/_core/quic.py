"""What the core needs from the QUIC connection and the HTTP/3 layer below it: `QuicPort`.

The core never imports aioquic. It is handed an object with this interface at
construction; the fence (`transport/_aioquic/port.py`) implements it over
aioquic's `QuicConnection` and `H3Connection`, and a core test implements it
with a few dictionaries (`tests/unit/test_core_port.py`).

Division of labour: HTTP/3 (control streams, QPACK, request streams) stays
below the port; the core hands it the bytes of streams it does not claim for
WebTransport and gets back the request events below. Commands leave their
bytes queued on the port; the I/O layer transmits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["H3Event", "QuicPort", "RequestData", "RequestHeaders", "StreamSignal"]


@dataclass(slots=True)
class RequestHeaders:
    """A HEADERS frame on a request stream (a CONNECT, its answer, or trailers)."""

    stream_id: int
    headers: list[tuple[bytes, bytes]]
    ended: bool
    """The peer finished the stream with it."""


@dataclass(slots=True)
class RequestData:
    """DATA on a request stream: for a CONNECT stream, capsules."""

    stream_id: int
    data: bytes
    ended: bool


@dataclass(slots=True)
class StreamSignal:
    """A WEBTRANSPORT_STREAM signal after a request's HEADERS: a protocol error."""

    stream_id: int


H3Event = RequestHeaders | RequestData | StreamSignal
"""What the HTTP/3 layer reports from the bytes of a request or control stream."""


class QuicPort(Protocol):
    """The QUIC connection (and its HTTP/3 layer) as the core uses it.

    Commands raise one of `refusals` when QUIC refuses them (a stream reset
    or finished meanwhile, a stream unknown); the core expects those and
    nothing else. The queries answer None (or say, `tracks_delivery`) where
    the implementation cannot know, its internals being different: the core
    then falls back to a bound.

    The four hot commands are attributes (bound methods, no call layer), so
    they are always called with every argument, positionally.
    """

    is_client: bool
    refusals: tuple[type[Exception], ...]
    """Exceptions a command raises when QUIC or HTTP/3 refuses it."""

    send_stream_data: Callable[[int, bytes | memoryview, bool], None]
    """(stream id, data, end stream): queue data on a stream's sending half."""
    reset_stream: Callable[[int, int], None]
    """(stream id, error code): RESET_STREAM."""
    stop_stream: Callable[[int, int], None]
    """(stream id, error code): STOP_SENDING."""
    send_datagram_frame: Callable[[bytes | bytearray | memoryview], None]
    """(payload): a DATAGRAM frame."""

    # ------------------------------------------------------------------ commands

    def start_http3(self, settings: dict[int, int]) -> None:
        """Start the HTTP/3 layer: open its control streams, announcing `settings`.

        Called once, by the core's constructor, before any other method.
        """
        ...

    def next_stream_id(self, unidirectional: bool) -> int:
        """Return the id of the next stream this side opens (opening it on first data)."""
        ...

    def close(self, error_code: int, reason: str) -> None:
        """Close the connection with CONNECTION_CLOSE."""
        ...

    def send_headers(
        self, stream_id: int, headers: Sequence[tuple[bytes, bytes]], end_stream: bool
    ) -> None:
        """Send a HEADERS frame on a request stream."""
        ...

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        """Send DATA (capsules) on a request stream, or only its FIN."""
        ...

    def set_stream_window(self, stream_id: int, limit: int) -> None:
        """Grant the peer credit on a stream up to `limit` (MAX_STREAM_DATA)."""
        ...

    def forget_stream_window(self, stream_id: int) -> None:
        """Drop the core's management of a stream's window (the stream ended)."""
        ...

    def protocol_negotiated(self) -> None:
        """The server's ALPN was negotiated: its early streams may leave."""
        ...

    # ------------------------------------------------------------------ HTTP/3 input

    def h3_stream_data(self, stream_id: int, data: bytes, fin: bool) -> list[H3Event]:
        """Hand HTTP/3 the bytes of a stream the core does not claim; return its events."""
        ...

    def h3_stream_reset(self, stream_id: int, error_code: int) -> None:
        """Tell HTTP/3 that the peer reset one of its streams."""
        ...

    def h3_stop_sending(self, stream_id: int, error_code: int) -> None:
        """Tell HTTP/3 that the peer stopped one of its streams."""
        ...

    def malformed_requests(self) -> Iterable[int]:
        """Return (and forget) request streams HTTP/3 found malformed since the last call."""
        ...

    # ------------------------------------------------------------------ queries

    @property
    def peer_settings(self) -> dict[int, int] | None:
        """The peer's HTTP/3 SETTINGS, or None before they arrived."""
        ...

    def manage_stream_window(self, stream_id: int) -> bool:
        """Take over a stream's receive window; False when QUIC keeps managing it."""
        ...

    def can_open_stream(self, unidirectional: bool) -> bool:
        """Whether the peer's QUIC stream limit lets this side open another stream."""
        ...

    def pending_datagrams(self) -> int:
        """Datagrams handed over but not sent yet (0 when unknown)."""
        ...

    @property
    def tracks_delivery(self) -> bool:
        """Whether `send_finished` can tell (else a graceful close waits for its bound)."""
        ...

    def nothing_sent(self, stream_id: int) -> bool:
        """Whether a stream has bytes queued of which none has left yet (True when unknown)."""
        ...

    def send_finished(self, stream_id: int) -> bool:
        """Whether the peer acknowledged a finished or reset stream (False when unknowable)."""
        ...

    def sent_offset(self, stream_id: int) -> int | None:
        """How far a stream's data left (its final size once reset); None when unknown."""
        ...

    def reset_final_size(self, stream_id: int) -> int | None:
        """The final size of a peer's RESET_STREAM on a stream; None when unknown."""
        ...
