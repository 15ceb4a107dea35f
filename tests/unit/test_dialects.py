"""Dialects: per-session draft choice, draft-15 session flow control, subprotocol fields."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_protocol import Pair

from pywebtransport.shared.constants import (
    CAPSULE_WT_MAX_DATA,
    CAPSULE_WT_MAX_STREAMS_BIDI,
    SETTINGS_ENABLE_WEBTRANSPORT_DRAFT02,
    SETTINGS_WT_ENABLED,
    SETTINGS_WT_INITIAL_MAX_DATA,
    SETTINGS_WT_MAX_SESSIONS,
    ErrorCodes,
)
from pywebtransport.shared.utils import CertificateInfo
from pywebtransport.transport._protocol import (
    DRAFT02,
    DRAFT07,
    DRAFT15,
    Limits,
    SessionClosed,
    SessionCreditUpdated,
    SessionRequested,
    StreamOpened,
    all_settings,
    choose_dialect,
    encode_capsule,
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
def test_server_serves_the_dialect_the_client_speaks(
    certificate: CertificateInfo, dialect: object
) -> None:
    pair = Pair(certificate)
    assert isinstance(dialect, type(DRAFT02))
    pair.request("/x", dialect)
    (requested,) = pair.take_server(SessionRequested)
    token = b"webtransport-h3" if dialect is DRAFT15 else b"webtransport"
    assert requested.protocol_token == token
    # Our client advertises every dialect, so a `webtransport` request is served as the
    # newest `webtransport` dialect its SETTINGS show: draft-07.
    assert requested.dialect is (DRAFT15 if dialect is DRAFT15 else DRAFT07)


def test_subprotocols_reach_the_server(certificate: CertificateInfo) -> None:
    pair = Pair(certificate)
    assert pair.client is not None
    offered = b", ".join(encode_sf_string(p) for p in ["chat", "json"])
    pair.client.connect(
        authority="127.0.0.1:4433",
        path="/p",
        headers=[(b"wt-available-protocols", offered)],
        dialect=DRAFT15,
    )
    pair.pump()
    (requested,) = pair.take_server(SessionRequested)
    assert requested.protocols == ["chat", "json"]


def test_peer_exceeding_stream_limit_closes_session(certificate: CertificateInfo) -> None:
    pair = Pair(certificate)
    pair.server.limits = Limits(max_sessions=4, initial_max_streams_bidi=2)
    session_id = pair.open_session("/fc", DRAFT15)
    assert pair.client is not None
    flow = pair.client._sessions[session_id].flow
    assert flow is not None
    # Pretend the server granted more than it did, so our client oversteps its real limit.
    flow.remote_max_bidi = 10
    for _ in range(3):
        stream_id = pair.client.create_stream(session_id, unidirectional=False)
        pair.cq.send_stream_data(stream_id, b"x")
    pair.pump()
    opened = pair.take_server(StreamOpened)
    assert len(opened) == 2
    (closed,) = pair.take_server(SessionClosed)
    assert closed.error_code == ErrorCodes.WT_FLOW_CONTROL_ERROR
    assert closed.by_peer is False


def test_max_data_capsule_raises_send_credit(certificate: CertificateInfo) -> None:
    pair = Pair(certificate)
    session_id = pair.open_session("/fc", DRAFT15)
    assert pair.client is not None
    before = pair.client.send_credit(session_id)
    assert before == Limits().initial_max_data
    pair.server._h3.send_data(
        session_id,
        _varint_capsule(CAPSULE_WT_MAX_DATA, before + 5000),
        end_stream=False,
    )
    pair.pump()
    assert pair.take_client(SessionCreditUpdated)
    assert pair.client.send_credit(session_id) == before + 5000
    pair.client.data_sent(session_id, before + 5000)
    assert pair.client.send_credit(session_id) == 0


def test_stream_limit_blocks_then_grants(certificate: CertificateInfo) -> None:
    pair = Pair(certificate)
    pair.server.limits = Limits(max_sessions=4, initial_max_streams_uni=1)
    session_id = pair.open_session("/fc", DRAFT15)
    assert pair.client is not None
    flow = pair.client._sessions[session_id].flow
    assert flow is not None
    flow.remote_max_uni = 1  # the server's SETTINGS predate the limit change above
    assert pair.client.can_open_stream(session_id, unidirectional=True)
    stream_id = pair.client.create_stream(session_id, unidirectional=True)
    pair.cq.send_stream_data(stream_id, b"one", end_stream=True)
    assert not pair.client.can_open_stream(session_id, unidirectional=True)
    pair.pump()
    (opened,) = pair.take_server(StreamOpened)
    pair.server.stream_finished(opened.stream_id)  # the application is done with it
    pair.pump()
    assert pair.client.can_open_stream(session_id, unidirectional=True)


def test_consumption_grants_max_data(certificate: CertificateInfo) -> None:
    pair = Pair(certificate)
    pair.server.limits = Limits(max_sessions=4, initial_max_data=1000)
    session_id = pair.open_session("/fc", DRAFT15)
    flow = pair.server._sessions[session_id].flow
    assert flow is not None
    flow.window = flow.max_data_sent = 1000
    assert not pair.server.data_consumed(session_id, 400)
    assert pair.server.data_consumed(session_id, 200)
    pair.pump()
    assert pair.client is not None
    client_flow = pair.client._sessions[session_id].flow
    assert client_flow is not None and client_flow.remote_max_data >= 1600


def _varint_capsule(capsule_type: int, value: int) -> bytes:
    from aioquic.buffer import encode_uint_var

    return encode_capsule(capsule_type, encode_uint_var(value))


def test_malformed_flow_capsule_closes_session(certificate: CertificateInfo) -> None:
    pair = Pair(certificate)
    session_id = pair.open_session("/fc", DRAFT15)
    pair.server._h3.send_data(
        session_id, encode_capsule(CAPSULE_WT_MAX_STREAMS_BIDI, b"\x40"), end_stream=False
    )
    pair.pump()
    (closed,) = pair.take_client(SessionClosed)
    assert closed.clean is False


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
    from aioquic.buffer import encode_uint_var
    from test_protocol import _refusals

    pair = Pair(certificate)
    stream_id = pair.cq.get_next_available_stream_id()
    header = encode_uint_var(0x41) + encode_uint_var(400)  # session 400 was never requested
    pair.cq.send_stream_data(stream_id, header + b"x" * 200_000)
    pair.pump(rounds=400)
    assert ErrorCodes.WT_BUFFERED_STREAM_REJECTED in _refusals(pair, stream_id)
    held = pair.server._orphans.get(400, {})
    assert stream_id not in held
    session_id = pair.open_session("/still-fine")
    pair.assert_alive(session_id)
