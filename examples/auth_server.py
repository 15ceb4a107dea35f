"""Token-protected echo server: `Authorization: Bearer <token>` or `?token=<token>`.

Browsers cannot set headers on a WebTransport request, so they pass the
token in the URL: `new WebTransport("https://host:4433/secure?token=...")`.
Native clients may use the header. Missing or wrong token → 401. An origin
check refuses foreign web pages; native clients (no `Origin`) are let through.

Run:
    python examples/auth_server.py --port 4433 --token s3cret [--origin https://example.com]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile

from pywebtransport import (
    ServerApp,
    ServerConfig,
    WebTransportSession,
    create_cors_middleware,
    create_rate_limit_middleware,
    create_token_auth_middleware,
    generate_self_signed_cert,
)
from pywebtransport.shared.utils import format_address

app = ServerApp()


@app.route("/secure")
async def secure(session: WebTransportSession) -> None:
    """Greet on a unidirectional stream, then echo bidirectional streams."""
    greeting = await session.create_unidirectional_stream()
    await greeting.write(b"welcome", end_stream=True)
    async for stream in session.incoming_bidirectional_streams():
        await stream.write(await stream.read_all(), end_stream=True)


def configure(args: argparse.Namespace) -> ServerConfig:
    """Build the server config, generating a certificate when none was given."""
    if args.cert and args.key:
        return ServerConfig(certfile=args.cert, keyfile=args.key)
    directory = tempfile.mkdtemp(prefix="pywebtransport-")
    info = generate_self_signed_cert("127.0.0.1", output_dir=directory)
    print(f"generated {info.certfile} (sha256 {info.fingerprint})", flush=True)
    return ServerConfig(certfile=info.certfile, keyfile=info.keyfile)


def main() -> None:
    """Parse the options, install the middleware and serve until Ctrl-C."""
    parser = argparse.ArgumentParser(description="token-protected WebTransport echo")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4433)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument(
        "--token",
        action="append",
        help="accepted token (repeatable; default: $WT_TOKEN; one of them is required)",
    )
    parser.add_argument(
        "--origin", action="append", default=[], help="allowed browser origin (fnmatch pattern)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    tokens = args.token or ([os.environ["WT_TOKEN"]] if os.environ.get("WT_TOKEN") else [])
    if not tokens:
        # A default token would be a password everyone knows.
        parser.error("give the accepted token: --token TOKEN (repeatable) or WT_TOKEN=TOKEN")
    app.add_middleware(create_rate_limit_middleware(max_requests=30, window_seconds=60))
    app.add_middleware(create_cors_middleware(args.origin or ["*"], allow_missing_origin=True))
    app.add_middleware(create_token_auth_middleware(tokens))
    app.config = configure(args)
    print(f"serving https://{format_address(args.host, args.port)}/secure?token=...", flush=True)
    app.run(args.host, args.port)


if __name__ == "__main__":
    main()
