"""Sans-I/O tests of `WebTransportCore`: literal bytes and in-memory QUIC pairs."""

from __future__ import annotations

import pytest
from aioquic.buffer import encode_uint_var
from aioquic.h3 import events as h3e
from aioquic.quic import events as qe
from hypothesis import given, settings
from hypothesis import strategies as st
from wire import CLIENT_ADDR, SERVER_ADDR, Datagram, Pair, h3_of, make_quic_pair, received

from pywebtransport.shared.constants import (
    CAPSULE_CLOSE_WEBTRANSPORT_SESSION,
    WT_APPLICATION_ERROR_FIRST,
    WT_APPLICATION_ERROR_LAST,
    ErrorCodes,
)
from pywebtransport.shared.exceptions import StreamError
from pywebtransport.shared.types import SessionState
from pywebtransport.shared.utils import CertificateInfo
from pywebtransport.transport import _aioquic
from pywebtransport.transport._core.capsules import decode_capsules, encode_capsule
from pywebtransport.transport._core.codes import http3_to_wt_error, wt_to_http3_error
from pywebtransport.transport._core.dialects import DRAFT02, DRAFT15, Limits
from pywebtransport.transport._core.events import (
    SessionClosed,
    SessionEstablished,
    SessionRejected,
    SessionRequested,
    StreamOpened,
)
from pywebtransport.transport._core.protocol import WebTransportCore

pytestmark = pytest.mark.timeout(30)

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


_FIRST_GREASE_N = -(-(WT_APPLICATION_ERROR_FIRST - 0x21) // 0x1F)
_LAST_GREASE_N = (WT_APPLICATION_ERROR_LAST - 0x21) // 0x1F


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=_FIRST_GREASE_N, max_value=_LAST_GREASE_N))
def test_grease_points_map_to_none(n: int) -> None:
    # Every reserved point 0x1f * N + 0x21 inside the WebTransport range, none outside it.
    grease = 0x1F * n + 0x21
    assert WT_APPLICATION_ERROR_FIRST <= grease <= WT_APPLICATION_ERROR_LAST
    assert http3_to_wt_error(grease) is None
    assert http3_to_wt_error(grease - 1) is not None or grease - 1 < WT_APPLICATION_ERROR_FIRST


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


@pytest.fixture
def pair(certificate: CertificateInfo) -> Pair:
    return Pair(certificate)


@pytest.mark.aioquic_patch("early_settings")
def test_server_settings_arrive_with_its_first_flight(certificate: CertificateInfo) -> None:
    """SETTINGS are 0.5-RTT data: the client can send CONNECT when its handshake completes."""
    cq, sq = make_quic_pair(certificate)
    client = WebTransportCore(_aioquic.AioquicPort(cq))
    server = WebTransportCore(_aioquic.AioquicPort(sq))
    cq.connect(SERVER_ADDR, now=1.0)
    for data, _addr in cq.datagrams_to_send(now=1.0):
        sq.receive_datagram(data, CLIENT_ADDR, now=1.0)
    while (event := sq.next_event()) is not None:
        _aioquic.feed_event(server, event)
    # Only the server's first flight: the client has not even sent its Finished yet.
    for data, _addr in sq.datagrams_to_send(now=1.0):
        cq.receive_datagram(data, SERVER_ADDR, now=1.0)
    handshake_done = False
    while (event := cq.next_event()) is not None:
        handshake_done = handshake_done or isinstance(event, qe.HandshakeCompleted)
        if isinstance(event, qe.StreamDataReceived):
            client.receive_stream_data(event.stream_id, event.data, event.end_stream)
        else:
            _aioquic.feed_event(client, event)
    assert handshake_done
    assert client.peer_settings is not None
    assert client.peer_settings.get(0x2B603742) == 1


def test_settings_exchanged(pair: Pair) -> None:
    assert pair.server.peer_settings is not None
    assert pair.client.peer_settings is not None
    assert pair.client.peer_settings.get(0x2B603742) == 1
    assert pair.client.peer_settings.get(0x33) == 1


