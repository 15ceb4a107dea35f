"""In-memory QUIC pairs under the sans-I/O `WebTransportCore`: bytes in, events out.

No sockets and no event loop: datagrams move between two aioquic connections
with an explicit clock, and each side's QUIC events go through the protocol's
hot paths exactly as the engine feeds them.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aioquic.h3.connection import H3Connection
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from pywebtransport.shared.utils import CertificateInfo
from pywebtransport.transport import _aioquic
from pywebtransport.transport._core import events as pe
from pywebtransport.transport._core.dialects import DRAFT02, Dialect, Limits
from pywebtransport.transport._core.protocol import WebTransportCore
from pywebtransport.transport._core.records import SessionRecord, StreamRecord

CLIENT_ADDR = ("127.0.0.1", 40000)
SERVER_ADDR = ("127.0.0.1", 4433)
TUNING = _aioquic.ConnectionTuning(max_streams_bidi=128, max_streams_uni=128)


@dataclass
class Datagram:
    """A datagram the protocol delivered to a session (recorded by `feed`)."""

    session_id: int
    data: bytes


def make_quic_pair(certificate: CertificateInfo) -> tuple[QuicConnection, QuicConnection]:
    """A client and a server `QuicConnection` (h3, datagrams) that have not talked yet."""
    server_cfg = QuicConfiguration(
        is_client=False, alpn_protocols=["h3"], max_datagram_frame_size=65536
    )
    server_cfg.load_cert_chain(certificate.certfile, certificate.keyfile)
    client_cfg = QuicConfiguration(
        is_client=True,
        alpn_protocols=["h3"],
        max_datagram_frame_size=65536,
        verify_mode=ssl.CERT_NONE,
        server_name="127.0.0.1",
    )
    client = _aioquic.new_quic_connection(client_cfg, TUNING)
    server = _aioquic.new_quic_connection(
        server_cfg,
        TUNING,
        original_destination_connection_id=client.original_destination_connection_id,
    )
    return client, server


def feed(
    protocol: WebTransportCore,
    event: qe.QuicEvent,
    sink: list[Any],
    split: Callable[[qe.StreamDataReceived], bool] = lambda event: False,
) -> None:
    """Give one QUIC event to a protocol the way the engine does; collect what comes out."""
    if isinstance(event, qe.StreamDataReceived):
        data = event.data
        if split(event) and len(data) > 1:
            for i in range(len(data)):
                fin = event.end_stream and i == len(data) - 1
                protocol.receive_stream_data(event.stream_id, data[i : i + 1], fin)
        else:
            protocol.receive_stream_data(event.stream_id, data, event.end_stream)
    elif isinstance(event, qe.DatagramFrameReceived):
        delivered = protocol.receive_datagram(event.data)
        if delivered is not None:
            sink.append(Datagram(delivered[0].session_id, delivered[1]))
    else:
        _aioquic.feed_event(protocol, event)
    while (out := protocol.next_event()) is not None:
        sink.append(out)


def h3_of(protocol: WebTransportCore) -> H3Connection:
    """The aioquic `H3Connection` under a protocol (to send what the core never would)."""
    port = protocol.quic
    assert isinstance(port, _aioquic.AioquicPort)
    return port.h3


def received(rec: StreamRecord) -> bytes:
    """Everything buffered on a stream record (nothing consumed)."""
    return b"".join(rec.chunks)


class Pair:
    """A client and a server `QuicConnection`, each under a `WebTransportCore`.

    Args:
        certificate: The server's certificate.
        raw_client_h3: Put aioquic's plain `H3Connection` on the client side
            instead (to send what our client never would).
        limits: What the server grants.
    """

    def __init__(
        self,
        certificate: CertificateInfo,
        *,
        raw_client_h3: bool = False,
        limits: Limits | None = None,
    ) -> None:
        self.now = 1.0
        self.cq, self.sq = make_quic_pair(certificate)
        self.raw_h3: H3Connection | None = None
        self.client: WebTransportCore = None  # type: ignore[assignment]
        if raw_client_h3:
            self.raw_h3 = H3Connection(self.cq, enable_webtransport=True)
        else:
            self.client = WebTransportCore(_aioquic.AioquicPort(self.cq))
        self.server = WebTransportCore(
            _aioquic.AioquicPort(self.sq), limits=limits or Limits(max_sessions=8)
        )
        self.client_events: list[Any] = []
        self.server_events: list[Any] = []
        self.client_quic_events: list[qe.QuicEvent] = []
        self.server_quic_events: list[qe.QuicEvent] = []
        self.split: Callable[[qe.StreamDataReceived], bool] = lambda event: False
        self.cq.connect(SERVER_ADDR, now=self.now)
        self.pump()

    def drain(self) -> None:
        """Collect the events commands produced (as the engine's `after_command` does)."""
        for protocol, sink in (
            (self.server, self.server_events),
            (self.client, self.client_events),
        ):
            if protocol is None:
                continue
            while (out := protocol.next_event()) is not None:
                sink.append(out)

    def pump(self, rounds: int = 60) -> None:
        """Move datagrams both ways until neither side has anything to send."""
        self.drain()
        for _ in range(rounds):
            moved = False
            self.now += 0.001
            for data, _addr in self.cq.datagrams_to_send(now=self.now):
                moved = True
                self.sq.receive_datagram(data, CLIENT_ADDR, now=self.now)
            while (event := self.sq.next_event()) is not None:
                self.server_quic_events.append(event)
                feed(self.server, event, self.server_events, self.split)
            for data, _addr in self.sq.datagrams_to_send(now=self.now):
                moved = True
                self.cq.receive_datagram(data, SERVER_ADDR, now=self.now)
            while (event := self.cq.next_event()) is not None:
                self.client_quic_events.append(event)
                if self.raw_h3 is not None:
                    self.client_events.extend(self.raw_h3.handle_event(event))
                else:
                    feed(self.client, event, self.client_events)
            if not moved:
                return

    def take_server(self, kind: type[Any]) -> list[Any]:
        """Remove and return the server events of one kind."""
        found = [e for e in self.server_events if isinstance(e, kind)]
        self.server_events = [e for e in self.server_events if not isinstance(e, kind)]
        return found

    def take_client(self, kind: type[Any]) -> list[Any]:
        """Remove and return the client events of one kind."""
        found = [e for e in self.client_events if isinstance(e, kind)]
        self.client_events = [e for e in self.client_events if not isinstance(e, kind)]
        return found

    def request(self, path: str = "/echo", dialect: Dialect = DRAFT02, **kw: Any) -> SessionRecord:
        """Send a CONNECT from the client; return the client's session record."""
        session = self.client.open_session(
            authority="127.0.0.1:4433", path=path, dialect=dialect, **kw
        )
        self.pump()
        return session

    def open_session(self, path: str = "/echo", dialect: Dialect = DRAFT02) -> int:
        """Open and accept a session; return its id."""
        client_session = self.request(path, dialect)
        (requested,) = self.take_server(pe.SessionRequested)
        assert requested.session.session_id == client_session.session_id
        self.server.accept(requested.session)
        self.pump()
        (established,) = self.take_client(pe.SessionEstablished)
        assert established.session is client_session
        return client_session.session_id

    def client_stream(self, session_id: int, *, unidirectional: bool = False) -> StreamRecord:
        """Open a stream on the client side of a session."""
        return self.client.open_stream(
            self.client.sessions[session_id], unidirectional=unidirectional
        )

    @property
    def server_close(self) -> Any:
        """The server's ConnectionTerminated event (None while the connection lives)."""
        return next(
            (e for e in self.server_quic_events if isinstance(e, qe.ConnectionTerminated)),
            None,
        ) or getattr(self.sq, "_close_event", None)

    def refusals(self, stream_id: int) -> list[int]:
        """Codes of the STOP_SENDING / RESET_STREAM the client got for a stream."""
        return [
            e.error_code
            for e in self.client_quic_events
            if isinstance(e, qe.StopSendingReceived | qe.StreamReset) and e.stream_id == stream_id
        ]

    def assert_alive(self, session_id: int) -> None:
        """A datagram and a stream still get through `session_id`."""
        assert self.server_close is None, self.server_close
        self.take_server(Datagram)
        session = self.client.sessions[session_id]
        self.client.send_datagram(session, b"ping")
        rec = self.client_stream(session_id)
        self.client.send(rec, b"alive", fin=True)
        self.pump()
        assert [(d.session_id, d.data) for d in self.take_server(Datagram)] == [
            (session_id, b"ping")
        ]
        opened = [e.stream for e in self.take_server(pe.StreamOpened)]
        (server_rec,) = [r for r in opened if r.stream_id == rec.stream_id]
        assert server_rec.session.session_id == session_id
        assert received(server_rec) == b"alive"
        assert server_rec.fin_received
