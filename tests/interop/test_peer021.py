"""Interop with pywebtransport 0.21 (Rust core, draft-15 only), both directions.

Each cell of the interop matrix in docs/interop.md that names pywebtransport 0.21 is
one assertion here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import Any

import pytest

from pywebtransport import (
    ClientConfig,
    EventType,
    HandshakeError,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
    WebTransportStream,
)
from pywebtransport.shared.exceptions import WebTransportError
from pywebtransport.shared.utils import CertificateInfo

from .conftest import free_udp_port

pytestmark = pytest.mark.timeout(90)


async def _serve(session: WebTransportSession, closes: asyncio.Queue[Any]) -> None:
    """Our server's behaviour for the peer client: echo, uni reply, datagram echo, /close."""
    if session.path == "/close":
        await asyncio.sleep(0.3)
        await session.close(42, "server bye")
        return

    async def bidi() -> None:
        async for stream in session.incoming_bidirectional_streams():
            await stream.write(await stream.read_all(), end_stream=True)

    async def uni() -> None:
        async for stream in session.incoming_unidirectional_streams():
            data = await stream.read_all()
            reply = await session.create_unidirectional_stream()
            await reply.write(b"uni:" + data, end_stream=True)

    async def datagrams() -> None:
        async for datagram in session.incoming_datagrams():
            await session.send_datagram(b"dg:" + datagram)

    tasks = [asyncio.create_task(job()) for job in (bidi, uni, datagrams)]
    try:
        info = await session.wait_closed()
        await closes.put((session.path, session.dialect, info))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_peer_client_against_our_server(
    start_server: Any, run_peer: Any, certificate: CertificateInfo
) -> None:
    closes: asyncio.Queue[Any] = asyncio.Queue()
    offered: list[list[str] | None] = []
    server: WebTransportServer = await start_server(
        lambda session: _serve(session, closes), wt_supported_protocols=("proto-b",)
    )

    async def route(event: Any) -> None:
        session = event.data["session"]
        offered.append(session.wt_available_protocols)
        if session.path == "/missing":
            await session.reject(status_code=404)

    server.on(EventType.SESSION_REQUEST, route)
    port = server.local_address[1] if server.local_address else 0
    peer = await run_peer(
        "client", f"https://127.0.0.1:{port}", certificate.certfile, "proto-a", "proto-b"
    )
    connected = await peer.next_record("connected")
    assert connected["protocol"] == "proto-b"  # the one both sides support
    bidi = await peer.next_record("bidi")
    assert bidi == {"event": "bidi", "ok": True, "size": 300_000, "_seen": True}
    assert (await peer.next_record("uni"))["data"] == "uni:hello uni"
    datagrams = await peer.next_record("datagrams")
    assert datagrams["received"] >= 15  # unreliable, but loopback loses few
    await peer.next_record("closed_by_client")
    path, dialect, info = await asyncio.wait_for(closes.get(), 10)
    assert (path, dialect) == ("/echo", "draft-15")
    assert (info.error_code, info.reason, info.remote) == (7, "client bye", True)
    rejected = await peer.next_record("rejected")
    assert rejected["rejected"] is True
    seen = await peer.next_record("server_close_seen")
    assert (seen["code"], seen["reason"]) == (42, "server bye")
    assert offered[0] == ["proto-a", "proto-b"]


@pytest.fixture
async def peer_server(run_peer: Any, certificate: CertificateInfo) -> tuple[Any, str]:
    port = free_udp_port()
    peer = await run_peer("server", str(port), certificate.certfile, certificate.keyfile)
    await peer.next_record("listening")
    return peer, f"https://127.0.0.1:{port}"


@pytest.fixture
async def our_client(certificate: CertificateInfo) -> Any:
    async with WebTransportClient(ClientConfig(ca_certs=certificate.certfile)) as client:
        yield client


async def test_our_client_against_peer_server(
    peer_server: tuple[Any, str], our_client: WebTransportClient
) -> None:
    peer, url = peer_server
    session = await our_client.connect(url + "/echo", wt_available_protocols=["proto-a", "proto-b"])
    assert session.dialect == "draft-15"
    assert session.wt_protocol == "proto-a"  # our first offer that the peer supports
    request = await peer.next_record("session_request")
    assert request["offered"] == ["proto-a", "proto-b"]

    # Past the 4 MiB initial session window both ways: session flow control must work.
    payload = bytes(i % 253 for i in range(6_000_000))
    stream: WebTransportStream = await session.create_bidirectional_stream()
    await stream.write(payload, end_stream=True)
    echoed = await asyncio.wait_for(stream.read_all(), 30)
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()

    uni = await session.create_unidirectional_stream()
    await uni.write(b"hello", end_stream=True)
    reply = await session.accept_unidirectional_stream(timeout=10)
    assert await reply.read_all() == b"uni:hello"

    received = 0
    for i in range(20):
        await session.send_datagram(f"d{i}".encode())
    with contextlib.suppress(TimeoutError):
        while received < 20:
            assert (await session.receive_datagram(timeout=1.0)).startswith(b"dg:d")
            received += 1
    assert received >= 15

    await session.close(9, "ours bye")
    closed = await peer.next_record("session_closed")
    assert (closed["code"], closed["reason"]) == (9, "ours bye")

    with pytest.raises(HandshakeError) as rejected:
        await our_client.connect(url + "/reject")
    assert rejected.value.status_code == 404

    closing = await our_client.connect(url + "/close")
    info = await asyncio.wait_for(closing.wait_closed(), 10)
    assert (info.error_code, info.reason, info.remote) == (42, "peer bye", True)


async def test_many_streams_beyond_the_peer_session_limit(
    peer_server: tuple[Any, str], our_client: WebTransportClient
) -> None:
    """The peer grants 10 streams per session: our client must wait for WT_MAX_STREAMS."""
    _peer, url = peer_server
    session = await our_client.connect(url + "/echo")

    async def one(i: int) -> bytes:
        stream = await session.create_bidirectional_stream()
        await stream.write(f"stream {i}".encode(), end_stream=True)
        return await stream.read_all()

    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(40))), 60)
    assert results == [f"stream {i}".encode() for i in range(40)]
    with contextlib.suppress(WebTransportError):
        await session.close()