def test_connect_requested_and_accepted(pair: Pair) -> None:
    client_session = pair.request("/chat?room=1")
    (requested,) = pair.take_server(SessionRequested)
    session = requested.session
    assert session.session_id == client_session.session_id
    assert session.path == "/chat?room=1"
    assert session.authority == "127.0.0.1:4433"
    assert session.request.protocol_token == b"webtransport"
    assert (b":method", b"CONNECT") in session.headers
    assert session.state is SessionState.CONNECTING
    assert pair.take_client(SessionEstablished) == []
    pair.server.accept(session)
    pair.pump()
    (established,) = pair.take_client(SessionEstablished)
    assert established.session is client_session
    assert (b":status", b"200") in client_session.headers
    assert client_session.state is session.state is SessionState.CONNECTED
    pair.assert_alive(session.session_id)


def test_reject_404(pair: Pair) -> None:
    client_session = pair.request("/nowhere")
    (requested,) = pair.take_server(SessionRequested)
    pair.server.reject(requested.session, 404)
    pair.pump()
    (rejected,) = pair.take_client(SessionRejected)
    assert rejected.session is client_session
    assert rejected.status_code == 404
    assert client_session.rejected_with == 404
    assert client_session.is_closed
    assert pair.take_client(SessionEstablished) == []


def test_sessions_beyond_the_connection_limit_get_429(certificate: CertificateInfo) -> None:
    pair = Pair(certificate, limits=Limits(max_sessions=2))
    pair.open_session("/a")
    pair.open_session("/b")
    third = pair.request("/c")
    assert pair.take_server(SessionRequested) == []
    (rejected,) = pair.take_client(SessionRejected)
    assert rejected.session is third and rejected.status_code == 429


def test_stream_header_one_byte_at_a_time(pair: Pair) -> None:
    session_id = pair.open_session()
    bidi = pair.client_stream(session_id)
    uni = pair.client_stream(session_id, unidirectional=True)
    pair.split = lambda event: event.stream_id in (bidi.stream_id, uni.stream_id)
    pair.client.send(bidi, b"hello world", fin=True)
    pair.client.send(uni, b"uni data", fin=True)
    pair.pump()
    opened = {e.stream.stream_id: e.stream for e in pair.take_server(StreamOpened)}
    assert set(opened) == {bidi.stream_id, uni.stream_id}
    assert not opened[bidi.stream_id].unidirectional
    assert opened[uni.stream_id].unidirectional
    for rec, expected in (
        (opened[bidi.stream_id], b"hello world"),
        (opened[uni.stream_id], b"uni data"),
    ):
        assert rec.session.session_id == session_id
        assert received(rec) == expected
        assert rec.fin_received
    assert pair.server.streams[bidi.stream_id].session.session_id == session_id


def test_read_grants_credit_and_finishes_the_stream(pair: Pair) -> None:
    session_id = pair.open_session()
    rec = pair.client_stream(session_id, unidirectional=True)
    pair.client.send(rec, b"abcdef", fin=True)
    pair.pump()
    (opened,) = pair.take_server(StreamOpened)
    server_rec = opened.stream
    assert pair.server.read(server_rec, 2) == b"ab"
    assert pair.server.read(server_rec) == b"cdef"
    assert server_rec.consumed == 6
    # Everything read and the FIN seen: both halves are done (a peer's uni stream
    # has no sending half), so the protocol forgot it; reads now return EOF.
    assert server_rec.read_done
    assert server_rec.stream_id not in pair.server.streams
    assert pair.server.read(server_rec) == b""


def test_close_capsule_code_and_reason(pair: Pair) -> None:
    session_id = pair.open_session()
    session = pair.client.sessions[session_id]
    pair.client.close_session(session, 42, "client bye")
    pair.pump()
    assert session.is_closed
    assert (session.close_code, session.close_reason, session.closed_by_peer) == (
        42,
        "client bye",
        False,
    )
    (closed,) = pair.take_server(SessionClosed)
    server_session = closed.session
    assert (
        server_session.session_id,
        server_session.close_code,
        server_session.close_reason,
        server_session.closed_cleanly,
        server_session.closed_by_peer,
    ) == (session_id, 42, "client bye", True, True)


def test_raw_close_capsule_after_unknown_capsule(pair: Pair) -> None:
    session_id = pair.open_session()
    grease = encode_capsule(0x1F * 3 + 0x29, b"grease payload")
    close = encode_capsule(CAPSULE_CLOSE_WEBTRANSPORT_SESSION, (7).to_bytes(4, "big") + b"done")
    h3_of(pair.client).send_data(session_id, grease, end_stream=False)
    pair.pump()
    assert pair.take_server(SessionClosed) == []
    h3_of(pair.client).send_data(session_id, close, end_stream=True)
    pair.pump()
    (closed,) = pair.take_server(SessionClosed)
    session = closed.session
    assert (session.close_code, session.close_reason, session.closed_cleanly) == (7, "done", True)


