"""Browsers in each WebTransport dialect they speak, and subprotocol negotiation.

Chromium speaks draft-02 by default and draft-07 with `EnableWebTransportDraft07`;
Firefox ESR speaks draft-02 and has no subprotocol negotiation. One server serves
them all; each session reports the dialect it was served in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pywebtransport import WebTransportServer, WebTransportSession
from pywebtransport.shared.utils import CertificateInfo

from .harness import Browser, ChromiumBrowser, run_scenario

StartServer = Callable[..., Awaitable[WebTransportServer]]

ECHO_WITH_PROTOCOLS = r"""
const wt = new WebTransport(ctx.url, {
  serverCertificateHashes: [{algorithm: "sha-256", value: ctx.hash}],
  protocols: ctx.params.protocols,
});
wt.closed.catch(() => {});
await wt.ready;
const stream = await wt.createBidirectionalStream();
const writer = stream.writable.getWriter();
await writer.write(new TextEncoder().encode("dialect check"));
await writer.close();
const text = await new Response(stream.readable).text();
const protocol = "protocol" in wt ? wt.protocol : null;
wt.close({closeCode: 0, reason: "done"});
return {text, protocol};
"""


def _url(server: WebTransportServer) -> str:
    assert server.local_address is not None
    return f"https://127.0.0.1:{server.local_address[1]}/dialect"


async def _echo_server(start_server: StartServer, seen: asyncio.Queue[Any]) -> WebTransportServer:
    async def handler(session: WebTransportSession) -> None:
        await seen.put((session.dialect, session.wt_available_protocols, session.wt_protocol))
        async for stream in session.incoming_bidirectional_streams():
            await stream.write(await stream.read_all(), end_stream=True)

    return await start_server(handler, wt_supported_protocols=("json", "text"))


async def _check(
    browser: Browser, certificate: CertificateInfo, start_server: StartServer
) -> tuple[Any, Any]:
    seen: asyncio.Queue[Any] = asyncio.Queue()
    server = await _echo_server(start_server, seen)
    result = await run_scenario(
        browser,
        ECHO_WITH_PROTOCOLS,
        url=_url(server),
        cert_hash=certificate.sha256,
        params={"protocols": ["text", "json"]},
        timeout=30,
    )
    return result, await asyncio.wait_for(seen.get(), 10)


@pytest.mark.timeout(90)
async def test_default_dialect_and_subprotocols(
    browser: Browser, certificate: CertificateInfo, start_server: StartServer
) -> None:
    result, (dialect, offered, chosen) = await _check(browser, certificate, start_server)
    assert result["text"] == "dialect check"
    assert dialect == "draft-02"
    if browser.name == "chromium":
        assert offered == ["text", "json"]
        assert chosen == "text"  # the client's first that the server supports
        assert result["protocol"] == "text"
    else:
        # Firefox ESR neither offers protocols nor has `WebTransport.protocol`.
        assert offered is None or offered == []
        assert chosen is None
        assert result["protocol"] is None


@pytest.mark.timeout(90)
async def test_chromium_draft07(
    launch_chromium: Callable[..., ChromiumBrowser],
    certificate: CertificateInfo,
    start_server: StartServer,
) -> None:
    chromium = launch_chromium(["--enable-features=EnableWebTransportDraft07"])
    result, (dialect, offered, chosen) = await _check(chromium, certificate, start_server)
    assert result == {"text": "dialect check", "protocol": "text"}
    assert dialect == "draft-07"
    assert (offered, chosen) == (["text", "json"], "text")
