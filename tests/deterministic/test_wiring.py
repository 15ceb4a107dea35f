"""How the asyncio layer reports what the protocol decided (issue #16's wiring bugs)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pywebtransport import (
    ClientConfig,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
    WebTransportStream,
)
from pywebtransport.shared.constants import CAPSULE_CLOSE_WEBTRANSPORT_SESSION
from pywebtransport.shared.exceptions import StreamError
from pywebtransport.transport._core.capsules import encode_capsule
from pywebtransport.transport._core.protocol import WebTransportCore

from .simnet import VirtualLoop, run_virtual, until

pytestmark = pytest.mark.timeout(30)

URL = "https://127.0.0.1:4433/"


def test_a_close_we_start_over_a_peer_error_is_not_reported_as_the_peers(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    async def main(loop: VirtualLoop) -> None:
        sessions: list[WebTransportSession] = []

        async def keep(session: WebTransportSession) -> None:
            sessions.append(session)
            await session.wait_closed()

        async with (
            WebTransportServer(server_config, handler=keep),
            WebTransportClient(client_config) as client,
        ):
            session = await client.connect(URL)
            await until(lambda: bool(sessions))
            # A malformed CLOSE_WEBTRANSPORT_SESSION (no error code): the server ends
            # the session over the client's protocol error.
            engine = session.connection._engine
            bad = encode_capsule(CAPSULE_CLOSE_WEBTRANSPORT_SESSION, b"\x01")
            engine.core.quic.h3.send_data(session.session_id, bad, end_stream=False)
            engine.transmit()
            server_info = await sessions[0].wait_closed()
            assert server_info.remote is False
            assert server_info.clean is False
            client_info = await session.wait_closed()
            assert client_info.remote is True

    run_virtual(main)


@pytest.mark.aioquic_patch("h3_settings")
def test_session_credit_waiters_wake_on_credit_not_on_every_datagram(
    server_config: ServerConfig, client_config: ClientConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer blocked by draft-15 session flow control sleeps until WT_MAX_DATA arrives."""

    async def main(loop: VirtualLoop) -> None:
        streams: list[WebTransportStream] = []
        flood = asyncio.Event()

        async def slow(session: WebTransportSession) -> None:
            streams.append(await session.accept_bidirectional_stream())
            await flood.wait()
            for _ in range(50):
                session.send_datagram_nowait(b"noise")
                await asyncio.sleep(0.01)
            await session.wait_closed()

        config = server_config.update(initial_max_data=4096, flow_control_window=4096)
        async with (
            WebTransportServer(config, handler=slow),
            WebTransportClient(client_config) as client,
        ):
            session = await client.connect(URL)
            assert session.dialect == "draft-15"
            engine = session.connection._engine
            calls = 0
            allowance = WebTransportCore.send_allowance
            core = engine.core

            def counting(self: WebTransportCore, rec: Any, wanted: int) -> int:
                nonlocal calls
                calls += self is core
                return allowance(self, rec, wanted)

            monkeypatch.setattr(WebTransportCore, "send_allowance", counting)
            stream = await session.create_bidirectional_stream()
            writer = asyncio.create_task(stream.write(b"x" * 20000, end_stream=True))
            await until(lambda: bool(streams))
            await asyncio.sleep(0.05)
            blocked_calls = calls
            flood.set()
            await asyncio.sleep(1)  # 50 datagrams arrive; no credit comes with them
            assert not writer.done()
            assert calls == blocked_calls
            data = await streams[0].read_all()  # reading grants WT_MAX_DATA step by step
            await writer
            assert data == b"x" * 20000
            await session.close()

    run_virtual(main)


@pytest.mark.aioquic_patch("stream_state")
def test_two_tasks_writing_and_flushing_one_stream_all_finish(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    async def main(loop: VirtualLoop) -> None:
        streams: list[WebTransportStream] = []

        async def slow_reader(session: WebTransportSession) -> None:
            stream = await session.accept_bidirectional_stream()
            streams.append(stream)
            async for _chunk in stream:
                await asyncio.sleep(0.01)
            await session.wait_closed()

        config = client_config.update(
            max_stream_write_buffer_size=64 * 1024, write_timeout=None, read_timeout=None
        )
        server_cfg = server_config.update(quic_stream_receive_window=128 * 1024)
        async with (
            WebTransportServer(server_cfg, handler=slow_reader),
            WebTransportClient(config) as client,
        ):
            session = await client.connect(URL)
            stream = await session.create_bidirectional_stream()
            tasks = [
                asyncio.create_task(stream.write(b"a" * 400_000)),
                asyncio.create_task(stream.flush()),
                asyncio.create_task(stream.write(b"b" * 400_000)),
                asyncio.create_task(stream.flush()),
            ]
            # With one waiter slot, one of them waited for ever (write_timeout=None).
            done, pending = await asyncio.wait(tasks, timeout=60)
            assert not pending
            for task in done:
                task.result()
            await session.close()

    run_virtual(main)


@pytest.mark.aioquic_patch("stream_state", "stream_window")  # a window that holds data back
def test_flush_raises_when_the_stream_fails(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    async def main(loop: VirtualLoop) -> None:
        async def stop_later(session: WebTransportSession) -> None:
            stream = await session.accept_bidirectional_stream()
            await asyncio.sleep(0.5)
            await stream.stop_receiving(13)
            await session.wait_closed()

        server_cfg = server_config.update(quic_stream_receive_window=64 * 1024)
        async with (
            WebTransportServer(server_cfg, handler=stop_later),
            WebTransportClient(client_config.update(write_timeout=None)) as client,
        ):
            session = await client.connect(URL)
            stream = await session.create_bidirectional_stream()
            # More than the peer's window: the tail stays unacknowledged until it stops us.
            await stream.write(b"z" * 250_000)
            with pytest.raises(StreamError) as caught:
                await stream.flush()
            assert (caught.value.error_code, caught.value.remote) == (13, True)
            with pytest.raises(StreamError):
                await stream.write(b"more")
            await session.close()

    run_virtual(main)