def test_malformed_close_capsule(pair: Pair) -> None:
    session_id = pair.open_session()
    bad = encode_capsule(CAPSULE_CLOSE_WEBTRANSPORT_SESSION, b"\x00\x01")
    h3_of(pair.client).send_data(session_id, bad, end_stream=False)
    pair.pump()
    (closed,) = pair.take_server(SessionClosed)
    assert closed.session.session_id == session_id
    assert closed.session.closed_cleanly is False
    assert closed.session.closed_by_peer is False  # we ended it over the peer's error


def _raw_session(pair: Pair) -> int:
    """A session opened by aioquic's plain H3 client, which sends whatever it is told."""
    assert pair.raw_h3 is not None
    stream_id = pair.cq.get_next_available_stream_id()
    pair.raw_h3.send_headers(
        stream_id,
        [
            (b":method", b"CONNECT"),
            (b":protocol", b"webtransport"),
            (b":scheme", b"https"),
            (b":authority", b"127.0.0.1:4433"),
            (b":path", b"/raw"),
        ],
        end_stream=False,
    )
    pair.pump()
    (requested,) = pair.take_server(SessionRequested)
    pair.server.accept(requested.session)
    pair.pump()
    return stream_id


def test_capsule_data_after_close_resets_the_connect_stream(certificate: CertificateInfo) -> None:
    """draft section 6: nothing may follow CLOSE_WEBTRANSPORT_SESSION: H3_MESSAGE_ERROR."""
    pair = Pair(certificate, raw_client_h3=True)
    assert pair.raw_h3 is not None
    session_id = _raw_session(pair)
    other = _raw_session(pair)
    close = encode_capsule(CAPSULE_CLOSE_WEBTRANSPORT_SESSION, (9).to_bytes(4, "big") + b"x")
    pair.raw_h3.send_data(session_id, close, end_stream=False)
    pair.pump()
    (closed,) = pair.take_server(SessionClosed)
    assert closed.session.close_code == 9
    assert ErrorCodes.H3_MESSAGE_ERROR not in pair.refusals(session_id)
    pair.raw_h3.send_data(session_id, encode_capsule(0x29, b"late"), end_stream=False)
    pair.pump()
    assert ErrorCodes.H3_MESSAGE_ERROR in pair.refusals(session_id)
    assert pair.server_close is None
    assert other in pair.server.sessions


def test_capsule_after_close_in_the_same_data(pair: Pair) -> None:
    session_id = pair.open_session()
    wire = encode_capsule(CAPSULE_CLOSE_WEBTRANSPORT_SESSION, (3).to_bytes(4, "big"))
    wire += encode_capsule(0x29, b"after")
    h3_of(pair.client).send_data(session_id, wire, end_stream=True)
    pair.pump()
    (closed,) = pair.take_server(SessionClosed)
    assert closed.session.close_code == 3  # the first close wins
    assert ErrorCodes.H3_MESSAGE_ERROR in pair.refusals(session_id)


def test_stream_signal_after_connect_headers_is_a_frame_error(pair: Pair) -> None:
    """draft section 4.2: WEBTRANSPORT_STREAM on a CONNECT stream closes with H3_FRAME_ERROR."""
    session_id = pair.open_session()
    signal = encode_uint_var(0x41) + encode_uint_var(session_id)
    pair.cq.send_stream_data(session_id, signal + b"stream data")
    pair.pump()
    assert pair.server_close is not None
    assert pair.server_close.error_code == ErrorCodes.H3_FRAME_ERROR
    (closed,) = pair.take_server(SessionClosed)
    assert closed.session.closed_cleanly is False


@pytest.mark.parametrize("bad_session", [1, 2, 3, 5, 6, 7, 4001])
@pytest.mark.parametrize("unidirectional", [False, True])
def test_session_id_that_is_no_client_bidi_stream_is_an_id_error(
    pair: Pair, bad_session: int, unidirectional: bool
) -> None:
    """draft sections 4.2/4.3: H3_ID_ERROR closes the connection."""
    pair.open_session()
    stream_id = pair.cq.get_next_available_stream_id(is_unidirectional=unidirectional)
    kind = 0x54 if unidirectional else 0x41
    pair.cq.send_stream_data(stream_id, encode_uint_var(kind) + encode_uint_var(bad_session) + b"x")
    pair.pump()
    assert pair.server_close is not None
    assert pair.server_close.error_code == ErrorCodes.H3_ID_ERROR


