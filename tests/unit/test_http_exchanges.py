"""Plain HTTP/3 requests in the core: parsing, the exchange's body, credit and response.

Against the fake QUIC of `test_core_port` (no aioquic): the peer's request is
scripted, what the core sends and grants is recorded.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_core_port import FakeQuic, drain

from pywebtransport.shared.constants import ErrorCodes
from pywebtransport.shared.exceptions import StreamError
from pywebtransport.transport._core.events import ExchangeUpdated, HttpRequestReceived
from pywebtransport.transport._core.headers import PlainRequest, parse_plain_request
from pywebtransport.transport._core.protocol import WebTransportCore
from pywebtransport.transport._core.quic import RequestData, RequestHeaders
from pywebtransport.transport._core.records import ExchangeRecord

pytestmark = pytest.mark.timeout(60)

WINDOW = 4096
STREAM = 0

GET = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"example.test"),
    (b":path", b"/page?x=1"),
    (b"accept", b"text/html"),
]


def post(path: bytes = b"/upload") -> list[tuple[bytes, bytes]]:
    return [(b":method", b"POST"), (b":scheme", b"https"), (b":path", path)]


def request(
    headers: list[tuple[bytes, bytes]], *, ended: bool, serve_http: bool = True, limit: int = 16
) -> tuple[FakeQuic, WebTransportCore, list[object]]:
    quic = FakeQuic()
    core = WebTransportCore(quic, stream_window=WINDOW, max_http_requests=limit)
    core.serve_http = serve_http
    quic.script[STREAM] = [RequestHeaders(STREAM, headers, ended=ended)]
    core.receive_stream_data(STREAM, b"\x01\x00", ended)  # a HEADERS frame's first bytes
    return quic, core, drain(core)


def exchange_of(events: list[object]) -> ExchangeRecord:
    received = [e for e in events if isinstance(e, HttpRequestReceived)]
    assert len(received) == 1
    return received[0].exchange


def feed(
    quic: FakeQuic, core: WebTransportCore, data: bytes, *, ended: bool, stream: int = STREAM
) -> None:
    quic.script[stream] = [RequestData(stream, data, ended)]
    # Each DATA frame costs a few bytes of framing on the wire; the core counts raw bytes.
    core.receive_stream_data(stream, b"\x00\x00" + data, ended)


# ----------------------------------------------------------------------- parsing


def test_a_plain_request_parses_into_method_path_and_regular_headers() -> None:
    parsed = parse_plain_request(GET)
    assert parsed == PlainRequest(
        method="GET",
        scheme="https",
        authority="example.test",
        path="/page?x=1",
        headers=[(b"accept", b"text/html")],
    )


def test_the_host_header_stands_in_for_a_missing_authority() -> None:
    parsed = parse_plain_request([*post(), (b"host", b"h.test")])
    assert isinstance(parsed, PlainRequest) and parsed.authority == "h.test"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([(b":method", b"GET"), (b":scheme", b"https")], 400),  # no :path
        ([(b":method", b"GET"), (b":path", b"/")], 400),  # no :scheme
        ([(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"relative")], 400),
        ([(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"*")], 400),
        ([*post(), (b":path", b"/again")], 400),  # repeated pseudo-header
        ([(b"accept", b"*/*"), *post()], 400),  # pseudo-header after a regular one
        ([*post(), (b":status", b"200")], 400),  # a response pseudo-header
        ([(b":method", b"CONNECT"), (b":authority", b"x:1")], 405),  # not a proxy
    ],
)
def test_malformed_plain_requests_are_refused(
    headers: list[tuple[bytes, bytes]], status: int
) -> None:
    assert parse_plain_request(headers) == status


def test_options_star_is_a_valid_target() -> None:
    parsed = parse_plain_request(
        [(b":method", b"OPTIONS"), (b":scheme", b"https"), (b":path", b"*")]
    )
    assert isinstance(parsed, PlainRequest) and parsed.path == "*"


_names = st.sampled_from(
    [b":method", b":scheme", b":path", b":authority", b":protocol", b":status", b"host", b"x"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_names, st.binary(max_size=12)), max_size=8))
def test_parse_plain_request_never_raises_and_accepts_only_origin_targets(
    headers: list[tuple[bytes, bytes]],
) -> None:
    parsed = parse_plain_request(headers)
    if isinstance(parsed, int):
        assert parsed in (400, 405)
        return
    assert parsed.path.startswith("/") or (parsed.path == "*" and parsed.method == "OPTIONS")
    assert parsed.method and parsed.scheme
    assert all(not name.startswith(b":") for name, _ in parsed.headers)


# ----------------------------------------------------------------------- the core


def test_without_serve_http_a_plain_request_is_answered_404_by_the_core() -> None:
    quic, core, events = request(GET, ended=True, serve_http=False)
    assert not any(isinstance(e, HttpRequestReceived) for e in events)
    assert quic.headers[STREAM] == [(b":status", b"404")]
    assert not core.exchanges


def test_a_request_becomes_an_exchange_and_its_response_goes_out() -> None:
    quic, core, events = request(GET, ended=True)
    exchange = exchange_of(events)
    assert exchange.request.path == "/page?x=1" and exchange.body_ended
    core.respond(exchange, 200, [(b"content-type", b"text/plain")], end=False)
    core.send_body(exchange, b"hello", end=True)
    assert quic.headers[STREAM] == [(b":status", b"200"), (b"content-type", b"text/plain")]
    assert bytes(quic.request_data[STREAM]) == b"hello" and STREAM in quic.request_fin
    assert not core.exchanges  # request and response complete: forgotten
    with pytest.raises(StreamError, match="complete"):
        core.send_body(exchange, b"more", end=True)


def test_the_body_collects_and_credit_comes_back_as_it_is_read() -> None:
    quic, core, events = request(post(), ended=False)
    exchange = exchange_of(events)
    assert quic.windows[STREAM] == 0  # managed: the core grants from now on
    feed(quic, core, b"a" * 3000, ended=False)
    assert isinstance(drain(core)[0], ExchangeUpdated)
    assert quic.windows[STREAM] == 0  # nothing read: nothing granted
    assert core.read_body(exchange) == b"a" * 3000
    assert quic.windows[STREAM] == exchange.received + WINDOW
    feed(quic, core, b"b" * 10, ended=True)
    assert core.read_body(exchange) == b"b" * 10 and exchange.body_ended
    assert STREAM not in quic.windows  # the body ended: the window is left alone


def test_a_response_that_ends_before_the_body_stops_the_rest_of_it() -> None:
    quic, core, events = request(post(), ended=False)
    exchange = exchange_of(events)
    core.respond(exchange, 413, [], end=True)
    assert quic.stops[STREAM] == ErrorCodes.H3_NO_ERROR
    assert not core.exchanges


def test_a_peer_reset_fails_the_exchange_for_reader_and_writer() -> None:
    _quic, core, events = request(post(), ended=False)
    exchange = exchange_of(events)
    core.receive_reset(STREAM, ErrorCodes.H3_REQUEST_CANCELLED)
    assert isinstance(drain(core)[0], ExchangeUpdated)
    with pytest.raises(StreamError, match="reset"):
        core.read_body(exchange)
    with pytest.raises(StreamError, match="reset"):
        core.respond(exchange, 200, [], end=True)
    assert not core.exchanges


def test_a_peer_stop_sending_fails_the_response_and_stops_reading() -> None:
    quic, core, events = request(post(), ended=False)
    exchange = exchange_of(events)
    core.receive_stop_sending(STREAM, ErrorCodes.H3_REQUEST_CANCELLED)
    assert exchange.error is not None
    assert quic.stops[STREAM] == ErrorCodes.H3_REQUEST_CANCELLED


def test_requests_over_the_cap_are_answered_429() -> None:
    quic, core, _ = request(GET, ended=True, limit=1)
    quic.script[4] = [RequestHeaders(4, GET, ended=True)]
    core.receive_stream_data(4, b"\x01\x00", True)
    assert not any(isinstance(e, HttpRequestReceived) for e in drain(core))
    assert quic.headers[4] == [(b":status", b"429")]


def test_the_connection_ending_fails_every_exchange() -> None:
    _quic, core, events = request(post(), ended=False)
    exchange = exchange_of(events)
    core.terminate(0, "gone")
    assert exchange.error is not None and "gone" in str(exchange.error)
    assert not core.exchanges


@settings(max_examples=200, deadline=None)
@given(
    chunks=st.lists(st.integers(min_value=0, max_value=3 * WINDOW // 4), min_size=1, max_size=12),
    reads=st.lists(st.booleans(), min_size=12, max_size=12),
)
def test_every_body_byte_is_read_once_and_credit_always_comes_back(
    chunks: list[int], reads: list[bool]
) -> None:
    """Invariant: the body read equals the body sent; after a read the peer has credit."""
    quic, core, events = request(post(), ended=False)
    exchange = exchange_of(events)
    sent = bytearray()
    got = bytearray()
    for index, size in enumerate(chunks):
        window = quic.windows.get(STREAM, 0) or WINDOW
        # The peer never sends past its credit (QUIC enforces it on the real path).
        size = min(size, max(0, window - exchange.received - 2))
        data = bytes((len(sent) + i) % 256 for i in range(size))
        sent += data
        feed(quic, core, data, ended=index == len(chunks) - 1)
        if reads[index] or index == len(chunks) - 1:
            got += core.read_body(exchange)
            if not exchange.body_ended:
                granted = quic.windows.get(STREAM, 0) or WINDOW
                assert granted - exchange.received >= WINDOW // 2
        assert exchange.buffered <= exchange.received
    assert bytes(got) == bytes(sent)
    assert exchange.body_ended and not exchange.chunks
