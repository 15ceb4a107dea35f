"""examples/asgi_echo.py (a plain ASGI app) behind ServerApp.mount_asgi, in Chromium and Firefox."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest

from pywebtransport import ServerConfig
from pywebtransport.framework import ServerApp
from pywebtransport.shared.utils import CertificateInfo, certificate_sha256

from .harness import Browser, run_scenario

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "asgi_echo.py"

Message = MutableMapping[str, Any]

SCENARIO = """
    const enc = (text) => new TextEncoder().encode(text);
    const hex = async (bytes) => Array.from(
        new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)),
        (b) => b.toString(16).padStart(2, "0")).join("");
    const options = {serverCertificateHashes: [{algorithm: "sha-256", value: ctx.hash}]};

    let refused;
    try {
        const other = new WebTransport(ctx.url.replace("/echo", "/elsewhere"), options);
        other.closed.catch(() => {});
        await other.ready;
        refused = "accepted";
    } catch (e) {
        refused = "refused";
    }

    const wt = new WebTransport(ctx.url, options);
    await wt.ready;

    // Datagrams are unreliable: send until the echo comes back.
    const reader = wt.datagrams.readable.getReader();
    const writer = wt.datagrams.writable.getWriter();
    const echoed = reader.read();
    let datagram = null;
    echoed.then((r) => { datagram = new TextDecoder().decode(r.value); });
    for (let i = 0; i < 50 && datagram === null; i++) {
        await writer.write(enc("dgram"));
        await Promise.race([echoed, new Promise((r) => setTimeout(r, 100))]);
    }

    // 1 MiB through a bidirectional stream and back (flow control across the adapter).
    const big = new Uint8Array(1 << 20);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7 + (i >> 10)) & 0xff;
    const bidi = await wt.createBidirectionalStream();
    const sending = (async () => {
        const w = bidi.writable.getWriter();
        await w.write(big);
        await w.close();
    })();
    const back = new Uint8Array(await new Response(bidi.readable).arrayBuffer());
    await sending;

    // A unidirectional stream comes back on a stream the app opens.
    const incoming = wt.incomingUnidirectionalStreams.getReader();
    const uni = await wt.createUnidirectionalStream();
    const uw = uni.getWriter();
    await uw.write(enc("one way"));
    await uw.close();
    const { value: answer } = await incoming.read();
    const uniText = await new Response(answer).text();

    wt.close({closeCode: 42, reason: "bye"});
    await wt.closed;
    return {
        refused, datagram, uni: uniText, size: back.length,
        same: (await hex(back)) === (await hex(big)),
    };
"""


def load_example_app() -> Any:
    spec = importlib.util.spec_from_file_location("asgi_echo", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


def recording(app: Any, seen: list[Message], done: asyncio.Event) -> Callable[..., Awaitable[None]]:
    """ASGI middleware keeping every message the app receives."""

    async def wrapped(scope: Message, receive: Any, send: Any) -> None:
        async def receive_and_record() -> Message:
            message: Message = await receive()
            seen.append(message)
            return message

        try:
            await app(scope, receive_and_record, send)
        finally:
            if scope["path"] == "/echo":
                done.set()

    return wrapped


@pytest.fixture
async def asgi_app_server(
    certificate: CertificateInfo,
) -> AsyncIterator[tuple[ServerApp, list[Message], asyncio.Event]]:
    seen: list[Message] = []
    done = asyncio.Event()
    app = ServerApp(
        ServerConfig(
            certfile=certificate.certfile,
            keyfile=certificate.keyfile,
            bind_host="127.0.0.1",
            bind_port=0,
            close_timeout=2.0,
        )
    )
    app.mount_asgi("/", recording(load_example_app(), seen, done))
    await app.listen()
    try:
        yield app, seen, done
    finally:
        await app.shutdown()


@pytest.mark.timeout(90)
async def test_asgi_echo_app_in_browser(
    browser: Browser,
    certificate: CertificateInfo,
    asgi_app_server: tuple[ServerApp, list[Message], asyncio.Event],
) -> None:
    app, seen, done = asgi_app_server
    address = app.local_address
    assert address is not None
    result = await run_scenario(
        browser,
        SCENARIO,
        url=f"https://127.0.0.1:{address[1]}/echo",
        cert_hash=certificate_sha256(certificate.certfile),
        timeout=45,
    )
    assert result == {
        "refused": "refused",
        "datagram": "dgram",
        "uni": "one way",
        "size": 1 << 20,
        "same": True,
    }
    async with asyncio.timeout(10):
        await done.wait()
    assert seen[-1] == {"type": "webtransport.disconnect", "code": 42, "reason": "bye"}
    kinds = {m["type"] for m in seen}
    assert {"webtransport.datagram.receive", "webtransport.stream.receive"} <= kinds
