"""Property tests of everything in our layer that reads peer bytes.

Each example builds a fresh in-memory aioquic pair (about 4 ms), opens two
sessions and then throws arbitrary bytes at the server side: as a peer
bidirectional or unidirectional stream, as a datagram, as capsules on a CONNECT
stream, or as a CONNECT request. The invariants are always the same: no
exception escapes the core, the bad input closes only what the protocol
says (stream, session or, for connection errors HTTP/3 defines, the connection
with an HTTP/3 code), and the other, healthy session keeps working.
"""

from __future__ import annotations

from typing import Any

import pytest
from aioquic.buffer import encode_uint_var
from aioquic.h3 import events as h3e
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wire import Datagram, Pair, h3_of, received

from pywebtransport.shared.constants import (
    CAPSULE_CLOSE_WEBTRANSPORT_SESSION,
    CAPSULE_DRAIN_WEBTRANSPORT_SESSION,
    WT_APPLICATION_ERROR_FIRST,
    WT_APPLICATION_ERROR_LAST,
    ErrorCodes,
)
from pywebtransport.shared.utils import CertificateInfo, decode_varint
from pywebtransport.transport._core.capsules import decode_capsules, encode_capsule
from pywebtransport.transport._core.codes import http3_to_wt_error, wt_to_http3_error
from pywebtransport.transport._core.events import (
    SessionClosed,
    SessionDraining,
    SessionRequested,
    StreamOpened,
)

pytestmark = pytest.mark.timeout(60)

MAX_VARINT = 2**62 - 1


def fuzz(examples: int) -> settings:
    """Hypothesis settings for these tests: no deadline, no example database."""
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
        database=None,
    )


# Codes a connection may legitimately die with when the peer sends garbage that
# HTTP/3 itself (not WebTransport) treats as a connection error.
H3_CONNECTION_CODES = set(range(0x100, 0x111)) | {0x200, 0x201, 0x202, 0x33}


def _two_sessions(certificate: CertificateInfo) -> tuple[Pair, int, int]:
    pair = Pair(certificate)
    return pair, pair.open_session("/victim"), pair.open_session("/healthy")


# --------------------------------------------------------------------------- pure parsers


@fuzz(3000)
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=64))
def test_decode_capsules_arbitrary_bytes(data: bytes, max_size: int) -> None:
    buffer = bytearray(data)
    try:
        capsules = decode_capsules(buffer, max_size)
    except ValueError:
        return
    # What was consumed is a whole number of capsules; the rest is an unchanged suffix.
    assert data.endswith(bytes(buffer))
    consumed = len(data) - len(buffer)
    assert all(len(value) <= max_size for _, value in capsules)
    assert consumed >= sum(2 + len(value) for _, value in capsules)
    # What stays is never a complete capsule.
    head = decode_varint(bytes(buffer), 0)
    if head is not None:
        length = decode_varint(bytes(buffer), head[1])
        if length is not None:
            assert length[1] + length[0] > len(buffer)


@fuzz(1000)
@given(st.binary(max_size=200), st.lists(st.integers(min_value=1, max_value=200), max_size=8))
def test_decode_capsules_any_split_same_result(data: bytes, cuts: list[int]) -> None:
    try:
        whole = decode_capsules(bytearray(data), 1 << 20)
    except ValueError:
        return
    buffer = bytearray()
    pieces: list[tuple[int, bytes]] = []
    points = sorted({min(c, len(data)) for c in cuts} | {len(data)})
    start = 0
    for point in points:
        buffer += data[start:point]
        start = point
        pieces.extend(decode_capsules(buffer, 1 << 20))
    assert pieces == whole


@fuzz(3000)
@given(st.integers(min_value=0, max_value=MAX_VARINT))
def test_http3_error_code_mapping_any_varint(code: int) -> None:
    wt = http3_to_wt_error(code)
    if wt is None:
        inside = WT_APPLICATION_ERROR_FIRST <= code <= WT_APPLICATION_ERROR_LAST
        assert not inside or (code - 0x21) % 0x1F == 0
    else:
        assert 0 <= wt <= 0xFFFFFFFF
        assert wt_to_http3_error(wt) == code


