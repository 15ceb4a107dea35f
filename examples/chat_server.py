"""Chat rooms with `ServerApp.pattern_route("/chat/{room}")`.

Every message a client sends reaches every session of its room (the sender
included) the same way it came:

- a bidirectional or unidirectional stream → one new unidirectional stream
  per member carrying the message;
- a datagram → a datagram to each member (unreliable, may be dropped).

Rooms are `app.groups` groups. By default they live in this process; with
`--redis URL` they are shared through Redis by every worker (`--workers N`)
and every server process (on this host or others) using the same Redis.

Run:
    python examples/chat_server.py --port 4433 [--cert cert.pem --key key.pem]
        [--workers 2] [--redis redis://127.0.0.1:6379/0]

The page examples/browser/chat.html is a browser client for this server; the
printed sha256 is its `hash` query parameter. With several processes give all
of them the same `--cert`/`--key` so the hash is the same everywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import ssl
import tempfile

from pywebtransport import (
    GroupError,
    GroupManager,
    RedisBackend,
    ServerApp,
    ServerConfig,
    WebTransportReceiveStream,
    WebTransportSession,
    WebTransportStream,
    generate_self_signed_cert,
)
from pywebtransport.shared.utils import format_address

MAX_MESSAGE = 64 * 1024

app = ServerApp()
logger = logging.getLogger("chat")


async def broadcast(room: str, message: bytes, *, datagram: bool = False) -> None:
    """Send a message to every session in a room, in every process."""
    try:
        await app.groups.publish(room, message, datagram=datagram)
    except GroupError as exc:  # e.g. Redis is down: this message is lost, say so
        logger.warning("message to %r not delivered: %s", room, exc)


async def read_message(stream: WebTransportStream | WebTransportReceiveStream) -> bytes:
    """Read a whole message (up to MAX_MESSAGE bytes) from a stream."""
    data = bytearray()
    async for chunk in stream:
        data += chunk
        if len(data) > MAX_MESSAGE:
            raise ValueError("message too large")
    return bytes(data)


async def relay_streams(session: WebTransportSession, room: str) -> None:
    """Broadcast every message that arrives on a stream."""
    async for stream in session.incoming_streams():
        message = await read_message(stream)
        if isinstance(stream, WebTransportStream):
            await stream.write(b"", end_stream=True)
        await broadcast(room, message)


async def relay_datagrams(session: WebTransportSession, room: str) -> None:
    """Broadcast every datagram."""
    async for datagram in session.incoming_datagrams():
        await broadcast(room, datagram, datagram=True)


@app.pattern_route("/chat/{room}")
async def chat(session: WebTransportSession, room: str) -> None:
    """Join `room` until the client leaves (the session leaves it when it closes)."""
    await app.groups.join(room, session)
    members = len(app.groups.members(room))
    logger.info("%s joined %r (%d members here)", session.remote_address, room, members)
    datagrams = asyncio.create_task(relay_datagrams(session, room))
    try:
        await relay_streams(session, room)
    finally:
        datagrams.cancel()


def configure(args: argparse.Namespace) -> ServerConfig:
    """Build the server config, generating a certificate when none was given."""
    if args.cert and args.key:
        with open(args.cert) as pem:
            der = ssl.PEM_cert_to_DER_cert(pem.read())
        print(f"using {args.cert} (sha256 {hashlib.sha256(der).hexdigest()})", flush=True)
        return ServerConfig(certfile=args.cert, keyfile=args.key)
    directory = tempfile.mkdtemp(prefix="pywebtransport-")
    info = generate_self_signed_cert("127.0.0.1", output_dir=directory)
    print(f"generated {info.certfile} (sha256 {info.fingerprint})", flush=True)
    return ServerConfig(certfile=info.certfile, keyfile=info.keyfile)


def main() -> None:
    """Parse the options and serve until Ctrl-C."""
    parser = argparse.ArgumentParser(description="WebTransport chat rooms")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4433)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    parser.add_argument("--redis", metavar="URL", help="share rooms through this Redis")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    app.config = configure(args)
    if args.redis:
        app.groups = GroupManager(backend=RedisBackend(args.redis))
    print(f"serving https://{format_address(args.host, args.port)}/chat/<room>", flush=True)
    app.run(args.host, args.port, workers=args.workers)


if __name__ == "__main__":
    main()
