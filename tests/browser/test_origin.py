"""Origin allow-list (`create_cors_middleware`) against real browsers.

The page is served from `http://127.0.0.1:<page port>`, so that is the `Origin` the
browser sends with its CONNECT. An allow-list without it must make `ready` reject; an
allow-list with it must let the session open.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pywebtransport import ServerConfig, WebTransportSession
from pywebtransport.framework import ServerApp, create_cors_middleware
from pywebtransport.shared.utils import CertificateInfo

from .harness import Browser, PageServer, run_scenario

ATTEMPT = """
    const wt = new WebTransport(ctx.url, {
        serverCertificateHashes: [{algorithm: "sha-256", value: ctx.hash}],
    });
    wt.closed.catch(() => {});
    try {
        await wt.ready;
    } catch (e) {
        return {ready: false, name: e.name, origin: location.origin};
    }
    const stream = await wt.createBidirectionalStream();
    const writer = stream.writable.getWriter();
    await writer.write(new TextEncoder().encode("origin ok"));
    await writer.close();
    const text = await new Response(stream.readable).text();
    wt.close({closeCode: 0, reason: "done"});
    return {ready: true, text, origin: location.origin};
"""


@pytest.fixture
async def apps() -> AsyncIterator[list[ServerApp]]:
    started: list[ServerApp] = []
    yield started
    for app in started:
        await app.shutdown()


async def _start(apps: list[ServerApp], config: ServerConfig, allowed: list[str]) -> str:
    app = ServerApp(config=config)
    app.add_middleware(create_cors_middleware(allowed))

    @app.route("/")
    async def echo(session: WebTransportSession) -> None:
        async for stream in session.incoming_bidirectional_streams():
            await stream.write(await stream.read_all(), end_stream=True)

    apps.append(app)
    await app.listen("127.0.0.1", 0)
    address = app.local_address
    assert address is not None
    return f"https://127.0.0.1:{address[1]}/"


@pytest.mark.timeout(90)
async def test_foreign_origin_rejected(
    browser: Browser,
    certificate: CertificateInfo,
    server_config: ServerConfig,
    page_server: PageServer,
    apps: list[ServerApp],
) -> None:
    url = await _start(apps, server_config, ["https://app.example", "http://127.0.0.1:1"])
    result = await run_scenario(browser, ATTEMPT, url=url, cert_hash=certificate.sha256)
    assert result["origin"] == f"http://127.0.0.1:{page_server.port}"
    assert result["ready"] is False, result
    assert result["name"] == "WebTransportError", result


@pytest.mark.timeout(90)
async def test_allowed_origin_connects(
    browser: Browser,
    certificate: CertificateInfo,
    server_config: ServerConfig,
    page_server: PageServer,
    apps: list[ServerApp],
) -> None:
    origin = f"http://127.0.0.1:{page_server.port}"
    url = await _start(apps, server_config, ["https://app.example", origin])
    result = await run_scenario(browser, ATTEMPT, url=url, cert_hash=certificate.sha256)
    assert result == {"ready": True, "text": "origin ok", "origin": origin}, result
