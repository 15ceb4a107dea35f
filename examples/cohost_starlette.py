"""A Starlette web app and WebTransport in one process, one event loop, one port number.

uvicorn serves the Starlette app over HTTPS (TCP); a pywebtransport `ServerApp`
serves WebTransport (UDP) on the same host and port number with the same
certificate. The `ServerApp` starts and stops inside Starlette's lifespan, so
both shut down together, and the two share application state: `POST /publish`
(a REST endpoint) publishes its body to the `feed` group (`app.groups`) that
every open page receives over WebTransport.

Run (from a clone of the repository)::

    pip install -e '.[examples]'      # or: pip install pywebtransport uvicorn starlette
    python examples/cohost_starlette.py --port 8443

then open https://127.0.0.1:8443/ in Chromium or Firefox (the certificate is
self-signed: accept the warning, or pass --cert/--key of one the browser trusts),
and publish from anywhere::

    curl -k --data 'hello from REST' https://127.0.0.1:8443/publish

The generated certificate is ECDSA P-256 and valid 10 days, so the page can
also hand its SHA-256 to `serverCertificateHashes` for the WebTransport side.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from pywebtransport import ServerConfig, WebTransportSession
from pywebtransport.framework import ServerApp
from pywebtransport.shared.utils import certificate_sha256, generate_self_signed_cert

PAGE = Path(__file__).with_name("browser") / "feed.html"
FEED = "feed"
MAX_MESSAGE = 64 * 1024


def create_app(certfile: str, keyfile: str, *, host: str, port: int) -> Starlette:
    """Build the web app; its lifespan runs the WebTransport server on UDP `host:port`.

    Args:
        certfile: PEM certificate, used for both HTTPS (uvicorn) and QUIC.
        keyfile: Its private key.
        host: The address uvicorn listens on (TCP); WebTransport binds it on UDP.
        port: uvicorn's TCP port; WebTransport uses the same number on UDP.
    """
    wt = ServerApp(ServerConfig(certfile=certfile, keyfile=keyfile, bind_host=host, bind_port=port))
    cert_hash = list(certificate_sha256(certfile))

    @wt.route("/feed")
    async def feed(session: WebTransportSession) -> None:
        await wt.groups.join(FEED, session)  # left automatically when the session closes
        hello = await session.create_unidirectional_stream()
        await hello.write(b"joined", end_stream=True)  # the page knows it will get messages
        await session.wait_closed()

    async def index(request: Request) -> HTMLResponse:
        config = json.dumps({"hash": cert_hash})
        return HTMLResponse(PAGE.read_text().replace("/*CONFIG*/ null", config))

    async def publish(request: Request) -> Response:
        body = await request.body()
        if not body or len(body) > MAX_MESSAGE:
            return JSONResponse({"error": f"send 1..{MAX_MESSAGE} bytes"}, status_code=400)
        await wt.groups.publish(FEED, body)
        return JSONResponse({"published": len(body), "listeners": len(wt.groups.members(FEED))})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await wt.listen()  # startup hooks, then bind UDP host:port
        try:
            yield
        finally:
            await wt.shutdown()  # sessions get DRAIN, then are closed; groups stop

    web = Starlette(
        routes=[Route("/", index), Route("/publish", publish, methods=["POST"])],
        lifespan=lifespan,
    )
    web.state.webtransport = wt
    return web


def main() -> None:
    """Parse the command line and serve until Ctrl-C."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443, help="TCP (HTTPS) and UDP (QUIC)")
    parser.add_argument("--cert", help="PEM certificate (default: generate one)")
    parser.add_argument("--key", help="PEM private key")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        if args.cert is None:
            info = generate_self_signed_cert(args.host, output_dir=directory)
            args.cert, args.key = info.certfile, info.keyfile
        app = create_app(args.cert, args.key, host=args.host, port=args.port)
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            ssl_certfile=args.cert,
            ssl_keyfile=args.key,
            lifespan="on",
        )


if __name__ == "__main__":
    main()
