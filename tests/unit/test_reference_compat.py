"""Code written for the reference library (pywebtransport 0.20/0.21 on PyPI) runs here.

Each test uses only the reference's names, keywords and values (module paths are
ours: `pywebtransport.shared.*` for the reference's flat modules).
"""

from __future__ import annotations

import builtins

import pytest

from pywebtransport import (
    AuthenticationError,
    CertificateError,
    ClientError,
    ConfigurationError,
    ConnectionError,
    DatagramError,
    ErrorCodes,
    FlowControlError,
    HandshakeError,
    ProtocolError,
    ServerError,
    SessionClosedError,
    SessionError,
    StreamError,
    TimeoutError,
    WebTransportError,
)

# Every member of the reference's ErrorCodes: 0.21.1 (read from its installed
# constants module) plus WT_STREAM_BUFFER_EXCEEDED, which 0.20 has.
REFERENCE_ERROR_CODES = {
    "APP_AUTHENTICATION_FAILED": 0x1004,
    "APP_CANCELLED": 0x1000,
    "APP_CONNECTION_TIMEOUT": 0x1002,
    "APP_GENERIC_ERROR": 0x1001,
    "APP_INVALID_REQUEST": 0x1007,
    "APP_NO_ERROR": 0x0,
    "APP_OPERATION_TIMEOUT": 0x1003,
    "APP_PERMISSION_DENIED": 0x1005,
    "APP_RESOURCE_EXHAUSTED": 0x1006,
    "APP_SERVICE_UNAVAILABLE": 0x1008,
    "H3_CLOSED_CRITICAL_STREAM": 0x104,
    "H3_CONNECT_ERROR": 0x10F,
    "H3_DATAGRAM_ERROR": 0x33,
    "H3_EXCESSIVE_LOAD": 0x107,
    "H3_FRAME_ERROR": 0x106,
    "H3_FRAME_UNEXPECTED": 0x105,
    "H3_GENERAL_PROTOCOL_ERROR": 0x101,
    "H3_ID_ERROR": 0x108,
    "H3_INTERNAL_ERROR": 0x102,
    "H3_MESSAGE_ERROR": 0x10E,
    "H3_MISSING_SETTINGS": 0x10A,
    "H3_NO_ERROR": 0x100,
    "H3_REQUEST_CANCELLED": 0x10C,
    "H3_REQUEST_INCOMPLETE": 0x10D,
    "H3_REQUEST_REJECTED": 0x10B,
    "H3_SETTINGS_ERROR": 0x109,
    "H3_STREAM_CREATION_ERROR": 0x103,
    "H3_VERSION_FALLBACK": 0x110,
    "LIB_CONNECTION_LIMIT_EXCEEDED": 0x11000002,
    "LIB_CONNECTION_STATE_ERROR": 0x11000001,
    "LIB_INTERNAL_ERROR": 0x10000001,
    "LIB_SESSION_STATE_ERROR": 0x12000001,
    "LIB_STREAM_STATE_ERROR": 0x13000001,
    "QPACK_DECODER_STREAM_ERROR": 0x202,
    "QPACK_DECOMPRESSION_FAILED": 0x200,
    "QPACK_ENCODER_STREAM_ERROR": 0x201,
    "QUIC_AEAD_LIMIT_REACHED": 0xF,
    "QUIC_APPLICATION_ERROR": 0xC,
    "QUIC_CONNECTION_ID_LIMIT_ERROR": 0x9,
    "QUIC_CONNECTION_REFUSED": 0x2,
    "QUIC_CRYPTO_BUFFER_EXCEEDED": 0xD,
    "QUIC_CRYPTO_ERROR_FIRST": 0x100,
    "QUIC_CRYPTO_ERROR_LAST": 0x1FF,
    "QUIC_FINAL_SIZE_ERROR": 0x6,
    "QUIC_FLOW_CONTROL_ERROR": 0x3,
    "QUIC_FRAME_ENCODING_ERROR": 0x7,
    "QUIC_INTERNAL_ERROR": 0x1,
    "QUIC_INVALID_TOKEN": 0xB,
    "QUIC_KEY_UPDATE_ERROR": 0xE,
    "QUIC_NO_ERROR": 0x0,
    "QUIC_NO_VIABLE_PATH": 0x10,
    "QUIC_PROTOCOL_VIOLATION": 0xA,
    "QUIC_STREAM_LIMIT_ERROR": 0x4,
    "QUIC_STREAM_STATE_ERROR": 0x5,
    "QUIC_TRANSPORT_PARAMETER_ERROR": 0x8,
    "WT_ALPN_ERROR": 0x0817B3DD,
    "WT_APPLICATION_ERROR_FIRST": 0x52E4A40FA8DB,
    "WT_APPLICATION_ERROR_LAST": 0x52E5AC983162,
    "WT_BUFFERED_STREAM_REJECTED": 0x3994BD84,
    "WT_FLOW_CONTROL_ERROR": 0x045D4487,
    "WT_REQUIREMENTS_NOT_MET": 0x212C0D48,
    "WT_SESSION_GONE": 0x170D7B68,
    "WT_STREAM_BUFFER_EXCEEDED": 0x52E4A40FA8DC,
}