# --------------------------------------------------------------------------- peer streams

session_ids = st.one_of(
    st.sampled_from(["victim", "healthy", "closed"]),
    st.integers(min_value=0, max_value=MAX_VARINT),
)


def _session_id(choice: int | str, ids: dict[str, int]) -> int:
    return ids[choice] if isinstance(choice, str) else choice


stream_payloads = st.one_of(
    st.binary(max_size=40),
    st.tuples(st.just("header"), session_ids, st.binary(max_size=40)),
    st.tuples(st.just("truncated"), st.integers(min_value=64, max_value=MAX_VARINT)),
)


def _build(kind: int, payload: Any, ids: dict[str, int]) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if payload[0] == "header":
        return encode_uint_var(kind) + encode_uint_var(_session_id(payload[1], ids)) + payload[2]
    # A header whose session-id varint is cut short.
    return encode_uint_var(kind) + encode_uint_var(payload[1])[:-1]


def _check_peer_stream(
    certificate: CertificateInfo, kind: int, unidirectional: bool, payload: Any, fin: bool
) -> None:
    pair, victim, healthy = _two_sessions(certificate)
    closed = pair.open_session("/closed")
    pair.client.close_session(pair.client.sessions[closed], 0, "")
    pair.pump()
    pair.take_server(SessionClosed)
    ids = {"victim": victim, "healthy": healthy, "closed": closed}
    data = _build(kind, payload, ids)
    stream_id = pair.cq.get_next_available_stream_id(is_unidirectional=unidirectional)
    pair.cq.send_stream_data(stream_id, data, end_stream=fin)
    pair.pump()
    opened = [e.stream for e in pair.take_server(StreamOpened) if e.stream.stream_id == stream_id]
    head = decode_varint(data, 0)
    if head is not None and head[0] == kind:
        target = decode_varint(data, head[1])
        if target is not None and target[0] & 3:
            # Not a client-initiated bidirectional stream id: H3_ID_ERROR (draft 4.2/4.3).
            assert opened == []
            assert pair.server_close is not None
            assert pair.server_close.error_code == ErrorCodes.H3_ID_ERROR
            return
        # Any other WebTransport stream header: never a connection error.
        assert pair.server_close is None, pair.server_close
        if target is None:
            assert opened == []
            if fin or len(data) > 16:
                # Refused and forgotten. (A uni stream that already ended needs no
                # STOP_SENDING, so aioquic may send nothing for it.)
                assert stream_id not in pair.server._peeking
                if not unidirectional:
                    assert ErrorCodes.H3_STREAM_CREATION_ERROR in pair.refusals(stream_id)
        elif target[0] in (victim, healthy):
            (rec,) = opened
            assert rec.session.session_id == target[0]
            assert rec.unidirectional is unidirectional
            assert received(rec) == data[target[1] :]
            assert rec.fin_received is fin
        elif target[0] == closed:
            assert opened == []
            assert stream_id not in pair.server.streams
            if not (unidirectional and fin):
                assert ErrorCodes.WT_SESSION_GONE in pair.refusals(stream_id)
        else:
            # Unknown session: held for a CONNECT that may follow, never delivered.
            assert opened == []
            assert stream_id not in pair.server.streams
    else:
        # Not ours: HTTP/3 handles it. It may close the connection, but only with
        # an HTTP/3 code, and it never yields a WebTransport stream.
        assert opened == []
        if pair.server_close is not None:
            assert pair.server_close.error_code in H3_CONNECTION_CODES, pair.server_close
            return
    if victim != healthy:
        pair.assert_alive(healthy)


@fuzz(300)
@given(stream_payloads, st.booleans())
def test_peer_bidi_stream_arbitrary_bytes(
    certificate: CertificateInfo, payload: Any, fin: bool
) -> None:
    _check_peer_stream(certificate, 0x41, False, payload, fin)


@fuzz(300)
@given(stream_payloads, st.booleans())
def test_peer_uni_stream_arbitrary_bytes(
    certificate: CertificateInfo, payload: Any, fin: bool
) -> None:
    _check_peer_stream(certificate, 0x54, True, payload, fin)


