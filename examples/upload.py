"""File upload with progress and an integrity check (SHA-256).

Server:
    python examples/upload.py serve --port 4433 [--cert cert.pem --key key.pem]
Client:
    python examples/upload.py send FILE --url https://127.0.0.1:4433/upload --ca cert.pem
    python examples/upload.py send FILE --cert-hash <sha256 the server printed>

The client streams the file on one bidirectional stream, printing progress;
the server hashes while it reads and answers the hex SHA-256, which the
client compares with its own. Exit status 0 when they match.

The client verifies the server's certificate: against the system's CA store,
a CA file (`--ca`), or pinned SHA-256 digests (`--cert-hash`, what the
server prints for the certificate it generates). `--insecure` turns
verification off, for throwaway tests only.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import ssl
import sys
import tempfile
from typing import BinaryIO

from pywebtransport import (
    ClientConfig,
    ConfigurationError,
    ServerApp,
    ServerConfig,
    WebTransportClient,
    WebTransportError,
    WebTransportSession,
    generate_self_signed_cert,
)
from pywebtransport.shared.utils import format_address

CHUNK = 64 * 1024

app = ServerApp()


@app.route("/upload")
async def upload(session: WebTransportSession) -> None:
    """Receive uploads (one per bidirectional stream) and answer their SHA-256."""
    async for stream in session.incoming_bidirectional_streams():
        digest = hashlib.sha256()
        size = 0
        async for chunk in stream:
            digest.update(chunk)
            size += len(chunk)
        logging.info("received %d bytes, sha256 %s", size, digest.hexdigest())
        await stream.write(digest.hexdigest().encode(), end_stream=True)


def client_config(args: argparse.Namespace) -> ClientConfig:
    """Certificate verification as asked: CA file, pinned hashes, system store or none."""
    if args.insecure:
        return ClientConfig(verify_mode=ssl.CERT_NONE)  # accepts any certificate
    return ClientConfig(ca_certs=args.ca, server_certificate_hashes=args.cert_hash)


async def send(file: BinaryIO, total: int, url: str, config: ClientConfig) -> int:
    """Upload a file, print progress and verify the server's SHA-256."""
    digest = hashlib.sha256()
    async with WebTransportClient(config) as client:
        try:
            session = await client.connect(url)
        except WebTransportError as exc:
            print(f"error: cannot connect to {url}: {exc}", file=sys.stderr)
            return 1
        stream = await session.create_bidirectional_stream()
        sent = 0
        while chunk := await asyncio.to_thread(file.read, CHUNK):
            digest.update(chunk)
            await stream.write(chunk)
            sent += len(chunk)
            percent = 100 * sent // total if total else 100
            print(f"\rsent {sent}/{total} bytes ({percent}%)", end="", flush=True)
        await stream.write(b"", end_stream=True)
        print()
        answer = (await stream.read_all()).decode()
        await session.close()
    ok = answer == digest.hexdigest()
    print(f"server sha256 {answer}: {'OK' if ok else 'MISMATCH'}", flush=True)
    return 0 if ok else 1


def configure(args: argparse.Namespace) -> ServerConfig:
    """Build the server config, generating a certificate when none was given."""
    if args.cert and args.key:
        return ServerConfig(certfile=args.cert, keyfile=args.key)
    directory = tempfile.mkdtemp(prefix="pywebtransport-")
    info = generate_self_signed_cert("127.0.0.1", output_dir=directory)
    print(f"generated {info.certfile}; clients: --cert-hash {info.fingerprint}", flush=True)
    return ServerConfig(certfile=info.certfile, keyfile=info.keyfile)


def main() -> int:
    """Run the server or the client."""
    parser = argparse.ArgumentParser(description="WebTransport file upload")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the upload server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=4433)
    serve.add_argument("--cert")
    serve.add_argument("--key")
    client = commands.add_parser("send", help="upload a file")
    client.add_argument("file")
    client.add_argument("--url", default="https://127.0.0.1:4433/upload")
    client.add_argument("--ca", help="CA (or self-signed certificate) file to trust")
    client.add_argument(
        "--cert-hash",
        action="append",
        default=[],
        metavar="HEX",
        help="accept the certificate with this SHA-256 (repeatable)",
    )
    client.add_argument(
        "--insecure", action="store_true", help="do not verify the certificate (tests only)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    if args.command == "send":
        try:
            config = client_config(args)
        except ConfigurationError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        try:
            file = open(args.file, "rb")  # noqa: SIM115 (closed below)
        except OSError as exc:
            print(f"error: cannot read {args.file!r}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        with file:
            return asyncio.run(send(file, os.path.getsize(args.file), args.url, config))
    app.config = configure(args)
    print(f"serving https://{format_address(args.host, args.port)}/upload", flush=True)
    app.run(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
