"""Dialects: per-session draft choice, draft-15 session flow control, subprotocol fields."""

from __future__ import annotations

import pytest
from aioquic.buffer import encode_uint_var
from hypothesis import given
from hypothesis import strategies as st
from wire import Pair, h3_of, received

from pywebtransport.shared.constants import (
    CAPSULE_WT_MAX_DATA,
    CAPSULE_WT_MAX_STREAMS_BIDI,
    SETTINGS_ENABLE_WEBTRANSPORT_DRAFT02,
    SETTINGS_WT_ENABLED,
    SETTINGS_WT_INITIAL_MAX_DATA,
    SETTINGS_WT_MAX_SESSIONS,
    ErrorCodes,
)
from pywebtransport.shared.exceptions import FlowControlError
from pywebtransport.shared.utils import CertificateInfo
from pywebtransport.transport._core.capsules import encode_capsule
from pywebtransport.transport._core.dialects import (
    DRAFT02,
    DRAFT07,
    DRAFT15,
    Limits,
    all_settings,
    choose_dialect,
)
from pywebtransport.transport._core.events import (
    SessionClosed,
    SessionCreditUpdated,
    SessionPeerBlocked,
    SessionRequested,
    StreamOpened,
)
from pywebtransport.transport._core.headers import select_protocol
from pywebtransport.transport._core.records import StreamBlocker
from pywebtransport.transport._core.sfv import (
    encode_sf_string,
    parse_sf_string,
    parse_sf_string_list,
)

pytestmark = pytest.mark.timeout(30)


def test_all_settings_advertise_every_dialect() -> None:
    settings = all_settings(Limits(max_sessions=7, initial_max_data=1000))
    assert settings[SETTINGS_ENABLE_WEBTRANSPORT_DRAFT02] == 1
    assert settings[SETTINGS_WT_MAX_SESSIONS] == 7
    assert settings[SETTINGS_WT_ENABLED] == 1
    assert settings[SETTINGS_WT_INITIAL_MAX_DATA] == 1000
    assert choose_dialect(settings) is DRAFT15


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({SETTINGS_ENABLE_WEBTRANSPORT_DRAFT02: 1}, DRAFT02),
        ({SETTINGS_WT_MAX_SESSIONS: 16}, DRAFT07),
        ({SETTINGS_WT_MAX_SESSIONS: 16, SETTINGS_ENABLE_WEBTRANSPORT_DRAFT02: 1}, DRAFT07),
        ({SETTINGS_WT_ENABLED: 1, SETTINGS_ENABLE_WEBTRANSPORT_DRAFT02: 1}, DRAFT15),
        ({SETTINGS_WT_MAX_SESSIONS: 0}, None),
        ({}, None),
    ],
)
def test_client_picks_newest_advertised(settings: dict[int, int], expected: object) -> None:
    assert choose_dialect(settings) is expected


@pytest.mark.parametrize("dialect", [DRAFT02, DRAFT07, DRAFT15])
@pytest.mark.aioquic_patch("h3_settings")
def test_server_serves_the_dialect_the_client_speaks(
    certificate: CertificateInfo, dialect: object
) -> None:
    pair = Pair(certificate)
    assert isinstance(dialect, type(DRAFT02))
    pair.request("/x", dialect)
    (requested,) = pair.take_server(SessionRequested)
    token = b"webtransport-h3" if dialect is DRAFT15 else b"webtransport"
    assert requested.session.request.protocol_token == token
    # Our client advertises every dialect, so a `webtransport` request is served as the
    # newest `webtransport` dialect its SETTINGS show: draft-07.
    assert requested.session.dialect is (DRAFT15 if dialect is DRAFT15 else DRAFT07)


def test_subprotocols_negotiated_end_to_end(certificate: CertificateInfo) -> None:
    pair = Pair(certificate)
    client_session = pair.request("/p", DRAFT15, protocols=["chat", "json"])
    (requested,) = pair.take_server(SessionRequested)
    session = requested.session
    assert session.offered_protocols == ["chat", "json"]
    chosen = select_protocol(session.offered_protocols, ["json", "chat"])
    assert chosen == "chat"  # the client's preference order wins
    pair.server.accept(session, protocol=chosen)
    pair.pump()
    assert client_session.protocol == "chat"
    assert (b"wt-protocol", b'"chat"') in client_session.headers