# --------------------------------------------------------------------------- datagrams


@fuzz(300)
@given(
    st.one_of(
        st.binary(max_size=30),
        st.tuples(session_ids, st.binary(max_size=30)),
    )
)
def test_datagram_arbitrary_prefix(certificate: CertificateInfo, payload: Any) -> None:
    pair, victim, healthy = _two_sessions(certificate)
    ids = {"victim": victim, "healthy": healthy, "closed": 400}
    if isinstance(payload, bytes):
        data = payload
    else:
        target = _session_id(payload[0], ids)
        data = encode_uint_var(target // 4) + payload[1] if target % 4 == 0 else payload[1]
    pair.cq.send_datagram_frame(data)
    pair.pump()
    got = pair.take_server(Datagram)
    head = decode_varint(data, 0)
    if head is None or head[0] >= 1 << 60:
        # RFC 9297 §2.1: an unparsable quarter stream id, or one of 2**60 or
        # more (no stream id is that large), is H3_DATAGRAM_ERROR.
        assert got == []
        assert pair.server_close is not None
        assert pair.server_close.error_code == ErrorCodes.H3_DATAGRAM_ERROR
        return
    if head[0] * 4 in (victim, healthy):
        assert [(d.session_id, d.data) for d in got] == [(head[0] * 4, data[head[1] :])]
    else:
        assert got == []
    pair.assert_alive(healthy)


# --------------------------------------------------------------------------- capsules on CONNECT


@fuzz(300)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.integers(min_value=0, max_value=MAX_VARINT), st.binary(max_size=40)),
            st.tuples(
                st.just(CAPSULE_CLOSE_WEBTRANSPORT_SESSION), st.binary(min_size=0, max_size=12)
            ),
            st.tuples(st.just(CAPSULE_DRAIN_WEBTRANSPORT_SESSION), st.binary(max_size=2)),
        ),
        max_size=4,
    ),
    st.binary(max_size=12),
)
def test_capsules_on_connect_stream(
    certificate: CertificateInfo, capsules: list[tuple[int, bytes]], tail: bytes
) -> None:
    pair, victim, healthy = _two_sessions(certificate)
    wire = b"".join(encode_capsule(t, v) for t, v in capsules) + tail
    h3_of(pair.client).send_data(victim, wire, end_stream=False)
    pair.pump()
    closed = [e.session for e in pair.take_server(SessionClosed)]
    assert all(c.session_id == victim for c in closed)
    assert len(closed) <= 1
    first_close = next((v for t, v in capsules if t == CAPSULE_CLOSE_WEBTRANSPORT_SESSION), None)
    if first_close is not None:
        # Something closed the session by the time a close capsule was read.
        assert len(closed) == 1
        if len(first_close) >= 4 and closed[0].closed_cleanly:
            # The first CLOSE_WEBTRANSPORT_SESSION wins; nothing after it counts.
            assert closed[0].close_code == int.from_bytes(first_close[:4], "big")
        if len(first_close) < 4:
            assert closed[0].closed_cleanly is False
    elif not closed:
        # No close: every drain was reported and the session still works.
        drains = sum(1 for t, _ in capsules if t == CAPSULE_DRAIN_WEBTRANSPORT_SESSION)
        assert len(pair.take_server(SessionDraining)) == drains
        pair.assert_alive(victim)
    pair.assert_alive(healthy)


# --------------------------------------------------------------------------- CONNECT validation

GOOD = {
    b":method": b"CONNECT",
    b":protocol": b"webtransport",
    b":scheme": b"https",
    b":authority": b"127.0.0.1:4433",
    b":path": b"/x",
}
ABSENT = b"<absent>"


