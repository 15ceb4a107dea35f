"""Stream credit comes back as streams finish, without the receiver sending anything."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from pywebtransport import (
    ClientConfig,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
    WebTransportStream,
)
from pywebtransport.shared.exceptions import StreamError

from .simnet import VirtualLoop, run_virtual

pytestmark = pytest.mark.timeout(30)

URL = "https://127.0.0.1:4433/"


@pytest.mark.aioquic_patch("h3_settings")  # draft-15 session flow control
def test_a_sender_past_the_initial_stream_credit_is_not_stalled(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    """The server pushes 3x the client's initial unidirectional stream credit; the client
    only reads. Each WT_MAX_STREAMS the reads produce must leave on its own, at once,
    not with the next ACK (25 ms later) or whatever the client sends next."""
    credit = 10
    total = 3 * credit

    async def push(session: WebTransportSession) -> None:
        for i in range(total):
            stream = await session.create_unidirectional_stream()
            await stream.write(b"message %d" % i, end_stream=True)
        await session.wait_closed()

    async def main(loop: VirtualLoop) -> tuple[list[bytes], float]:
        config = client_config.update(initial_max_streams_uni=credit)
        got: list[bytes] = []
        async with (
            WebTransportServer(server_config, handler=push),
            WebTransportClient(config) as client,
        ):
            session = await client.connect(URL)
            assert session.dialect == "draft-15"
            start = loop.time()
            async for stream in session.incoming_unidirectional_streams():
                got.append(await stream.read_all())
                if len(got) == total:
                    break
            elapsed = loop.time() - start
            await session.close()
        return got, elapsed

    got, elapsed = run_virtual(main)
    assert sorted(got) == sorted(b"message %d" % i for i in range(total))
    # Three credit windows, each a round trip (1 ms) and a little more.
    assert elapsed < 0.01, elapsed


@pytest.mark.aioquic_patch("stream_credit")
def test_streams_let_go_of_on_both_sides_are_closed_and_their_credit_returns(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    """A server handler that gives up on a stream the peer reset (and never closes its
    own half), and a client that resets its half and drops the stream: without the
    library closing what both let go of, each stream would hold QUIC stream credit
    until the session ends, and the 6th stream could never open."""

    async def give_up_on_reset(session: WebTransportSession) -> None:
        async def read(stream: WebTransportStream) -> None:
            with contextlib.suppress(StreamError):
                await stream.read_all()

        tasks = set()
        async for stream in session.incoming_bidirectional_streams():
            task = asyncio.create_task(read(stream))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def main(loop: VirtualLoop) -> int:
        config = server_config.update(quic_max_concurrent_bidi_streams=5)
        opened = 0
        async with (
            WebTransportServer(config, handler=give_up_on_reset),
            WebTransportClient(client_config.update(stream_creation_timeout=1.0)) as client,
        ):
            session = await client.connect(URL)
            for _ in range(20):
                stream = await session.create_bidirectional_stream()
                await stream.write(b"x" * 100)
                await stream.reset(7)
                del stream  # never read: its receiving half is let go of too
                opened += 1
            await session.close()
        return opened

    assert run_virtual(main) == 20
