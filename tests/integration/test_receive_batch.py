"""Batched datagram reads under asyncio's selector loop (real UDP sockets on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from pywebtransport import WebTransportClient, WebTransportServer
from pywebtransport.transport._aioquic import selector_socket
from pywebtransport.transport._setup import drain_datagrams

from .conftest import url_of


@pytest.mark.timeout(10)
def test_drain_reads_what_is_queued_in_order_up_to_one_batch() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
    ):
        rx.bind(("127.0.0.1", 0))
        tx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        for i in range(40):
            tx.sendto(i.to_bytes(2, "big"), rx.getsockname())
        got: list[bytes] = []

        def receive(data: bytes, addr: Any) -> None:
            assert addr == tx.getsockname()
            got.append(data)

        # Datagrams on loopback are queued by the time sendto returns.
        drain_datagrams(rx, receive)
        assert got == [i.to_bytes(2, "big") for i in range(31)]  # the caller had the 1st
        drain_datagrams(rx, receive)
        assert len(got) == 40
        drain_datagrams(rx, receive)  # nothing queued: returns at once
        assert len(got) == 40


@pytest.mark.timeout(20)
@pytest.mark.aioquic_patch("batch_reads")
async def test_client_and_server_drain_their_own_sockets_under_asyncio(
    echo_server: WebTransportServer, client: WebTransportClient
) -> None:
    loop = asyncio.get_running_loop()
    assert type(loop).__module__.startswith("asyncio")
    endpoint = echo_server._endpoint
    assert endpoint is not None
    assert endpoint._sock is not None
    assert endpoint._sock is selector_socket(endpoint.transport)
    session = await client.connect(url_of(echo_server))
    engine = session.connection._engine
    assert engine.sock is not None
    assert engine.sock is selector_socket(engine.transport)
    # A bulk echo works through the batched path on both sides.
    stream = await session.create_bidirectional_stream()
    payload = bytes(range(256)) * 4096
    writer = asyncio.create_task(stream.write_all(payload, end_stream=True))
    assert await stream.read_all() == payload
    await writer
    await session.close()
