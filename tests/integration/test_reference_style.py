"""Code written for the reference library, run unchanged over real UDP on 127.0.0.1.

Only the reference's names and keywords are used (module paths are ours).
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from pywebtransport import (
    ClientConfig,
    Event,
    EventType,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
    generate_self_signed_cert,
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(30)
async def test_certificate_tuple_serves_and_verifies(tmp_path: Path) -> None:
    # The reference returns (ca_cert, cert, key); ours is self-signed, so the
    # certificate is its own CA file and verification (CERT_REQUIRED) passes.
    ca_cert, cert, key = generate_self_signed_cert(hostname="127.0.0.1", output_dir=str(tmp_path))
    assert ca_cert == cert != key

    port = free_port()
    server = WebTransportServer(
        config=ServerConfig(certfile=cert, keyfile=key, bind_host="127.0.0.1", bind_port=port)
    )
    served: set[asyncio.Task[None]] = set()

    async def echo(session: WebTransportSession) -> None:
        stream = await session.accept_bidirectional_stream()
        await stream.write(data=await stream.read_all(), end_stream=True)

    async def on_request(event: Event) -> None:
        session = event.data["session"]
        await session.accept()
        served.add(asyncio.create_task(echo(session)))

    server.on(event_type=EventType.SESSION_REQUEST, handler=on_request)
    await server.listen()
    try:
        async with WebTransportClient(config=ClientConfig(ca_certs=ca_cert)) as client:
            session = await client.connect(url=f"https://127.0.0.1:{port}/echo")
            stream = await session.create_bidirectional_stream()
            await stream.write(data=b"reference", end_stream=True)
            assert await stream.read_all() == b"reference"
            await asyncio.wait_for(asyncio.gather(*served), 10)
            await session.close()
    finally:
        for task in served:
            task.cancel()
        await server.close()
