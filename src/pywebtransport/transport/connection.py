"""`WebTransportConnection`: one QUIC connection carrying WebTransport sessions.

This module only pumps: datagrams in, `WebTransportProtocol` events out to
sessions and streams, bytes transmitted at most once per loop iteration. The
protocol logic itself lives in `_protocol.py`, free of asyncio.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any, ClassVar, cast

from aioquic._buffer import Buffer  # aioquic.buffer re-exports it without __all__
from aioquic.asyncio.protocol import QuicConnectionProtocol, QuicStreamHandler
from aioquic.h3.connection import MessageError, validate_header_name, validate_header_value
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionId
from aioquic.quic.packet import QuicFrameType
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketPacer
from aioquic.quic.stream import QuicStream
from aioquic.tls import Epoch

from ..shared.config import ClientConfig, ServerConfig
from ..shared.constants import ErrorCodes
from ..shared.events import EventEmitter, EventType
from ..shared.exceptions import (
    ClientError,
    ConnectionError,
    SessionClosedError,
    StreamError,
    TimeoutError,
)
from ..shared.types import Address, ConnectionState
from . import _protocol as wp
from .session import SessionCloseInfo, WebTransportSession
from .stream import WebTransportReceiveStream, WebTransportSendStream, WebTransportStream

__all__ = ["WebTransportConnection"]

logger = logging.getLogger("pywebtransport.connection")

_handles = itertools.count(1)
_MAX_STREAM_DATA_FRAME_CAPACITY = 1 + 8 + 8
_MIN_STREAM_FRAME_HEADER = 4

AnyStream = WebTransportReceiveStream | WebTransportSendStream


_FrameHandler = tuple[Callable[..., None], frozenset[Epoch]]

_ACTIVE_CONNECTION_ID_LIMIT = 2
"""Connection ids each side keeps issued to the other (aioquic: 8).