@fuzz(300)
@given(
    st.sampled_from([b"CONNECT", b"GET", b"HEAD", b"POST", b"connect", ABSENT]),
    st.sampled_from([b"webtransport", b"webtransport-h3", b"websocket", b"", ABSENT]),
    st.sampled_from([b"https", b"http", ABSENT]),
    st.sampled_from([b"127.0.0.1:4433", b"example.com", ABSENT]),
    st.sampled_from([b"/x", b"/a?b=c", b"*", ABSENT]),
    st.booleans(),
)
def test_connect_request_validation(
    certificate: CertificateInfo,
    method: bytes,
    protocol: bytes,
    scheme: bytes,
    authority: bytes,
    path: bytes,
    fin: bool,
) -> None:
    pair = Pair(certificate, raw_client_h3=True)
    assert pair.raw_h3 is not None
    values = {
        b":method": method,
        b":protocol": protocol,
        b":scheme": scheme,
        b":authority": authority,
        b":path": path,
    }
    headers = [(k, v) for k, v in values.items() if v != ABSENT]
    stream_id = pair.cq.get_next_available_stream_id()
    pair.raw_h3.send_headers(stream_id, headers, end_stream=fin)
    pair.pump()
    requested = [e.session for e in pair.take_server(SessionRequested)]
    valid = (
        method == b"CONNECT"
        and protocol in (b"webtransport", b"webtransport-h3")
        and scheme == b"https"
        and authority != ABSENT
        and path not in (ABSENT, b"")
        and not fin
    )
    if valid:
        assert [r.session_id for r in requested] == [stream_id]
        assert requested[0].path == path.decode()
        return
    assert requested == []
    if pair.server_close is not None:
        # aioquic's own header validation (see test_malformed_request_closes_only_its_stream).
        assert pair.server_close.error_code in (
            ErrorCodes.H3_MESSAGE_ERROR,
            ErrorCodes.QPACK_DECOMPRESSION_FAILED,
        )
        return
    answers = [e for e in pair.client_events if isinstance(e, h3e.HeadersReceived)]
    statuses = [dict(a.headers).get(b":status") for a in answers]
    if not statuses:
        # Headers aioquic itself rejects: a stream error (RFC 9114 §4.1.2), only this stream.
        assert ErrorCodes.H3_MESSAGE_ERROR in pair.refusals(stream_id)
    else:
        assert len(statuses) == 1 and statuses[0] in (b"400", b"404", b"405"), statuses
    assert pair.server.sessions == {}


def _raw_connect(pair: Pair, extra: list[tuple[bytes, bytes]]) -> int:
    assert pair.raw_h3 is not None
    stream_id = pair.cq.get_next_available_stream_id()
    pair.raw_h3.send_headers(stream_id, [*GOOD.items(), *extra], end_stream=False)
    pair.pump()
    return stream_id


def test_oversize_header_block_refused(certificate: CertificateInfo) -> None:
    """A CONNECT whose field section is far above `max_field_section_size` (64 KiB)."""
    pair = Pair(certificate, raw_client_h3=True)
    # 200 headers x 1000 bytes = ~200 KB of field section; QUIC carries it fine.
    extra = [(f"x-pad-{i}".encode(), b"v" * 1000) for i in range(200)]
    stream_id = _raw_connect(pair, extra)
    requested = pair.take_server(SessionRequested)
    assert pair.server_close is None
    assert requested == []
    answers = [e for e in pair.client_events if isinstance(e, h3e.HeadersReceived)]
    assert answers and dict(answers[0].headers).get(b":status") in (b"431", b"400")
    assert stream_id not in pair.server.sessions


@pytest.mark.parametrize(
    "bad",
    [
        [(b"X-Upper", b"1")],
        [(b":method", b"CONNECT")],
        [(b"x-ws", b" leading-space")],
    ],
    ids=["uppercase-name", "duplicate-pseudo", "value-whitespace"],
)
@pytest.mark.aioquic_patch("malformed_request")
def test_malformed_request_closes_only_its_stream(
    certificate: CertificateInfo, bad: list[tuple[bytes, bytes]]
) -> None:
    pair = Pair(certificate)
    healthy = pair.open_session("/healthy")
    stream_id = pair.cq.get_next_available_stream_id()
    h3_of(pair.client).send_headers(stream_id, [*GOOD.items(), *bad], end_stream=False)
    pair.pump()
    assert pair.take_server(SessionRequested) == []
    assert pair.server_close is None, pair.server_close
    assert ErrorCodes.H3_MESSAGE_ERROR in pair.refusals(stream_id)
    pair.assert_alive(healthy)
