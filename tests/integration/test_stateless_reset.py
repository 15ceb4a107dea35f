"""Stateless resets between servers that share `server_secret`, over real UDP.

A server process that vanishes without a word (a crash, a worker that exited)
leaves its clients sending into the dark until their idle timeout. When another
server on that address shares the secret (the workers of `run(workers=N)`, hosts
configured alike), it answers their packets with a stateless reset the client
recognises, and the connection ends at once.
"""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from pywebtransport import ClientConfig, ServerConfig, WebTransportClient, WebTransportServer
from pywebtransport.shared.exceptions import ServerError

from .conftest import echo_handler

pytestmark = pytest.mark.timeout(30)


# The first server runs in a child process, so that it can die as a crash kills it
# (SIGKILL): its socket closes and it sends nothing.
FIRST_SERVER = """
import asyncio, sys
from pywebtransport import ServerConfig, WebTransportServer

async def handler(session):
    await session.wait_closed()

async def main():
    certfile, keyfile, secret = sys.argv[1:]
    config = ServerConfig(certfile=certfile, keyfile=keyfile, server_secret=bytes.fromhex(secret))
    server = WebTransportServer(config, handler=handler)
    await server.listen("127.0.0.1", 0)
    print(server.local_address[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


async def vanish_and_replace(
    server_config: ServerConfig, client_config: ClientConfig, *, same_secret: bool
) -> tuple[float, str | None]:
    """Connect, let the server vanish, start another on its port; return (seconds, reason)."""
    secret = os.urandom(32)
    assert server_config.certfile is not None and server_config.keyfile is not None
    first = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        FIRST_SERVER,
        server_config.certfile,
        server_config.keyfile,
        secret.hex(),
        stdout=asyncio.subprocess.PIPE,
    )
    second_secret = secret if same_secret else os.urandom(32)
    second = WebTransportServer(
        server_config.update(server_secret=second_secret), handler=echo_handler
    )
    loop = asyncio.get_running_loop()
    try:
        assert first.stdout is not None
        port = int(await asyncio.wait_for(first.stdout.readline(), 15))
        async with WebTransportClient(client_config) as client:
            session = await client.connect(f"https://127.0.0.1:{port}/echo")
            await session.send_datagram(b"before")
            first.kill()
            await first.wait()
            for _ in range(100):
                try:
                    await second.listen("127.0.0.1", port)
                    break
                except ServerError:
                    await asyncio.sleep(0.01)
            assert second.is_serving
            began = loop.time()
            await session.send_datagram(b"anyone?")
            try:
                info = await asyncio.wait_for(session.wait_closed(), 1.0)
            except TimeoutError:
                return loop.time() - began, None
            return loop.time() - began, info.reason
    finally:
        await second.close()
        if first.returncode is None:
            first.kill()
            await first.wait()


async def test_a_server_with_the_same_secret_resets_a_connection_it_does_not_hold(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    elapsed, reason = await vanish_and_replace(server_config, client_config, same_secret=True)
    assert reason is not None and "stateless reset" in reason
    assert elapsed < 1.0  # at once, not at the 30 s idle timeout


async def test_a_reset_with_another_secret_is_not_recognised(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    # The token is bound to the secret: a stranger (or an attacker who saw the
    # connection id) cannot end the connection.
    _elapsed, reason = await vanish_and_replace(server_config, client_config, same_secret=False)
    assert reason is None