@pytest.mark.parametrize(("name", "value"), sorted(REFERENCE_ERROR_CODES.items()))
def test_error_codes_have_the_reference_names_and_values(name: str, value: int) -> None:
    assert ErrorCodes[name] == value
    assert getattr(ErrorCodes, name) == value


def test_error_codes_the_issue_names() -> None:
    assert int(ErrorCodes.APP_GENERIC_ERROR) == 0x1001
    assert int(ErrorCodes.APP_CONNECTION_TIMEOUT) == 0x1002
    assert int(ErrorCodes.APP_OPERATION_TIMEOUT) == 0x1003
    assert int(ErrorCodes.WT_STREAM_BUFFER_EXCEEDED) == 0x52E4A40FA8DC


# The default `error_code` of each exception class in the reference (0.20.1).
REFERENCE_DEFAULT_CODES: list[tuple[type[WebTransportError], ErrorCodes]] = [
    (WebTransportError, ErrorCodes.APP_GENERIC_ERROR),
    (AuthenticationError, ErrorCodes.APP_AUTHENTICATION_FAILED),
    (CertificateError, ErrorCodes.APP_AUTHENTICATION_FAILED),
    (ClientError, ErrorCodes.APP_INVALID_REQUEST),
    (ConfigurationError, ErrorCodes.APP_INVALID_REQUEST),
    (ConnectionError, ErrorCodes.APP_GENERIC_ERROR),
    (DatagramError, ErrorCodes.APP_GENERIC_ERROR),
    (FlowControlError, ErrorCodes.WT_FLOW_CONTROL_ERROR),
    (HandshakeError, ErrorCodes.APP_GENERIC_ERROR),
    (ProtocolError, ErrorCodes.H3_GENERAL_PROTOCOL_ERROR),
    (ServerError, ErrorCodes.APP_SERVICE_UNAVAILABLE),
    (SessionError, ErrorCodes.LIB_SESSION_STATE_ERROR),
    (SessionClosedError, ErrorCodes.APP_NO_ERROR),
    (StreamError, ErrorCodes.LIB_STREAM_STATE_ERROR),
    (TimeoutError, ErrorCodes.APP_OPERATION_TIMEOUT),
]


@pytest.mark.parametrize(("cls", "code"), REFERENCE_DEFAULT_CODES, ids=lambda x: str(x))
def test_exception_default_error_codes(cls: type[WebTransportError], code: ErrorCodes) -> None:
    error = cls(message="something failed")
    assert isinstance(error.error_code, int)
    assert error.error_code == code
    assert cls(message="x", error_code=0x42).error_code == 0x42


def test_session_error_with_session_id_has_an_int_code() -> None:
    error = SessionError("...", session_id=0)
    assert error.error_code == ErrorCodes.LIB_SESSION_STATE_ERROR
    assert error.session_id == 0