2 is the minimum RFC 9000 (section 18.2) allows and the value peers assume
when none is sent: the id in use plus one spare, enough to move to a new
path (connection migration, NAT rebinding). A retired id is replaced at
once, so the spare comes back. Each id costs an object with its stateless
reset token on both sides, and a routing entry on a server.
"""


class _ConnectionExtras:
    """What the library keeps per `QuicConnection`, in the slot of aioquic's frame-handler table.

    aioquic gives every connection its own dict of 33 bound methods, each
    with its own frozenset of allowed epochs (about 7 KiB per connection),
    and only ever reads it as `handlers[frame_type]` (a KeyError there means
    an unknown frame type). `__getitem__` answers the same from one table
    shared by all connections, binding the handler on lookup.

    `consumed` lives here rather than on the connection because aioquic's
    instance dict is full at its 85 keys: one attribute more doubles it
    (1.5 to 3.3 KiB per connection).
    """

    __slots__ = ("_quic", "consumed")

    _table: ClassVar[dict[int, _FrameHandler]] = {}

    def __init__(self, quic: QuicConnection, handlers: dict[int, _FrameHandler]) -> None:
        self._quic = quic
        self.consumed: dict[int, int] = {}
        """Bytes the reader took, per WebTransport stream credited by its reader."""
        if not _ConnectionExtras._table:
            # aioquic's table is the same for every connection; epoch sets are interned.
            epoch_sets: dict[frozenset[Epoch], frozenset[Epoch]] = {}
            _ConnectionExtras._table = {
                frame_type: (
                    cast(Any, handler).__func__,
                    epoch_sets.setdefault(epochs, epochs),
                )
                for frame_type, (handler, epochs) in handlers.items()
            }

    def __getitem__(self, frame_type: int) -> _FrameHandler:
        function, epochs = self._table[frame_type]
        return function.__get__(self._quic), epochs


class _QuicConnection(QuicConnection):
    """`QuicConnection` whose WebTransport streams get credit as the application reads.

    aioquic doubles a stream's receive window whenever half of it has
    arrived, whatever the application consumed, so a slow reader would buffer
    without bound. For streams registered in `consumed`, the window instead
    ends `quic_stream_receive_window` bytes past what the reader took (see
    `WebTransportConnection._consumed`).
    """

    # aioquic's `self.__frame_handlers` (name-mangled), replaced by `adopt_quic_connection`.
    _QuicConnection__frame_handlers: _ConnectionExtras

    @property
    def consumed(self) -> dict[int, int]:
        """Bytes the reader took, per stream whose window follows its reader."""
        return self._QuicConnection__frame_handlers.consumed

    def _replenish_connection_ids(self) -> None:
        # aioquic keeps up to 8 connection ids issued to the peer (a server also
        # routes each one: an entry in QuicServer's table). See
        # `_ACTIVE_CONNECTION_ID_LIMIT` for why 2 are enough.
        wanted = min(_ACTIVE_CONNECTION_ID_LIMIT, self._remote_active_connection_id_limit)
        while len(self._host_cids) < wanted:
            self._host_cids.append(
                QuicConnectionId(
                    cid=os.urandom(self._configuration.connection_id_length),
                    sequence_number=self._host_cid_seq,
                    stateless_reset_token=os.urandom(16),
                )
            )
            self._host_cid_seq += 1

    def _write_stream_limits(
        self, builder: QuicPacketBuilder, space: Any, stream: QuicStream
    ) -> None:
        # Called for every open stream each time a packet is built, so the
        # common nothing-to-send case is decided from two attributes. The
        # window of a WebTransport stream is moved by its reader (see
        # `WebTransportConnection._consumed`), never doubled here.
        local = stream.max_stream_data_local
        unsent = stream.max_stream_data_local_sent != local
        if not unsent and (not local or stream.receiver.highest_offset * 2 <= local):
            return
        if stream.stream_id not in self.consumed:
            super()._write_stream_limits(builder, space, stream)
            return
        if not unsent:
            return
        buf = builder.start_frame(
            QuicFrameType.MAX_STREAM_DATA,
            capacity=_MAX_STREAM_DATA_FRAME_CAPACITY,
            handler=self._on_max_stream_data_delivery,
            handler_args=(stream,),
        )
        buf.push_uint_var(stream.stream_id)
        buf.push_uint_var(local)
        stream.max_stream_data_local_sent = local

    def _write_stream_frame(
        self, builder: QuicPacketBuilder, space: Any, stream: QuicStream, max_offset: int
    ) -> int:
        # aioquic offers the packet to every stream with data queued, even once
        # it is full: with 1,000 busy streams that is 1,000 calls per packet.
        # Below 4 bytes not even a frame header fits (aioquic would find the
        # same and return 0).
        if builder.remaining_flight_space < _MIN_STREAM_FRAME_HEADER:
            return 0
        return super()._write_stream_frame(builder, space, stream, max_offset)


_PACING_BURST_INTERVAL = 0.002
_PACING_MIN_BURST_PACKETS = 10
_PACING_MAX_BURST_PACKETS = 256
_PACING_MIN_PACKET_TIME = 1e-6


class _BurstPacer(QuicPacketPacer):
    """aioquic's token-bucket pacer with a burst sized for event-loop clocks.

    aioquic caps the bucket at 16 packets' worth of *time* (less once the
    congestion window grows), and its packet time never drops below 1 µs.
    The bucket only refills when the loop clock moves, and uvloop's clock moves
    in 1 ms steps: once the window passes about 1.3 MB at the 1 ms RTT floor,
    the bucket holds a single packet and a bulk sender is held to one packet
    per millisecond (~1.8 MiB/s) for the rest of the connection, spinning on
    a timer that is always due. Here the bucket holds what the pacing rate
    allows over 2 ms, between 10 and 256 packets (the same shape as quinn's
    pacer), counted in packet times so the 1 µs floor cannot shrink it.
    """

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        rate = congestion_window / max(smoothed_rtt, _PACING_MIN_PACKET_TIME)
        packet_time = max(_PACING_MIN_PACKET_TIME, min(self._max_datagram_size / rate, 1.0))
        burst = rate * _PACING_BURST_INTERVAL / self._max_datagram_size
        burst = min(max(burst, _PACING_MIN_BURST_PACKETS), _PACING_MAX_BURST_PACKETS)
        self.packet_time = packet_time
        self.bucket_max = burst * packet_time
        if self.bucket_time > self.bucket_max:
            self.bucket_time = self.bucket_max


_RECEIVE_BATCH = 32
_MAX_UDP_PAYLOAD = 65535


def selector_socket(transport: asyncio.BaseTransport) -> socket.socket | None:
    """Return the socket of an asyncio selector datagram transport, else None.

    asyncio's selector loop reads one datagram per loop iteration; uvloop reads
    several per poll and hides its socket, so this is None there.

    Args:
        transport: A datagram transport.
    """
    sock = getattr(transport, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def drain_datagrams(sock: socket.socket, receive: Callable[[bytes, Any], None]) -> None:
    """Hand `receive` the datagrams already queued on a non-blocking socket.

    Reading them in the same loop iteration lets one transmit (one ACK) and one
    reader wake-up serve the whole batch, as under uvloop.

    Args:
        sock: The non-blocking UDP socket.
        receive: Called with `(data, addr)` for each datagram.
    """
    for _ in range(_RECEIVE_BATCH - 1):
        try:
            data, addr = sock.recvfrom(_MAX_UDP_PAYLOAD)
        except OSError:
            # Nothing queued (BlockingIOError) or an ICMP error for an earlier
            # send: either way the loop's own reader takes over again.
            return
        receive(data, addr)


class _ClosedFlag:
    """Stands in for the `asyncio.Event` aioquic's protocol sets when the connection ends.

    An `asyncio.Event` allocates its waiter deque up front (about 0.8 KiB per
    connection), but only aioquic's `wait_closed()` ever waits on it, and the
    library never calls that: the deque is made on the first wait instead.
    """

    __slots__ = ("_event", "_set")

    def __init__(self) -> None:
        self._set = False
        self._event: asyncio.Event | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> bool:
        if self._set:
            return True
        if self._event is None:
            self._event = asyncio.Event()
        return await self._event.wait()


class _Pump(QuicConnectionProtocol):
    """The asyncio datagram protocol of one connection."""

    owner: WebTransportConnection
    owned_socket: socket.socket | None = None
    """A client's own socket under asyncio's selector loop, drained in batches."""

    def __init__(
        self, quic: QuicConnection, stream_handler: QuicStreamHandler | None = None
    ) -> None:
        super().__init__(quic, stream_handler)
        self._closed = cast(asyncio.Event, _ClosedFlag())

    def quic_event_received(self, event: qe.QuicEvent) -> None:
        self.owner._on_quic_event(event)

    def _receive_one(self, data: bytes, addr: Any) -> None:
        self._quic.receive_datagram(data, addr, now=self._loop.time())
        self._process_events()

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        self._receive_one(cast(bytes, data), addr)
        if self.owned_socket is not None:
            drain_datagrams(self.owned_socket, self._receive_one)
        owner = self.owner
        if owner._blocked or owner._credit_waiters:
            owner._wake_blocked()
        # Deferred, not immediate: readers woken above run first, so an answer
        # they write leaves in the same packet as the ACK, and datagrams that
        # arrive in one loop iteration (uvloop reads them in batches) share one
        # transmit.
        self._transmit_soon()

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._on_transport_lost()


def build_quic_configuration(
    config: ClientConfig | ServerConfig, *, is_client: bool, server_name: str | None = None
) -> QuicConfiguration:
    """Translate a pywebtransport config into aioquic's `QuicConfiguration`.

    Args:
        config: The client or server configuration.
        is_client: Which side the connection is.
        server_name: SNI / verification name (client).

    Returns:
        The aioquic configuration (certificates are loaded by the caller).
    """
    quic_config = QuicConfiguration(
        is_client=is_client,
        alpn_protocols=list(config.alpn_protocols),
        congestion_control_algorithm=config.congestion_control_algorithm,
        idle_timeout=config.connection_idle_timeout,
        max_data=config.quic_receive_window,
        max_stream_data=config.quic_stream_receive_window,
        max_datagram_size=config.max_datagram_size,
        max_datagram_frame_size=65536,
        server_name=server_name,
        verify_mode=config.verify_mode,
    )
    if config.secrets_log_file:
        # Line-buffered so tools reading the key log live see each secret at once;
        # closed by whoever owns the configuration (see `close_secrets_log`).
        quic_config.secrets_log_file = open(config.secrets_log_file, "a", buffering=1)  # noqa: SIM115
    if config.qlog_dir:
        from aioquic.quic.logger import QuicFileLogger

        quic_config.quic_logger = QuicFileLogger(config.qlog_dir)
    return quic_config


_UDP_BUFFER_BYTES = 4 * 1024 * 1024
"""Socket buffers asked for; the kernel caps them at net.core.[rw]mem_max."""


def tune_udp_socket(transport: asyncio.BaseTransport) -> None:
    """Enlarge a UDP socket's kernel buffers.

    The Linux default (about 208 KiB) overflows during one congestion window of
    a fast sender, and every datagram dropped there costs a QUIC loss recovery:
    bulk transfers then run an order of magnitude slower (see BENCHMARK.md).

    Args:
        transport: The datagram transport whose socket to tune.
    """
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, _UDP_BUFFER_BYTES)


def close_secrets_log(quic_config: QuicConfiguration) -> None:
    """Close the TLS key log file that `build_quic_configuration` opened, if any.

    Args:
        quic_config: The configuration it was opened for.
    """
    log_file = quic_config.secrets_log_file
    if log_file is not None:
        quic_config.secrets_log_file = None
        log_file.close()


def adopt_quic_connection(quic: QuicConnection, config: ClientConfig | ServerConfig) -> None:
    """Give a fresh `QuicConnection` the library's flow control and stream limits.

    aioquic's server creates its `QuicConnection` objects itself, so instead of
    constructing a subclass the class of the new object is switched to
    `_QuicConnection` (which adds no constructor state: its own is kept in
    `_ConnectionExtras`) before any packet is processed.

    Args:
        quic: A connection that has not sent or received anything yet.
        config: The pywebtransport configuration.
    """
    quic.__class__ = _QuicConnection
    adopted = cast(_QuicConnection, quic)
    # No new instance attributes here: see `_ConnectionExtras`.
    handlers = quic.__dict__["_QuicConnection__frame_handlers"]
    adopted._QuicConnection__frame_handlers = _ConnectionExtras(quic, handlers)
    # Announced in the transport parameters: the peer issues us at most this many ids.
    adopted._local_active_connection_id_limit = _ACTIVE_CONNECTION_ID_LIMIT
    adopted._loss._pacer = _BurstPacer(max_datagram_size=quic._max_datagram_size)
    # aioquic hard-codes 128 concurrent peer streams; apply the configured limits.
    # `sent` must follow: aioquic only sends MAX_STREAMS once `value` passes it, so
    # a limit below aioquic's 128 left at sent=128 would never be re-credited.
    for limit, value in (
        (quic._local_max_streams_bidi, config.quic_max_concurrent_bidi_streams),
        (quic._local_max_streams_uni, config.quic_max_concurrent_uni_streams),
    ):
        limit.value = limit.sent = value


_NO_CRYPTO_OUTPUT = Buffer(capacity=0)
"""Stands in for aioquic's per-epoch TLS output buffers once the handshake is over."""


