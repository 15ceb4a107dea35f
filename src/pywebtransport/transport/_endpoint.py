"""The server's UDP endpoint: one socket, many QUIC connections.

A datagram whose destination connection id belongs to a connection goes to its
engine. Any other datagram goes through the stateless `HandshakeGate`: garbage
is dropped, unknown versions get Version Negotiation, and a client Initial is
admitted into the handshake table, asked to prove its address with a Retry, or
refused with CONNECTION_CLOSE in an Initial packet, without any TLS work.
Handshakes in flight have their own table; an admitted client that the
server's own limits (established connections, per address) cannot take is
refused at that first Initial too. Uses aioquic's public packet API only.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any, Final

from aioquic.buffer import Buffer  # type: ignore[attr-defined]  # re-exported without __all__
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import pull_quic_header

from . import _aioquic
from ._admission import GateAction, HandshakeGate, Screening, build_refusal
from ._engine import ConnectionEngine
from ._setup import drain_datagrams

__all__ = ["ServerEndpoint"]

logger = logging.getLogger("pywebtransport.server")

NewConnection = Callable[[Any, Any], ConnectionEngine]
"""Makes the engine of an admitted client connection: (QuicConnection, address) -> engine."""

_RESETS_PER_SECOND: Final = 100.0
"""Stateless resets this endpoint sends per second at most (after a burst)."""
_RESET_BURST: Final = 20

AdmitCheck = Callable[[Any], str | None]
"""The server's own check of a new client address: a refusal reason, or None to admit."""


