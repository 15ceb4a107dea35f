"""Sans-I/O tests of `WebTransportProtocol`: literal bytes and in-memory QUIC pairs."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import pytest
from aioquic.buffer import encode_uint_var
from aioquic.h3 import events as h3e
from aioquic.h3.connection import H3Connection
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from hypothesis import given, settings
from hypothesis import strategies as st

from pywebtransport.shared.constants import (
    CAPSULE_CLOSE_WEBTRANSPORT_SESSION,
    WT_APPLICATION_ERROR_FIRST,
    WT_APPLICATION_ERROR_LAST,
    ErrorCodes,
)
from pywebtransport.shared.utils import CertificateInfo
from pywebtransport.transport._protocol import (
    DRAFT02,
    DatagramReceived,
    Dialect,
    Limits,
    ProtocolEvent,
    SessionClosed,
    SessionEstablished,
    SessionRejected,
    SessionRequested,
    StreamDataReceived,
    StreamOpened,
    WebTransportProtocol,
    decode_capsules,
    encode_capsule,
    http3_to_wt_error,
    wt_to_http3_error,
)

pytestmark = pytest.mark.timeout(30)

CLIENT_ADDR = ("127.0.0.1", 40000)
SERVER_ADDR = ("127.0.0.1", 4433)
MAX_U32 = 2**32 - 1


# --------------------------------------------------------------------------- error codes


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=0, max_value=MAX_U32))
def test_error_code_round_trip(code: int) -> None:
    http3 = wt_to_http3_error(code)
    assert WT_APPLICATION_ERROR_FIRST <= http3 <= WT_APPLICATION_ERROR_LAST
    # Never lands on a reserved (GREASE) point 0x1f * N + 0x21.
    assert (http3 - 0x21) % 0x1F != 0
    assert http3_to_wt_error(http3) == code


def test_error_code_literal_values() -> None:
    assert wt_to_http3_error(0) == 0x52E4A40FA8DB
    assert wt_to_http3_error(0x1D) == 0x52E4A40FA8DB + 0x1D
    # 0x1e crosses the first GREASE point and skips it.
    assert wt_to_http3_error(0x1E) == 0x52E4A40FA8DB + 0x1F
    assert wt_to_http3_error(MAX_U32) == WT_APPLICATION_ERROR_LAST
    assert http3_to_wt_error(WT_APPLICATION_ERROR_LAST) == MAX_U32


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=(WT_APPLICATION_ERROR_LAST - 0x21) // 0x1F))
def test_grease_points_map_to_none(n: int) -> None:
    grease = 0x1F * n + 0x21
    if WT_APPLICATION_ERROR_FIRST <= grease <= WT_APPLICATION_ERROR_LAST:
        assert http3_to_wt_error(grease) is None


def test_first_grease_point_in_range_is_none() -> None:
    first = WT_APPLICATION_ERROR_FIRST + 0x1E
    assert (first - 0x21) % 0x1F == 0
    assert http3_to_wt_error(first) is None


@pytest.mark.parametrize(
    "code",
    [
        0,
        0x100,
        ErrorCodes.H3_REQUEST_CANCELLED,
        WT_APPLICATION_ERROR_FIRST - 1,
        WT_APPLICATION_ERROR_LAST + 1,
        2**62 - 1,
    ],
)
def test_out_of_range_http3_code_is_none(code: int) -> None:
    assert http3_to_wt_error(code) is None


@pytest.mark.parametrize("code", [-1, 2**32, 2**40])
def test_out_of_range_wt_code_raises(code: int) -> None:
    with pytest.raises(ValueError):
        wt_to_http3_error(code)


# --------------------------------------------------------------------------- capsules

capsule_lists = st.lists(
    st.tuples(st.integers(min_value=0, max_value=2**62 - 1), st.binary(max_size=300)),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(capsule_lists)
def test_capsule_round_trip(capsules: list[tuple[int, bytes]]) -> None:
    buffer = bytearray(b"".join(encode_capsule(t, v) for t, v in capsules))
    assert decode_capsules(buffer, 1024) == capsules
    assert buffer == b""


@settings(max_examples=100, deadline=None)
@given(capsule_lists)
def test_capsule_byte_by_byte(capsules: list[tuple[int, bytes]]) -> None:
    wire = b"".join(encode_capsule(t, v) for t, v in capsules)
    buffer = bytearray()
    out: list[tuple[int, bytes]] = []
    for byte in wire:
        buffer.append(byte)
        out.extend(decode_capsules(buffer, 1024))
    assert out == capsules
    assert buffer == b""


def test_capsule_literal_bytes() -> None:
    wire = encode_capsule(CAPSULE_CLOSE_WEBTRANSPORT_SESSION, b"\x00\x00\x00\x2abye")
    assert wire == bytes.fromhex("6843") + b"\x07" + b"\x00\x00\x00\x2abye"


def test_incomplete_capsule_stays_buffered() -> None:
    wire = encode_capsule(0x2843, b"\x00\x00\x00\x01hello")
    for cut in range(len(wire)):
        buffer = bytearray(wire[:cut])
        assert decode_capsules(buffer, 1024) == []
        assert buffer == wire[:cut]
    # A complete capsule followed by a partial one: the partial one stays.
    buffer = bytearray(wire + wire[:3])
    assert decode_capsules(buffer, 1024) == [(0x2843, b"\x00\x00\x00\x01hello")]
    assert buffer == wire[:3]


def test_oversize_capsule_raises() -> None:
    # Header only: the announced length alone is enough to refuse.
    buffer = bytearray(encode_uint_var(0x2843) + encode_uint_var(2000))
    with pytest.raises(ValueError):
        decode_capsules(buffer, 1024)
    exact = bytearray(encode_capsule(1, b"x" * 1024))
    assert decode_capsules(exact, 1024) == [(1, b"x" * 1024)]


# --------------------------------------------------------------------------- in-memory pair


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
    client = QuicConnection(configuration=client_cfg)
    server = QuicConnection(
        configuration=server_cfg,
        original_destination_connection_id=client.original_destination_connection_id,
    )
    return client, server


class Pair:
    """A client and a server `QuicConnection`, each under a `WebTransportProtocol`."""

    def __init__(self, certificate: CertificateInfo, *, raw_client_h3: bool = False) -> None:
        self.now = 1.0
        self.cq, self.sq = make_quic_pair(certificate)
        self.raw_h3: H3Connection | None = None
        if raw_client_h3:
            self.raw_h3 = H3Connection(self.cq, enable_webtransport=True)
            self.client: WebTransportProtocol | None = None
        else:
            self.client = WebTransportProtocol(self.cq)
        self.server = WebTransportProtocol(self.sq, limits=Limits(max_sessions=4))
        self.client_events: list[Any] = []
        self.server_events: list[ProtocolEvent] = []
        self.client_quic_events: list[qe.QuicEvent] = []
        self.server_quic_events: list[qe.QuicEvent] = []
        self.split: Callable[[qe.QuicEvent], bool] = lambda event: False
        self.cq.connect(SERVER_ADDR, now=self.now)
        self.pump()
        assert self.cq._handshake_complete and self.sq._handshake_complete

    def _server_handle(self, event: qe.QuicEvent) -> None:
        if isinstance(event, qe.StreamDataReceived) and self.split(event) and len(event.data) > 1:
            data = event.data
            for i in range(len(data)):
                piece = qe.StreamDataReceived(
                    data=data[i : i + 1],
                    end_stream=event.end_stream and i == len(data) - 1,
                    stream_id=event.stream_id,
                )
                self.server_events.extend(self.server.handle_event(piece))
            return
        self.server_events.extend(self.server.handle_event(event))

    def pump(self, rounds: int = 50) -> None:
        for _ in range(rounds):
            moved = False
            self.now += 0.001
            for data, _addr in self.cq.datagrams_to_send(now=self.now):
                moved = True
                self.sq.receive_datagram(data, CLIENT_ADDR, now=self.now)
            while (event := self.sq.next_event()) is not None:
                self.server_quic_events.append(event)
                self._server_handle(event)
            for data, _addr in self.sq.datagrams_to_send(now=self.now):
                moved = True
                self.cq.receive_datagram(data, SERVER_ADDR, now=self.now)
            while (event := self.cq.next_event()) is not None:
                self.client_quic_events.append(event)
                if self.raw_h3 is not None:
                    self.client_events.extend(self.raw_h3.handle_event(event))
                else:
                    assert self.client is not None
                    self.client_events.extend(self.client.handle_event(event))
            if not moved:
                return

    def take_server(self, kind: type[Any]) -> list[Any]:
        found = [e for e in self.server_events if isinstance(e, kind)]
        self.server_events = [e for e in self.server_events if not isinstance(e, kind)]
        return found

    def take_client(self, kind: type[Any]) -> list[Any]:
        found = [e for e in self.client_events if isinstance(e, kind)]
        self.client_events = [e for e in self.client_events if not isinstance(e, kind)]
        return found

    def request(self, path: str = "/echo", dialect: Dialect = DRAFT02) -> int:
        assert self.client is not None
        session_id = self.client.connect(authority="127.0.0.1:4433", path=path, dialect=dialect)
        self.pump()
        return session_id

    def open_session(self, path: str = "/echo", dialect: Dialect = DRAFT02) -> int:
        session_id = self.request(path, dialect)
        (requested,) = self.take_server(SessionRequested)
        assert requested.session_id == session_id
        self.server.accept(session_id)
        self.pump()
        (established,) = self.take_client(SessionEstablished)
        assert established.session_id == session_id
        return session_id

    def assert_alive(self, session_id: int) -> None:
        """A datagram and a stream still get through the session."""
        assert self.client is not None
        self.cq.send_datagram_frame(self.client.datagram_prefix(session_id) + b"ping")
        stream_id = self.client.create_stream(session_id, unidirectional=False)
        self.cq.send_stream_data(stream_id, b"alive", end_stream=True)
        self.pump()
        datagrams = self.take_server(DatagramReceived)
        assert [(d.session_id, d.data) for d in datagrams] == [(session_id, b"ping")]
        opened = [e for e in self.take_server(StreamOpened) if e.stream_id == stream_id]
        assert len(opened) == 1 and opened[0].session_id == session_id
        data = opened[0].data + b"".join(
            e.data for e in self.take_server(StreamDataReceived) if e.stream_id == stream_id
        )
        assert data == b"alive"


@pytest.fixture
def pair(certificate: CertificateInfo) -> Pair:
    return Pair(certificate)


def test_server_settings_arrive_with_its_first_flight(certificate: CertificateInfo) -> None:
    """SETTINGS are 0.5-RTT data: the client can send CONNECT when its handshake completes."""
    cq, sq = make_quic_pair(certificate)
    client, server = WebTransportProtocol(cq), WebTransportProtocol(sq)
    cq.connect(SERVER_ADDR, now=1.0)
    for data, _addr in cq.datagrams_to_send(now=1.0):
        sq.receive_datagram(data, CLIENT_ADDR, now=1.0)
    while (event := sq.next_event()) is not None:
        server.handle_event(event)
    # Only the server's first flight: the client has not even sent its Finished yet.
    for data, _addr in sq.datagrams_to_send(now=1.0):
        cq.receive_datagram(data, SERVER_ADDR, now=1.0)
    while (event := cq.next_event()) is not None:
        client.handle_event(event)
    assert cq._handshake_complete
    assert client.peer_settings is not None
    assert client.peer_settings.get(0x2B603742) == 1


def test_settings_exchanged(pair: Pair) -> None:
    assert pair.client is not None
    assert pair.server.peer_settings is not None
    assert pair.client.peer_settings is not None
    assert pair.client.peer_settings.get(0x2B603742) == 1
    assert pair.client.peer_settings.get(0x33) == 1


def test_connect_requested_and_accepted(pair: Pair) -> None:
    session_id = pair.request("/chat?room=1")
    (requested,) = pair.take_server(SessionRequested)
    assert requested.session_id == session_id
    assert requested.path == "/chat?room=1"
    assert requested.authority == "127.0.0.1:4433"
    assert requested.protocol_token == b"webtransport"
    assert (b":method", b"CONNECT") in requested.headers
    assert pair.take_client(SessionEstablished) == []
    pair.server.accept(session_id)
    pair.pump()
    (established,) = pair.take_client(SessionEstablished)
    assert established.session_id == session_id
    assert (b":status", b"200") in established.headers
    pair.assert_alive(session_id)


def test_reject_404(pair: Pair) -> None:
    session_id = pair.request("/nowhere")
    pair.take_server(SessionRequested)
    pair.server.reject(session_id, 404)
    pair.pump()
    (rejected,) = pair.take_client(SessionRejected)
    assert rejected.session_id == session_id
    assert rejected.status_code == 404
    assert pair.take_client(SessionEstablished) == []


def test_stream_header_one_byte_at_a_time(pair: Pair) -> None:
    assert pair.client is not None
    session_id = pair.open_session()
    stream_id = pair.client.create_stream(session_id, unidirectional=False)
    uni_id = pair.client.create_stream(session_id, unidirectional=True)
    pair.split = lambda event: event.stream_id in (stream_id, uni_id)
    pair.cq.send_stream_data(stream_id, b"hello world", end_stream=True)
    pair.cq.send_stream_data(uni_id, b"uni data", end_stream=True)
    pair.pump()
    opened = {e.stream_id: e for e in pair.take_server(StreamOpened)}
    assert set(opened) == {stream_id, uni_id}
    assert not opened[stream_id].unidirectional
    assert opened[uni_id].unidirectional
    rest = pair.take_server(StreamDataReceived)
    for sid, expected in ((stream_id, b"hello world"), (uni_id, b"uni data")):
        assert opened[sid].session_id == session_id
        pieces = [e for e in rest if e.stream_id == sid]
        data = opened[sid].data + b"".join(p.data for p in pieces)
        assert data == expected
        ended = opened[sid].end_stream or any(p.end_stream for p in pieces)
        assert ended
    assert pair.server.stream_session(stream_id) == session_id


def test_close_capsule_code_and_reason(pair: Pair) -> None:
    assert pair.client is not None
    session_id = pair.open_session()
    own = pair.client.close_session(session_id, 42, "client bye")
    assert [(e.error_code, e.reason) for e in own if isinstance(e, SessionClosed)] == [
        (42, "client bye")
    ]
    pair.pump()
    (closed,) = pair.take_server(SessionClosed)
    assert (closed.session_id, closed.error_code, closed.reason, closed.clean) == (
        session_id,
        42,
        "client bye",
        True,
    )


def test_raw_close_capsule_after_unknown_capsule(pair: Pair) -> None:
    assert pair.client is not None
    session_id = pair.open_session()
    grease = encode_capsule(0x1F * 3 + 0x29, b"grease payload")
    close = encode_capsule(CAPSULE_CLOSE_WEBTRANSPORT_SESSION, (7).to_bytes(4, "big") + b"done")
    pair.client._h3.send_data(session_id, grease, end_stream=False)
    pair.pump()
    assert pair.take_server(SessionClosed) == []
    pair.client._h3.send_data(session_id, close, end_stream=True)
    pair.pump()
    (closed,) = pair.take_server(SessionClosed)
    assert (closed.error_code, closed.reason, closed.clean) == (7, "done", True)


def test_malformed_close_capsule(pair: Pair) -> None:
    assert pair.client is not None
    session_id = pair.open_session()
    bad = encode_capsule(CAPSULE_CLOSE_WEBTRANSPORT_SESSION, b"\x00\x01")
    pair.client._h3.send_data(session_id, bad, end_stream=False)
    pair.pump()
    (closed,) = pair.take_server(SessionClosed)
    assert closed.session_id == session_id
    assert closed.clean is False


def test_datagram_for_unknown_session_dropped(pair: Pair) -> None:
    session_id = pair.open_session()
    pair.cq.send_datagram_frame(encode_uint_var(1000 // 4) + b"lost")
    pair.pump()
    assert pair.take_server(DatagramReceived) == []
    assert pair.sq._close_event is None
    pair.assert_alive(session_id)


def test_get_request_answered_404(certificate: CertificateInfo) -> None:
    pair = Pair(certificate, raw_client_h3=True)
    assert pair.raw_h3 is not None
    stream_id = pair.cq.get_next_available_stream_id()
    pair.raw_h3.send_headers(
        stream_id,
        [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", b"127.0.0.1:4433"),
            (b":path", b"/"),
        ],
        end_stream=True,
    )
    pair.pump()
    assert pair.take_server(SessionRequested) == []
    assert pair.server._sessions == {}
    headers = [e for e in pair.client_events if isinstance(e, h3e.HeadersReceived)]
    assert len(headers) == 1
    assert (b":status", b"404") in headers[0].headers
    assert headers[0].stream_ended


def _refusals(pair: Pair, stream_id: int) -> list[int]:
    codes = []
    for event in pair.client_quic_events:
        if isinstance(event, qe.StopSendingReceived | qe.StreamReset) and (
            event.stream_id == stream_id
        ):
            codes.append(event.error_code)
    return codes


def test_stream_for_closed_session_refused(pair: Pair) -> None:
    assert pair.client is not None
    gone = pair.open_session("/a")
    alive = pair.open_session("/b")
    pair.server.close_session(gone, 0, "")
    pair.pump()
    pair.take_client(SessionClosed)
    stream_id = pair.cq.get_next_available_stream_id()
    pair.cq.send_stream_data(
        stream_id, encode_uint_var(0x41) + encode_uint_var(gone) + b"too late", end_stream=True
    )
    pair.pump()
    assert [e for e in pair.take_server(StreamOpened) if e.stream_id == stream_id] == []
    assert ErrorCodes.WT_SESSION_GONE in _refusals(pair, stream_id)
    assert pair.sq._close_event is None
    pair.assert_alive(alive)


def test_streams_for_unknown_session_refused_beyond_buffer(pair: Pair) -> None:
    alive = pair.open_session()
    stream_ids = []
    for _ in range(40):
        stream_id = pair.cq.get_next_available_stream_id()
        pair.cq.send_stream_data(
            stream_id, encode_uint_var(0x41) + encode_uint_var(4000) + b"orphan"
        )
        stream_ids.append(stream_id)
        pair.pump()
    assert pair.take_server(StreamOpened) == []
    refused = [sid for sid in stream_ids if _refusals(pair, sid)]
    assert refused, "streams for a session that never comes must eventually be refused"
    for sid in refused:
        assert ErrorCodes.WT_BUFFERED_STREAM_REJECTED in _refusals(pair, sid)
    assert pair.sq._close_event is None
    pair.assert_alive(alive)


def test_stream_header_garbage_refused(pair: Pair) -> None:
    """A bidi stream whose first varint is neither 0x41 nor an HTTP/3 frame type."""
    alive = pair.open_session()
    stream_id = pair.cq.get_next_available_stream_id()
    # 0x41 is the signal; a header that runs on past 16 bytes without completing
    # is impossible, so check the truncated-header case: FIN after the signal.
    pair.cq.send_stream_data(stream_id, encode_uint_var(0x41), end_stream=True)
    pair.pump()
    assert pair.take_server(StreamOpened) == []
    assert pair.sq._close_event is None
    pair.assert_alive(alive)
