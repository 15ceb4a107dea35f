"""aioquic's QuicConnection as the library uses it: windows, connection ids, pacing, memory."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final, cast

from aioquic.buffer import (  # type: ignore[attr-defined]  # re-exported without __all__
    Buffer,
)
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionId
from aioquic.quic.crypto import CryptoPair, NoCallback
from aioquic.quic.packet import QuicFrameType
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketPacer
from aioquic.tls import Epoch

from .._routing import CidScheme
from .bbr import BbrCongestionControl
from .features import enabled
from .scheduling import NO_QUEUE, SCHEDULING_METHODS, owe

# --------------------------------------------------------------------------- QuicConnection

_ACTIVE_CONNECTION_ID_LIMIT: Final = 2
"""Connection ids each side keeps issued to the other (aioquic: 8).

2 is the minimum RFC 9000 (section 18.2) allows and the value peers assume
when none is sent: the id in use plus one spare, enough to move to a new path
(connection migration, NAT rebinding). A retired id is replaced at once.
"""

_MAX_STREAM_DATA_FRAME_CAPACITY: Final = 1 + 8 + 8

_FrameHandler = tuple[Callable[..., None], frozenset[Any]]


class _FrameTable:
    """Stands in for aioquic's per-connection frame-handler dict.

    aioquic gives every connection its own dict of 33 bound methods, each with
    its own frozenset of allowed epochs (about 7 KiB per connection), and only
    reads it as `handlers[frame_type]` (a KeyError meaning an unknown frame
    type). This answers the same from one table shared by all connections,
    binding the handler on lookup.
    """

    __slots__ = ("_quic",)

    _table: ClassVar[dict[int, _FrameHandler]] = {}

    def __init__(self, quic: QuicConnection, handlers: dict[int, _FrameHandler]) -> None:
        self._quic = quic
        if not _FrameTable._table:
            epoch_sets: dict[frozenset[Any], frozenset[Any]] = {}
            _FrameTable._table = {
                frame_type: (cast(Any, handler).__func__, epoch_sets.setdefault(epochs, epochs))
                for frame_type, (handler, epochs) in handlers.items()
            }

    def __getitem__(self, frame_type: int) -> _FrameHandler:
        function, epochs = self._table[frame_type]
        return function.__get__(self._quic), epochs


def _write_stream_limits(self: Any, builder: QuicPacketBuilder, space: Any, stream: Any) -> None:
    # Called for every open stream each time a packet is built, so the common
    # nothing-to-send case is decided from two attributes. The window of a
    # managed (WebTransport) stream is moved by its reader (`set_stream_window`),
    # never doubled here.
    local = stream.max_stream_data_local
    unsent = stream.max_stream_data_local_sent != local
    if not unsent and (not local or stream.receiver.highest_offset * 2 <= local):
        return
    managed = self.wt_managed
    if managed is None or stream.stream_id not in managed:
        QuicConnection._write_stream_limits(self, builder, space, stream)
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


def _replenish_connection_ids(self: Any) -> None:
    # `connection_ids` issues fewer ids than aioquic; `cid_routing` mints them with
    # the server's scheme (worker index, QUIC-LB server id, derived reset tokens).
    limit = _ACTIVE_CONNECTION_ID_LIMIT if enabled("connection_ids") else _AIOQUIC_CID_LIMIT
    wanted = min(limit, self._remote_active_connection_id_limit)
    scheme: CidScheme | None = self.wt_cids
    length = self._configuration.connection_id_length
    while len(self._host_cids) < wanted:
        cid = os.urandom(length) if scheme is None else scheme.mint(length)
        self._host_cids.append(
            QuicConnectionId(
                cid=cid,
                sequence_number=self._host_cid_seq,
                stateless_reset_token=(
                    os.urandom(16) if scheme is None else scheme.reset_token(cid)
                ),
            )
        )
        self._host_cid_seq += 1


_AIOQUIC_CID_LIMIT: Final = 8
"""Connection ids aioquic itself keeps issued (its `_replenish_connection_ids`)."""


def _apply_cid_scheme(quic: Any, scheme: CidScheme) -> None:
    # aioquic made the first id (sequence 0) at random in its constructor, before
    # anything was sent: it is replaced, token included (it goes out in the
    # transport parameters), and later ids come from `_replenish_connection_ids`.
    first = quic._host_cids[0]
    first.cid = scheme.mint(quic._configuration.connection_id_length)
    first.stateless_reset_token = scheme.reset_token(first.cid)
    quic.host_cid = quic._local_initial_source_connection_id = first.cid
    quic.wt_cids = scheme


_PACING_BURST_INTERVAL: Final = 0.002
_PACING_MIN_BURST_PACKETS: Final = 10
_PACING_LONG_PATH_MIN_BURST_PACKETS: Final = 2
_PACING_LONG_PATH_RTT: Final = 0.005
"""From this RTT on, the loop clock's 1 ms steps are small against the path's round trip."""
_PACING_MAX_BURST_PACKETS: Final = 256
_PACING_MIN_PACKET_TIME: Final = 1e-6


class BurstPacer(QuicPacketPacer):
    """aioquic's token-bucket pacer with a burst sized for event-loop clocks.

    aioquic caps the bucket at 16 packets' worth of *time* (less once the
    congestion window grows), and its packet time never drops below 1 µs. The
    bucket only refills when the loop clock moves, and uvloop's clock moves in
    1 ms steps: once the window passes about 1.3 MB at the 1 ms RTT floor, the
    bucket holds a single packet and a bulk sender is held to one packet per
    millisecond (~1.8 MiB/s), spinning on a timer that is always due. Here the
    bucket holds what the pacing rate allows over 2 ms, between 10 and 256
    packets (the shape of quinn's pacer), counted in packet times so the 1 µs
    floor cannot shrink it.

    On paths with a round trip of 5 ms or more the floor is 2 packets: there
    a burst of 10 can be a whole congestion window, so the receiver
    acknowledges a flight with one ACK, and on a lossy path every lost ACK
    then hides a whole flight: with CUBIC on a lossy 20 ms path, the floor of
    10 made uploads slower than with aioquic's own pacer (`make bench-lossy`).

    A congestion controller with a model of the path (BBR) sets the rate
    itself (`set_pacing_rate`); aioquic's window / RTT updates are then ignored.
    """

    controlled = False
    """The congestion controller sets the rate (`set_pacing_rate`)."""

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        """Recompute the packet time and the burst from the congestion window and RTT.

        Args:
            congestion_window: Bytes the congestion controller allows in flight.
            smoothed_rtt: Smoothed round-trip time in seconds.
        """
        if self.controlled:
            return
        rate = congestion_window / max(smoothed_rtt, _PACING_MIN_PACKET_TIME)
        self._apply(rate, smoothed_rtt)

    def set_pacing_rate(self, rate: float, rtt: float = 0.0) -> None:
        """Pace at `rate` bytes per second from now on (the controller's model).

        Args:
            rate: Bytes per second, above zero.
            rtt: The path's round trip in seconds (0 when unknown).
        """
        self.controlled = True
        self._apply(rate, rtt)

    def _apply(self, rate: float, rtt: float) -> None:
        size = self._max_datagram_size
        packet_time = max(_PACING_MIN_PACKET_TIME, min(size / rate, 1.0))
        burst = rate * _PACING_BURST_INTERVAL / size
        floor = (
            _PACING_LONG_PATH_MIN_BURST_PACKETS
            if rtt >= _PACING_LONG_PATH_RTT
            else _PACING_MIN_BURST_PACKETS
        )
        burst = min(max(burst, floor), _PACING_MAX_BURST_PACKETS)
        self.packet_time = packet_time
        self.bucket_max = burst * packet_time
        if self.bucket_time > self.bucket_max:
            self.bucket_time = self.bucket_max


_connection_class: type[QuicConnection] | None = None


def _quic_connection_class() -> type[QuicConnection]:
    global _connection_class
    if _connection_class is None:
        namespace: dict[str, Any] = {
            "__slots__": ("wt_cids", "wt_managed"),
            "__module__": __name__,
            "__doc__": "aioquic's QuicConnection with the enabled features of this package.",
        }
        if enabled("stream_window"):
            namespace["_write_stream_limits"] = _write_stream_limits
        if enabled("stream_scheduling"):
            namespace["__slots__"] += ("wt_schedule",)
            namespace.update(SCHEDULING_METHODS)
        if enabled("connection_ids") or enabled("cid_routing"):
            namespace["_replenish_connection_ids"] = _replenish_connection_ids
        _connection_class = type("QuicConnection", (QuicConnection,), namespace)
    return _connection_class


@dataclass(frozen=True, slots=True)
class ConnectionTuning:
    """What a new connection gets beyond aioquic's defaults.

    Attributes:
        max_streams_bidi: Bidirectional streams the peer may have open at once.
        max_streams_uni: Unidirectional streams the peer may have open at once.
        cids: Server side: how connection ids are minted (worker routing,
            QUIC-LB server id, shared reset key); None for aioquic's random ids.
    """

    max_streams_bidi: int
    max_streams_uni: int
    cids: CidScheme | None = None


def new_quic_connection(
    configuration: QuicConfiguration,
    tuning: ConnectionTuning,
    *,
    original_destination_connection_id: bytes | None = None,
    retry_source_connection_id: bytes | None = None,
) -> QuicConnection:
    """Create a `QuicConnection` with every enabled feature applied.

    Args:
        configuration: The aioquic configuration.
        tuning: Stream limits and other settings aioquic does not take.
        original_destination_connection_id: Server side: the client's first DCID.
        retry_source_connection_id: Server side: the SCID of our Retry, if one was sent.

    Returns:
        The connection (nothing sent or received yet).
    """
    quic = _quic_connection_class()(
        configuration=configuration,
        original_destination_connection_id=original_destination_connection_id,
        retry_source_connection_id=retry_source_connection_id,
    )
    tuned: Any = quic
    tuned.wt_managed = set() if enabled("stream_window") else None
    tuned.wt_cids = None
    if tuning.cids is not None and enabled("cid_routing"):
        _apply_cid_scheme(quic, tuning.cids)
    if enabled("stream_scheduling"):
        tuned.wt_schedule = None
        tuned._streams_queue = NO_QUEUE
    if enabled("frame_table"):
        handlers = quic.__dict__["_QuicConnection__frame_handlers"]
        quic.__dict__["_QuicConnection__frame_handlers"] = _FrameTable(quic, handlers)
    if enabled("connection_ids"):
        # Announced in the transport parameters: the peer issues us at most this many.
        tuned._local_active_connection_id_limit = _ACTIVE_CONNECTION_ID_LIMIT
    if enabled("pacer"):
        pacer = tuned._loss._pacer = BurstPacer(max_datagram_size=tuned._max_datagram_size)
        controller = tuned._loss._cc
        if isinstance(controller, BbrCongestionControl):
            controller.attach_pacer(pacer)
    if enabled("stream_limits"):
        # `sent` must follow: aioquic only sends MAX_STREAMS once `value` passes it,
        # so a limit below aioquic's 128 left at sent=128 would never be re-credited.
        for limit, value in (
            (tuned._local_max_streams_bidi, tuning.max_streams_bidi),
            (tuned._local_max_streams_uni, tuning.max_streams_uni),
        ):
            limit.value = limit.sent = value
    return quic


_NO_CRYPTO_OUTPUT: Final = Buffer(capacity=0)
"""Stands in for aioquic's per-epoch TLS output buffers once the handshake is over."""


_SPENT_KEYS: Final = CryptoPair()
"""Stands in for the key pairs of epochs a connection is done with (never set up)."""


def _release_spent_keys(tuned: Any) -> None:
    # The Initial and Handshake key pairs are torn down once their packet spaces
    # are discarded (a server: by HandshakeCompleted), but aioquic keeps them,
    # each with four logging callbacks, and Initial pairs for every QUIC
    # version it supports. Packets of a spent epoch find keys that are not valid
    # and are dropped, as they were; nothing sets such keys up again.
    cryptos, spaces = tuned._cryptos, tuned._spaces
    for epoch in (Epoch.INITIAL, Epoch.HANDSHAKE):
        if spaces[epoch].discarded:
            cryptos[epoch] = _SPENT_KEYS
    if spaces[Epoch.INITIAL].discarded:
        initial = tuned._cryptos_initial
        for version in initial:
            initial[version] = _SPENT_KEYS
    zero_rtt = cryptos.get(Epoch.ZERO_RTT)
    if zero_rtt is not None and not (zero_rtt.recv.is_valid() or zero_rtt.send.is_valid()):
        cryptos[Epoch.ZERO_RTT] = _SPENT_KEYS
    if tuned._quic_logger is None:
        # Without a qlog trace the callbacks of the live 1-RTT keys log nothing.
        live = cryptos[Epoch.ONE_RTT]
        for context in (live.recv, live.send):
            context._setup_cb = context._teardown_cb = NoCallback


def after_handshake(quic: QuicConnection) -> bool:
    """Free what a connected `QuicConnection` only needed for its TLS handshake.

    The TLS output buffers: aioquic allocates three of 16 KiB per connection and
    keeps them, but TLS only writes into them during the handshake (in the
    post-handshake states a client only parses NewSessionTicket and a server
    answers every message with an alert, neither writing output). The ephemeral
    key-exchange keys (also a forward-secrecy gain), and on a server the key
    schedule: a client keeps it to derive the resumption secret of a
    NewSessionTicket, but the server's post-handshake state rejects every
    message before using it. A server with a session-ticket handler keeps all
    of it: TLS 1.3 lets a server send further tickets at any time.

    Args:
        quic: A connection whose handshake has completed.

    Returns:
        True when the state was released.
    """
    if not enabled("tls_release"):
        return False
    tuned: Any = quic
    _release_spent_keys(tuned)
    is_client = tuned._is_client
    if not is_client and tuned._session_ticket_handler is not None:
        return False
    buffers = tuned._crypto_buffers
    for epoch in buffers:
        buffers[epoch] = _NO_CRYPTO_OUTPUT
    tls = tuned.tls
    tls._ec_private_keys = []
    tls._x25519_private_key = None
    tls._x448_private_key = None
    if not is_client:
        tls.key_schedule = None
    return True


def release_early_streams(quic: QuicConnection) -> None:
    """Let a server's control and QPACK streams leave in its first flight.

    They were opened before the client's transport parameters arrived, so
    aioquic holds them as blocked until the handshake completes. Released when
    the ALPN is negotiated, SETTINGS leave as 0.5-RTT data and the client can
    send CONNECT one round trip earlier.

    Args:
        quic: A server connection that just negotiated its ALPN.
    """
    if enabled("early_settings"):
        tuned: Any = quic
        tuned._unblock_streams(is_unidirectional=True)


# --------------------------------------------------------------------------- stream credit


def manage_stream_window(quic: QuicConnection, stream_id: int) -> bool:
    """Make a stream's receive window follow its reader (see `set_stream_window`).

    Args:
        quic: The connection.
        stream_id: A WebTransport stream with a receiving half.

    Returns:
        False when the feature is off (aioquic manages the window).
    """
    tuned: Any = quic
    managed = tuned.wt_managed if enabled("stream_window") else None
    if managed is None:
        return False
    managed.add(stream_id)
    return True


def forget_stream_window(quic: QuicConnection, stream_id: int) -> None:
    """Stop managing a stream's receive window.

    Args:
        quic: The connection.
        stream_id: The stream.
    """
    tuned: Any = quic
    managed = tuned.wt_managed if enabled("stream_window") else None
    if managed is not None:
        managed.discard(stream_id)


def set_stream_window(quic: QuicConnection, stream_id: int, limit: int) -> None:
    """Grant the peer credit up to `limit` bytes on a managed stream (MAX_STREAM_DATA).

    Args:
        quic: The connection.
        stream_id: A stream passed to `manage_stream_window`.
        limit: The new absolute limit; the frame leaves with the next packet.
    """
    tuned: Any = quic
    stream = tuned._streams.get(stream_id)
    if stream is not None and limit > stream.max_stream_data_local:
        stream.max_stream_data_local = limit
        if enabled("stream_scheduling"):
            owe(quic, stream)


# --------------------------------------------------------------------------- acknowledgements


def hasten_ack(quic: QuicConnection, now: float) -> bool:
    """Make an owed ACK due now while the peer's packets have a gap.

    aioquic acknowledges 1 ms (its ACK delay) after the first packet it owes an
    ACK for, whatever arrived; the engine's deferred transmit adds up to two
    loop iterations. A gap in the packet numbers received (a packet lost, or
    overtaken) is news the sender needs at once: it declares a packet lost when
    later ones are acknowledged. RFC 9000 section 13.2.1 asks for an ACK
    without delay of a packet that arrives out of order; this goes on doing so
    while the gap is reported, as TCP acknowledges every segment while it holds
    a hole. On a path without loss or reordering there is no gap and nothing
    changes.

    Args:
        quic: The connection.
        now: The loop's time.

    Returns:
        True when an ACK is now due (the caller transmits); False when none is
        owed, the packets have no gap, or the feature is off.
    """
    if not enabled("prompt_acks"):
        return False
    tuned: Any = quic
    space = tuned._spaces.get(Epoch.ONE_RTT)
    if space is None or space.ack_at is None or len(space.ack_queue) < 2:
        return False
    # Ranges older than the last ACK the peer acknowledged are trimmed, so a gap
    # stays reported until the peer has heard of it.
    space.ack_at = now
    return True
