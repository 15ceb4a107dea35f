"""Our client against our server over real UDP on 127.0.0.1: streams, datagrams, closes."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from pywebtransport import (
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
    WebTransportStream,
)
from pywebtransport.shared.exceptions import (
    ClientError,
    DatagramError,
    HandshakeError,
    SessionClosedError,
    StreamError,
)
from pywebtransport.shared.exceptions import TimeoutError as WTTimeoutError

from .conftest import Capture, ServerFactory, url_of


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.timeout(15)
async def test_connect_positional_and_keyword(
    echo_server: WebTransportServer, client: WebTransportClient
) -> None:
    first = await client.connect(url_of(echo_server, "/a?x=1"))
    second = await client.connect(url=url_of(echo_server, "/b"))
    assert first.is_ready and second.is_ready
    assert first.path == "/a?x=1"
    assert second.path == "/b"
    assert first.connection is not second.connection
    await first.close()
    await second.close()


@pytest.mark.timeout(40)
@pytest.mark.parametrize("size", [0, 1, 64 * 1024, 1024 * 1024, 5 * 1024 * 1024])
async def test_bidi_echo_sha256(
    echo_server: WebTransportServer, client: WebTransportClient, size: int
) -> None:
    payload = os.urandom(size)
    session = await client.connect(url_of(echo_server))
    stream = await session.create_bidirectional_stream()
    writer = asyncio.create_task(stream.write(payload, end_stream=True))
    echoed = await stream.read_all()
    await writer
    assert len(echoed) == size
    assert _sha(echoed) == _sha(payload)
    await session.close()


@pytest.mark.timeout(30)
async def test_50_concurrent_bidi_streams(
    echo_server: WebTransportServer, client: WebTransportClient
) -> None:
    session = await client.connect(url_of(echo_server))

    async def one(i: int) -> bool:
        payload = os.urandom(1000 + i * 997)
        stream = await session.create_bidirectional_stream()
        await stream.write(payload, end_stream=True)
        return _sha(await stream.read_all()) == _sha(payload)

    results = await asyncio.gather(*(one(i) for i in range(50)))
    assert all(results)
    await session.close()


@pytest.mark.timeout(15)
async def test_uni_streams_both_directions(
    echo_server: WebTransportServer, client: WebTransportClient
) -> None:
    session = await client.connect(url_of(echo_server))
    payload = os.urandom(200_000)
    out = await session.create_unidirectional_stream()
    await out.write(payload, end_stream=True)
    back = await session.accept_unidirectional_stream(timeout=5)
    assert not isinstance(back, WebTransportStream)
    assert _sha(await back.read_all()) == _sha(payload)
    await session.close()


@pytest.mark.timeout(15)
async def test_server_initiated_bidi_stream(
    start_server: ServerFactory, capture: Capture, client: WebTransportClient
) -> None:
    server = await start_server(capture)
    session = await client.connect(url_of(server))
    server_session = await capture.next()
    out = await server_session.create_bidirectional_stream()
    await out.write(b"from server", end_stream=True)
    incoming = await session.accept_bidirectional_stream(timeout=5)
    assert await incoming.read_all() == b"from server"
    await incoming.write(b"reply from client", end_stream=True)
    assert await asyncio.wait_for(out.read_all(), 5) == b"reply from client"
    await session.close()


@pytest.mark.timeout(15)
async def test_datagram_echo(echo_server: WebTransportServer, client: WebTransportClient) -> None:
    session = await client.connect(url_of(echo_server))
    size = session.max_datagram_size
    assert 1000 <= size < 16384
    sent = {os.urandom(8) + i.to_bytes(4, "big") * ((size - 8) // 4) for i in range(100)}
    for datagram in sent:
        assert len(datagram) <= size
        await session.send_datagram(datagram)
        await asyncio.sleep(0)
    received: set[bytes] = set()
    try:
        async with asyncio.timeout(3):
            while len(received) < len(sent):
                received.add(await session.receive_datagram())
    except TimeoutError:
        pass
    assert received <= sent
    # Loopback does not lose packets; allow a little for queue limits.
    assert len(received) >= 90, f"only {len(received)} of {len(sent)} datagrams echoed"
    await session.close()


@pytest.mark.timeout(10)
async def test_oversize_datagram(
    echo_server: WebTransportServer, client: WebTransportClient
) -> None:
    session = await client.connect(url_of(echo_server))
    with pytest.raises(DatagramError):
        await session.send_datagram(b"x" * (session.max_datagram_size + 1))
    await session.send_datagram(b"x" * session.max_datagram_size)
    await session.close()


@pytest.mark.timeout(10)
async def test_client_close_code_seen_by_server(
    start_server: ServerFactory, capture: Capture, client: WebTransportClient
) -> None:
    server = await start_server(capture)
    session = await client.connect(url_of(server))
    server_session = await capture.next()
    await session.close(error_code=4242, reason="client says bye")
    info = await asyncio.wait_for(server_session.closed, 5)
    assert (info.error_code, info.reason, info.remote) == (4242, "client says bye", True)
    assert info.clean
    local = await asyncio.wait_for(session.closed, 5)
    assert (local.error_code, local.remote) == (4242, False)


@pytest.mark.timeout(10)
async def test_server_close_code_seen_by_client(
    start_server: ServerFactory, client: WebTransportClient
) -> None:
    async def handler(session: WebTransportSession) -> None:
        await asyncio.sleep(0.05)
        await session.close(error_code=0xFFFFFFFF, reason="server bye ✓")

    server = await start_server(handler)
    session = await client.connect(url_of(server))
    info = await asyncio.wait_for(session.closed, 5)
    assert (info.error_code, info.reason, info.remote) == (0xFFFFFFFF, "server bye ✓", True)


@pytest.mark.timeout(10)
async def test_no_handler_is_404(start_server: ServerFactory, client: WebTransportClient) -> None:
    server = await start_server(None)
    with pytest.raises(HandshakeError) as info:
        await client.connect(url_of(server, "/anything"))
    assert info.value.status_code == 404
    assert isinstance(info.value, ClientError)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("code", [0, 0x1E, 0xFFFFFFFF])
async def test_stream_reset_code_seen_by_peer(
    start_server: ServerFactory, capture: Capture, client: WebTransportClient, code: int
) -> None:
    server = await start_server(capture)
    session = await client.connect(url_of(server))
    server_session = await capture.next()
    stream = await session.create_bidirectional_stream()
    await stream.write(b"partial")
    incoming = await server_session.accept_bidirectional_stream(timeout=5)
    assert await incoming.readexactly(7) == b"partial"
    await stream.reset(error_code=code)  # 0x1e crosses the first GREASE point
    with pytest.raises(StreamError) as info:
        await asyncio.wait_for(incoming.read(), 5)
    assert info.value.error_code == code
    await session.close()


@pytest.mark.timeout(10)
@pytest.mark.parametrize("code", [0, 77, 0xFFFFFFFF])
async def test_stop_sending_code_seen_by_writer(
    start_server: ServerFactory, capture: Capture, client: WebTransportClient, code: int
) -> None:
    server = await start_server(capture)
    session = await client.connect(url_of(server))
    server_session = await capture.next()
    stream = await session.create_bidirectional_stream()
    await stream.write(b"hello")
    incoming = await server_session.accept_bidirectional_stream(timeout=5)
    await incoming.stop_receiving(error_code=code)
    with pytest.raises(StreamError) as info:
        async with asyncio.timeout(5):
            while True:
                await stream.write(b"x" * 1000)
                await asyncio.sleep(0.01)
    assert info.value.error_code == code
    await session.close()


@pytest.mark.timeout(10)
async def test_write_after_fin(echo_server: WebTransportServer, client: WebTransportClient) -> None:
    session = await client.connect(url_of(echo_server))
    stream = await session.create_bidirectional_stream()
    await stream.write(b"done", end_stream=True)
    with pytest.raises(StreamError):
        await stream.write(b"more")
    assert await stream.read_all() == b"done"
    await session.close()


@pytest.mark.timeout(10)
async def test_read_all_max_size(
    echo_server: WebTransportServer, client: WebTransportClient
) -> None:
    session = await client.connect(url_of(echo_server))
    stream = await session.create_bidirectional_stream()
    await stream.write(b"y" * 100_000, end_stream=True)
    with pytest.raises(StreamError):
        await stream.read_all(max_size=10_000)
    # Within the cap works on another stream of the same session.
    other = await session.create_bidirectional_stream()
    await other.write(b"z" * 5000, end_stream=True)
    assert await other.read_all(max_size=10_000) == b"z" * 5000
    await session.close()


@pytest.mark.timeout(30)
@pytest.mark.aioquic_patch("stream_state")
async def test_backpressure_blocks_then_completes(
    start_server: ServerFactory, capture: Capture, client: WebTransportClient
) -> None:
    server = await start_server(capture)
    session = await client.connect(url_of(server))
    server_session = await capture.next()
    payload = os.urandom(8 * 1024 * 1024)
    stream = await session.create_bidirectional_stream()
    writer = asyncio.create_task(stream.write(payload, end_stream=True))
    high = client.config.max_stream_write_buffer_size
    peak = 0
    for _ in range(20):
        await asyncio.sleep(0.05)
        peak = max(peak, (await stream.diagnostics())["send_buffered"])
    assert not writer.done(), "an 8 MiB write finished although the peer reads nothing"
    assert peak <= high + high, f"{peak} bytes buffered for sending (limit {high})"
    incoming = await server_session.accept_bidirectional_stream(timeout=5)
    received = await asyncio.wait_for(incoming.read_all(), 20)
    await asyncio.wait_for(writer, 5)
    assert len(received) == len(payload)
    assert _sha(received) == _sha(payload)
    await session.close()


@pytest.mark.timeout(15)
async def test_second_session_on_same_connection(
    start_server: ServerFactory, capture: Capture, client: WebTransportClient
) -> None:
    server = await start_server(capture)
    first = await client.connect(url_of(server, "/first"))
    server_first = await capture.next()
    second = await first.connection.create_session("/other")
    server_second = await capture.next()
    assert second.connection is first.connection
    assert second.session_id != first.session_id
    assert (server_first.path, server_second.path) == ("/first", "/other")
    assert server_first.connection is server_second.connection
    stream = await second.create_bidirectional_stream()
    await stream.write(b"on second", end_stream=True)
    incoming = await server_second.accept_bidirectional_stream(timeout=5)
    assert await incoming.read_all() == b"on second"
    await second.close(error_code=3)
    info = await asyncio.wait_for(server_second.closed, 5)
    assert info.error_code == 3
    # The first session is untouched by the second one's close.
    assert first.is_ready and not server_first.is_closed
    stream = await first.create_bidirectional_stream()
    await stream.write(b"still here", end_stream=True)
    incoming = await server_first.accept_bidirectional_stream(timeout=5)
    assert await incoming.read_all() == b"still here"
    await first.close()


@pytest.mark.timeout(15)
async def test_receive_datagram_times_out_and_ends_with_the_session(
    echo_server: WebTransportServer, client: WebTransportClient
) -> None:
    session = await client.connect(url_of(echo_server))
    with pytest.raises(WTTimeoutError):
        await session.receive_datagram(timeout=0.2)
    waiting = asyncio.create_task(session.receive_datagram())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await session.close()
    with pytest.raises(SessionClosedError):
        await asyncio.wait_for(waiting, 5)


@pytest.mark.timeout(15)
@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("x-pad", "value ", "ends with whitespace"),
        ("x-pad", " value", "starts with whitespace"),
        ("x-crlf", "a\r\nb", "forbidden characters"),
        ("x bad", "v", "invalid characters"),
    ],
)
async def test_invalid_request_header_is_refused_before_sending(
    echo_server: WebTransportServer, client: WebTransportClient, name: str, value: str, why: str
) -> None:
    with pytest.raises(ClientError, match=why) as info:
        await client.connect(url_of(echo_server), headers={name: value})
    assert not isinstance(info.value, HandshakeError)
    # The client and the server carry on.
    session = await client.connect(url_of(echo_server), headers={"x-ok": "fine"})
    await session.close()