def test_a_protocol_the_client_did_not_offer_is_ignored(certificate: CertificateInfo) -> None:
    pair = Pair(certificate)
    client_session = pair.request("/p", DRAFT15, protocols=["chat"])
    (requested,) = pair.take_server(SessionRequested)
    pair.server.accept(requested.session, protocol="other")
    pair.pump()
    assert client_session.is_established
    assert client_session.protocol is None


def test_peer_exceeding_stream_limit_closes_session(certificate: CertificateInfo) -> None:
    pair = Pair(certificate, limits=Limits(max_sessions=4, initial_max_streams_bidi=2))
    session_id = pair.open_session("/fc", DRAFT15)
    flow = pair.client.sessions[session_id].flow
    assert flow is not None
    # Pretend the server granted more than it did, so our client oversteps its real limit.
    flow.remote_max_bidi = 10
    recs = [pair.client_stream(session_id) for _ in range(3)]
    for rec in recs:
        pair.client.send(rec, b"x")
    pair.pump()
    opened = pair.take_server(StreamOpened)
    assert len(opened) == 2
    (closed,) = pair.take_server(SessionClosed)
    assert closed.session.close_code == ErrorCodes.WT_FLOW_CONTROL_ERROR
    assert closed.session.closed_by_peer is False
    (client_closed,) = pair.take_client(SessionClosed)
    assert client_closed.session.close_code == ErrorCodes.WT_FLOW_CONTROL_ERROR
    assert client_closed.session.closed_by_peer is True
    # The streams of the session fail with FlowControlError on both sides.
    server_error = opened[0].stream.read_error
    assert isinstance(server_error, FlowControlError) and not server_error.remote
    assert server_error.error_code == ErrorCodes.WT_FLOW_CONTROL_ERROR
    client_error = recs[0].write_error
    assert isinstance(client_error, FlowControlError) and client_error.remote


@pytest.mark.aioquic_patch("h3_settings")
def test_max_data_capsule_raises_send_credit(certificate: CertificateInfo) -> None:
    pair = Pair(certificate)
    session_id = pair.open_session("/fc", DRAFT15)
    rec = pair.client_stream(session_id, unidirectional=True)
    before = pair.client.send_allowance(rec, 1 << 40)
    assert before == Limits().initial_max_data
    h3_of(pair.server).send_data(
        session_id,
        _varint_capsule(CAPSULE_WT_MAX_DATA, before + 5000),
        end_stream=False,
    )
    pair.pump()
    (updated,) = pair.take_client(SessionCreditUpdated)
    assert (updated.capsule_type, updated.value) == (CAPSULE_WT_MAX_DATA, before + 5000)
    assert pair.client.send_allowance(rec, 1 << 40) == before + 5000
    pair.client.send(rec, b"x" * (before + 5000))
    assert pair.client.send_allowance(rec, 10) == 0
    pair.pump()
    # Blocked: WT_DATA_BLOCKED told the server, which answers once its reader consumes.
    (blocked,) = pair.take_server(SessionPeerBlocked)
    assert blocked.value == before + 5000


@pytest.mark.aioquic_patch("h3_settings")
def test_stream_limit_blocks_then_grants(certificate: CertificateInfo) -> None:
    pair = Pair(certificate, limits=Limits(max_sessions=4, initial_max_streams_uni=1))
    session_id = pair.open_session("/fc", DRAFT15)
    session = pair.client.sessions[session_id]
    assert pair.client.stream_blocker(session, unidirectional=True) is None
    rec = pair.client_stream(session_id, unidirectional=True)
    pair.client.send(rec, b"one", fin=True)
    assert pair.client.stream_blocker(session, unidirectional=True) is StreamBlocker.SESSION
    pair.pump()
    (opened,) = pair.take_server(StreamOpened)
    assert pair.server.read(opened.stream) == b"one"  # the application is done with it
    assert pair.server.read(opened.stream) == b""
    pair.pump()
    assert pair.client.stream_blocker(session, unidirectional=True) is None


