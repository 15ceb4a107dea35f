"""The library's DEBUG log tells a session's life, and nothing per chunk."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pywebtransport import (
    ClientConfig,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.shared.constants import ErrorCodes
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


@pytest.mark.parametrize("leave", ["session_close", "stream_reset", "connection_lost"])
def test_a_handler_ended_by_the_peer_leaving_is_no_error(
    server_config: ServerConfig,
    client_config: ClientConfig,
    caplog: pytest.LogCaptureFixture,
    leave: str,
) -> None:
    """A closed browser tab is not a bug in the handler: INFO, no traceback, named code."""

    async def main(loop: VirtualLoop) -> None:
        async def read_forever(session: WebTransportSession) -> None:
            stream = await session.accept_bidirectional_stream(timeout=5)
            await stream.read_all()

        async with (
            WebTransportServer(
                server_config.update(connection_idle_timeout=1.0, keep_alive_interval=None),
                handler=read_forever,
            ),
            WebTransportClient(client_config) as client,
        ):
            session = await client.connect(URL)
            stream = await session.create_bidirectional_stream()
            await stream.write(b"partial")
            await asyncio.sleep(0.01)
            if leave == "session_close":
                session.abort()
            elif leave == "stream_reset":
                await stream.reset(5)
            else:
                loop.network.drop = lambda *_: True  # the client vanishes
            await asyncio.sleep(3)

    with caplog.at_level(logging.DEBUG, logger="pywebtransport"):
        run_virtual(main)
    records = [r for r in caplog.records if "session handler" in r.getMessage()]
    assert len(records) == 1, [r.getMessage() for r in caplog.records]
    (record,) = records
    assert record.levelno == logging.INFO
    assert record.exc_info is None
    assert "the peer left" in record.getMessage()
    if leave == "session_close":
        assert "WT_SESSION_GONE" in record.getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_handler_that_fails_on_its_own_is_logged_once_with_its_traceback(
    server_config: ServerConfig, client_config: ClientConfig, caplog: pytest.LogCaptureFixture
) -> None:
    async def main(loop: VirtualLoop) -> int:
        async def broken(session: WebTransportSession) -> None:
            raise KeyError("a bug")

        async with (
            WebTransportServer(server_config, handler=broken),
            WebTransportClient(client_config) as client,
        ):
            session = await client.connect(URL)
            info = await session.wait_closed()
            return info.error_code

    with caplog.at_level(logging.DEBUG, logger="pywebtransport"):
        code = run_virtual(main)
    assert code == ErrorCodes.APP_INTERNAL_ERROR
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None and errors[0].exc_info[0] is KeyError
