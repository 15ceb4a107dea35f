"""Echo server for browsers: WebTransport on UDP, plus an HTTP page that connects to it.

Usage::

    python examples/echo_browser_server.py [--port 4433] [--http-port 8000]

then open http://127.0.0.1:8000/ in Chromium or Firefox and press the button.
The certificate is generated at start (ECDSA P-256, valid 10 days) and its
SHA-256 hash is written into the page for `serverCertificateHashes`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import threading
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pywebtransport import (
    ServerConfig,
    WebTransportServer,
    WebTransportSession,
    generate_self_signed_cert,
    init_tracing,
)

PAGE = Path(__file__).with_name("browser") / "index.html"


async def echo(session: WebTransportSession) -> None:
    """Echo every bidirectional stream and datagram of a session."""

    async def streams() -> None:
        async for stream in session.incoming_bidirectional_streams():
            await stream.write(await stream.read_all(), end_stream=True)

    async def datagrams() -> None:
        async for datagram in session.incoming_datagrams():
            await session.send_datagram(datagram)

    tasks = [asyncio.create_task(streams()), asyncio.create_task(datagrams())]
    await session.wait_closed()
    for task in tasks:
        task.cancel()


class _PageHandler(BaseHTTPRequestHandler):
    def __init__(self, page: bytes, *args: object, **kwargs: object) -> None:
        self._page = page
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(self._page)


async def main() -> None:
    """Run the WebTransport server and the page server until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4433, help="WebTransport UDP port")
    parser.add_argument("--http-port", type=int, default=8000, help="HTTP port of the page")
    args = parser.parse_args()
    init_tracing("INFO")
    directory = tempfile.mkdtemp(prefix="pwt-browser-")
    cert = generate_self_signed_cert("127.0.0.1", output_dir=directory)
    config = ServerConfig(
        certfile=cert.certfile, keyfile=cert.keyfile, bind_host="127.0.0.1", bind_port=args.port
    )
    async with WebTransportServer(config, handler=echo) as server:
        assert server.local_address is not None
        url = f"https://127.0.0.1:{server.local_address[1]}/echo"
        settings = json.dumps({"url": url, "hash": list(cert.sha256)})
        page = PAGE.read_text().replace("/*CONFIG*/ null", settings).encode()
        httpd = ThreadingHTTPServer(("127.0.0.1", args.http_port), partial(_PageHandler, page))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        print(f"WebTransport: {url}")
        print(f"certificate sha-256: {cert.fingerprint}")
        print(f"open http://127.0.0.1:{httpd.server_address[1]}/ in Chromium or Firefox")
        try:
            await server.serve_forever()
        finally:
            httpd.shutdown()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
