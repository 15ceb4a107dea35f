"""Stream credit comes back as streams finish, without the receiver sending anything."""

from __future__ import annotations

import pytest

from pywebtransport import (
    ClientConfig,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)

from .simnet import VirtualLoop, run_virtual

pytestmark = pytest.mark.timeout(30)

URL = "https://127.0.0.1:4433/"


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
