"""The server's UDP endpoint: one socket, many QUIC connections.

Routes each datagram to its connection's engine by destination connection id,
answers unknown versions with Version Negotiation, and creates a connection for
a new client Initial. Uses aioquic's public packet API only.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

from aioquic.buffer import Buffer  # type: ignore[attr-defined]  # re-exported without __all__
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_version_negotiation,
    pull_quic_header,
)

from . import _aioquic
from ._engine import ConnectionEngine, drain_datagrams

__all__ = ["ServerEndpoint"]

logger = logging.getLogger("pywebtransport.server")

_SMALLEST_INITIAL = 1200
"""Client Initials are padded to at least this (RFC 9000 section 14.1)."""


NewConnection = Callable[[Any, Any], ConnectionEngine | None]
"""Makes the engine for a new client connection: (QuicConnection, address) -> engine."""


class ServerEndpoint(asyncio.DatagramProtocol):
    """The datagram protocol of a server socket.

    Args:
        configuration: The aioquic configuration of new connections.
        tuning: Stream limits applied to each new connection.
        new_connection: Builds the engine of a new connection, or returns None
            to drop the Initial.
    """

    def __init__(
        self,
        *,
        configuration: QuicConfiguration,
        tuning: _aioquic.ConnectionTuning,
        new_connection: NewConnection,
    ) -> None:
        self.configuration = configuration
        self._tuning = tuning
        self._new_connection = new_connection
        self.transport: asyncio.DatagramTransport | None = None
        self._sock: socket.socket | None = None
        self._routes: dict[bytes, ConnectionEngine] = {}
        self._cids: dict[ConnectionEngine, set[bytes]] = {}
        self._touched: list[ConnectionEngine] = []

    @property
    def engines(self) -> list[ConnectionEngine]:
        """The connections this endpoint routes to."""
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
        buf = Buffer(data=data)
        try:
            header = pull_quic_header(buf, host_cid_length=self.configuration.connection_id_length)
        except ValueError:
            return
        transport = self.transport
        if transport is None:
            return
        if (
            header.packet_type != QuicPacketType.VERSION_NEGOTIATION
            and header.version is not None
            and header.version not in self.configuration.supported_versions
        ):
            # A Version Negotiation packet itself has version 0, never answered:
            # two spoofed servers cannot bounce negotiations at each other.
            transport.sendto(
                encode_quic_version_negotiation(
                    source_cid=header.destination_cid,
                    destination_cid=header.source_cid,
                    supported_versions=self.configuration.supported_versions,
                ),
                addr,
            )
            return
        engine = self._routes.get(header.destination_cid)
        if engine is None:
            if len(data) < _SMALLEST_INITIAL or header.packet_type != QuicPacketType.INITIAL:
                return
            engine = self._open(header.destination_cid, addr)
            if engine is None:
                return
        if not engine.receiving:
            self._touched.append(engine)
        engine.receive(data, addr)

    def _open(self, destination_cid: bytes, addr: Any) -> ConnectionEngine | None:
        quic = _aioquic.new_quic_connection(
            self.configuration,
            self._tuning,
            original_destination_connection_id=destination_cid,
        )
        engine = self._new_connection(quic, addr)
        if engine is None:
            return None
        engine.connection_made(self.transport)  # type: ignore[arg-type]
        engine.on_cid_issued = lambda cid: self._route(cid, engine)
        engine.on_cid_retired = lambda cid: self._unroute(cid, engine)
        self._cids[engine] = set()
        self._route(destination_cid, engine)
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
