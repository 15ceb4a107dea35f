"""The asyncio engine of one QUIC connection: a pump plus waiters.

`ConnectionEngine` feeds received datagrams to aioquic's `QuicConnection`,
hands QUIC events to the sans-I/O `WebTransportCore`, turns protocol events
into wake-ups of the futures parked on session and stream records, and
transmits. It owns the connection's timers (QUIC loss/idle timer, keep-alive
and the idle deadline) and nothing else: protocol state lives in the protocol's
records, and the public objects (`WebTransportConnection`, sessions, streams)
call the engine's methods.

Transmission, one policy with one entry point for commands: after a command
the public objects call `after_command()` (`defer=True` when what follows
should share the packet). It delivers the command's protocol events and, when
the core queued bytes (`want_transmit`), sends them:

- while received datagrams are being processed, nothing is sent: one
  transmit follows the batch, two loop iterations later, so the answers of
  woken readers share a packet with the ACK;
- otherwise the first command of a loop iteration transmits at once, later
  ones in the same iteration join one deferred transmit (`_flush`,
  `_transmit_soon`).

`transmit()` itself sends whatever QUIC has queued (and feeds queued
datagrams); the engine calls it directly only where the order on the wire
matters (a reset after the stream's header, a close, a timer).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aioquic.quic import events as qe
from aioquic.quic.connection import QuicConnection

from ..shared.config import ClientConfig, ServerConfig
from ..shared.constants import ErrorCodes
from ..shared.events import EventEmitter, EventType
from ..shared.exceptions import ConnectionError
from ..shared.types import ConnectionState
from ..shared.utils import format_address, wake
from . import _aioquic
from ._core import events as pe
from ._core.dialects import Limits
from ._core.protocol import WebTransportCore
from ._core.records import ExchangeRecord, SessionRecord, StreamRecord
from ._setup import close_secrets_log, drain_datagrams, stream_window

if TYPE_CHECKING:
    from .connection import WebTransportConnection

__all__ = ["ConnectionEngine"]

logger = logging.getLogger("pywebtransport.connection")

_handles = itertools.count(1)


_ABORT_REFUSALS: tuple[type[Exception], ...] = (*_aioquic.REFUSALS, OSError)
"""What dropping a connection may meet: aioquic refusing, or a socket already gone."""


@dataclass(frozen=True, slots=True)
class Dispatch:
    """How the engine hands what the core reports to the public objects above it.

    The engine imports nothing of the public objects: whoever builds it (the
    client, the server) passes `transport._dispatch.FACADES`.
    """

    new_session: Callable[[ConnectionEngine, SessionRecord], None]
    """Create the public object of a session the peer requested."""
    session_event: Callable[[ConnectionEngine, pe.ProtocolEvent], None]
    """Apply any protocol event but `SessionRequested` and received datagrams."""
    deliver_datagram: Callable[[SessionRecord, bytes, int], None]
    """Hand a received datagram to its session (session, payload, queue limit)."""


class ConnectionEngine(asyncio.DatagramProtocol):
    """Drives one `QuicConnection` and its `WebTransportCore` on the event loop.

    A client engine is the protocol of its own UDP socket; a server engine
    receives its datagrams from the server endpoint, which shares one socket.

    Args:
        quic: The QUIC connection (nothing sent or received yet).
        config: The client or server configuration.
        max_sessions: Sessions a peer may hold open on this connection.
        dispatch: Where protocol events go (the public objects).
    """

    __slots__ = (
        "_alive_timer",
        "_answered",
        "_blocked",
        "_datagram_waiting",
        "_dispatch",
        "_held_timer",
        "_incoming_datagram_limit",
        "_next_ping",
        "_sent_this_tick",
        "_stream_credit_waiters",
        "_timer",
        "_timer_at",
        "_transmit_handle",
        "_transmit_late",
        "authority",
        "config",
        "connection",
        "core",
        "created_at",
        "emitter",
        "handle",
        "handshake",
        "is_client",
        "last_activity",
        "last_received",
        "loop",
        "on_cid_issued",
        "on_cid_retired",
        "on_closed",
        "on_established",
        "on_http_request",
        "on_session_closed",
        "on_session_pending",
        "on_session_ready",
        "on_session_request",
        "owns_transport",
        "quic",
        "receiving",
        "settings",
        "sock",
        "terminated",
        "transport",
    )

    def __init__(
        self,
        quic: QuicConnection,
        config: ClientConfig | ServerConfig,
        *,
        max_sessions: int,
        dispatch: Dispatch,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.quic = quic
        self.config = config
        self.is_client: bool = quic.configuration.is_client
        self.core = WebTransportCore(
            _aioquic.AioquicPort(quic),
            limits=Limits(
                max_sessions=max_sessions,
                initial_max_data=config.initial_max_data,
                flow_control_window=config.flow_control_window,
                initial_max_streams_bidi=config.initial_max_streams_bidi,
                initial_max_streams_uni=config.initial_max_streams_uni,
            ),
            stream_window=stream_window(config),
            max_capsule_size=config.max_capsule_size,
            max_field_section_size=config.max_field_section_size,
            max_held_streams=config.max_total_pending_events,
            max_held_per_session=config.max_pending_streams,
            datagram_high_water_mark=config.outgoing_datagram_high_water_mark,
            datagram_max_age=config.outgoing_datagram_max_age,
            supported_protocols=(
                config.wt_supported_protocols if isinstance(config, ServerConfig) else ()
            ),
            max_http_requests=(
                config.max_http_requests_per_connection if isinstance(config, ServerConfig) else 0
            ),
        )
        self.handle = next(_handles)
        """A process-unique number identifying the connection."""
        self.transport: asyncio.DatagramTransport | None = None
        self.owns_transport = self.is_client
        """A client engine owns its socket and closes it when the connection ends."""
        self.sock: socket.socket | None = None
        """A client's own socket under asyncio's selector loop, drained in batches."""
        self.handshake: asyncio.Future[None] = self.loop.create_future()
        self.settings: asyncio.Future[dict[int, int]] = self.loop.create_future()
        self.terminated: asyncio.Future[None] = self.loop.create_future()
        self.created_at = self.loop.time()
        self.last_activity = self.created_at
        """Loop time the connection last carried a session."""
        self.last_received = self.created_at
        self.authority = ""
        """Client side: the `:authority` new sessions default to."""
        self.connection: WebTransportConnection | None = None
        """The public object of this connection."""
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._transmit_handle: asyncio.Handle | None = None
        self._transmit_late = False
        """The pending transmit is the end of a receive batch's (two iterations away)."""
        self._answered = False
        """Something was queued during the receive batch under way."""
        self.receiving = False
        """True while a batch of received datagrams is being processed."""
        self._sent_this_tick = False
        self._alive_timer: asyncio.TimerHandle | None = None
        self._next_ping = 0.0
        self._blocked: dict[StreamRecord | ExchangeRecord, None] = {}
        """Writers waiting for their stream's send buffer to drain."""
        self._stream_credit_waiters: list[asyncio.Future[None]] = []
        """Tasks waiting for QUIC stream credit (checked after received datagrams)."""
        self._incoming_datagram_limit = config.max_pending_datagrams
        self._dispatch = dispatch
        self._datagram_waiting: dict[SessionRecord, None] = {}
        """Sessions whose senders wait for room in the outgoing datagram queue."""
        self._held_timer: asyncio.TimerHandle | None = None
        self.emitter: EventEmitter | None = None
        """The connection's event emitter, once created."""
        # Hooks of the owner (client or server), None when unused.
        self.on_session_request: Callable[[SessionRecord], int | None] | None = None
        """Server side: called with each requested session; returns a status to refuse it."""
        self.on_http_request: Callable[[ExchangeRecord], bool] | None = None
        """Server side: called with each plain HTTP/3 request (only once `core.serve_http`
        is set); returns False to have it answered 404."""
        self.on_session_ready: Callable[[SessionRecord], None] | None = None
        self.on_session_closed: Callable[[SessionRecord], None] | None = None
        self.on_closed: Callable[[ConnectionEngine], None] | None = None
        self.on_established: Callable[[ConnectionEngine], None] | None = None
        self.on_session_pending: Callable[[SessionRecord], None] | None = None
        """Client side: called when a session's CONNECT was sent."""
        self.on_cid_issued: Callable[[bytes], None] | None = None
        self.on_cid_retired: Callable[[bytes], None] | None = None

    # ------------------------------------------------------------------ asyncio protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Take the datagram transport to send on.

        Args:
            transport: The UDP transport (shared with other engines on a server).
        """
        self.transport = transport  # type: ignore[assignment]
        if self.owns_transport:
            self.sock = _aioquic.selector_socket(transport)

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        """Process a datagram from the peer (and those queued behind it), then transmit.

        Args:
            data: The UDP payload.
            addr: The sender's address.
        """
        self.receive(data, addr)  # type: ignore[arg-type]
        if self.sock is not None:
            drain_datagrams(self.sock, self.receive)
        self.end_receive()

    def error_received(self, exc: Exception) -> None:
        """Fail a client's handshake when nothing listens at the server's port.

        A client's socket is connected to the server on Linux, so the peer's
        ICMP port unreachable arrives here as `ConnectionRefusedError`: before
        the handshake completed, it means no server is there, and waiting out
        the connect timeout would only delay saying so. Every other ICMP error,
        and any after the handshake, is left to QUIC's loss recovery and idle
        timeout.

        Args:
            exc: The error the socket reported.
        """
        if (
            isinstance(exc, ConnectionRefusedError)
            and self.owns_transport
            and not self.handshake.done()
        ):
            peer = _aioquic.peer_address(self.quic)
            where = format_address(str(peer[0]), int(peer[1])) if peer else "the server"
            self.handshake.set_exception(
                ConnectionError(
                    f"nothing answered at {where}: no server listens on that UDP port "
                    "(the host sent ICMP port unreachable)"
                )
            )
            self._terminate(ErrorCodes.QUIC_INTERNAL_ERROR, "port unreachable")

    def connection_lost(self, exc: Exception | None) -> None:
        """The client's socket closed.

        Args:
            exc: Why, or None.
        """
        if self.owns_transport:
            self._terminate(ErrorCodes.QUIC_INTERNAL_ERROR, "transport lost")

    # ------------------------------------------------------------------ receive

    def receive(self, data: bytes, addr: Any) -> None:
        """Feed one datagram to QUIC and process what it produced; call `end_receive` after.

        Args:
            data: The UDP payload.
            addr: The sender's address.
        """
        if self.is_client and _aioquic.is_stateless_reset(self.quic, data):
            # The server has no state for this connection: it is over, at once.
            logger.debug("connection %d: stateless reset from the server", self.handle)
            self._terminate(ErrorCodes.QUIC_NO_ERROR, "stateless reset by the server")
            return
        self.receiving = True
        self.last_received = now = self.loop.time()
        self.core.now = now
        self.quic.receive_datagram(data, addr, now=now)
        self._process_quic_events()

    def end_receive(self) -> None:
        """Finish a batch of `receive` calls: wake blocked writers, schedule one transmit."""
        self.receiving = False
        if self._blocked or self._stream_credit_waiters:
            self._wake_blocked()
        if _aioquic.hasten_ack(self.quic, self.loop.time()) or self._answered:
            # Something was queued while the batch ran (an event handler's answer,
            # a reply of the protocol's own): it leaves now, with the ACK. So does
            # the ACK of packets with a gap: the sender needs it to detect a loss.
            self._answered = False
            self.transmit()
            return
        # Otherwise deferred: readers woken by the batch run first, so the
        # answers they write leave in the same packet as the ACK. Two iterations
        # rather than one: a handler that takes an incoming stream typically
        # starts a task for it, whose first step runs one iteration later still.
        if self._transmit_handle is None:
            self._transmit_late = True
            self._transmit_handle = self.loop.call_soon(self._transmit_next)

    def _transmit_next(self) -> None:
        self._transmit_handle = self.loop.call_soon(self.transmit)

    def _process_quic_events(self) -> None:
        quic = self.quic
        core = self.core
        receive_stream_data = core.receive_stream_data
        deliver_datagram = self._dispatch.deliver_datagram
        stream_data = qe.StreamDataReceived
        datagram = qe.DatagramFrameReceived
        event = quic.next_event()
        while event is not None:
            kind = type(event)
            if kind is stream_data:
                # Hot path: straight to the stream's buffer, then wake its reader.
                rec = receive_stream_data(event.stream_id, event.data, event.end_stream)  # type: ignore[attr-defined]
                if rec is not None:
                    reader = rec.reader
                    if reader is not None:
                        rec.reader = None
                        if not reader.done():
                            reader.set_result(None)
            elif kind is datagram:
                delivered = core.receive_datagram(event.data)  # type: ignore[attr-defined]
                if delivered is not None:
                    session, payload = delivered
                    if session.owner is not None:
                        deliver_datagram(session, payload, self._incoming_datagram_limit)
            else:
                self._quic_event(event)
            if core.has_events():
                self._process_core_events()
            event = quic.next_event()
        if core.held_count and self._held_timer is None:
            ttl = self.config.pending_event_ttl
            self._held_timer = self.loop.call_later(ttl / 2, self._expire_held)

    def _quic_event(self, event: qe.QuicEvent) -> None:
        if isinstance(event, qe.HandshakeCompleted):
            self.core.handshake_completed()
            if not self.handshake.done():
                self.handshake.set_result(None)
            _aioquic.after_handshake(self.quic)
            self._arm_alive_timer()
            logger.debug(
                "connection %d established (%s, alpn %s)",
                self.handle,
                "client" if self.is_client else "server",
                event.alpn_protocol,
            )
            if self.on_established is not None:
                self.on_established(self)
        elif isinstance(event, qe.ConnectionIdIssued):
            if self.on_cid_issued is not None:
                self.on_cid_issued(event.connection_id)
        elif isinstance(event, qe.ConnectionIdRetired):
            if self.on_cid_retired is not None:
                self.on_cid_retired(event.connection_id)
        elif isinstance(event, qe.ConnectionTerminated):
            self._terminate(event.error_code, event.reason_phrase)
        else:
            _aioquic.feed_event(self.core, event)

    def _process_core_events(self) -> None:
        core = self.core
        event = core.next_event()
        while event is not None:
            if isinstance(event, pe.SettingsReceived):
                if not self.settings.done():
                    self.settings.set_result(event.settings)
            elif isinstance(event, pe.SessionRequested):
                self.last_activity = self.loop.time()
                self._session_requested(event.session)
            elif isinstance(event, pe.ExchangeUpdated):
                exchange = event.exchange
                reader, exchange.reader = exchange.reader, None
                wake(reader)
                if exchange.error is not None and exchange.writers:
                    self._release_writers(exchange)
            elif isinstance(event, pe.HttpRequestReceived):
                self.last_activity = self.loop.time()
                handler = self.on_http_request
                if handler is None or not handler(event.exchange):
                    core.respond(event.exchange, 404, [], end=True)
            elif isinstance(event, pe.StreamClosed):
                self._blocked.pop(event.stream, None)
                self._dispatch.session_event(self, event)
            elif isinstance(event, pe.SessionClosed):
                self.last_activity = self.loop.time()
                self._dispatch.session_event(self, event)
                if self.on_session_closed is not None:
                    self.on_session_closed(event.session)
            else:
                self._dispatch.session_event(self, event)
                if isinstance(event, pe.SessionEstablished) and self.on_session_ready is not None:
                    self.on_session_ready(event.session)
            event = core.next_event()
        if core.want_transmit:
            self._transmit_soon()

    def _session_requested(self, session: SessionRecord) -> None:
        self._dispatch.new_session(self, session)
        logger.debug(
            "connection %d: session %d requested for %r (%s)",
            self.handle,
            session.session_id,
            session.path,
            session.dialect.name,
        )
        status = 404 if self.on_session_request is None else self.on_session_request(session)
        if status is not None:
            self.reject(session, status)

    @property
    def state(self) -> ConnectionState:
        """The connection's state (the core owns it)."""
        return self.core.state

    @property
    def close_reason(self) -> tuple[int, str] | None:
        """(error code, reason) the connection closed with, once known (the core's)."""
        return self.core.close_reason

    # ------------------------------------------------------------------ transmit and timers

    def transmit(self) -> None:
        """Send every datagram QUIC has queued and re-arm the QUIC timer."""
        pending = self._transmit_handle
        if pending is not None:
            # A deferred transmit still to come would find nothing this one leaves.
            self._transmit_handle = None
            pending.cancel()
        core = self.core
        core.want_transmit = False
        transport = self.transport
        if transport is not None and not transport.is_closing():
            quic = self.quic
            now = self.loop.time()
            while True:
                if core.has_datagram_backlog:
                    core.feed_datagrams(now)
                for data, addr in quic.datagrams_to_send(now=now):
                    transport.sendto(data, addr)
                # Queued datagrams go on until QUIC cannot send more (congestion).
                if not core.has_datagram_backlog or _aioquic.pending_datagrams(quic):
                    break
            if self._datagram_waiting:
                self._wake_datagram_senders()
        timer_at = self.quic.get_timer()
        if self._timer is not None and self._timer_at != timer_at:
            self._timer.cancel()
            self._timer = None
        if self._timer is None and timer_at is not None:
            self._timer = self.loop.call_at(timer_at, self._on_timer)
        self._timer_at = timer_at

    def _transmit_soon(self) -> None:
        """Transmit at the next loop iteration, or at the end of the receive batch under way."""
        if self.receiving:
            self._answered = True
            return
        handle = self._transmit_handle
        if handle is not None and self._transmit_late:
            handle.cancel()
            handle = None
        if handle is None:
            self._transmit_late = False
            self._transmit_handle = self.loop.call_soon(self.transmit)

    def _flush(self) -> None:
        """Transmit what a command queued: now, unless a receive batch is in progress.

        Within one loop iteration only the first command transmits at once;
        later ones join one deferred transmit.
        """
        if self.receiving or self._sent_this_tick:
            self._transmit_soon()
            return
        self._sent_this_tick = True
        self.loop.call_soon(self._new_tick)
        self.transmit()

    def send_datagram(self, session: SessionRecord, data: bytes | bytearray | memoryview) -> None:
        """Send (or queue) a datagram of a session and transmit.

        Args:
            session: An established session.
            data: The payload, its size already checked.
        """
        core = self.core
        if not core.send_datagram(session, data):
            core.queue_datagram(session, data, self.loop.time())
        self._transmit_soon()

    def wait_datagram_room(self, session: SessionRecord) -> asyncio.Future[None]:
        """Return a future woken when the session's outgoing datagram queue has room.

        Args:
            session: The session.

        Returns:
            The future.
        """
        future: asyncio.Future[None] = self.loop.create_future()
        if session.send_waiters is None:
            session.send_waiters = []
        session.send_waiters.append(future)
        self._datagram_waiting[session] = None
        return future

    def _wake_datagram_senders(self) -> None:
        mark = self.core.datagram_high_water_mark
        for session in list(self._datagram_waiting):
            if session.is_closed or len(session.outgoing or ()) < mark:
                self._datagram_waiting.pop(session, None)
                waiters, session.send_waiters = session.send_waiters, None
                for waiter in waiters or ():
                    wake(waiter)

    def _expire_held(self) -> None:
        self._held_timer = None
        core = self.core
        core.expire_held(self.loop.time() - self.config.pending_event_ttl)
        self.after_command()
        if core.held_count:
            ttl = self.config.pending_event_ttl
            self._held_timer = self.loop.call_later(ttl / 2, self._expire_held)

    def _new_tick(self) -> None:
        self._sent_this_tick = False

    def _on_timer(self) -> None:
        now = max(self._timer_at or 0.0, self.loop.time())
        self._timer = None
        self._timer_at = None
        self.quic.handle_timer(now=now)
        self._process_quic_events()
        self.transmit()

    def _arm_alive_timer(self) -> None:
        interval = self.config.keep_alive_interval
        self._next_ping = self.loop.time() + interval if interval is not None else float("inf")
        self._schedule_alive_check()

    def _schedule_alive_check(self) -> None:
        if self.state is ConnectionState.CLOSED:
            return
        deadline = self.last_received + self.config.connection_idle_timeout
        self._alive_timer = self.loop.call_at(min(deadline, self._next_ping), self._alive_check)

    def _alive_check(self) -> None:
        # The idle deadline follows what the peer sent, not what we sent: a keep-alive
        # PING to a vanished peer restarts aioquic's idle timer (RFC 9000 section 10.1
        # lets a send restart it), which would hold the peer 1.5x the idle timeout.
        self._alive_timer = None
        now = self.loop.time()
        if now >= self.last_received + self.config.connection_idle_timeout:
            logger.debug("connection %d: peer silent for the idle timeout", self.handle)
            self.abort(ErrorCodes.QUIC_NO_ERROR, "idle timeout", send_close=False)
            return
        interval = self.config.keep_alive_interval
        if interval is not None and now >= self._next_ping:
            self._next_ping = now + interval
            # PINGs keep NAT bindings open only while sessions are: a connection
            # without sessions is left to its idle timeout.
            if self.core.sessions and self.state is ConnectionState.CONNECTED:
                self.quic.send_ping(0)
                self.transmit()
        self._schedule_alive_check()

    # ------------------------------------------------------------------ waiters

    def wait_writable(self, rec: StreamRecord | ExchangeRecord) -> asyncio.Future[None]:
        """Return a future woken when the stream's send buffer may have drained.

        Args:
            rec: The stream (or plain HTTP/3 exchange).

        Returns:
            The future (several writers may wait at once).
        """
        future: asyncio.Future[None] = self.loop.create_future()
        if rec.writers is None:
            rec.writers = []
        rec.writers.append(future)
        self._blocked[rec] = None
        return future

    def send_buffered(self, rec: StreamRecord | ExchangeRecord) -> int:
        """Return the bytes of a stream not acknowledged yet.

        Args:
            rec: The stream (or plain HTTP/3 exchange).

        Returns:
            The count.
        """
        return _aioquic.send_buffered(self.quic, rec.stream_id)

    def wait_stream_credit(self) -> asyncio.Future[None]:
        """Return a future woken when the peer may have granted stream or session credit.

        Returns:
            The future.
        """
        future: asyncio.Future[None] = self.loop.create_future()
        self._stream_credit_waiters.append(future)
        return future

    def wait_session_credit(self, session: SessionRecord) -> asyncio.Future[None]:
        """Return a future woken when the peer raises a session limit (or the session ends).

        Args:
            session: The session (draft-15 flow control).

        Returns:
            The future.
        """
        future: asyncio.Future[None] = self.loop.create_future()
        if session.credit_waiters is None:
            session.credit_waiters = []
        session.credit_waiters.append(future)
        return future

    def wake_session_credit(self, session: SessionRecord) -> None:
        """Wake the tasks waiting for a session's flow-control credit.

        Args:
            session: The session.
        """
        waiters, session.credit_waiters = session.credit_waiters, None
        for waiter in waiters or ():
            wake(waiter)

    def new_emitter(self) -> EventEmitter:
        """Create an event emitter configured from the connection's config.

        Returns:
            The emitter.
        """
        config = self.config
        return EventEmitter(
            max_listeners=config.max_event_listeners,
            max_history=config.event_history_capacity,
            max_queue_size=config.event_queue_capacity,
        )

    def wake_credit_waiters(self) -> None:
        """Wake every task waiting for stream or session credit."""
        waiters, self._stream_credit_waiters = self._stream_credit_waiters, []
        for waiter in waiters:
            wake(waiter)

    def _wake_blocked(self) -> None:
        quic = self.quic
        for rec in list(self._blocked):
            if not rec.writers:
                self._blocked.pop(rec, None)
                continue
            if rec.write_error is not None or _aioquic.send_buffered(quic, rec.stream_id) == 0:
                self._release_writers(rec)
                continue
            # Writers below the high-water mark: woken when half the buffer drained.
            low = self.config.max_stream_write_buffer_size // 2
            if _aioquic.send_buffered(quic, rec.stream_id) <= low:
                self._release_writers(rec)
        if self._stream_credit_waiters:
            self.wake_credit_waiters()

    def _release_writers(self, rec: StreamRecord | ExchangeRecord) -> None:
        self._blocked.pop(rec, None)
        writers, rec.writers = rec.writers, None
        for writer in writers or ():
            wake(writer)

    def wake_stream(self, rec: StreamRecord) -> None:
        """Wake every task waiting on a stream (its reader and writers).

        Args:
            rec: The stream.
        """
        reader, rec.reader = rec.reader, None
        wake(reader)
        if rec.writers:
            self._release_writers(rec)

    # ------------------------------------------------------------------ commands

    def reject(self, session: SessionRecord, status_code: int) -> None:
        """Refuse a requested session (server side).

        Args:
            session: The session.
            status_code: The HTTP status.
        """
        self.core.reject(session, status_code)
        self.after_command()
        logger.debug(
            "connection %d: session %d rejected with status %d",
            self.handle,
            session.session_id,
            status_code,
        )

    def abandon_stream(self, rec: StreamRecord) -> None:
        """Close what is open of a stream the application no longer holds.

        Its sending half can never be finished, so it is reset; its receiving
        half is never read again, so the peer is told to stop (code 0 both
        ways). Otherwise the stream would stay open, and hold the peer's stream
        credit, until the session ends.

        Args:
            rec: A stream whose application object was collected.
        """
        if rec.is_finished or rec.session.is_closed or rec.owner is not None:
            return
        if not rec.write_done:
            self.reset_stream(rec, 0)
        if not rec.read_done:
            self.core.stop_receiving(rec, 0)
        self.after_command()
        logger.debug("stream %d: let go of by the application, closed", rec.stream_id)

    def reset_stream(self, rec: StreamRecord, error_code: int) -> None:
        """Reset a stream's sending half (RESET_STREAM) and transmit.

        When the core says so (`reset_needs_flush`), the stream's queued bytes
        leave first, so its header is on its way ahead of the reset.

        Args:
            rec: The stream.
            error_code: The application error code.
        """
        if self.core.reset_needs_flush(rec):
            self.transmit()
        self.core.reset(rec, error_code)
        self.after_command()

    def after_command(self, *, defer: bool = False) -> None:
        """Deliver the events a command produced and send what it queued.

        Args:
            defer: Transmit on the next loop iteration rather than now (what was
                queued is better sent together with what the caller does next).
        """
        if self.core.has_events():
            self._process_core_events()
        if self.core.want_transmit:
            if defer:
                self._transmit_soon()
            else:
                self._flush()

    # ------------------------------------------------------------------ closing

    def _terminate(self, error_code: int, reason: str) -> None:
        core = self.core
        if core.state is ConnectionState.CLOSED:
            return
        core.terminate(error_code, reason)
        error_code, reason = core.close_reason or (error_code, reason)
        for timer in (self._alive_timer, self._timer, self._held_timer):
            if timer is not None:
                timer.cancel()
        self._alive_timer = self._timer = self._held_timer = None
        if self._transmit_handle is not None:
            self._transmit_handle.cancel()
            self._transmit_handle = None
        logger.debug(
            "connection %d closed with code %#x: %s", self.handle, error_code, reason or "-"
        )
        error = ConnectionError(
            f"connection closed: {reason or 'no reason'}", error_code=error_code
        )
        for future in (self.settings, self.handshake):
            if not future.done():
                future.set_exception(error)
                future.exception()  # mark retrieved: nobody may be waiting
        self._process_core_events()
        for rec in list(self._blocked):
            self._release_writers(rec)
        self.wake_credit_waiters()
        self._wake_datagram_senders()
        if not self.terminated.done():
            self.terminated.set_result(None)
        emitter = self.emitter
        if emitter is not None and emitter.has_listeners(EventType.CONNECTION_CLOSED):
            emitter.emit_nowait(
                EventType.CONNECTION_CLOSED, self.closed_event_data(), self.connection
            )
        if self.owns_transport:
            # A client connection owns its configuration (key log file) and its socket.
            close_secrets_log(self.quic.configuration)
            if self.transport is not None:
                self.transport.close()
        if self.on_closed is not None:
            self.on_closed(self)

    def closed_event_data(self) -> dict[str, Any]:
        """The data of this connection's `CONNECTION_CLOSED` event.

        Returns:
            `handle` and `connection_handle` (the same int), `connection`,
            `error_code`, `reason`.
        """
        code, reason = self.close_reason or (0, "")
        return {
            "handle": self.handle,
            "connection_handle": self.handle,
            "connection": self.connection,
            "error_code": code,
            "reason": reason,
        }

    def established_event_data(self) -> dict[str, Any]:
        """The data of this connection's `CONNECTION_ESTABLISHED` event.

        Returns:
            `handle` and `connection_handle` (the same int), `connection`,
            `remote_address`.
        """
        return {
            "handle": self.handle,
            "connection_handle": self.handle,
            "connection": self.connection,
            "remote_address": _aioquic.peer_address(self.quic),
        }

    def close_quic(self, error_code: int, reason: str) -> None:
        """Send CONNECTION_CLOSE now; the closing period then runs on in the background.

        Args:
            error_code: The QUIC application error code.
            reason: The reason phrase.
        """
        if self.state is ConnectionState.CLOSED:
            return
        self.core.begin_closing()
        self.quic.close(error_code=error_code, reason_phrase=reason)
        self.transmit()

    async def flush_streams(self, timeout: float) -> None:
        """Wait until the peer acknowledged every stream's data, at most `timeout` seconds.

        aioquic drops unsent stream data when the connection closes, and a
        packet lost (or overtaken by CONNECTION_CLOSE on a reordering path)
        after it is not resent, so close capsules and finished streams are
        acknowledged first: one round trip plus the peer's ACK delay.

        Args:
            timeout: The bound.
        """
        quic = self.quic
        await self._wait_for_peer(
            lambda: not _aioquic.has_unacked_stream_data(quic), self.loop.time() + timeout
        )

    async def _wait_for_peer(self, done: Callable[[], bool], end: float) -> bool:
        # Transmit, then re-check after every received datagram, until `done()`
        # holds, the connection ends or the loop clock passes `end`.
        while self.state is not ConnectionState.CLOSED:
            self.transmit()
            if done():
                return True
            if self.loop.time() >= end:
                return False
            future = self.wait_stream_credit()  # woken by the next received datagram
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, end - self.loop.time())):
                    await future
        return done()

    async def finish_sessions(
        self, closes: list[tuple[SessionRecord, int, str]], timeout: float
    ) -> None:
        """Close sessions gracefully: what their streams finished reaches the peer first.

        Each session stops opening streams and sending datagrams (CLOSING);
        then, until the peer acknowledged every stream this side finished
        (data and FIN), or `timeout` seconds passed, or the peer closed the
        session or the connection, nothing more happens; then the close
        capsule and FIN go out and the streams still open are reset (draft
        section 6). Cancelling the caller closes at once.

        Args:
            closes: (session, application error code, reason) of each session.
            timeout: Longest wait for the acknowledgements, in seconds.
        """
        core = self.core
        waiting = [session for session, _, _ in closes if core.begin_close(session)]
        try:
            if waiting:
                delivered = await self._wait_for_peer(
                    lambda: all(core.writes_delivered(s) for s in waiting),
                    self.loop.time() + timeout,
                )
                if not delivered:
                    logger.info(
                        "sessions %s: finished streams not acknowledged within %.3gs; "
                        "closing anyway (their readers see WT_SESSION_GONE)",
                        ", ".join(str(s.session_id) for s in waiting if not s.is_closed),
                        timeout,
                    )
        finally:
            for session, code, reason in closes:
                core.close_session(session, code, reason)
            self.after_command()

    def abort(
        self,
        error_code: int = ErrorCodes.QUIC_NO_ERROR,
        reason: str = "aborted",
        *,
        send_close: bool = True,
    ) -> None:
        """Drop the connection at once: no closing period, no waiting for the peer.

        aioquic is taken through its own end of the connection (so a qlog trace
        is finished and written), only without the closing period.

        Args:
            error_code: The code of the CONNECTION_CLOSE (and reported locally).
            reason: Its reason phrase.
            send_close: Send CONNECTION_CLOSE first (not for an idle timeout,
                where the peer is gone: RFC 9000 section 10.1 closes silently).
        """
        if self.state is ConnectionState.CLOSED:
            return
        quic = self.quic
        try:
            quic.close(error_code=error_code, reason_phrase=reason)
            if send_close:
                self.transmit()
            now = self.loop.time()
            quic.handle_timer(now=max(quic.get_timer() or now, now))
            self._process_quic_events()
        except _ABORT_REFUSALS as exc:
            # A connection in a state aioquic did not expect, or a socket gone:
            # it is dropped all the same.
            logger.debug("connection %d: abort: %r", self.handle, exc)
        finally:
            self._terminate(error_code, reason)
