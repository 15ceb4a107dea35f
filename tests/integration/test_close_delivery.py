"""A graceful close delivers what was written before it (issue #22's twelve cases).

Each case writes a stream with `end_stream=True` and closes at once, in the
ways users do: `session.close()`, leaving `async with client`, a handler that
returns. The reader must get every byte (sha-256 checked), never a
`StreamError` for the session's close.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

import pytest

from pywebtransport import (
    ClientConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)

from .conftest import ServerFactory, url_of

pytestmark = pytest.mark.timeout(60)

SIZES = [10, 100_000, 3_000_000]


def _payload(size: int) -> bytes:
    return os.urandom(size)


@pytest.mark.parametrize("size", SIZES)
async def test_client_uni_then_session_close(
    start_server: ServerFactory, client_config: ClientConfig, size: int
) -> None:
    data = _payload(size)
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handler(session: WebTransportSession) -> None:
        try:
            stream = await session.accept_unidirectional_stream(timeout=10)
            received.set_result(await stream.read_all(max_size=1 << 30))
        except Exception as exc:  # the assertion below reports it
            received.set_exception(exc)
        await session.wait_closed()

    server = await start_server(handler)
    async with WebTransportClient(client_config) as client:
        session = await client.connect(url_of(server))
        stream = await session.create_unidirectional_stream()
        await stream.write(data, end_stream=True)
        await session.close()
    got = await asyncio.wait_for(received, 20)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


@pytest.mark.parametrize("size", SIZES)
async def test_client_bidi_then_leave_client(
    start_server: ServerFactory, client_config: ClientConfig, size: int
) -> None:
    data = _payload(size)
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handler(session: WebTransportSession) -> None:
        try:
            stream = await session.accept_bidirectional_stream(timeout=10)
            received.set_result(await stream.read_all(max_size=1 << 30))
        except Exception as exc:
            received.set_exception(exc)
        await session.wait_closed()

    server = await start_server(handler)
    async with WebTransportClient(client_config) as client:
        session = await client.connect(url_of(server))
        stream = await session.create_bidirectional_stream()
        await stream.write(data, end_stream=True)
    got = await asyncio.wait_for(received, 20)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
@pytest.mark.parametrize("size", SIZES)
async def test_server_echo_and_return(
    start_server: ServerFactory, client_config: ClientConfig, size: int, host: str
) -> None:
    data = _payload(size)

    async def handler(session: WebTransportSession) -> None:
        stream = await session.accept_bidirectional_stream(timeout=10)
        echoed = await stream.read_all(max_size=1 << 30)
        await stream.write(echoed, end_stream=True)

    server = await start_server(handler)
    url = url_of(server).replace("127.0.0.1", host)
    config = client_config.update(verify_mode=0) if host == "localhost" else client_config
    async with WebTransportClient(config) as client:
        session = await client.connect(url)
        stream = await session.create_bidirectional_stream()
        await stream.write(data, end_stream=True)
        got = await asyncio.wait_for(stream.read_all(max_size=1 << 30), 20)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


@pytest.mark.parametrize("size", SIZES)
async def test_server_uni_then_session_close(
    start_server: ServerFactory, client_config: ClientConfig, size: int
) -> None:
    data = _payload(size)

    async def handler(session: WebTransportSession) -> None:
        stream = await session.create_unidirectional_stream()
        await stream.write(data, end_stream=True)
        await session.close()

    server: WebTransportServer = await start_server(handler)
    async with WebTransportClient(client_config) as client:
        session = await client.connect(url_of(server))
        stream: Any = await session.accept_unidirectional_stream(timeout=10)
        got = await asyncio.wait_for(stream.read_all(max_size=1 << 30), 20)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