class ServerEndpoint(asyncio.DatagramProtocol):
    """The datagram protocol of a server socket.

    Args:
        configuration: The aioquic configuration of new connections.
        tuning: Stream limits applied to each new connection.
        gate: Screens datagrams for unknown connections (Retry, refusal, limits).
        new_connection: Builds the engine of an admitted connection.
        admit: The server's own check before a connection is created.
    """

    def __init__(
        self,
        *,
        configuration: QuicConfiguration,
        tuning: _aioquic.ConnectionTuning,
        gate: HandshakeGate,
        new_connection: NewConnection,
        admit: AdmitCheck,
    ) -> None:
        self.configuration = configuration
        self._tuning = tuning
        self.gate = gate
        self._new_connection = new_connection
        self._admit = admit
        self.transport: asyncio.DatagramTransport | None = None
        self._sock: socket.socket | None = None
        self._routes: dict[bytes, ConnectionEngine] = {}
        self._cids: dict[ConnectionEngine, set[bytes]] = {}
        self._touched: list[ConnectionEngine] = []
        self.stats: dict[str, int] = {
            "handshakes_admitted": 0,
            "retries_sent": 0,
            "refused": 0,
            "version_negotiations": 0,
            "stateless_resets": 0,
            "dropped": 0,
        }
        self._reset_allowance = float(_RESET_BURST)
        self._reset_at = 0.0
        """What the gate did with datagrams for unknown connections."""

    @property
    def engines(self) -> list[ConnectionEngine]:
        """The connections this endpoint routes to (half-open ones included)."""
        return list(self._cids)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Take the socket's transport.

        Args:
            transport: The UDP transport.
        """
        self.transport = transport  # type: ignore[assignment]
        self._sock = _aioquic.selector_socket(transport)

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        """Route a datagram (and those queued behind it), then let each connection transmit.

        Args:
            data: The UDP payload.
            addr: The sender's address.
        """
        self._receive(data, addr)  # type: ignore[arg-type]
        if self._sock is not None:
            drain_datagrams(self._sock, self._receive)
        touched, self._touched = self._touched, []
        for engine in touched:
            engine.end_receive()

    def error_received(self, exc: Exception) -> None:
        """Ignore ICMP errors: QUIC's loss recovery and idle timeouts handle unreachable peers.

        Args:
            exc: The error the socket reported.
        """

    def _receive(self, data: bytes, addr: Any) -> None:
        try:
            header = pull_quic_header(
                Buffer(data=data), host_cid_length=self.configuration.connection_id_length
            )
        except ValueError:
            self.stats["dropped"] += 1
            return
        engine = self._routes.get(header.destination_cid)
        if engine is None:
            if data[0] & 0xC0 == 0x40:  # short header with QUIC's fixed bit
                self._reset(header.destination_cid, len(data), addr)
                return
            engine = self._screen(data, addr)
            if engine is None:
                return
        if not engine.receiving:
            self._touched.append(engine)
        engine.receive(data, addr)

    def _reset(self, cid: bytes, size: int, addr: Any) -> None:
        # A short-header packet for no connection of ours: a connection this process
        # forgot, or one another process (worker, host) holds and cannot reach. The
        # stateless reset ends it at the client at once instead of at its idle
        # timeout. Bounded, as every answer to an unauthenticated packet must be.
        scheme = self._tuning.cids
        transport = self.transport
        if scheme is None or transport is None:
            self.stats["dropped"] += 1
            return
        now = asyncio.get_running_loop().time()
        allowance = min(
            _RESET_BURST, self._reset_allowance + (now - self._reset_at) * _RESETS_PER_SECOND
        )
        self._reset_at = now
        reset = scheme.stateless_reset(cid, size) if allowance >= 1 else None
        if reset is None:
            self._reset_allowance = allowance
            self.stats["dropped"] += 1
            return
        self._reset_allowance = allowance - 1
        self.stats["stateless_resets"] += 1
        transport.sendto(reset, addr)

    def _screen(self, data: bytes, addr: Any) -> ConnectionEngine | None:
        transport = self.transport
        if transport is None:
            return None
        loop = asyncio.get_running_loop()
        try:
            screening = self.gate.screen(data, addr, now=loop.time())
        except ValueError:  # not an IP literal (cannot happen on a UDP socket)
            self.stats["dropped"] += 1
            return None
        action = screening.action
        if action is GateAction.ACCEPT:
            return self._accept(screening, len(data), addr)
        if action is GateAction.DROP:
            self.stats["dropped"] += 1
        elif action is GateAction.RETRY:
            self.stats["retries_sent"] += 1
        elif action is GateAction.REFUSE:
            self.stats["refused"] += 1
        else:
            self.stats["version_negotiations"] += 1
        if screening.response is not None:
            transport.sendto(screening.response, addr)
        return None

    def _accept(self, screening: Screening, size: int, addr: Any) -> ConnectionEngine | None:
        header = screening.header
        admission = screening.admission
        assert header is not None and admission is not None
        refusal = self._admit(addr)
        if refusal is not None:
            self.gate.admission.release(admission)
            self.stats["refused"] += 1
            logger.debug("refused %s at its Initial: %s", addr, refusal)
            assert self.transport is not None
            self.transport.sendto(build_refusal(header, datagram_size=size, reason=refusal), addr)
            return None
        self.stats["handshakes_admitted"] += 1
        quic = _aioquic.new_quic_connection(
            self.configuration,
            self._tuning,
            original_destination_connection_id=(
                screening.original_destination_cid or header.destination_cid
            ),
            retry_source_connection_id=screening.retry_source_cid,
        )
        engine = self._new_connection(quic, addr)
        # The handshake slot is given back when the handshake completes or fails.
        engine.handshake.add_done_callback(lambda _: self.gate.admission.release(admission))
        engine.connection_made(self.transport)  # type: ignore[arg-type]
        engine.on_cid_issued = lambda cid: self._route(cid, engine)
        engine.on_cid_retired = lambda cid: self._unroute(cid, engine)
        self._cids[engine] = set()
        self._route(header.destination_cid, engine)
        self._route(quic.host_cid, engine)
        return engine

    def _route(self, cid: bytes, engine: ConnectionEngine) -> None:
        cids = self._cids.get(engine)
        if cids is not None:
            self._routes[cid] = engine
            cids.add(cid)

    def _unroute(self, cid: bytes, engine: ConnectionEngine) -> None:
        if self._routes.get(cid) is engine:
            del self._routes[cid]
        cids = self._cids.get(engine)
        if cids is not None:
            cids.discard(cid)

    def forget(self, engine: ConnectionEngine) -> None:
        """Stop routing to a connection that ended.

        Args:
            engine: The connection's engine.
        """
        for cid in self._cids.pop(engine, ()):
            if self._routes.get(cid) is engine:
                del self._routes[cid]

    def close(self) -> None:
        """Close the socket (connections should be closed first)."""
        self._routes.clear()
        self._cids.clear()
        if self.transport is not None:
            self.transport.close()
