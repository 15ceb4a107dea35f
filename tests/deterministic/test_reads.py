"""Reads complete for any size and any window: no read waits for credit it withholds."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from pywebtransport import (
    ClientConfig,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.shared.exceptions import StreamError

from .simnet import VirtualLoop, run_virtual

pytestmark = pytest.mark.timeout(60)

URL = "https://127.0.0.1:4433/"
WINDOW = 64 * 1024


def _serve(data: bytes) -> object:
    async def push(session: WebTransportSession) -> None:
        stream = await session.create_unidirectional_stream()
        await stream.write(data, end_stream=True)
        await session.wait_closed()

    return push


def _small_window(config: ClientConfig) -> ClientConfig:
    return config.update(quic_stream_receive_window=WINDOW, max_stream_read_buffer_size=WINDOW)


def test_readexactly_of_four_windows_completes(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    data = os.urandom(4 * WINDOW + 123)

    async def main(loop: VirtualLoop) -> bytes:
        async with (
            WebTransportServer(server_config, handler=_serve(data)),
            WebTransportClient(_small_window(client_config)) as client,
        ):
            session = await client.connect(URL)
            stream = await session.accept_unidirectional_stream(timeout=5)
            got = await stream.readexactly(len(data))
            assert await stream.read() == b""
            return got

    assert run_virtual(main) == data


def test_readexactly_past_the_end_reports_what_came(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    data = os.urandom(3 * WINDOW)

    async def main(loop: VirtualLoop) -> asyncio.IncompleteReadError:
        async with (
            WebTransportServer(server_config, handler=_serve(data)),
            WebTransportClient(_small_window(client_config)) as client,
        ):
            session = await client.connect(URL)
            stream = await session.accept_unidirectional_stream(timeout=5)
            with pytest.raises(asyncio.IncompleteReadError) as info:
                await stream.readexactly(4 * WINDOW)
            return info.value

    error = run_virtual(main)
    assert error.partial == data
    assert error.expected == 4 * WINDOW


@pytest.mark.parametrize("limit", [4 * WINDOW, 6 * WINDOW])
def test_readuntil_past_the_window_finds_the_separator_and_keeps_the_rest(
    server_config: ServerConfig, client_config: ClientConfig, limit: int
) -> None:
    head = os.urandom(3 * WINDOW).replace(b"\n", b" ")
    tail = b"tail bytes after the separator" * 1000

    async def main(loop: VirtualLoop) -> tuple[bytes, bytes]:
        async with (
            WebTransportServer(server_config, handler=_serve(head + b"\n" + tail)),
            WebTransportClient(_small_window(client_config)) as client,
        ):
            session = await client.connect(URL)
            stream = await session.accept_unidirectional_stream(timeout=5)
            line = await stream.readuntil(b"\n", limit=limit)
            rest = await stream.read_all()
            return line, rest

    line, rest = run_virtual(main)
    assert line == head + b"\n"
    assert hashlib.sha256(rest).digest() == hashlib.sha256(tail).digest()


def test_readuntil_without_the_separator_within_its_limit_fails_and_loses_nothing(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    data = b"x" * (2 * WINDOW) + b"\n"

    async def main(loop: VirtualLoop) -> bytes:
        async with (
            WebTransportServer(server_config, handler=_serve(data)),
            WebTransportClient(_small_window(client_config)) as client,
        ):
            session = await client.connect(URL)
            stream = await session.accept_unidirectional_stream(timeout=5)
            with pytest.raises(StreamError, match="separator not found within 1000 bytes"):
                await stream.readuntil(b"\n", limit=1000)
            return await stream.read_all()

    assert run_virtual(main) == data
