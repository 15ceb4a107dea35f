"""Firefox's idle twin connection: tolerated, never a session, cleaned up on idle timeout.

Firefox ESR (default prefs, as in users' browsers) opens two QUIC connections for one
WebTransport session and sends the CONNECT on one of them; the other idles. After the
harness kills Firefox, the server must drop both connections within its
`connection_idle_timeout`, and the twin must never count as a session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from pywebtransport import WebTransportServer, WebTransportSession
from pywebtransport.shared.utils import CertificateInfo

from .harness import FirefoxBrowser, run_scenario

ServerFactory = Callable[..., Awaitable[WebTransportServer]]

IDLE_TIMEOUT = 3.0
SLACK = 3.0

SCENARIO = r"""
const wt = new WebTransport(ctx.url, {
    serverCertificateHashes: [{algorithm: "sha-256", value: ctx.hash}],
});
wt.closed.catch(() => {});
await wt.ready;
const stream = await wt.createBidirectionalStream();
const writer = stream.writable.getWriter();
await writer.write(new TextEncoder().encode("twin"));
await writer.close();
const reply = await new Response(stream.readable).text();
return reply;
"""


def url_of(server: WebTransportServer, path: str) -> str:
    address = server.local_address
    assert address is not None
    return f"https://127.0.0.1:{address[1]}{path}"


async def _echo(session: WebTransportSession) -> None:
    async for stream in session.incoming_bidirectional_streams():
        data = await stream.read_all()
        await stream.write_all(data)


async def test_firefox_twin_connection_is_cleaned_up(
    firefox: FirefoxBrowser, start_server: ServerFactory, certificate: CertificateInfo
) -> None:
    server: WebTransportServer = await start_server(
        _echo, connection_idle_timeout=IDLE_TIMEOUT, keep_alive_interval=None
    )
    peaks = {"connections": 0, "sessions": 0}

    async def sample() -> None:
        while True:
            peaks["connections"] = max(peaks["connections"], len(server.connection_manager))
            peaks["sessions"] = max(peaks["sessions"], len(server.session_manager))
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    try:
        reply = await run_scenario(
            firefox, SCENARIO, url=url_of(server, "/twin"), cert_hash=certificate.sha256
        )
        assert reply == "twin"
        # Firefox is gone (its process group was killed); nothing says goodbye, so only
        # the idle timeout can release what it left behind.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + IDLE_TIMEOUT + SLACK
        while loop.time() < deadline:
            if not len(server.connection_manager) and not len(server.session_manager):
                break
            await asyncio.sleep(0.05)
        assert len(server.connection_manager) == 0, "connections left after idle timeout"
        assert len(server.session_manager) == 0, "sessions left after idle timeout"
    finally:
        sampler.cancel()
    print(f"peaks: {peaks}")
    assert peaks["sessions"] == 1
    assert 1 <= peaks["connections"] <= 2
