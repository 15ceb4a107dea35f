"""Self-tests of the browser harness (no pywebtransport server needed).

The echo server at the bottom is a throwaway raw-aioquic WebTransport server whose only
purpose is to prove that the harness can drive a real WebTransport session in each
browser; it is not the library's server.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import pytest
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer, serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import HeadersReceived, WebTransportStreamDataReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated, QuicEvent

from .harness import (
    Browser,
    ChromiumBrowser,
    FirefoxBrowser,
    TestCertificate,
    generate_test_certificate,
    run_scenario,
    run_scenario_sync,
)


@pytest.fixture(scope="module")
def harness_cert(tmp_path_factory: pytest.TempPathFactory) -> TestCertificate:
    """A browser-acceptable self-signed certificate for 127.0.0.1."""
    return generate_test_certificate(tmp_path_factory.mktemp("harness-cert"))


@pytest.fixture
def closed_udp_port() -> Iterator[int]:
    """A UDP port on 127.0.0.1 nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    yield port


async def test_webtransport_exists(browser: Browser, harness_cert: TestCertificate) -> None:
    result = await run_scenario(
        browser,
        "return {type: typeof WebTransport, secure: isSecureContext, params: ctx.params};",
        url="https://127.0.0.1:1/unused",
        cert_hash=harness_cert.sha256,
        params={"x": [1, "two"]},
        timeout=30,
    )
    assert result == {"type": "function", "secure": True, "params": {"x": [1, "two"]}}


async def test_hash_reaches_page(browser: Browser, harness_cert: TestCertificate) -> None:
    result = await run_scenario(
        browser,
        "return Array.from(ctx.hash, (b) => b.toString(16).padStart(2, '0')).join('');",
        url="https://127.0.0.1:1/unused",
        cert_hash=harness_cert.sha256,
    )
    assert result == harness_cert.sha256.hex()


async def test_error_is_reported(browser: Browser, harness_cert: TestCertificate) -> None:
    with pytest.raises(AssertionError) as info:
        await run_scenario(
            browser,
            "console.log('before', {a: 1}); throw new TypeError('boom ' + ctx.params.n);",
            url="https://127.0.0.1:1/unused",
            cert_hash=harness_cert.sha256,
            params={"n": 7},
        )
    message = str(info.value)
    assert "TypeError: boom 7" in message
    assert 'log: before {"a":1}' in message


async def test_syntax_error_is_reported(browser: Browser, harness_cert: TestCertificate) -> None:
    with pytest.raises(AssertionError, match="SyntaxError"):
        await run_scenario(
            browser, "return {;", url="https://127.0.0.1:1/x", cert_hash=harness_cert.sha256
        )


async def test_timeout_is_reported(browser: Browser, harness_cert: TestCertificate) -> None:
    with pytest.raises(AssertionError, match="timed out after 3") as info:
        await run_scenario(
            browser,
            "console.log('waiting forever'); await new Promise(() => {});",
            url="https://127.0.0.1:1/x",
            cert_hash=harness_cert.sha256,
            timeout=3,
        )
    assert "waiting forever" in str(info.value)


async def test_unreachable_server_rejects_ready(
    browser: Browser, harness_cert: TestCertificate, closed_udp_port: int
) -> None:
    body = """
        const wt = new WebTransport(ctx.url, {
            serverCertificateHashes: [{algorithm: "sha-256", value: ctx.hash}],
        });
        wt.closed.catch(() => {});
        try {
            await wt.ready;
        } catch (e) {
            return {rejected: true, error: String(e)};
        }
        return {rejected: false};
    """
    if isinstance(browser, FirefoxBrowser):
        # Firefox gives up on an unanswered QUIC handshake only after its idle timeout
        # (30 s by default, measured); shorten it for this test.
        browser = browser.with_prefs({"network.http.http3.idle_timeout": 5})
    result = await run_scenario(
        browser,
        body,
        url=f"https://127.0.0.1:{closed_udp_port}/x",
        cert_hash=harness_cert.sha256,
        timeout=25,
    )
    assert result["rejected"] is True, result