def test_reference_keyword_arguments_of_the_exceptions() -> None:
    connection = ConnectionError(
        message="lost", connection_handle=7, remote_address=("127.0.0.1", 4433)
    )
    assert (connection.connection_handle, connection.remote_address) == (7, ("127.0.0.1", 4433))
    flow = FlowControlError(message="over", stream_id=4, actual=10, limit=5)
    assert (flow.stream_id, flow.actual, flow.limit) == (4, 10, 5)
    assert ProtocolError(message="bad", frame_type=0x41).frame_type == 0x41
    assert AuthenticationError(message="no", auth_scheme="bearer").auth_scheme == "bearer"
    assert TimeoutError(message="slow", operation="connect").operation == "connect"
    assert DatagramError(message="big", datagram_size=2000, max_size=1000).max_size == 1000
    assert ClientError(message="bad url", url="https://x/").url == "https://x/"
    assert ServerError(message="bind", bind_address=("::", 1)).bind_address == ("::", 1)
    assert CertificateError(message="missing", path="c.pem").path == "c.pem"
    assert HandshakeError(message="refused", stage="connect").stage == "connect"


def test_category_fatal_retriable_and_to_dict() -> None:
    assert FlowControlError(message="x").category == "flow_control"
    assert WebTransportError(message="x").category == "web_transport"
    assert AuthenticationError(message="x").is_fatal
    assert TimeoutError(message="x").is_retriable
    assert not StreamError(message="x").is_retriable
    data = StreamError(message="reset", stream_id=8, error_code=0x42).to_dict()
    assert data["type"] == "StreamError"
    assert data["category"] == "stream"
    assert (data["message"], data["error_code"], data["stream_id"]) == ("reset", 0x42, 8)
    assert data["is_fatal"] is False and data["is_retriable"] is False


def test_from_cause_inherits_code_and_details() -> None:
    cause = StreamError(message="peer reset", error_code=9, details={"a": 1})
    error = SessionError.from_cause("session failed", cause=cause, details={"b": 2})
    assert error.error_code == 9
    assert error.details == {"a": 1, "b": 2}
    assert SessionError.from_cause("x", cause=ValueError("v")).error_code == (
        ErrorCodes.LIB_SESSION_STATE_ERROR
    )
    assert SessionError.from_cause("x", cause=cause, error_code=1).error_code == 1


def test_connection_and_timeout_errors_are_also_the_builtins() -> None:
    assert issubclass(ConnectionError, builtins.ConnectionError)
    assert issubclass(TimeoutError, builtins.TimeoutError)
    with pytest.raises(builtins.ConnectionError):
        raise ConnectionError(message="lost")
    try:
        raise ConnectionError(message="lost", error_code=ErrorCodes.QUIC_CONNECTION_REFUSED)
    except OSError as exc:
        assert isinstance(exc, WebTransportError)
        assert exc.error_code == ErrorCodes.QUIC_CONNECTION_REFUSED


def test_our_earlier_code_names_are_aliases() -> None:
    assert ErrorCodes["APP_INTERNAL_ERROR"] is ErrorCodes.APP_GENERIC_ERROR
    assert ErrorCodes["APP_TIMEOUT"] is ErrorCodes.APP_OPERATION_TIMEOUT
    assert ErrorCodes["APP_PROTOCOL_VIOLATION"] is ErrorCodes.APP_INVALID_REQUEST
    # An alias never takes the name of a value from its first, canonical member.
    assert ErrorCodes(0x100).name == "H3_NO_ERROR"
    assert ErrorCodes(0x1001).name == "APP_GENERIC_ERROR"


def test_event_type_in_the_types_module() -> None:
    from pywebtransport.shared.types import EventType

    assert EventType("session_request") is EventType.SESSION_REQUEST
    assert EventType("datagram_received") is EventType.DATAGRAM_RECEIVED
    assert EventType.SESSION_CLOSED.value == "session_closed"


def test_session_handler_in_the_framework() -> None:
    from pywebtransport.framework import RequestRouter, SessionHandler

    async def handler(session: object) -> None:
        return None

    typed: SessionHandler = handler
    router = RequestRouter()
    router.add_route(path="/echo", handler=typed)
    assert router.get_route_handler(path="/echo") is handler


def test_get_all_routes_lists_the_exact_routes() -> None:
    from pywebtransport.framework import RequestRouter

    async def echo(session: object) -> None:
        return None

    async def chat(session: object, **params: str) -> None:
        return None

    router = RequestRouter()
    router.add_route(path="/echo", handler=echo)
    router.add_pattern_route(pattern=r"/chat/(?P<room>\w+)", handler=chat)
    assert router.get_all_routes() == {"/echo": echo}
    assert router.get_route_stats() == {
        "exact_routes": 1,
        "pattern_routes": 1,
        "has_default_handler": False,
    }
