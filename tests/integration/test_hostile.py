"""Hostile peers on loopback (real UDP): garbage, abandoned handshakes, bogus ids, limits.

Every test checks two things: the bad peer gets what the protocol says, and a
well-behaved client on the same server is served normally afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl

import pytest
from aioquic.buffer import encode_uint_var
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from pywebtransport import (
    ClientConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.shared.exceptions import TimeoutError, WebTransportError

from .conftest import Capture, ServerFactory, echo_handler, url_of, wait_until

MIB = 1024 * 1024


def rss_bytes() -> int:
    """Resident set size of this process (the server runs in-process)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def assert_echo_works(client_config: ClientConfig, server: WebTransportServer) -> None:
    """A fresh, well-behaved client still gets a stream and a datagram echoed."""
    async with WebTransportClient(client_config) as good:
        session = await good.connect(url_of(server))
        stream = await session.create_bidirectional_stream()
        payload = os.urandom(20_000)
        await stream.write(payload, end_stream=True)
        assert await stream.read_all() == payload
        await session.send_datagram(b"still here")
        assert await session.receive_datagram(timeout=3) == b"still here"
        await session.close()


def server_port(server: WebTransportServer) -> int:
    address = server.local_address
    assert address is not None
    return address[1]


@pytest.mark.timeout(20)
async def test_garbage_udp_datagrams(
    echo_server: WebTransportServer, client_config: ClientConfig
) -> None:
    port = server_port(echo_server)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for size in (0, 1, 7, 20, 1200, 1350, 1500, 9000):
            for first in (0x00, 0xC0, 0xC3, 0x40, 0xFF):
                body = bytes([first]) + os.urandom(max(0, size - 1)) if size else b""
                sock.sendto(body, ("127.0.0.1", port))
        # Long-header Initial-looking packets with random connection ids.
        for _ in range(200):
            header = b"\xc0\x00\x00\x00\x01\x08" + os.urandom(8) + b"\x08" + os.urandom(8)
            sock.sendto(header + os.urandom(1200 - len(header)), ("127.0.0.1", port))
    finally:
        sock.close()
    await asyncio.sleep(0.2)
    held = len(echo_server.connection_manager)
    print(f"garbage Initials: {held} connections held by the server")
    await assert_echo_works(client_config, echo_server)


class _FirstFlightOnly(asyncio.DatagramProtocol):
    pass


@pytest.mark.timeout(20)
async def test_abandoned_handshake_freed_after_handshake_timeout(
    start_server: ServerFactory, client_config: ClientConfig
) -> None:
    server = await start_server(echo_handler, handshake_timeout=1.0)
    port = server_port(server)
    quic_config = QuicConfiguration(
        is_client=True, alpn_protocols=["h3"], verify_mode=ssl.CERT_NONE
    )
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        _FirstFlightOnly, remote_addr=("127.0.0.1", port)
    )
    try:
        for _ in range(3):
            quic = QuicConnection(configuration=quic_config)
            quic.connect(("127.0.0.1", port), now=loop.time())
            # Send the first flight once, never answer the server's reply.
            for data, _addr in quic.datagrams_to_send(now=loop.time()):
                transport.sendto(data)

        async def in_flight() -> int:
            return int((await server.diagnostics())["handshakes"]["in_flight"])

        for _ in range(100):
            if await in_flight() == 3:
                break
            await asyncio.sleep(0.02)
        assert await in_flight() == 3
        # Half-open handshakes are not connections (issue #15): they have their own table.
        assert len(server.connection_manager) == 0
        for _ in range(250):
            if await in_flight() == 0:
                break
            await asyncio.sleep(0.02)
        assert await in_flight() == 0
    finally:
        transport.close()
    await assert_echo_works(client_config, server)