def release_handshake_state(quic: QuicConnection) -> bool:
    """Free what a connected `QuicConnection` only needed for its TLS handshake.

    The TLS output buffers: aioquic allocates three of 16 KiB per connection
    and keeps them for its lifetime, but TLS only writes into them during the
    handshake: in aioquic's post-handshake states a client only parses
    NewSessionTicket and a server answers every message with an alert, neither
    writing output. The output of the message that completed the handshake
    (the client's Finished, a server's NewSessionTicket) was moved to the
    crypto streams by `_push_crypto_data` before `HandshakeCompleted` was
    queued, and the later `_push_crypto_data` calls (one per CRYPTO frame) only
    read and rewind the one shared empty buffer that replaces them.

    The ephemeral key-exchange keys, used only on the peer's hello (also a
    forward-secrecy gain), and on a server the key schedule (a hash context
    and the master secret): a client keeps it to derive the resumption secret
    of a NewSessionTicket, which may arrive at any time, but the server's
    post-handshake state rejects every message before using it. Packet
    protection, key updates included, lives in aioquic's `CryptoPair`s.

    A server with a session-ticket handler keeps all of it: TLS 1.3 lets a
    server send further NewSessionTickets at any time (RFC 8446 section
    4.6.1). aioquic 1.7.2 writes its only ticket before this point, but one
    written later would need the key schedule and would raise
    `BufferWriteError` out of `receive_datagram`.

    Args:
        quic: A connection whose handshake has completed.

    Returns:
        True when the state was released.
    """
    is_client = quic._is_client
    if not is_client and quic._session_ticket_handler is not None:
        return False
    buffers = quic._crypto_buffers
    for epoch in buffers:
        buffers[epoch] = _NO_CRYPTO_OUTPUT
    tls = quic.tls
    tls._ec_private_keys = []
    tls._x25519_private_key = None
    tls._x448_private_key = None
    if not is_client:
        tls.key_schedule = None
    return True