@pytest.mark.aioquic_patch("h3_settings")
def test_reset_streams_give_their_credit_back(certificate: CertificateInfo) -> None:
    pair = Pair(certificate, limits=Limits(max_sessions=4, initial_max_streams_bidi=2))
    session_id = pair.open_session("/fc", DRAFT15)
    session = pair.client.sessions[session_id]
    for _ in range(6):
        assert pair.client.stream_blocker(session, unidirectional=False) is None
        rec = pair.client_stream(session_id)
        pair.client.send(rec, b"x")
        pair.pump()
        (opened,) = pair.take_server(StreamOpened)
        # Both sides abort both halves; no byte is ever read.
        pair.client.reset(rec, 1)
        pair.client.stop_receiving(rec, 1)
        pair.pump()
        assert opened.stream.reset_received
        pair.server.reset(opened.stream, 1)
        pair.pump()
        assert opened.stream.stream_id not in pair.server.streams
        assert rec.stream_id not in pair.client.streams


@pytest.mark.aioquic_patch("h3_settings")
def test_consumption_grants_max_data(certificate: CertificateInfo) -> None:
    pair = Pair(
        certificate,
        limits=Limits(max_sessions=4, initial_max_data=1000, flow_control_window=1000),
    )
    session_id = pair.open_session("/fc", DRAFT15)
    client_flow = pair.client.sessions[session_id].flow
    assert client_flow is not None and client_flow.remote_max_data == 1000
    rec = pair.client_stream(session_id, unidirectional=True)
    pair.client.send(rec, b"a" * 600)
    pair.pump()
    (opened,) = pair.take_server(StreamOpened)
    assert pair.server.read(opened.stream, 400) == b"a" * 400
    pair.pump()
    assert client_flow.remote_max_data == 1000  # less than half a window consumed
    assert pair.server.read(opened.stream, 200) == b"a" * 200
    pair.pump()
    assert client_flow.remote_max_data == 1600


def _varint_capsule(capsule_type: int, value: int) -> bytes:
    return encode_capsule(capsule_type, encode_uint_var(value))


def test_malformed_flow_capsule_closes_session(certificate: CertificateInfo) -> None:
    pair = Pair(certificate)
    session_id = pair.open_session("/fc", DRAFT15)
    h3_of(pair.server).send_data(
        session_id, encode_capsule(CAPSULE_WT_MAX_STREAMS_BIDI, b"\x40"), end_stream=False
    )
    pair.pump()
    (closed,) = pair.take_client(SessionClosed)
    assert closed.session.closed_cleanly is False


_SF_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


@given(st.lists(_SF_TEXT, min_size=1, max_size=5))
def test_sf_string_list_round_trip(items: list[str]) -> None:
    encoded = b", ".join(encode_sf_string(item) for item in items)
    assert parse_sf_string_list(encoded) == items


@given(st.binary(max_size=40))
def test_sf_parser_never_raises(data: bytes) -> None:
    result = parse_sf_string_list(data)
    assert result is None or all(isinstance(item, str) for item in result)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'"a"', "a"),
        (b'"a", "b"', None),
        (b"a", None),
        (b'"unterminated', None),
        (b'"a";q=1', "a"),
        (b'"x\\"y"', 'x"y'),
    ],
)
def test_sf_string_literals(raw: bytes, expected: str | None) -> None:
    assert parse_sf_string(raw) == expected


def test_held_stream_buffer_is_capped(certificate: CertificateInfo) -> None:
    """A stream for a session that has not arrived may buffer at most 64 KiB."""
    pair = Pair(certificate)
    stream_id = pair.cq.get_next_available_stream_id()
    header = encode_uint_var(0x41) + encode_uint_var(400)  # session 400 was never requested
    pair.cq.send_stream_data(stream_id, header + b"x" * 200_000)
    pair.pump(rounds=400)
    assert ErrorCodes.WT_BUFFERED_STREAM_REJECTED in pair.refusals(stream_id)
    assert stream_id not in pair.server._held.get(400, {})
    session_id = pair.open_session("/still-fine")
    pair.assert_alive(session_id)


def test_received_helper_reads_records(certificate: CertificateInfo) -> None:
    pair = Pair(certificate)
    session_id = pair.open_session()
    rec = pair.client_stream(session_id, unidirectional=True)
    pair.client.send(rec, b"one ")
    pair.client.send(rec, b"two", fin=True)
    pair.pump()
    (opened,) = pair.take_server(StreamOpened)
    assert received(opened.stream) == b"one two"
