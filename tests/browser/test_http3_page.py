"""Headless Chromium loads a Starlette page over HTTP/3 from our server, then opens
WebTransport to the same port: one ASGI app, one UDP port, no TCP at all.

Chromium is told to speak QUIC to the origin (`--origin-to-force-quic-on`) and to
accept the test certificate by its public key for this browser instance only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from integration.starlette_site import build_site
from pywebtransport import ServerConfig
from pywebtransport.framework import ServerApp
from pywebtransport.shared.utils import CertificateInfo

from .harness import ChromiumBrowser, PageServer
from .test_cohost import spki_sha256


@pytest.mark.timeout(90)
async def test_chromium_loads_the_page_over_http3_and_opens_webtransport_on_the_same_port(
    launch_chromium: Callable[..., ChromiumBrowser],
    page_server: PageServer,
    certificate: CertificateInfo,
    server_config: ServerConfig,
) -> None:
    app = ServerApp(server_config)
    app.mount_asgi("/", build_site())
    await app.listen("127.0.0.1", 0)
    page: Any = None
    try:
        address = app.local_address
        assert address is not None
        origin = f"127.0.0.1:{address[1]}"
        chromium = launch_chromium(
            [
                f"--origin-to-force-quic-on={origin}",
                f"--ignore-certificate-errors-spki-list={spki_sha256(certificate.certfile)}",
            ]
        )
        page = await page_server.acall(chromium.open_page(f"https://{origin}/"), 40)
        await page_server.acall(page.wait_for_function("window.result", timeout=20_000), 30)
        result = await page_server.acall(page.evaluate("window.result"), 10)
        assert result == {
            "echo": "ping over webtransport",
            "posted": "posted over h3",
            "greeting": "hello from lifespan",
        }
        navigation = "performance.getEntriesByType('navigation')[0].nextHopProtocol"
        assert await page_server.acall(page.evaluate(navigation), 10) == "h3"
    finally:
        if page is not None:
            await page_server.acall(page.context.close(), 20)
        await app.shutdown()
