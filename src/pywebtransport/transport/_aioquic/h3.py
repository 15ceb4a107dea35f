"""aioquic's H3Connection as the library uses it: static QPACK, SETTINGS, malformed requests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Final, cast

import pylsqpack
from aioquic.h3 import events as h3e
from aioquic.h3.connection import H3Connection, MessageError
from aioquic.quic.connection import QuicConnection

from .features import enabled

# --------------------------------------------------------------------------- H3Connection


class _StaticTableEncoder:
    """A QPACK encoder that never inserts into the dynamic table.

    We encode one CONNECT request or response per session, so a dynamic table
    saves a few bytes per session, while lsqpack would keep encoder state sized
    to the peer's table (about 4.5 KiB per connection for 4096 bytes). RFC 9204
    section 3.2.3 lets the encoder choose any capacity up to the peer's
    maximum, 0 included, and header blocks referencing only the static table
    never block a stream. A wrapper because `pylsqpack.Encoder` cannot be
    subclassed; aioquic only calls these three methods.
    """

    __slots__ = ("_encoder",)

    def __init__(self, encoder: pylsqpack.Encoder) -> None:
        self._encoder = encoder

    def apply_settings(self, max_table_capacity: int, blocked_streams: int) -> bytes:
        settings: bytes = self._encoder.apply_settings(max_table_capacity=0, blocked_streams=0)
        return settings

    def encode(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
        encoded: tuple[bytes, bytes] = self._encoder.encode(stream_id, headers)
        return encoded

    def feed_decoder(self, data: bytes) -> None:
        self._encoder.feed_decoder(data)


QPACK_MAX_TABLE_CAPACITY: Final = 0x01
QPACK_BLOCKED_STREAMS: Final = 0x07
_SET_CAPACITY_ZERO: Final = 0x20
"""The one encoder-stream instruction valid towards a table of capacity 0 (RFC 9204 4.3.1)."""


class _StaticTableDecoder:
    """A QPACK decoder for peers told that our dynamic table holds nothing.

    With SETTINGS_QPACK_MAX_TABLE_CAPACITY and SETTINGS_QPACK_BLOCKED_STREAMS
    at 0 (RFC 9204 section 5), a peer's header blocks reference only the
    static table and can never block, so decoding one keeps no state: a single
    lsqpack decoder serves every connection (lsqpack's is about 4.4 KiB, each
    connection had its own). The encoder stream carries nothing but "Set
    Dynamic Table Capacity 0"; it is parsed here rather than in the shared
    decoder, so no connection's partial instruction meets another's. A header
    block that fails to decode replaces the shared decoder.
    """

    __slots__ = ()

    _shared: ClassVar[pylsqpack.Decoder | None] = None

    def feed_encoder(self, data: bytes) -> list[int]:
        if data.strip(bytes((_SET_CAPACITY_ZERO,))):
            raise pylsqpack.EncoderStreamError("dynamic table instruction with capacity 0")
        return []

    def feed_header(self, stream_id: int, data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        decoder = _StaticTableDecoder._shared
        if decoder is None:
            decoder = _StaticTableDecoder._shared = pylsqpack.Decoder(0, 0)
        try:
            decoded: tuple[bytes, list[tuple[bytes, bytes]]] = decoder.feed_header(stream_id, data)
        except BaseException:
            _StaticTableDecoder._shared = None
            raise
        return decoded

    def resume_header(self, stream_id: int) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        # Only a blocked stream is resumed, and none can block.
        raise pylsqpack.DecompressionFailed("no blocked stream to resume")

    def cancel_stream(self, stream_id: int) -> bytes:
        return b""


_STATIC_DECODER: Final = _StaticTableDecoder()


def _h3_init(self: Any, quic: QuicConnection, extra_settings: dict[int, int]) -> None:
    self.wt_settings = extra_settings
    self.wt_malformed = []
    H3Connection.__init__(self, quic, enable_webtransport=True)
    if enabled("qpack_static"):
        # SETTINGS already left with capacity 0 (see `_get_local_settings`).
        self._encoder = _StaticTableEncoder(self._encoder)
        self._decoder = _STATIC_DECODER
        self._max_table_capacity = self._blocked_streams = 0


def _get_local_settings(self: Any) -> dict[int, int]:
    settings = H3Connection._get_local_settings(self)
    if enabled("qpack_static"):
        settings[QPACK_MAX_TABLE_CAPACITY] = settings[QPACK_BLOCKED_STREAMS] = 0
    if enabled("h3_settings"):
        settings.update(self.wt_settings)
    return settings


def _receive_request_or_push_data(
    self: Any, stream: Any, data: bytes, stream_ended: bool
) -> list[h3e.H3Event]:
    try:
        return H3Connection._receive_request_or_push_data(self, stream, data, stream_ended)
    except MessageError:
        if self._is_client:
            raise
        # RFC 9114 section 4.1.2: a malformed request is a stream error, not a
        # connection error (aioquic would close every session on the connection).
        stream.buffer = b""
        stream.receiving_ended = stream.sending_ended = True
        self.wt_malformed.append(stream.stream_id)
        return []


_h3_class: type[H3Connection] | None = None


def _h3_connection_class() -> type[H3Connection]:
    global _h3_class
    if _h3_class is None:
        namespace: dict[str, Any] = {
            "__slots__": ("wt_malformed", "wt_settings"),
            "__module__": __name__,
            "__doc__": "aioquic's H3Connection with the enabled features of this package.",
            "__init__": _h3_init,
        }
        if enabled("h3_settings") or enabled("qpack_static"):
            namespace["_get_local_settings"] = _get_local_settings
        if enabled("malformed_request"):
            namespace["_receive_request_or_push_data"] = _receive_request_or_push_data
        _h3_class = type("H3Connection", (H3Connection,), namespace)
    return _h3_class


def new_h3(quic: QuicConnection, settings: dict[int, int]) -> H3Connection:
    """Create the `H3Connection` of a QUIC connection.

    Args:
        quic: The QUIC connection.
        settings: SETTINGS to announce beyond aioquic's own (every dialect's).

    Returns:
        The HTTP/3 layer (its control streams are opened at once).
    """
    return cast(Callable[..., H3Connection], _h3_connection_class())(quic, settings)


def malformed_requests(h3: H3Connection) -> Iterator[int]:
    """Yield (and forget) the request streams found malformed since the last call.

    Args:
        h3: An H3Connection from `new_h3`.

    Yields:
        Stream ids whose requests were malformed (the caller resets them).
    """
    pending: list[int] | None = getattr(h3, "wt_malformed", None)
    while pending:
        yield pending.pop(0)
