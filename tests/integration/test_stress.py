"""Many streams and many connections over loopback."""

from __future__ import annotations

import asyncio

import pytest

from pywebtransport import WebTransportClient, WebTransportServer

from .conftest import url_of, wait_until


@pytest.mark.timeout(60)
async def test_1000_concurrent_streams_one_session(
    echo_server: WebTransportServer, client: WebTransportClient
) -> None:
    session = await client.connect(url_of(echo_server))

    async def one(i: int) -> bytes:
        stream = await session.create_bidirectional_stream()
        await stream.write(i.to_bytes(4, "big") * 8, end_stream=True)
        return await stream.read_all()

    results = await asyncio.gather(*(one(i) for i in range(1000)))
    assert results == [i.to_bytes(4, "big") * 8 for i in range(1000)]
    await session.close()


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_200_connect_close_cycles_leave_nothing(
    echo_server: WebTransportServer, client: WebTransportClient
) -> None:
    url = url_of(echo_server)
    for i in range(200):
        session = await client.connect(url)
        if i % 20 == 0:
            stream = await session.create_bidirectional_stream()
            await stream.write(b"ping", end_stream=True)
            assert await stream.read_all() == b"ping"
        await session.close()
    managers = (
        client.session_manager,
        client.connection_manager,
        echo_server.session_manager,
        echo_server.connection_manager,
    )
    await wait_until(lambda: not any(len(m) for m in managers), 2.0)
    assert len(client.session_manager) == 0
    assert len(client.connection_manager) == 0
    assert len(echo_server.session_manager) == 0
    assert len(echo_server.connection_manager) == 0
