"""Per-address limits and the outgoing datagram queue, on the virtual clock.

Every client of the simulated network sends from 127.0.0.1, so one client
address holds every connection here: the per-address limits are what refuse.
"""

from __future__ import annotations

import asyncio

import pytest

from pywebtransport import (
    ClientConfig,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.shared.exceptions import ConnectionError, HandshakeError
from pywebtransport.transport._core.datagrams import _DATAGRAM_BUDGET

from .simnet import VirtualLoop, run_virtual, until
from .test_timing import URL, _hold

pytestmark = pytest.mark.timeout(30)


def test_connections_over_the_per_address_limit_are_refused_and_others_served(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    async def main(loop: VirtualLoop) -> None:
        config = server_config.update(max_connections_per_address=2)
        async with WebTransportServer(config, handler=_hold) as server:
            clients = [WebTransportClient(client_config) for _ in range(3)]
            try:
                held = [await clients[i].connect(URL) for i in range(2)]
                with pytest.raises(ConnectionError):
                    await clients[2].connect(URL)
                assert all(session.is_ready for session in held)
                await held[0].connection.close()
                await until(lambda: len(server.connection_manager) == 1)
                # The freed place is taken by the next one from the same address.
                again = await clients[2].connect(URL)
                assert again.is_ready
                assert len(server.connection_manager) == 2
            finally:
                for client in clients:
                    await client.close()

    run_virtual(main)


def test_sessions_over_the_per_address_limit_are_answered_429(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    async def main(loop: VirtualLoop) -> None:
        config = server_config.update(max_sessions_per_address=2)
        async with (
            WebTransportServer(config, handler=_hold),
            WebTransportClient(client_config) as client,
        ):
            held = [await client.connect(URL) for _ in range(2)]
            with pytest.raises(HandshakeError) as refused:
                await client.connect(URL)
            assert refused.value.status_code == 429
            await held[0].close()
            await asyncio.sleep(0.01)  # the server sees the close
            assert (await client.connect(URL)).is_ready

    run_virtual(main)


@pytest.mark.aioquic_patch("datagram_queue")
def test_the_outgoing_datagram_queue_drops_the_oldest_and_expires_stale_ones(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    """More than QUIC can take: the session's queue holds the high-water mark,
    `send_datagram_nowait` drops the oldest for the newest, and what waited longer
    than the maximum age is dropped rather than sent."""
    config = client_config.update(
        outgoing_datagram_high_water_mark=8, outgoing_datagram_max_age=0.01
    )

    async def main(loop: VirtualLoop) -> dict[str, int]:
        async with (
            WebTransportServer(server_config, handler=_hold),
            WebTransportClient(config) as client,
        ):
            session: WebTransportSession = await client.connect(URL)
            for i in range(2000):
                session.send_datagram_nowait(b"%04d" % i + bytes(1000))
            # QUIC took its budget, the queue the high-water mark, the rest made room.
            assert session.stats["datagrams_queued"] == 8
            assert session.stats["datagrams_send_dropped"] == 2000 - _DATAGRAM_BUDGET - 8
            # A stall of the event loop longer than the maximum age (a blocking call
            # in the application): at the next transmit the queued ones are stale.
            loop.advance(0.05)
            await asyncio.sleep(0.01)
            stale = session.stats
            await session.close()
        return stale

    stats = run_virtual(main)
    assert stats["datagrams_expired"] == 8
    assert stats["datagrams_queued"] == 0