class WebTransportConnection:
    """One QUIC connection and the WebTransport sessions it carries.

    Created by `WebTransportClient` and `WebTransportServer`; users reach it
    as `session.connection`.
    """

    def __init__(
        self,
        *,
        config: ClientConfig | ServerConfig,
        quic: QuicConnection,
        pump: _Pump,
        max_sessions: int,
    ) -> None:
        self._config = config
        self._quic = quic
        self._pump = pump
        pump.owner = self
        self._loop = asyncio.get_running_loop()
        self._protocol = wp.WebTransportProtocol(
            quic,
            limits=wp.Limits(
                max_sessions=max_sessions,
                initial_max_data=config.initial_max_data,
                initial_max_streams_bidi=config.initial_max_streams_bidi,
                initial_max_streams_uni=config.initial_max_streams_uni,
            ),
            max_capsule_size=config.max_capsule_size,
            max_field_section_size=config.max_field_section_size,
        )
        self._credit = cast(_QuicConnection, quic).consumed
        self._stream_window = config.quic_stream_receive_window
        self._streams: dict[int, AnyStream] = {}
        self._sessions: dict[int, WebTransportSession] = {}
        self._blocked: set[WebTransportSendStream] = set()
        self._credit_waiters: list[asyncio.Future[None]] = []
        self._settings: asyncio.Future[dict[int, int]] = self._loop.create_future()
        self._connected: asyncio.Future[None] = self._loop.create_future()
        self._terminated: asyncio.Future[None] = self._loop.create_future()
        self._state = ConnectionState.CONNECTING
        self._close_reason: tuple[int, str] | None = None
        self._handle = next(_handles)
        self._keep_alive: asyncio.TimerHandle | None = None
        self._authority = ""
        """Client side: the `:authority` new sessions default to."""
        # Created on first use: most connections never register a listener.
        self._events: EventEmitter | None = None
        self._created_at = time.monotonic()
        self._last_activity = self._created_at
        self.on_session_request: Callable[[WebTransportSession], None] | None = None
        """Server side: called for each CONNECT request with the pending session."""
        self.on_session_closed: Callable[[WebTransportSession], None] | None = None
        """Called when any session of this connection closes."""
        self.on_closed: Callable[[WebTransportConnection], None] | None = None
        """Called once when the connection has terminated."""
        self.on_session_opened: Callable[[WebTransportSession], object] | None = None
        """Client side: called with each session `create_session()` established."""

    # ------------------------------------------------------------------ properties

    @property
    def config(self) -> ClientConfig | ServerConfig:
        """The configuration this connection was made with."""
        return self._config

    @property
    def handle(self) -> int:
        """A process-unique number identifying this connection."""
        return self._handle

    @property
    def is_client(self) -> bool:
        """True on the client side."""
        return self._protocol.is_client

    @property
    def state(self) -> ConnectionState:
        """The connection's state."""
        return self._state

    @property
    def is_connected(self) -> bool:
        """True while the connection is up."""
        return self._state is ConnectionState.CONNECTED

    @property
    def is_closing(self) -> bool:
        """True while the connection is closing."""
        return self._state is ConnectionState.CLOSING

    @property
    def is_closed(self) -> bool:
        """True once the connection has terminated."""
        return self._state is ConnectionState.CLOSED

    @property
    def events(self) -> EventEmitter:
        """Connection events (`CONNECTION_CLOSED`)."""
        if self._events is None:
            self._events = EventEmitter(max_listeners=self._config.max_event_listeners)
        return self._events

    @property
    def remote_address(self) -> Address | None:
        """The peer's address."""
        addr = self._quic.get_peer_address() if hasattr(self._quic, "get_peer_address") else None
        if addr is None and self._quic._network_paths:
            addr = self._quic._network_paths[0].addr
        return (str(addr[0]), int(addr[1])) if addr else None

    @property
    def local_address(self) -> Address | None:
        """The local socket address."""
        transport = self._pump._transport
        if transport is None:
            return None
        sockname = transport.get_extra_info("sockname")
        return (str(sockname[0]), int(sockname[1])) if sockname else None

    @property
    def sessions(self) -> list[WebTransportSession]:
        """The sessions open (or being opened) on this connection."""
        return list(self._sessions.values())

    def get_all_sessions(self) -> list[WebTransportSession]:
        """Return the sessions on this connection.

        Returns:
            The sessions.
        """
        return self.sessions

    @property
    def idle_for(self) -> float:
        """Seconds since this connection last carried a session or opened one."""
        if self._sessions:
            return 0.0
        return time.monotonic() - self._last_activity

    @property
    def close_reason(self) -> tuple[int, str] | None:
        """The (error code, reason) the connection closed with, once closed."""
        return self._close_reason

    def get_stats(self) -> dict[str, Any]:
        """Return RTT, byte and packet statistics.

        Returns:
            `rtt_smoothed`, `rtt_min`, `rtt_latest` (seconds), `bytes_sent`,
            `bytes_received`, `packets_sent`, `packets_lost`, `sessions`, `streams`,
            `uptime`.
        """
        quic = self._quic
        recovery = quic._loss
        paths = quic._network_paths
        rtt_min = recovery._rtt_min
        return {
            "rtt_smoothed": recovery._rtt_smoothed,
            "rtt_min": None if rtt_min == float("inf") else rtt_min,
            "rtt_latest": recovery._rtt_latest,
            "bytes_sent": sum(p.bytes_sent for p in paths),
            "bytes_received": sum(p.bytes_received for p in paths),
            "packets_sent": quic._packet_number,
            "packets_lost": getattr(recovery, "_packets_lost", None),
            "congestion_window": getattr(recovery._cc, "congestion_window", None),
            "sessions": len(self._sessions),
            "streams": len(self._streams),
            "uptime": time.monotonic() - self._created_at,
        }

    async def diagnostics(self) -> dict[str, Any]:
        """Return `get_stats()` plus state and addresses.

        Returns:
            A snapshot of the connection.
        """
        return {
            "handle": self._handle,
            "state": self._state.value,
            "remote_address": self.remote_address,
            "local_address": self.local_address,
            "dialects": sorted({s.dialect for s in self._sessions.values()}),
            **self.get_stats(),
        }

    # ------------------------------------------------------------------ I/O plumbing

    def _transmit_soon(self) -> None:
        self._pump._transmit_soon()

    def _send(self, stream_id: int, data: memoryview | bytes, end_stream: bool) -> None:
        self._quic.send_stream_data(stream_id, data, end_stream)  # type: ignore[arg-type]
        self._pump._transmit_soon()

    def _send_buffered(self, stream_id: int) -> int:
        stream = self._quic._streams.get(stream_id)
        if stream is None:
            return 0
        return len(stream.sender._buffer)

    def _wait_writable(self, stream: WebTransportSendStream, low: int | None = None) -> None:
        stream._low_mark = stream._high_water // 2 if low is None else low
        self._blocked.add(stream)

    def _wake_blocked(self) -> None:
        for stream in list(self._blocked):
            if self._send_buffered(stream.stream_id) <= stream._low_mark:
                self._blocked.discard(stream)
                stream._wake_writer()
        if self._credit_waiters:
            waiters, self._credit_waiters = self._credit_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _consumed(self, stream_id: int, count: int, session_id: int) -> None:
        if self._protocol.data_consumed(session_id, count):
            self._pump._transmit_soon()
        consumed = self._credit
        total = consumed.get(stream_id)
        if total is None:
            return
        total += count
        consumed[stream_id] = total
        stream = self._quic._streams.get(stream_id)
        window = self._stream_window
        # Re-credit in steps of half a window so MAX_STREAM_DATA frames stay rare;
        # `_QuicConnection._write_stream_limits` sends the new limit.
        if stream is not None and total + window - stream.max_stream_data_local >= window // 2:
            stream.max_stream_data_local = total + window
            self._pump._transmit_soon()

    def _stream_finished(self, stream: Any) -> None:
        stream_id = stream.stream_id
        if self._streams.pop(stream_id, None) is None:
            return
        self._credit.pop(stream_id, None)
        self._blocked.discard(cast(WebTransportSendStream, stream))
        self._protocol.stream_finished(stream_id)
        # Finishing a peer's stream may have queued WT_MAX_STREAMS: send it.
        self._transmit_soon()
        session = stream.session
        session._streams.pop(stream_id, None)

    # ------------------------------------------------------------------ events

    def _on_quic_event(self, event: qe.QuicEvent) -> None:
        # Hot path: data for a known stream goes straight to its reader.
        if type(event) is qe.StreamDataReceived:
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream._feed(event.data, event.end_stream)  # type: ignore[union-attr]
                return
        elif type(event) is qe.DatagramFrameReceived:
            data = event.data
            # One-byte quarter stream id covers session ids below 256.
            first = data[0] if data else 0xFF
            if first < 0x40:
                session = self._sessions.get(first * 4)
                if session is not None and session.is_ready:
                    session._on_datagram(data[1:])
                    return
        elif isinstance(event, qe.ConnectionTerminated):
            self._on_terminated(event.error_code, event.reason_phrase)
            return
        elif isinstance(event, qe.HandshakeCompleted):
            self._state = ConnectionState.CONNECTED
            if not self._connected.done():
                self._connected.set_result(None)
            self._schedule_keep_alive()
            release_handshake_state(self._quic)
        for wt_event in self._protocol.handle_event(event):
            self._dispatch(wt_event)

    def _dispatch(self, event: wp.ProtocolEvent) -> None:
        if isinstance(event, wp.StreamDataReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream._feed(event.data, event.end_stream)  # type: ignore[union-attr]
        elif isinstance(event, wp.StreamOpened):
            self._on_stream_opened(event)
        elif isinstance(event, wp.DatagramReceived):
            session = self._sessions.get(event.session_id)
            if session is not None:
                session._on_datagram(event.data)
        elif isinstance(event, wp.StreamResetReceived):
            stream = self._streams.get(event.stream_id)
            if isinstance(stream, WebTransportReceiveStream):
                stream._reset_received = True
                stream._chunks.clear()
                stream._buffered = 0
                stream._fail_read(
                    StreamError(
                        f"stream {event.stream_id} was reset by the peer "
                        f"with code {event.error_code}",
                        stream_id=event.stream_id,
                        error_code=event.error_code,
                        remote=True,
                    )
                )
        elif isinstance(event, wp.StopSendingReceived):
            stream = self._streams.get(event.stream_id)
            if isinstance(stream, WebTransportSendStream) and not stream._send_done:
                # aioquic already reset the sending side; report the peer's code.
                stream._fail_write(
                    StreamError(
                        f"peer stopped stream {event.stream_id} with code {event.error_code}",
                        stream_id=event.stream_id,
                        error_code=event.error_code,
                        remote=True,
                    )
                )
        elif isinstance(event, wp.SessionRequested):
            self._on_session_requested(event)
        elif isinstance(event, wp.SessionEstablished):
            session = self._sessions.get(event.session_id)
            if session is not None:
                session._headers = event.headers
                for name, value in event.headers:
                    if name == b"wt-protocol":
                        chosen = wp.parse_sf_string(value)
                        # A protocol we did not offer is ignored, as browsers do.
                        if chosen is not None and chosen in (session._wt_available_protocols or ()):
                            session._wt_protocol = chosen
                session._set_ready()
        elif isinstance(event, wp.SessionRejected):
            session = self._sessions.get(event.session_id)
            if session is not None:
                session._reject_status = event.status_code
                self._session_gone(
                    session, SessionCloseInfo(event.status_code, "rejected", True, False)
                )
        elif isinstance(event, wp.SessionClosed):
            session = self._sessions.get(event.session_id)
            if session is not None:
                remote = session._state is not _CLOSING_STATE
                self._session_gone(
                    session, SessionCloseInfo(event.error_code, event.reason, remote, event.clean)
                )
        elif isinstance(event, wp.SessionDraining):
            session = self._sessions.get(event.session_id)
            if session is not None:
                session._set_draining()
        elif isinstance(event, wp.SettingsReceived) and not self._settings.done():
            self._settings.set_result(event.settings)

    def _on_stream_opened(self, event: wp.StreamOpened) -> None:
        session = self._sessions.get(event.session_id)
        if session is None:
            return
        stream: WebTransportReceiveStream
        if event.unidirectional:
            stream = WebTransportReceiveStream(session, event.stream_id, is_remote=True)
        else:
            stream = WebTransportStream(session, event.stream_id, is_remote=True)
        self._streams[event.stream_id] = stream
        self._credit[event.stream_id] = 0
        if event.data or event.end_stream:
            stream._feed(event.data, event.end_stream)
        session._add_incoming(stream)

    def _on_session_requested(self, event: wp.SessionRequested) -> None:
        session = WebTransportSession(
            self,
            event.session_id,
            path=event.path,
            headers=event.headers,
            authority=event.authority,
        )
        session._wt_available_protocols = event.protocols
        self._sessions[event.session_id] = session
        self._last_activity = time.monotonic()
        callback = self.on_session_request
        if callback is None:
            self._reject_session(session, 404)
            return
        callback(session)

    # ------------------------------------------------------------------ sessions

    def _accept_session(
        self, session: WebTransportSession, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        extra = list(headers or [])
        if session._wt_protocol:
            extra.append((b"wt-protocol", wp.encode_sf_string(session._wt_protocol)))
        for event in self._protocol.accept(session.session_id, extra):
            self._dispatch(event)
        session._set_ready()
        # Orphaned streams were released by accept(); deliver them now that the session is ready.
        self._transmit_soon()

    def _reject_session(self, session: WebTransportSession, status_code: int) -> None:
        self._protocol.reject(session.session_id, status_code)
        self._transmit_soon()
        self._session_gone(
            session, SessionCloseInfo(status_code, "rejected", False, False), forget=True
        )

    def _close_session(self, session: WebTransportSession, error_code: int, reason: str) -> None:
        events = self._protocol.close_session(session.session_id, error_code, reason)
        self._transmit_soon()
        for event in events:
            if isinstance(event, wp.SessionClosed):
                self._session_gone(session, SessionCloseInfo(error_code, reason, False, True))

    def _session_gone(
        self, session: WebTransportSession, info: SessionCloseInfo, *, forget: bool = True
    ) -> None:
        if self._sessions.pop(session.session_id, None) is None and session.is_closed:
            return
        self._last_activity = time.monotonic()
        for stream_id in [sid for sid, s in self._streams.items() if s.session is session]:
            self._streams.pop(stream_id, None)
            self._credit.pop(stream_id, None)
        session._set_closed(info)
        if forget:
            self._protocol.forget_session(session.session_id)
        if self.on_session_closed is not None:
            self.on_session_closed(session)

    async def wait_settings(self, timeout: float | None = None) -> dict[int, int]:
        """Wait for the peer's HTTP/3 SETTINGS.

        Args:
            timeout: Seconds to wait.

        Returns:
            The settings.
        """
        async with asyncio.timeout(timeout):
            return await asyncio.shield(self._settings)

    async def create_session(
        self,
        path: str = "/",
        *,
        authority: str | None = None,
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
        wt_available_protocols: list[str] | None = None,
        timeout: float | None = None,
    ) -> WebTransportSession:
        """Open another WebTransport session on this connection (client side).

        Args:
            path: Request path with query.
            authority: `:authority`; defaults to the one the connection was opened for.
            headers: Extra request headers.
            wt_available_protocols: Subprotocols offered, in preference order.
            timeout: Seconds to wait for the server's answer (default: `connect_timeout`).

        Returns:
            The established session.

        Raises:
            HandshakeError: The server answered with a non-2xx status.
            TimeoutError: No answer in time.
            ConnectionError: The connection is closed.
        """
        from ..shared.exceptions import HandshakeError

        if not self.is_client:
            raise ConnectionError("create_session() is for client connections")
        if self._state in (ConnectionState.CLOSING, ConnectionState.CLOSED):
            raise ConnectionError(
                "connection is closed",
                error_code=self._close_reason[0] if self._close_reason else None,
            )
        config = cast(ClientConfig, self._config)
        wait = config.connect_timeout if timeout is None else timeout
        header_list: list[tuple[bytes, bytes]] = []
        all_headers: list[tuple[str | bytes, str | bytes]] = list(config.headers.items())
        if headers:
            all_headers.extend(headers.items() if isinstance(headers, dict) else headers)
        user_agent = config.user_agent or f"pywebtransport/{_version()}"
        header_list.append((b"user-agent", user_agent.encode()))
        for name, value in all_headers:
            raw_name = (name if isinstance(name, bytes) else name.encode()).lower()
            raw_value = value if isinstance(value, bytes) else value.encode()
            # The server would reject the request as malformed (RFC 9114 §4.1.2),
            # which the client could only report as a lost session.
            try:
                validate_header_name(raw_name)
                validate_header_value(raw_name, raw_value)
            except MessageError as exc:
                raise ClientError(f"invalid request header: {exc}") from exc
            header_list.append((raw_name, raw_value))
        protocols = (
            wt_available_protocols
            if wt_available_protocols is not None
            else config.wt_available_protocols
        )
        if protocols:
            header_list.append(
                (b"wt-available-protocols", b", ".join(wp.encode_sf_string(p) for p in protocols))
            )
        try:
            async with asyncio.timeout(wait):
                settings = await asyncio.shield(self._settings)
                dialect = wp.choose_dialect(settings)
                if dialect is None:
                    raise HandshakeError(
                        "the server does not support WebTransport (no WebTransport SETTINGS)",
                        error_code=ErrorCodes.WT_REQUIREMENTS_NOT_MET,
                    )
                session_id = self._protocol.connect(
                    authority=authority or self._authority,
                    path=path,
                    headers=header_list,
                    dialect=dialect,
                )
                session = WebTransportSession(
                    self, session_id, path=path, headers=[], authority=authority or self._authority
                )
                session._wt_available_protocols = list(protocols or ())
                self._sessions[session_id] = session
                self._last_activity = time.monotonic()
                self._transmit_soon()
                try:
                    await asyncio.shield(session._ready)
                except SessionClosedError as exc:
                    status = session._reject_status
                    if status is None:
                        raise ConnectionError(
                            f"connection lost while opening the session at {path!r}",
                            error_code=exc.error_code,
                        ) from exc
                    raise HandshakeError(
                        f"server refused the session at {path!r} with HTTP status {status}",
                        status_code=status,
                        error_code=ErrorCodes.H3_REQUEST_REJECTED,
                    ) from exc
        except builtins.TimeoutError as exc:
            raise TimeoutError(
                f"no answer to the WebTransport CONNECT within {wait}s", operation="connect"
            ) from exc
        if self.on_session_opened is not None:
            self.on_session_opened(session)
        return session

    def _can_open_stream(self, session: WebTransportSession, unidirectional: bool) -> bool:
        quic = self._quic
        if unidirectional:
            next_id = quic._local_next_stream_id_uni
            limit = quic._remote_max_streams_uni
        else:
            next_id = quic._local_next_stream_id_bidi
            limit = quic._remote_max_streams_bidi
        return next_id // 4 < limit and self._protocol.can_open_stream(
            session.session_id, unidirectional=unidirectional
        )

    async def _create_stream(
        self, session: WebTransportSession, *, unidirectional: bool
    ) -> WebTransportStream | WebTransportSendStream:
        session._check_open()
        # The usual case, credit at hand, opens without a timeout context.
        if not self._can_open_stream(session, unidirectional):
            timeout = self._config.stream_creation_timeout
            try:
                async with asyncio.timeout(timeout):
                    while not self._can_open_stream(session, unidirectional):
                        self._transmit_soon()  # a WT_STREAMS_BLOCKED capsule may be queued
                        waiter = self._loop.create_future()
                        self._credit_waiters.append(waiter)
                        await waiter
                        session._check_open()
            except builtins.TimeoutError as exc:
                raise TimeoutError(
                    f"the peer granted no new {'uni' if unidirectional else 'bi'}directional "
                    f"stream within stream_creation_timeout={timeout}s",
                    operation="create_stream",
                ) from exc
        stream_id = self._protocol.create_stream(session.session_id, unidirectional=unidirectional)
        stream: WebTransportStream | WebTransportSendStream
        if unidirectional:
            stream = WebTransportSendStream(session, stream_id, is_remote=False)
        else:
            stream = WebTransportStream(session, stream_id, is_remote=False)
            self._credit[stream_id] = 0
        self._streams[stream_id] = stream
        session._streams[stream_id] = stream
        session.stats["streams_opened"] += 1
        self._transmit_soon()
        return stream

    # ------------------------------------------------------------------ closing

    def _schedule_keep_alive(self) -> None:
        interval = self._config.keep_alive_interval
        if interval is not None and self._state is ConnectionState.CONNECTED:
            self._keep_alive = self._loop.call_later(interval, self._send_keep_alive)

    def _send_keep_alive(self) -> None:
        # PINGs keep NAT bindings and the idle timer alive only while sessions are
        # open: a connection without sessions is left to its idle timeout.
        if self._sessions and self._state is ConnectionState.CONNECTED:
            self._quic.send_ping(0)
            self._transmit_soon()
        self._schedule_keep_alive()

    def _on_terminated(self, error_code: int, reason: str) -> None:
        if self._state is ConnectionState.CLOSED:
            return
        if self._keep_alive is not None:
            self._keep_alive.cancel()
            self._keep_alive = None
        self._state = ConnectionState.CLOSED
        self._close_reason = (error_code, reason)
        error = ConnectionError(
            f"connection closed: {reason or 'no reason'}", error_code=error_code
        )
        for future in (self._settings, self._connected):
            if not future.done():
                future.set_exception(error)
                future.exception()
        for session in list(self._sessions.values()):
            self._session_gone(
                session, SessionCloseInfo(error_code, reason or "connection lost", True, False)
            )
        for stream in list(self._streams.values()):
            stream._abort(StreamError("connection closed", error_code=error_code))
        self._streams.clear()
        for waiter in self._credit_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._credit_waiters.clear()
        if not self._terminated.done():
            self._terminated.set_result(None)
        if self.is_client:
            # A client connection owns its configuration (key log file) and its socket.
            close_secrets_log(self._quic.configuration)
            transport = self._pump._transport
            if transport is not None:
                transport.close()
        events = self._events
        if events is not None and events.has_listeners(EventType.CONNECTION_CLOSED):
            events.emit_nowait(
                event_type=EventType.CONNECTION_CLOSED,
                data={"error_code": error_code, "reason": reason, "handle": self._handle},
                source=self,
            )
        if self.on_closed is not None:
            self.on_closed(self)

    def _on_transport_lost(self) -> None:
        self._on_terminated(ErrorCodes.QUIC_INTERNAL_ERROR, "transport lost")

    async def close(self, error_code: int = 0, reason: str = "") -> None:
        """Close the QUIC connection (and with it every session), waiting briefly for the peer.

        Args:
            error_code: QUIC application error code.
            reason: Reason phrase.
        """
        if self._state is ConnectionState.CLOSED:
            return
        if self._state is not ConnectionState.CLOSING:
            self._state = ConnectionState.CLOSING
            for session in list(self._sessions.values()):
                if session.is_ready:
                    self._close_session(session, 0, reason)
            # aioquic drops unsent stream data on close: let close capsules and
            # finished streams reach the peer first (bounded by half the deadline).
            await self._flush(self._config.close_timeout / 2)
            self._pump.close(error_code=error_code, reason_phrase=reason)
        try:
            async with asyncio.timeout(self._config.close_timeout):
                await asyncio.shield(self._terminated)
        except builtins.TimeoutError:
            pass
        self._on_terminated(error_code, reason)
        transport = self._pump._transport
        if self.is_client and transport is not None:
            transport.close()

    async def _flush(self, timeout: float) -> None:
        quic = self._quic
        end = self._loop.time() + timeout
        while self._state is not ConnectionState.CLOSED and self._loop.time() < end:
            self._pump.transmit()
            senders = [s.sender for s in quic._streams.values()]
            if all(not sender._buffer for sender in senders if not sender.is_finished):
                return
            await asyncio.sleep(0.005)

    def abort(self) -> None:
        """Drop the connection at once, without waiting for the peer."""
        if self._state is not ConnectionState.CLOSED:
            self._pump.close(error_code=ErrorCodes.QUIC_NO_ERROR, reason_phrase="aborted")
            self._on_terminated(ErrorCodes.QUIC_NO_ERROR, "aborted")
        transport = self._pump._transport
        if self.is_client and transport is not None:
            transport.close()

    async def wait_closed(self) -> None:
        """Wait until the connection has terminated."""
        await asyncio.shield(self._terminated)

    def __repr__(self) -> str:
        state = self._state.value
        return f"<WebTransportConnection handle={self._handle} state={state}>"


from ..shared.types import SessionState as _SessionState  # noqa: E402

_CLOSING_STATE = _SessionState.CLOSING


def _version() -> str:
    from .. import __version__

    return __version__
