"""examples/cohost_starlette.py in headless Chromium: uvicorn (HTTPS) and WebTransport together.

uvicorn runs in-process on the test's event loop with the example's Starlette app,
whose lifespan starts the WebTransport `ServerApp` on the same port number over UDP.
Chromium loads the page over HTTPS from uvicorn (its self-signed certificate is
allowed by SPKI pin for this browser instance only), the page opens
`new WebTransport` to the same host and port, a `POST /publish` from Python reaches
it through `app.groups`, and stopping uvicorn stops both servers gracefully.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.util
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pywebtransport import ErrorCodes
from pywebtransport.shared.utils import CertificateInfo

from .harness import ChromiumBrowser, PageServer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cohost_starlette.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cohost_starlette", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def spki_sha256(certfile: str) -> str:
    """Base64 SHA-256 of the certificate's public key, for --ignore-certificate-errors-spki-list."""
    with open(certfile, "rb") as pem:
        cert = x509.load_pem_x509_certificate(pem.read())
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def port_is_free(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as probe:
        if kind == socket.SOCK_STREAM:
            # Ignores TIME_WAIT leftovers of closed connections; a live listener still fails.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def started(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.02)
    if task.done():
        task.result()  # startup failed: show why
    assert server.started, "uvicorn did not start"


@pytest.mark.timeout(90)
async def test_page_from_uvicorn_receives_a_rest_publish_over_webtransport(
    launch_chromium: Callable[..., ChromiumBrowser],
    page_server: PageServer,
    certificate: CertificateInfo,
) -> None:
    chromium = launch_chromium(
        [f"--ignore-certificate-errors-spki-list={spki_sha256(certificate.certfile)}"]
    )
    example = load_example()
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", 0))
    port = tcp.getsockname()[1]
    web = example.create_app(certificate.certfile, certificate.keyfile, host="127.0.0.1", port=port)
    server = uvicorn.Server(
        uvicorn.Config(
            web,
            ssl_certfile=certificate.certfile,
            ssl_keyfile=certificate.keyfile,
            lifespan="on",
            log_level="warning",
        )
    )
    serving = asyncio.create_task(server.serve(sockets=[tcp]))
    page: Any = None
    try:
        await started(server, serving)
        assert web.state.webtransport.local_address == ("127.0.0.1", port)  # UDP, same number

        base = f"https://127.0.0.1:{port}"
        page = await page_server.acall(chromium.open_page(f"{base}/"), 40)
        await page_server.acall(
            page.wait_for_function("window.feed.ready || window.feed.error", timeout=20_000), 30
        )
        assert await page_server.acall(page.evaluate("window.feed"), 10) == {
            "ready": True,
            "messages": [],
            "closed": None,
            "error": None,
        }
        assert await page_server.acall(page.evaluate("location.protocol"), 10) == "https:"

        tls = ssl.create_default_context(cafile=certificate.certfile)
        async with httpx.AsyncClient(verify=tls, timeout=10) as http:
            response = await http.post(f"{base}/publish", content=b"hello from REST")
        assert response.status_code == 200
        assert response.json() == {"published": 15, "listeners": 1}
        await page_server.acall(
            page.wait_for_function("window.feed.messages.length > 0", timeout=20_000), 30
        )
        assert await page_server.acall(page.evaluate("window.feed.messages"), 10) == [
            "hello from REST"
        ]

        # Graceful shutdown of both: uvicorn's exit runs the lifespan shutdown,
        # which closes the WebTransport sessions with the going-away code.
        server.should_exit = True
        await asyncio.wait_for(serving, 30)
        await page_server.acall(page.wait_for_function("window.feed.closed", timeout=20_000), 30)
        closed = await page_server.acall(page.evaluate("window.feed.closed"), 10)
        assert closed == {
            "closeCode": ErrorCodes.APP_SERVICE_UNAVAILABLE,
            "reason": "server shutting down",
        }
        assert port_is_free(port, socket.SOCK_DGRAM)
        assert port_is_free(port, socket.SOCK_STREAM)
    finally:
        if page is not None:
            await page_server.acall(page.context.close(), 20)
        if not serving.done():
            server.should_exit = True
            await asyncio.wait_for(serving, 30)
        tcp.close()
