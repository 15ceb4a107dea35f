"""Largest datagrams in real browsers: what the page may send reaches the server, and the
largest datagram the server may send (``session.max_datagram_size``) reaches the page."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from pywebtransport import WebTransportSession
from pywebtransport.shared.utils import CertificateInfo

from .harness import Browser
from .test_webtransport import StartServer, result_of, run_js, settle, wait_closed_quietly


@pytest.mark.timeout(90)
async def test_max_size_datagrams_both_ways(
    browser: Browser, certificate: CertificateInfo, start_server: StartServer
) -> None:
    loop = asyncio.get_running_loop()
    received: asyncio.Future[bytes] = loop.create_future()
    server_limit: asyncio.Future[int] = loop.create_future()

    async def handler(session: WebTransportSession) -> None:
        limit = session.max_datagram_size
        settle(server_limit, limit)

        async def answer() -> None:
            while True:
                data = await session.receive_datagram()
                settle(received, data)
                # Answer with the largest datagram the server may send.
                await session.send_datagram(bytes([len(data) % 251]) * limit)

        task = asyncio.create_task(answer())
        try:
            await wait_closed_quietly(session)
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    server = await start_server(handler)
    result = await run_js(
        browser,
        certificate,
        server,
        """
        const wt = await connect();
        const size = wt.datagrams.maxDatagramSize;
        const writer = wt.datagrams.writable.getWriter();
        const reader = wt.datagrams.readable.getReader();
        let got = null;
        const receive = reader.read().then(({value}) => { got = value; });
        for (let i = 0; i < 25 && got === null; i++) {
          await writer.write(new Uint8Array(size).fill(0xab));
          await Promise.race([receive, new Promise((r) => setTimeout(r, 200))]);
        }
        wt.close();
        return {size, got: got === null ? null : {length: got.length, first: got[0]}};
        """,
    )
    size = result["size"]
    assert isinstance(size, int) and size > 1000, result
    data = await result_of(received)
    assert data == b"\xab" * size
    limit = await result_of(server_limit)
    assert limit >= 1000, limit
    assert result["got"] == {"length": limit, "first": size % 251}, result
