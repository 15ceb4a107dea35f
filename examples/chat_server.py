"""Chat rooms with `ServerApp.pattern_route("/chat/{room}")`.

Every message a client sends reaches every session of its room (the sender
included) the same way it came:

- a bidirectional or unidirectional stream → one new unidirectional stream
  per member carrying the message;
- a datagram → a datagram to each member (unreliable, may be dropped).

Run:
    python examples/chat_server.py --port 4433 [--cert cert.pem --key key.pem]

The page examples/browser/chat.html is a browser client for this server; the
printed sha256 is its `hash` query parameter.

Rooms live in this process: with `--workers` each worker would have its own rooms.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import ssl
import tempfile
from collections import defaultdict

from pywebtransport import (
    ServerConfig,
    WebTransportReceiveStream,
    WebTransportSession,
    WebTransportStream,
)
from pywebtransport.framework import ServerApp
from pywebtransport.shared.utils import generate_self_signed_cert

MAX_MESSAGE = 64 * 1024

app = ServerApp()
rooms: defaultdict[str, set[WebTransportSession]] = defaultdict(set)
logger = logging.getLogger("chat")


async def send_stream_message(member: WebTransportSession, message: bytes) -> None:
    """Deliver one message to one member on a new unidirectional stream."""
    try:
        stream = await member.create_unidirectional_stream()
        await stream.write(message, end_stream=True)
    except Exception as exc:  # a member leaving must not break the room
        logger.debug("delivery failed: %r", exc)


async def broadcast(room: str, message: bytes, *, datagram: bool = False) -> None:
    """Send a message to every session in a room."""
    members = [member for member in rooms[room] if member.is_ready]
    if datagram:
        for member in members:
            try:
                await member.send_datagram(message)
            except Exception as exc:
                logger.debug("datagram delivery failed: %r", exc)
        return
    await asyncio.gather(*(send_stream_message(member, message) for member in members))


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
    """Join `room` until the client leaves."""
    rooms[room].add(session)
    logger.info("%s joined %r (%d members)", session.remote_address, room, len(rooms[room]))
    datagrams = asyncio.create_task(relay_datagrams(session, room))
    try:
        await relay_streams(session, room)
    finally:
        datagrams.cancel()
        rooms[room].discard(session)
        if not rooms[room]:
            del rooms[room]


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
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    app.config = configure(args)
    print(f"serving https://{args.host}:{args.port}/chat/<room>", flush=True)
    app.run(args.host, args.port)


if __name__ == "__main__":
    main()
