"""Lifecycle under load: thousands of connect/close cycles, hundreds of sessions, shutdown.

Figures (rates, RSS growth) are printed; run with `-s` to see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time

import pytest

from pywebtransport import (
    ClientConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.shared.constants import ErrorCodes
from pywebtransport.shared.exceptions import WebTransportError

from .conftest import ServerFactory, echo_handler, url_of, wait_until

MIB = 1024 * 1024
CYCLE_BUDGET_SECONDS = 80.0
# 2,000 cycles: twice the floor asserted below, enough to see memory that grows per cycle
# (the benchmark's close soak runs 5,000 and measures the slope).
MAX_CYCLES = 2000


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def server_stream_count(server: WebTransportServer) -> int:
    return sum(conn.get_stats()["streams"] for conn in server.connection_manager.connections())


async def settle(server: WebTransportServer, *clients: WebTransportClient) -> None:
    managers = [server.session_manager, server.connection_manager]
    for client in clients:
        managers += [client.session_manager, client.connection_manager]
    assert await wait_until(lambda: not any(len(m) for m in managers), 10), [
        len(m) for m in managers
    ]


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_sequential_connect_close_cycles(
    start_server: ServerFactory, client_config: ClientConfig
) -> None:
    server = await start_server(echo_handler)
    url = url_of(server)
    tasks_before = len(asyncio.all_tasks())
    loop = asyncio.get_running_loop()
    async with WebTransportClient(client_config) as client:
        # Warm up, then measure the rate and fit the count into the time budget.
        for _ in range(20):
            await (await client.connect(url)).close()
        gc.collect()
        rss_before = rss_bytes()
        start = loop.time()
        cycles = 0
        while cycles < MAX_CYCLES and loop.time() - start < CYCLE_BUDGET_SECONDS:
            session = await client.connect(url)
            if cycles % 50 == 0:
                stream = await session.create_bidirectional_stream()
                await stream.write(b"ping", end_stream=True)
                assert await stream.read_all() == b"ping"
            await session.close()
            cycles += 1
        elapsed = loop.time() - start
        await settle(server, client)
        gc.collect()
        growth = rss_bytes() - rss_before
        print(
            f"\n{cycles} sequential connect/close cycles in {elapsed:.1f}s "
            f"({cycles / elapsed:.0f}/s); RSS growth {growth / MIB:.1f} MiB"
        )
        assert cycles >= 1000, f"only {cycles} cycles in {CYCLE_BUDGET_SECONDS}s"
        assert server_stream_count(server) == 0
        assert growth < 64 * MIB
    await asyncio.sleep(0.1)
    leaked = [t for t in asyncio.all_tasks() if not t.done()]
    assert len(leaked) <= tasks_before, [t.get_coro() for t in leaked]


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_500_concurrent_sessions(
    start_server: ServerFactory, client_config: ClientConfig
) -> None:
    connections, per_connection = 100, 5
    # One client address opens it all: lift the per-address limits (issue #15) for it.
    server = await start_server(
        echo_handler,
        max_sessions=600,
        max_connections=200,
        max_sessions_per_connection=10,
        max_connections_per_address=200,
        max_sessions_per_address=600,
        max_handshakes_per_address=128,
    )
    url = url_of(server)
    tasks_before = len(asyncio.all_tasks())
    gc.collect()
    rss_before = rss_bytes()
    start = time.monotonic()
    async with WebTransportClient(client_config.update(max_connections=200)) as client:

        async def open_connection(i: int) -> list[WebTransportSession]:
            first = await client.connect(url)
            rest = [
                await first.connection.create_session(f"/s{j}") for j in range(1, per_connection)
            ]
            return [first, *rest]

        groups = await asyncio.gather(*(open_connection(i) for i in range(connections)))
        sessions = [s for group in groups for s in group]
        assert len(sessions) == 500
        assert len(server.session_manager) == 500
        opened = time.monotonic() - start

        async def echo(session: WebTransportSession, i: int) -> bytes:
            stream = await session.create_bidirectional_stream()
            payload = i.to_bytes(4, "big") * 256
            await stream.write(payload, end_stream=True)
            return await stream.read_all()

        results = await asyncio.gather(*(echo(s, i) for i, s in enumerate(sessions)))
        assert results == [i.to_bytes(4, "big") * 256 for i in range(500)]
        peak = rss_bytes() - rss_before
        await asyncio.gather(*(s.close() for s in sessions))
        await settle(server, client)
        assert server_stream_count(server) == 0
    await asyncio.sleep(0.1)
    gc.collect()
    growth = rss_bytes() - rss_before
    print(
        f"\n500 sessions on {connections} connections opened in {opened:.1f}s; "
        f"RSS +{peak / MIB:.1f} MiB at peak, +{growth / MIB:.1f} MiB after close"
    )
    assert growth < 128 * MIB
    leaked = [t for t in asyncio.all_tasks() if not t.done()]
    assert len(leaked) <= tasks_before, [t.get_coro() for t in leaked]


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_graceful_shutdown_200_sessions(
    start_server: ServerFactory, client_config: ClientConfig
) -> None:
    final = os.urandom(64 * 1024)
    written: list[int] = []

    async def handler(session: WebTransportSession) -> None:
        # Data written and FIN'd before shutdown must reach the peer.
        stream = await session.create_unidirectional_stream()
        await stream.write(final, end_stream=True)
        written.append(1)
        await session.wait_closed()

    close_timeout = 4.0
    server = await start_server(
        handler,
        max_sessions=300,
        max_connections=100,
        max_sessions_per_connection=10,
        close_timeout=close_timeout,
    )
    url = url_of(server)
    async with WebTransportClient(client_config.update(max_connections=100)) as client:

        async def open_connection() -> list[WebTransportSession]:
            first = await client.connect(url)
            rest = [await first.connection.create_session(f"/s{j}") for j in range(1, 10)]
            return [first, *rest]

        groups = await asyncio.gather(*(open_connection() for _ in range(20)))
        sessions = [s for group in groups for s in group]
        assert len(sessions) == 200

        async def read_final(session: WebTransportSession) -> bytes:
            stream = await session.accept_unidirectional_stream(timeout=10)
            return await stream.read_all()

        readers = [asyncio.create_task(read_final(s)) for s in sessions]
        assert await wait_until(lambda: len(written) == 200, 10)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await server.close()
        took = loop.time() - start
        print(f"\nshutdown with 200 sessions took {took:.2f}s (close_timeout={close_timeout})")
        assert took <= close_timeout + 1.0
        infos = []
        for session in sessions:
            with contextlib.suppress(WebTransportError):
                infos.append(await asyncio.wait_for(session.wait_closed(), 5))
        assert len(infos) == 200
        codes = {info.error_code for info in infos}
        assert codes == {ErrorCodes.APP_SERVICE_UNAVAILABLE}, codes
        delivered = await asyncio.gather(*readers, return_exceptions=True)
        assert all(d == final for d in delivered), [
            type(d).__name__ for d in delivered if d != final
        ][:5]
    assert len(server.session_manager) == 0
    assert len(server.connection_manager) == 0
