"""The library's DEBUG log tells a session's life, and nothing per chunk."""

from __future__ import annotations

import logging

import pytest

from pywebtransport import (
    ClientConfig,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.shared.exceptions import HandshakeError

from .simnet import VirtualLoop, run_virtual

pytestmark = pytest.mark.timeout(30)

URL = "https://127.0.0.1:4433/"


def test_debug_log_shows_the_lifecycle_with_ids_and_codes(
    server_config: ServerConfig, client_config: ClientConfig, caplog: pytest.LogCaptureFixture
) -> None:
    async def main(loop: VirtualLoop) -> None:
        async def echo(session: WebTransportSession) -> None:
            if session.path == "/no":
                return
            async for stream in session.incoming_bidirectional_streams():
                while chunk := await stream.read():
                    await stream.write(chunk)
                await stream.write(b"", end_stream=True)

        async with WebTransportServer(server_config, handler=echo) as server:
            server.on(
                "session_request",
                lambda event: (
                    event.data["session"].reject(404) if event.data["path"] == "/no" else None
                ),
            )
            async with WebTransportClient(client_config) as client:
                with pytest.raises(HandshakeError):
                    await client.connect(URL + "no")
                session = await client.connect(URL)
                stream = await session.create_bidirectional_stream()
                for _ in range(200):  # 200 chunks each way: no line per chunk
                    await stream.write(b"x" * 100)
                    await stream.read(100)
                await stream.write(b"", end_stream=True)
                assert await stream.read() == b""
                await session.close(42, "done")

    with caplog.at_level(logging.DEBUG, logger="pywebtransport"):
        run_virtual(main)
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("pywebtransport"))
    for expected in (
        "established (client",
        "established (server",
        "requested for '/no'",
        "rejected with status 404",
        "requested for '/'",
        "accepted (",
        "opened bidirectional stream 4",
        "peer opened bidirectional stream 4",
        "stream 4 closed",
        "closed (locally) with code 0x2a: done",
        "closed (by the peer) with code 0x2a: done",
    ):
        assert expected in text, (expected, text)
    assert len(caplog.records) < 60, text
