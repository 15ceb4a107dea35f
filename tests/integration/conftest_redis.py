"""A real `redis-server` on a free loopback port, for the group tests.

Import the `redis_server` fixture into a test module
(`from .conftest_redis import redis_server`). Tests are skipped when the
`redis-server` binary is missing (Debian: `apt-get install redis-server`,
or `make browsers` as root).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import AsyncIterator

import pytest

REDIS_SERVER = shutil.which("redis-server")


def free_tcp_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One `redis-server` process without persistence; restartable on its port.

    Args:
        port: The TCP port on 127.0.0.1.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """The `redis://` URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        assert REDIS_SERVER is not None
        assert self.process is None or self.process.returncode is not None
        self.process = await asyncio.create_subprocess_exec(
            REDIS_SERVER,
            "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await self.ping():
            if self.process.returncode is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if loop.time() > deadline:
                raise RuntimeError("redis-server did not answer PING")
            await asyncio.sleep(0.05)

    async def ping(self) -> bool:
        """Send PING over a raw socket; True on +PONG."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.port), 1.0
            )
        except (OSError, TimeoutError):
            return False
        try:
            writer.write(b"PING\r\n")
            await writer.drain()
            return (await asyncio.wait_for(reader.readline(), 1.0)).startswith(b"+PONG")
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def kill(self) -> None:
        """Kill the server (SIGKILL: no goodbye to clients) and reap it."""
        process = self.process
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    """A running `redis-server` on a free port, killed after the test."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(free_tcp_port())
    await server.start()
    try:
        yield server
    finally:
        await server.kill()
