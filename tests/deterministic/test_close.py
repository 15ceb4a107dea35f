"""Graceful close on the virtual clock: what it waits for, how long, and the immediate path."""

from __future__ import annotations

import asyncio
import os

import pytest

from pywebtransport import (
    ClientConfig,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.shared.exceptions import SessionClosedError, StreamError
from pywebtransport.shared.types import SessionState
from pywebtransport.transport import _aioquic

from .simnet import VirtualLoop, run_virtual

pytestmark = pytest.mark.timeout(60)

URL = "https://127.0.0.1:4433/"
WINDOW = 64 * 1024
DATA = os.urandom(5 * WINDOW)
"""More than the server's stream window: it can only all arrive as the server reads."""


HOLDS_BY_WINDOW = pytest.mark.aioquic_patch("stream_window")
"""Tests whose unread data is held back by the reader's stream window (receive
backpressure): without it aioquic acknowledges everything at once."""


@pytest.fixture
def server_config(server_config: ServerConfig) -> ServerConfig:
    return server_config.update(
        quic_stream_receive_window=WINDOW, max_stream_read_buffer_size=WINDOW
    )


class _Reader:
    """A server handler that reads one unidirectional stream, when told to."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.result: asyncio.Future[bytes | BaseException] | None = None

    async def __call__(self, session: WebTransportSession) -> None:
        assert self.result is not None
        stream = await session.accept_unidirectional_stream(timeout=30)
        await self.go.wait()
        try:
            self.result.set_result(await stream.read_all(max_size=1 << 24))
        except StreamError as exc:
            self.result.set_result(exc)
        await session.wait_closed()


def _run(
    server_config: ServerConfig,
    client_config: ClientConfig,
    *,
    read_after: float,
    close: str = "close",
) -> tuple[bytes | BaseException, float, SessionState]:
    reader = _Reader()

    async def main(loop: VirtualLoop) -> tuple[bytes | BaseException, float, SessionState]:
        reader.result = loop.create_future()
        async with (
            WebTransportServer(server_config, handler=reader),
            WebTransportClient(client_config) as client,
        ):
            session = await client.connect(URL)
            stream = await session.create_unidirectional_stream()
            await stream.write(DATA, end_stream=True)
            loop.call_later(read_after, reader.go.set)
            start = loop.time()
            if close == "abort":
                session.abort()
                closing = session.state
            else:
                task = asyncio.ensure_future(session.close(reason="done"))
                await asyncio.sleep(0)
                closing = session.state
                await task
            elapsed = loop.time() - start
            got = await asyncio.wait_for(reader.result, 30)
        return got, elapsed, closing

    return run_virtual(main)


@HOLDS_BY_WINDOW
def test_close_waits_for_the_reader_then_delivers(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    config = client_config.update(close_timeout=5.0)
    got, elapsed, state = _run(server_config, config, read_after=1.0)
    assert got == DATA
    assert state is SessionState.CLOSING
    assert 1.0 <= elapsed < 1.1


@HOLDS_BY_WINDOW
def test_close_gives_up_after_its_timeout_and_the_reader_is_told(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    config = client_config.update(close_timeout=0.5)
    got, elapsed, _ = _run(server_config, config, read_after=2.0)
    assert isinstance(got, StreamError)
    assert "WT_SESSION_GONE" in str(got)
    assert 0.5 <= elapsed < 0.6


def test_abort_does_not_wait(server_config: ServerConfig, client_config: ClientConfig) -> None:
    got, elapsed, state = _run(server_config, client_config, read_after=0.1, close="abort")
    assert isinstance(got, StreamError)
    assert elapsed == 0.0
    assert state is SessionState.CLOSED


def test_without_stream_state_close_waits_its_whole_bound_and_still_delivers(
    server_config: ServerConfig, client_config: ClientConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fallback when aioquic's stream state cannot be read: slower, not wrong.
    monkeypatch.setattr(_aioquic.FEATURES["stream_state"], "enabled", False)
    config = client_config.update(close_timeout=2.0)
    got, elapsed, _ = _run(server_config, config, read_after=0.5)
    assert got == DATA
    assert 2.0 <= elapsed < 2.1


@HOLDS_BY_WINDOW
def test_a_closing_session_opens_nothing_and_a_second_close_waits_for_the_first(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    reader = _Reader()

    async def main(loop: VirtualLoop) -> tuple[float, float]:
        reader.result = loop.create_future()
        async with (
            WebTransportServer(server_config, handler=reader),
            WebTransportClient(client_config.update(close_timeout=5.0)) as client,
        ):
            session = await client.connect(URL)
            stream = await session.create_unidirectional_stream()
            await stream.write(DATA, end_stream=True)
            loop.call_later(0.3, reader.go.set)
            start = loop.time()
            first = asyncio.ensure_future(session.close())
            await asyncio.sleep(0)
            with pytest.raises(SessionClosedError, match="closing"):
                await session.create_bidirectional_stream()
            with pytest.raises(SessionClosedError):
                session.send_datagram_nowait(b"late")
            await session.close()
            second = loop.time() - start
            await first
            assert await reader.result == DATA
            return second, loop.time() - start

    second, first = run_virtual(main)
    assert 0.3 <= second == first < 0.4


@HOLDS_BY_WINDOW
def test_the_peer_closing_ends_the_wait(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    async def close_soon(session: WebTransportSession) -> None:
        await asyncio.sleep(0.2)
        await session.close(error_code=7)

    async def main(loop: VirtualLoop) -> tuple[float, int]:
        async with (
            WebTransportServer(server_config, handler=close_soon),
            WebTransportClient(client_config.update(close_timeout=5.0)) as client,
        ):
            session = await client.connect(URL)
            stream = await session.create_unidirectional_stream()
            await stream.write(DATA, end_stream=True)  # never read by the server
            start = loop.time()
            await session.close()
            info = await session.wait_closed()
            return loop.time() - start, info.error_code

    elapsed, code = run_virtual(main)
    assert elapsed < 0.25
    assert code == 7


def test_close_waits_for_the_acknowledgement_whatever_the_window(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    # Nothing reaches the server for 1 s (a stalled path): the close waits for the
    # acknowledgements that follow, then delivers; no receive window involved.
    async def main(loop: VirtualLoop) -> tuple[bytes, float]:
        received: asyncio.Future[bytes] = loop.create_future()

        async def read(session: WebTransportSession) -> None:
            stream = await session.accept_unidirectional_stream(timeout=30)
            received.set_result(await stream.read_all(max_size=1 << 24))
            await session.wait_closed()

        async with (
            WebTransportServer(server_config, handler=read),
            WebTransportClient(client_config.update(close_timeout=5.0)) as client,
        ):
            session = await client.connect(URL)
            resume = loop.time() + 1.0
            loop.network.drop = lambda data, source, destination: (
                destination[1] == 4433 and loop.time() < resume
            )
            stream = await session.create_unidirectional_stream()
            await stream.write(DATA, end_stream=True)
            start = loop.time()
            await session.close()
            elapsed = loop.time() - start
            return await asyncio.wait_for(received, 10), elapsed

    got, elapsed = run_virtual(main)
    assert got == DATA
    assert 1.0 <= elapsed < 2.0


def test_leaving_the_client_while_its_connection_closes_still_delivers_the_close(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    # The session's close starts the connection's own graceful close in the
    # background; `client.close()` right after must wait for that one (the
    # capsule acknowledged), not cut it short with CONNECTION_CLOSE.
    async def main(loop: VirtualLoop) -> tuple[int, bool, str]:
        closed: asyncio.Future[tuple[int, bool, str]] = loop.create_future()

        async def handler(session: WebTransportSession) -> None:
            info = await session.wait_closed()
            closed.set_result((info.error_code, info.clean, info.reason))

        async with WebTransportServer(server_config, handler=handler):
            client = WebTransportClient(client_config.update(close_timeout=5.0))
            session = await client.connect(URL)
            await asyncio.sleep(0.1)
            resume = loop.time() + 0.5
            loop.network.drop = lambda data, source, destination: (
                destination[1] == 4433 and loop.time() < resume
            )
            await session.close(error_code=9, reason="bye")
            await client.close()
            return await asyncio.wait_for(closed, 10)

    assert run_virtual(main) == (9, True, "bye")