# --------------------------------------------------------------------------- echo server


class _EchoProtocol(QuicConnectionProtocol):
    """Throwaway WebTransport (draft-02) server: accepts any CONNECT, echoes bidi streams."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._h3: H3Connection | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated):
            self._h3 = H3Connection(self._quic, enable_webtransport=True)
        if self._h3 is None:
            return
        for h3_event in self._h3.handle_event(event):
            if isinstance(h3_event, HeadersReceived):
                headers = dict(h3_event.headers)
                if headers.get(b":method") == b"CONNECT":
                    self._h3.send_headers(h3_event.stream_id, [(b":status", b"200")])
                else:
                    self._h3.send_headers(h3_event.stream_id, [(b":status", b"404")], True)
            elif isinstance(h3_event, WebTransportStreamDataReceived):
                self._quic.send_stream_data(
                    h3_event.stream_id, h3_event.data, h3_event.stream_ended
                )
        self.transmit()


@pytest.fixture
async def echo_server(harness_cert: TestCertificate) -> AsyncIterator[str]:
    """Start the throwaway echo server in the test's loop; yield its URL."""
    config = QuicConfiguration(
        alpn_protocols=H3_ALPN, is_client=False, max_datagram_frame_size=65536
    )
    config.load_cert_chain(Path(harness_cert.cert_path), Path(harness_cert.key_path))
    server: QuicServer = await serve(
        "127.0.0.1", 0, configuration=config, create_protocol=_EchoProtocol
    )
    port = _server_port(server)
    try:
        yield f"https://127.0.0.1:{port}/echo"
    finally:
        server.close()


def _server_port(server: QuicServer) -> int:
    transport = server._transport
    assert transport is not None
    port: int = transport.get_extra_info("sockname")[1]
    return port


async def test_echo_bidi_stream(
    browser: Browser, harness_cert: TestCertificate, echo_server: str
) -> None:
    body = """
        const wt = new WebTransport(ctx.url, {
            serverCertificateHashes: [{algorithm: "sha-256", value: ctx.hash}],
        });
        await wt.ready;
        const stream = await wt.createBidirectionalStream();
        const writer = stream.writable.getWriter();
        await writer.write(new TextEncoder().encode(ctx.params.text));
        await writer.close();
        const text = await new Response(stream.readable).text();
        wt.close({closeCode: 0, reason: "done"});
        return text;
    """
    result = await run_scenario(
        browser,
        body,
        url=echo_server,
        cert_hash=harness_cert.sha256,
        params={"text": "hello"},
        timeout=30,
    )
    assert result == "hello"


async def test_concurrent_scenarios(browser: Browser, harness_cert: TestCertificate) -> None:
    body = "await new Promise((r) => setTimeout(r, 300)); return ctx.params.n * 2;"
    results = await asyncio.gather(
        *(
            run_scenario(
                browser,
                body,
                url="https://127.0.0.1:1/x",
                cert_hash=harness_cert.sha256,
                params={"n": n},
            )
            for n in range(3)
        )
    )
    assert results == [0, 2, 4]


def test_sync_api(browser: Browser, harness_cert: TestCertificate) -> None:
    result = run_scenario_sync(
        browser, "return 6 * 7;", url="https://127.0.0.1:1/x", cert_hash=harness_cert.sha256
    )
    assert result == 42


async def test_chromium_with_extra_flags(
    launch_chromium: Callable[[Sequence[str]], ChromiumBrowser], harness_cert: TestCertificate
) -> None:
    draft07 = launch_chromium(["--enable-features=EnableWebTransportDraft07"])
    assert draft07.launch_time is not None
    result = await run_scenario(
        draft07, "return typeof WebTransport;", url="https://x/", cert_hash=harness_cert.sha256
    )
    assert result == "function"
