"""When packets leave: what one command queues goes out together, at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aioquic.tls import Epoch

from pywebtransport import (
    ClientConfig,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.transport._aioquic import FEATURES
from pywebtransport.transport._engine import ConnectionEngine

from .simnet import VirtualLoop, run_virtual, until
from .test_timing import SERVER, URL, _echo

pytestmark = pytest.mark.timeout(30)


@pytest.mark.aioquic_patch("h3_settings")  # draft-15 session flow control
def test_a_new_streams_header_and_first_write_leave_in_one_packet(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    """Opening a stream queues its header; the first write sends header and data at once.

    With draft-15 session flow control the write first asks for session credit,
    which once flushed the header alone and deferred the data to the next loop
    iteration: two packets and an extra iteration per new stream.
    """

    async def main(loop: VirtualLoop) -> tuple[int, bytes]:
        async with (
            WebTransportServer(server_config, handler=_echo),
            WebTransportClient(client_config) as client,
        ):
            session = await client.connect(URL)
            assert session.dialect == "draft-15"  # session flow control on
            before = loop.network.sent
            stream = await session.create_bidirectional_stream()
            await stream.write(b"x" * 64, end_stream=True)
            for _ in range(3):  # deferred transmits run; nothing has arrived yet
                await asyncio.sleep(0)
            sent = loop.network.sent - before
            echoed = await stream.read_all()
            await session.close()
            return sent, echoed

    sent, echoed = run_virtual(main)
    assert sent == 1
    assert echoed == b"x" * 64


def _upload_through_loss(
    server_config: ServerConfig, client_config: ClientConfig, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, int, int]:
    """Upload 256 KiB, every 20th datagram to the server lost, to a server that takes
    0.4 ms of CPU per datagram (so datagrams that arrive together take time).

    Returns:
        The receive batches the server ended, those after which it still owed an ACK
        of packets with a gap, and the datagrams the server sent during the upload.
    """
    ended = withheld = 0
    deferred = ConnectionEngine.end_receive

    def end_receive(self: ConnectionEngine) -> None:
        nonlocal ended, withheld
        deferred(self)
        if not self.is_client:
            ended += 1
            space: Any = self.quic._spaces[Epoch.ONE_RTT]  # aioquic's record of what it owes
            withheld += space.ack_at is not None and len(space.ack_queue) > 1

    monkeypatch.setattr(ConnectionEngine, "end_receive", end_receive)
    received: list[int] = []

    async def sink(session: WebTransportSession) -> None:
        async for stream in session.incoming_unidirectional_streams():
            received.append(len(await stream.read_all()))

    async def main(loop: VirtualLoop) -> tuple[int, int, int]:
        nonlocal ended, withheld
        from_server = to_server = 0

        def lose(data: bytes, source: Any, destination: Any) -> bool:
            nonlocal from_server, to_server
            if source == SERVER:
                from_server += 1
                return False
            to_server += 1
            return to_server % 20 == 0

        async with (
            WebTransportServer(server_config, handler=sink),
            WebTransportClient(client_config) as client,
        ):
            session = await client.connect(URL)
            ended = withheld = 0
            loop.network.drop = lose
            loop.network.receive_cost = 0.0004
            stream = await session.create_unidirectional_stream()
            await stream.write_all(bytes(256 * 1024), end_stream=True)
            await until(lambda: bool(received))
            loop.network.receive_cost = 0.0
            loop.network.drop = None
            await session.close()
        assert received == [256 * 1024]
        return ended, withheld, from_server

    return run_virtual(main)


@pytest.mark.aioquic_patch("prompt_acks")
def test_the_ack_of_packets_with_a_gap_leaves_at_the_end_of_the_receive_batch(
    server_config: ServerConfig, client_config: ClientConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receiver that saw a packet number missing acknowledges at once (RFC 9000 13.2.1).

    The sender detects a loss from an ACK of later packets; held for aioquic's 1 ms
    ACK delay and the deferred transmit, that ACK comes later and covers more.
    """
    ended, withheld, prompt = _upload_through_loss(server_config, client_config, monkeypatch)
    assert ended > 150  # about one batch per datagram of the upload
    assert withheld == 0

    with monkeypatch.context() as off:
        off.setattr(FEATURES["prompt_acks"], "enabled", False)
        ended, withheld, late = _upload_through_loss(server_config, client_config, monkeypatch)
    assert withheld > 100  # without it, most batches end with it still owed (153 of 224) ...
    assert prompt > late * 1.5  # ... and the server sends half the ACKs (measured: 107, 51)
