"""Timeouts, keep-alive, idle expiry and close timing, on a virtual clock.

Every bound here is exact: the loop's clock only moves when nothing is ready,
so a timer fires at its deadline however busy the machine is.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pywebtransport import (
    ClientConfig,
    ServerConfig,
    SessionState,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.shared.exceptions import SessionClosedError, StreamError, TimeoutError

from .simnet import VirtualLoop, run_virtual, until

pytestmark = pytest.mark.timeout(30)

URL = "https://127.0.0.1:4433/"
SERVER = ("127.0.0.1", 4433)
DELAY = 0.0005  # one way; a round trip is 1 ms


async def _hold(session: WebTransportSession) -> None:
    await session.wait_closed()


async def _echo(session: WebTransportSession) -> None:
    async for stream in session.incoming_bidirectional_streams():
        data = await stream.read_all()
        await stream.write(data, end_stream=True)


def test_connect_times_out_at_connect_timeout(client_config: ClientConfig) -> None:
    async def main(loop: VirtualLoop) -> float:
        start = loop.time()
        async with WebTransportClient(client_config.update(connect_timeout=2.0)) as client:
            with pytest.raises(TimeoutError) as caught:
                await client.connect(URL)  # nobody listens: every Initial is lost
            assert caught.value.operation == "connect"
        return loop.time() - start

    assert run_virtual(main) == pytest.approx(2.0, abs=0.01)


def test_connect_timeout_argument_overrides_config(client_config: ClientConfig) -> None:
    async def main(loop: VirtualLoop) -> float:
        start = loop.time()
        async with WebTransportClient(client_config) as client:
            with pytest.raises(TimeoutError):
                await client.connect(URL, timeout=0.75)
        return loop.time() - start

    assert run_virtual(main) == pytest.approx(0.75, abs=0.01)


@pytest.mark.aioquic_patch("early_settings")
def test_connect_completes_in_two_round_trips(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    async def main(loop: VirtualLoop) -> float:
        async with (
            WebTransportServer(server_config, handler=_hold),
            WebTransportClient(client_config) as client,
        ):
            start = loop.time()
            session = await client.connect(URL)
            took = loop.time() - start
            await session.close()
        return took

    # Handshake (1 RTT; the server's SETTINGS ride in its first flight), then CONNECT (1 RTT).
    assert run_virtual(main, delay=DELAY) <= 2 * 2 * DELAY + 0.001


def test_idle_connection_times_out_on_both_sides(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    async def main(loop: VirtualLoop) -> None:
        config = {"connection_idle_timeout": 1.0, "keep_alive_interval": None}
        async with (
            WebTransportServer(server_config.update(**config), handler=_hold) as server,
            WebTransportClient(client_config.update(**config)) as client,
        ):
            session = await client.connect(URL)
            opened = loop.time()
            info = await session.wait_closed()
            assert info.clean is False and info.remote
            assert loop.time() - opened == pytest.approx(1.0, abs=0.01)
            await asyncio.sleep(0.01)
            assert len(server.connection_manager) == 0
            assert len(server.session_manager) == 0

    run_virtual(main)


def test_keep_alive_holds_an_idle_session_open(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    async def main(loop: VirtualLoop) -> None:
        config = {"connection_idle_timeout": 1.0, "keep_alive_interval": 0.4}
        async with (
            WebTransportServer(server_config.update(**config), handler=_hold) as server,
            WebTransportClient(client_config.update(**config)) as client,
        ):
            session = await client.connect(URL)
            await asyncio.sleep(30)  # thirty idle timeouts, nothing sent by the application
            assert session.state is SessionState.CONNECTED
            assert len(server.session_manager) == 1
            await session.close()

    run_virtual(main)


@pytest.mark.parametrize(("idle", "keep_alive"), [(60.0, 30.0), (2.0, 1.5), (10.0, 1.0)])
def test_vanished_peer_is_freed_at_the_idle_timeout(
    server_config: ServerConfig, client_config: ClientConfig, idle: float, keep_alive: float
) -> None:
    """Keep-alive PINGs to a silent peer must not extend its life (issue #15)."""

    async def main(loop: VirtualLoop) -> float:
        config = {"connection_idle_timeout": idle, "keep_alive_interval": keep_alive}
        async with (
            WebTransportServer(server_config.update(**config), handler=_hold) as server,
            WebTransportClient(client_config.update(**config)) as client,
        ):
            await client.connect(URL)
            await asyncio.sleep(keep_alive + 0.01)  # just after a keep-alive exchange
            vanished = loop.time()
            # The client's machine is gone: nothing it sends arrives, nothing reaches it.
            client_port = next(a for a in loop.network.hosts if a != SERVER)
            loop.network.drop = lambda data, src, dst: client_port in (src, dst)
            await until(lambda: not len(server.connection_manager), 0.05)
            freed = loop.time() - vanished
            assert len(server.session_manager) == 0
            loop.network.drop = None
        return freed

    freed = run_virtual(main)
    assert freed <= idle + 0.1, freed


def test_read_timeout_applies_to_each_wait(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    async def main(loop: VirtualLoop) -> None:
        async def drip(session: WebTransportSession) -> None:
            stream = await session.accept_bidirectional_stream()
            for _ in range(3):
                await asyncio.sleep(0.4)
                await stream.write(b"x")
            await session.wait_closed()

        async with (
            WebTransportServer(server_config, handler=drip),
            WebTransportClient(client_config.update(read_timeout=0.5)) as client,
        ):
            session = await client.connect(URL)
            stream = await session.create_bidirectional_stream()
            await stream.write(b"go")
            for _ in range(3):
                assert await stream.read() == b"x"  # each wait is 0.4 s < 0.5 s
            waited = loop.time()
            with pytest.raises(TimeoutError) as caught:
                await stream.read()
            assert caught.value.operation == "read"
            assert loop.time() - waited == pytest.approx(0.5, abs=0.01)
            await session.close()

    run_virtual(main)


@pytest.mark.aioquic_patch("stream_limits", "stream_credit")
def test_stream_creation_waits_for_credit_then_times_out(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    async def main(loop: VirtualLoop) -> None:
        server_cfg = server_config.update(quic_max_concurrent_bidi_streams=3)
        async with WebTransportServer(server_cfg, handler=_hold):
            config = client_config.update(stream_creation_timeout=1.5)
            async with WebTransportClient(config) as client:
                session = await client.connect(URL)
                # Held open (a stream let go of is closed, returning its credit);
                # the CONNECT stream took the third.
                held = [await session.create_bidirectional_stream() for _ in range(2)]
                start = loop.time()
                with pytest.raises(TimeoutError) as caught:
                    await session.create_bidirectional_stream()
                assert caught.value.operation == "create_stream"
                assert loop.time() - start == pytest.approx(1.5, abs=0.01)
                assert all(not stream.is_closed for stream in held)
                await session.close()

    run_virtual(main)


@pytest.mark.aioquic_patch("stream_state")
def test_write_times_out_when_the_peer_never_reads(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    async def main(loop: VirtualLoop) -> None:
        streams: list[Any] = []

        async def keep(session: WebTransportSession) -> None:
            streams.append(await session.accept_bidirectional_stream())
            await session.wait_closed()

        async with WebTransportServer(server_config, handler=keep):
            config = client_config.update(write_timeout=3.0)
            async with WebTransportClient(config) as client:
                session = await client.connect(URL)
                stream = await session.create_bidirectional_stream()
                with pytest.raises(TimeoutError) as caught:
                    await stream.write(b"x" * (8 * 1024 * 1024))
                assert caught.value.operation == "write"
                await session.close()

    run_virtual(main)


def test_client_close_returns_without_the_closing_period(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    async def main(loop: VirtualLoop) -> float:
        async with WebTransportServer(server_config, handler=_hold) as server:
            client = WebTransportClient(client_config)
            session = await client.connect(URL)
            start = loop.time()
            await client.close()
            took = loop.time() - start
            assert session.is_closed
            # The server sees the close capsule, then CONNECTION_CLOSE.
            await until(lambda: not len(server.connection_manager))
        return took

    # One round trip plus aioquic's 1 ms ACK delay for the close capsule; no 3-PTO
    # closing period.
    assert run_virtual(main, delay=DELAY) <= 2 * DELAY + 0.001 + 1e-6


def test_server_shutdown_finishes_within_close_timeout(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    async def main(loop: VirtualLoop) -> None:
        async def stubborn(session: WebTransportSession) -> None:
            await asyncio.Event().wait()  # ignores DRAIN; only cancellation ends it

        server = WebTransportServer(server_config.update(close_timeout=2.0), handler=stubborn)
        await server.listen()
        async with WebTransportClient(client_config) as client:
            sessions = [await client.connect(URL) for _ in range(5)]
            start = loop.time()
            await server.close()
            assert loop.time() - start <= 2.0 + 0.01
            for session in sessions:
                info = await session.wait_closed()
                assert info.error_code == 0x1008 and info.remote
            with pytest.raises(SessionClosedError):
                await sessions[0].create_bidirectional_stream()

    run_virtual(main)


def test_linger_ends_when_the_peer_closes_first(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    # The linger itself (Chromium's page seeing a clean close on server
    # shutdown) is tested in tests/browser/test_cohost.py.
    async def main(loop: VirtualLoop) -> float:
        async with (
            WebTransportServer(server_config, handler=_hold) as server,
            WebTransportClient(client_config) as client,
        ):
            await client.connect(URL)
            await until(lambda: len(server.connection_manager) == 1)
            (connection,) = server.connection_manager.connections()
            start = loop.time()
            closing = asyncio.ensure_future(connection.close(linger=30.0))
            await asyncio.sleep(0.5)
            await client.close()
            await closing
            return loop.time() - start

    assert run_virtual(main, delay=DELAY) == pytest.approx(0.5, abs=0.01)


def test_reset_reaches_a_blocked_reader(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    async def main(loop: VirtualLoop) -> None:
        async def reset_soon(session: WebTransportSession) -> None:
            stream = await session.accept_bidirectional_stream()
            await asyncio.sleep(5)
            await stream.reset(77)
            await session.wait_closed()

        async with (
            WebTransportServer(server_config, handler=reset_soon),
            WebTransportClient(client_config.update(read_timeout=None)) as client,
        ):
            session = await client.connect(URL)
            stream = await session.create_bidirectional_stream()
            await stream.write(b"hi")
            start = loop.time()
            with pytest.raises(StreamError) as caught:
                await stream.read()
            assert caught.value.error_code == 77 and caught.value.remote
            assert loop.time() - start == pytest.approx(5.0, abs=0.01)
            await session.close()

    run_virtual(main)
