"""Echo server built with `ServerApp`: bidirectional streams and datagrams come back.

Run:
    python examples/echo_server.py --port 4433 [--cert cert.pem --key key.pem]

Without --cert/--key a certificate for 127.0.0.1 and localhost is generated
into a temporary directory and its SHA-256 printed for browsers
(`serverCertificateHashes`). Connect to `https://127.0.0.1:4433/echo`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile

from pywebtransport import (
    ServerApp,
    ServerConfig,
    WebTransportSession,
    WebTransportStream,
    create_logging_middleware,
    generate_self_signed_cert,
)
from pywebtransport.shared.utils import format_address

app = ServerApp()
app.add_middleware(create_logging_middleware())


async def echo_stream(stream: WebTransportStream) -> None:
    """Write back everything read from a stream, then finish it."""
    async for chunk in stream:
        await stream.write(chunk)
    await stream.write(b"", end_stream=True)


async def echo_datagrams(session: WebTransportSession) -> None:
    """Send every received datagram back."""
    async for datagram in session.incoming_datagrams():
        await session.send_datagram(datagram)


@app.route("/echo")
async def echo(session: WebTransportSession) -> None:
    """Echo each bidirectional stream and each datagram until the client leaves."""
    datagrams = asyncio.create_task(echo_datagrams(session))
    streams: set[asyncio.Task[None]] = set()
    try:
        async for stream in session.incoming_bidirectional_streams():
            task = asyncio.create_task(echo_stream(stream))
            streams.add(task)
            task.add_done_callback(streams.discard)
    finally:
        datagrams.cancel()
        for task in streams:
            task.cancel()


def configure(args: argparse.Namespace) -> ServerConfig:
    """Build the server config, generating a certificate when none was given."""
    if args.cert and args.key:
        return ServerConfig(certfile=args.cert, keyfile=args.key)
    directory = tempfile.mkdtemp(prefix="pywebtransport-")
    info = generate_self_signed_cert("127.0.0.1", output_dir=directory)
    print(f"generated {info.certfile} (sha256 {info.fingerprint})", flush=True)
    return ServerConfig(certfile=info.certfile, keyfile=info.keyfile)


def main() -> None:
    """Parse the options and serve until Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4433)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    app.config = configure(args)
    print(f"serving https://{format_address(args.host, args.port)}/echo", flush=True)
    app.run(args.host, args.port)


if __name__ == "__main__":
    main()