@pytest.mark.timeout(20)
async def test_stream_for_unknown_and_closed_session(
    start_server: ServerFactory, capture: Capture, client: WebTransportClient
) -> None:
    server = await start_server(capture)
    session = await client.connect(url_of(server, "/keep"))
    kept = await capture.next()
    doomed = await session.connection.create_session("/doomed")
    doomed_server = await capture.next()
    doomed_id = doomed.session_id
    await doomed.close()
    assert await wait_until(lambda: doomed_server.is_closed, 3)
    conn = session.connection
    quic = conn._engine.quic
    refused = []
    for target in (doomed_id, 4000, 2**40):
        stream_id = quic.get_next_available_stream_id()
        quic.send_stream_data(
            stream_id, encode_uint_var(0x41) + encode_uint_var(target) + b"x" * 100
        )
        refused.append(stream_id)
    for target in (doomed_id, 8000):
        quic.send_datagram_frame(encode_uint_var(target // 4) + b"nobody")
    conn._engine.transmit()
    await asyncio.sleep(0.3)
    # The server holds at most a bounded number of those streams; none reached a handler.
    server_conn = kept.connection
    assert not any(stream_id in server_conn._engine.core.streams for stream_id in refused)
    assert server_conn.is_connected
    # The other session is unaffected.
    bidi = await session.create_bidirectional_stream()
    await bidi.write(b"hello", end_stream=True)
    incoming = await kept.accept_bidirectional_stream(timeout=3)
    assert await incoming.read_all() == b"hello"
    await incoming.write(b"back", end_stream=True)
    assert await bidi.read_all() == b"back"
    await session.send_datagram(b"dgram")
    assert await kept.receive_datagram(timeout=3) == b"dgram"
    assert kept.stats.get("datagrams_received", 1) >= 1
    await session.close()


@pytest.mark.timeout(20)
async def test_max_connections_refused(
    start_server: ServerFactory, client_config: ClientConfig
) -> None:
    server = await start_server(echo_handler, max_connections=1)
    async with WebTransportClient(client_config) as one, WebTransportClient(client_config) as two:
        first = await one.connect(url_of(server))
        with pytest.raises(WebTransportError):
            await two.connect(url_of(server), timeout=3)
        assert len(server.connection_manager) == 1
        stream = await first.create_bidirectional_stream()
        await stream.write(b"first", end_stream=True)
        assert await stream.read_all() == b"first"
        await first.close()
        assert await wait_until(lambda: len(server.connection_manager) == 0, 3)
        again = await two.connect(url_of(server))
        assert again.is_ready
        await again.close()


@pytest.mark.timeout(20)
@pytest.mark.aioquic_patch("stream_limits", "stream_credit")
async def test_stream_credit_exhausted_times_out(
    start_server: ServerFactory, capture: Capture, client_config: ClientConfig
) -> None:
    # The CONNECT stream takes one of the three: two are left for WebTransport.
    server = await start_server(capture, quic_max_concurrent_bidi_streams=3)
    config = client_config.update(stream_creation_timeout=0.5)
    async with WebTransportClient(config) as client:
        session = await client.connect(url_of(server))
        server_session = await capture.next()
        held = [await session.create_bidirectional_stream() for _ in range(2)]
        for stream in held:
            await stream.write(b"x")
        # (tests/deterministic/test_timing.py checks when exactly it times out)
        with pytest.raises(TimeoutError):
            await session.create_bidirectional_stream()
        # Finishing the held streams on both sides gives the credit back.
        for stream in held:
            await stream.write(b"", end_stream=True)
        for _ in held:
            incoming = await server_session.accept_bidirectional_stream(timeout=3)
            assert await incoming.read_all() == b"x"
            await incoming.write(b"", end_stream=True)
        for stream in held:
            assert await stream.read_all() == b""
        third = None
        for _ in range(6):
            with contextlib.suppress(TimeoutError):
                third = await session.create_bidirectional_stream()
                break
        assert third is not None, "stream credit never came back after both streams finished"
        await third.write(b"fits now", end_stream=True)
        await session.close()


@pytest.mark.timeout(40)
@pytest.mark.aioquic_patch("stream_limits")
async def test_max_streams_never_read_memory_bounded(
    start_server: ServerFactory, client_config: ClientConfig
) -> None:
    """A client opens every stream it may, the server pushes on each, the client never reads."""
    pushed: list[int] = []

    async def pusher(session: WebTransportSession) -> None:
        if session.path != "/hog":
            await echo_handler(session)
            return

        async def push(stream: object) -> None:
            chunk = b"p" * 65536
            with contextlib.suppress(WebTransportError):
                while True:
                    await stream.write(chunk)  # type: ignore[attr-defined]
                    pushed.append(len(chunk))

        tasks = []
        async for stream in session.incoming_bidirectional_streams():
            tasks.append(asyncio.create_task(push(stream)))
        for task in tasks:
            task.cancel()

    limit = 16
    server = await start_server(
        pusher,
        quic_max_concurrent_bidi_streams=limit + 1,
        initial_max_streams_bidi=limit,
        max_sessions_per_connection=2,
    )
    before = rss_bytes()
    async with WebTransportClient(client_config) as hog:
        session = await hog.connect(url_of(server, "/hog"))
        streams = [await session.create_bidirectional_stream() for _ in range(limit)]
        for stream in streams:
            await stream.write(b"go")
        await asyncio.sleep(3)
        total = sum(pushed)
        growth = rss_bytes() - before
        print(
            f"{limit} unread streams: server wrote {total / MIB:.1f} MiB, "
            f"RSS growth {growth / MIB:.1f} MiB"
        )
        # Each stream may be ahead by its receive window + the send buffer at most.
        per_stream = server.config.quic_stream_receive_window + (
            server.config.max_stream_write_buffer_size
        )
        assert total <= limit * per_stream + limit * 65536
        assert growth < 96 * MIB
        # Meanwhile another client is served.
        await assert_echo_works(client_config, server)
        await session.close()


@pytest.mark.timeout(40)
async def test_fast_writer_slow_reader_rss_bounded(
    start_server: ServerFactory, capture: Capture, client_config: ClientConfig
) -> None:
    """A 64 MiB push into a session that reads 1 KiB/s: QUIC credit holds the writer back."""
    server = await start_server(capture)
    async with WebTransportClient(client_config) as writer_client:
        session = await writer_client.connect(url_of(server))
        slow = await capture.next()
        stream = await session.create_unidirectional_stream()
        written = 0
        total = 64 * MIB
        chunk = os.urandom(MIB)

        async def write_all() -> None:
            nonlocal written
            while written < total:
                await stream.write(chunk)
                written += len(chunk)

        async def read_slowly() -> int:
            incoming = await slow.accept_unidirectional_stream(timeout=5)
            got = 0
            with contextlib.suppress(WebTransportError, asyncio.CancelledError):
                while True:
                    data = await incoming.read(1024)
                    if not data:
                        break
                    got += len(data)
                    await asyncio.sleep(1)
            return got

        before = rss_bytes()
        writer = asyncio.create_task(write_all())
        reader = asyncio.create_task(read_slowly())
        peak = before
        for _ in range(25):
            await asyncio.sleep(0.2)
            peak = max(peak, rss_bytes())
        growth = peak - before
        config = server.config
        bound = (
            config.quic_stream_receive_window + config.max_stream_write_buffer_size + 2 * len(chunk)
        )
        print(
            f"slow reader: writer got {written / MIB:.1f} MiB out of 64 in 5 s; "
            f"RSS growth {growth / MIB:.1f} MiB (bound 32 MiB)"
        )
        assert not writer.done()
        assert written <= bound + config.quic_stream_receive_window
        assert growth < 32 * MIB
        writer.cancel()
        reader.cancel()
        await asyncio.gather(writer, reader, return_exceptions=True)
        await session.close()
