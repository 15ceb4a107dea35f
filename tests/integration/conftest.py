"""Fixtures for the loopback integration tests: echo servers and session capture."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from pywebtransport import (
    ServerConfig,
    WebTransportServer,
    WebTransportSession,
    WebTransportStream,
)
from pywebtransport.framework import ServerApp
from pywebtransport.shared.exceptions import WebTransportError

from .processes import OUTPUTS

ServerFactory = Callable[..., Awaitable[WebTransportServer]]


async def echo_handler(session: WebTransportSession) -> None:
    """Echo every bidi stream on itself, every uni stream on a new uni stream, every datagram."""
    tasks: set[asyncio.Task[Any]] = set()

    async def echo_stream(stream: Any) -> None:
        with contextlib.suppress(WebTransportError):
            data = await stream.read_all()
            if isinstance(stream, WebTransportStream):
                await stream.write(data, end_stream=True)
            else:
                out = await session.create_unidirectional_stream()
                await out.write(data, end_stream=True)

    async def echo_datagrams() -> None:
        with contextlib.suppress(WebTransportError):
            async for datagram in session.incoming_datagrams():
                session.send_datagram_nowait(datagram)

    tasks.add(asyncio.create_task(echo_datagrams()))
    try:
        async for stream in session.incoming_streams():
            task = asyncio.create_task(echo_stream(stream))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await session.wait_closed()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def echo_server(start_server: ServerFactory) -> WebTransportServer:
    """A server that echoes streams and datagrams."""
    return await start_server(echo_handler)


class Capture:
    """A server handler that hands each session to the test and keeps it open until it closes."""

    def __init__(self) -> None:
        self.sessions: asyncio.Queue[WebTransportSession] = asyncio.Queue()

    async def __call__(self, session: WebTransportSession) -> None:
        await self.sessions.put(session)
        await session.wait_closed()

    async def next(self, timeout: float = 5.0) -> WebTransportSession:
        return await asyncio.wait_for(self.sessions.get(), timeout)


@pytest.fixture
def capture() -> Capture:
    return Capture()


def url_of(server: WebTransportServer, path: str = "/") -> str:
    """Return the https URL of a path on a test server (same as the top-level helper)."""
    address = server.local_address
    assert address is not None
    return f"https://127.0.0.1:{address[1]}{path}"


async def wait_until(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Poll `predicate` every 20 ms until it holds or `timeout` passes; return its last value."""
    for _ in range(max(1, int(timeout / 0.02))):
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


@pytest.fixture
async def processes() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Processes a test starts; each is stopped with SIGTERM (then killed) afterwards."""
    started: list[asyncio.subprocess.Process] = []
    yield started
    for process in started:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        OUTPUTS.pop(process, None)


@pytest.fixture
async def serve_asgi(
    server_config: ServerConfig,
) -> AsyncIterator[Callable[..., Awaitable[ServerApp]]]:
    """Mount an ASGI app on a fresh ServerApp bound to a free port; shut down after the test."""
    apps: list[ServerApp] = []

    async def serve(asgi_app: Any, path: str = "/", **options: Any) -> ServerApp:
        app = ServerApp(server_config)
        app.mount_asgi(path, asgi_app, **options)
        apps.append(app)
        await app.listen("127.0.0.1", 0)
        return app

    yield serve
    for app in apps:
        await app.shutdown()