def test_datagram_for_unknown_session_dropped(pair: Pair) -> None:
    session_id = pair.open_session()
    pair.cq.send_datagram_frame(encode_uint_var(1000 // 4) + b"lost")
    pair.pump()
    assert pair.take_server(Datagram) == []
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
    assert pair.server.sessions == {}
    headers = [e for e in pair.client_events if isinstance(e, h3e.HeadersReceived)]
    assert len(headers) == 1
    assert (b":status", b"404") in headers[0].headers
    assert headers[0].stream_ended


def test_stream_for_closed_session_refused(pair: Pair) -> None:
    gone = pair.open_session("/a")
    alive = pair.open_session("/b")
    pair.server.close_session(pair.server.sessions[gone], 0, "")
    pair.pump()
    pair.take_client(SessionClosed)
    stream_id = pair.cq.get_next_available_stream_id()
    pair.cq.send_stream_data(
        stream_id, encode_uint_var(0x41) + encode_uint_var(gone) + b"too late", end_stream=True
    )
    uni_id = pair.cq.get_next_available_stream_id(is_unidirectional=True)
    pair.cq.send_stream_data(uni_id, encode_uint_var(0x54) + encode_uint_var(gone) + b"late")
    pair.pump()
    assert pair.take_server(StreamOpened) == []
    assert ErrorCodes.WT_SESSION_GONE in pair.refusals(stream_id)
    assert ErrorCodes.WT_SESSION_GONE in pair.refusals(uni_id)
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
    refused = [sid for sid in stream_ids if pair.refusals(sid)]
    assert refused, "streams for a session that never comes must eventually be refused"
    for sid in refused:
        assert ErrorCodes.WT_BUFFERED_STREAM_REJECTED in pair.refusals(sid)
    pair.assert_alive(alive)


def test_stream_before_its_connect_is_held_then_delivered(pair: Pair) -> None:
    """A stream that overtakes its session's CONNECT is delivered once the session exists."""
    session = pair.client.open_session(authority="127.0.0.1:4433", path="/early", dialect=DRAFT02)
    session.state = SessionState.CONNECTED  # as a client that does not wait for the answer
    rec = pair.client.open_stream(session, unidirectional=True)
    pair.client.send(rec, b"early bird", fin=True)
    pair.pump()
    (requested,) = pair.take_server(SessionRequested)
    assert pair.take_server(StreamOpened) == []
    pair.server.accept(requested.session)
    pair.pump()
    (opened,) = pair.take_server(StreamOpened)
    assert received(opened.stream) == b"early bird" and opened.stream.fin_received


def test_stream_header_garbage_refused(pair: Pair) -> None:
    """A bidi stream that ends right after the WebTransport signal."""
    alive = pair.open_session()
    stream_id = pair.cq.get_next_available_stream_id()
    pair.cq.send_stream_data(stream_id, encode_uint_var(0x41), end_stream=True)
    pair.pump()
    assert pair.take_server(StreamOpened) == []
    assert ErrorCodes.H3_STREAM_CREATION_ERROR in pair.refusals(stream_id)
    pair.assert_alive(alive)


def test_late_data_of_a_finished_stream_is_not_a_new_stream(pair: Pair) -> None:
    session_id = pair.open_session()
    rec = pair.client_stream(session_id)
    pair.client.send(rec, b"x")
    pair.pump()
    (opened,) = pair.take_server(StreamOpened)
    server_rec = opened.stream
    pair.server.stop_receiving(server_rec, 5)
    pair.server.send(server_rec, b"", fin=True)
    assert server_rec.stream_id not in pair.server.streams
    # The peer keeps sending bytes that look like a stream header: still not a stream.
    pair.cq.send_stream_data(rec.stream_id, encode_uint_var(0x41) + encode_uint_var(session_id))
    pair.pump()
    assert pair.take_server(StreamOpened) == []
    pair.assert_alive(session_id)


def test_stop_sending_before_the_stream_header_reaches_the_writer(pair: Pair) -> None:
    """A STOP_SENDING that overtakes a peer stream's first bytes is applied once it is claimed."""
    session_id = pair.open_session()
    stream_id = pair.cq.get_next_available_stream_id()
    pair.cq.send_stream_data(stream_id, b"")  # opens the stream locally, sends nothing
    pair.cq.stop_stream(stream_id, wt_to_http3_error(42))  # before any byte of the stream
    pair.pump()
    assert pair.take_server(StreamOpened) == []
    pair.cq.send_stream_data(stream_id, encode_uint_var(0x41) + encode_uint_var(session_id) + b"hi")
    pair.pump()
    (opened,) = pair.take_server(StreamOpened)
    rec = opened.stream
    assert rec.write_done
    assert rec.write_error is not None
    assert (rec.write_error.error_code, rec.write_error.remote) == (42, True)
    with pytest.raises(StreamError) as caught:
        pair.server.send(rec, b"reply")
    assert caught.value.error_code == 42
    assert pair.server.read(rec) == b"hi"


def test_held_streams_are_capped_per_session_and_refused_when_stale(pair: Pair) -> None:
    """Streams ahead of their session are held, 10 per session; stale ones are refused."""
    session = pair.client.open_session(authority="127.0.0.1:4433", path="/early", dialect=DRAFT02)
    session.state = SessionState.CONNECTED  # as a client that does not wait for the answer
    streams = [pair.client.open_stream(session, unidirectional=True) for _ in range(12)]
    for rec in streams:
        pair.client.send(rec, b"early", fin=False)
    pair.pump()
    assert len(pair.take_server(SessionRequested)) == 1  # never answered
    assert pair.server.held_count == 10

    def refused() -> list[int]:
        code = ErrorCodes.WT_BUFFERED_STREAM_REJECTED
        return [rec.stream_id for rec in streams if code in pair.refusals(rec.stream_id)]

    assert refused() == [rec.stream_id for rec in streams[10:]]
    pair.server.expire_held(before=pair.server.now)  # none arrived before now
    assert pair.server.held_count == 10
    pair.server.expire_held(before=pair.server.now + 1.0)
    pair.pump()
    assert pair.server.held_count == 0
    assert refused() == [rec.stream_id for rec in streams]


@pytest.mark.aioquic_patch("h3_settings")  # the server's draft-15 stream limits
def test_a_stream_reset_before_its_header_gives_back_session_credit(
    certificate: CertificateInfo,
) -> None:
    """draft-15: the header was lost and a plain RESET_STREAM ended the retransmission.

    The client counted the stream against its session's credit; with one session on the
    connection the server counts it as opened and done, so credit keeps coming back."""
    pair = Pair(certificate, limits=Limits(max_sessions=1, initial_max_streams_bidi=4))
    session_id = pair.open_session(dialect=DRAFT15)
    client_session = pair.client.sessions[session_id]
    assert client_session.flow is not None
    for _ in range(12):  # three times the initial stream credit
        assert pair.client.stream_blocker(client_session, unidirectional=False) is None
        rec = pair.client.open_stream(client_session, unidirectional=False)
        pair.client.reset(rec, 0)  # before the header left: the peer sees only the reset
        pair.pump()
    pair.assert_alive(session_id)


@pytest.mark.parametrize("stream_state", [True, False], ids=["final_size", "fallback"])
@pytest.mark.parametrize("ending", ["peer_reset", "stopped_by_reader"])
def test_data_of_streams_that_end_unread_gives_back_session_credit(
    certificate: CertificateInfo, ending: str, stream_state: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """draft-15: bytes sent on a stream that is reset, or stopped by its reader, before
    they are read still count against the session's data credit on the sender's side;
    the receiver counts them as read, up to the final size of the reset. Without the
    final size (the `stream_state` feature off) it gives back a whole window instead:
    looser, never starved."""
    monkeypatch.setattr(_aioquic.FEATURES["stream_state"], "enabled", stream_state)
    limits = Limits(max_sessions=1, initial_max_data=8192, flow_control_window=8192)
    pair = Pair(certificate, limits=limits)
    session_id = pair.open_session(dialect=DRAFT15)
    client_session = pair.client.sessions[session_id]
    for _ in range(6):  # 6 x 3000 bytes: more than twice the session's data credit
        rec = pair.client.open_stream(client_session, unidirectional=False)
        assert pair.client.send_allowance(rec, 3000) == 3000
        pair.client.send(rec, b"x" * 3000)
        pair.pump()
        (opened,) = pair.take_server(StreamOpened)
        if ending == "peer_reset":
            pair.client.reset(rec, 1)
        else:
            pair.server.stop_receiving(opened.stream, 2)
        pair.pump()
    pair.assert_alive(session_id)
