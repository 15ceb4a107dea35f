"""When packets leave: what one command queues goes out together, at once."""

from __future__ import annotations

import asyncio

import pytest

from pywebtransport import ClientConfig, ServerConfig, WebTransportClient, WebTransportServer

from .simnet import VirtualLoop, run_virtual
from .test_timing import URL, _echo

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
