"""Group fan-out: messages per second delivered to N sessions across W workers on Redis.

Standalone, and the runner's `fanout` scenario (`make bench` records its result):

    python benchmarks/fanout.py [--sessions 500] [--workers 2] [--messages 100]
        [--size 64] [--redis redis://127.0.0.1:6379/0]

Starts `redis-server` on a free port unless `--redis` is given, then a chat
server like `examples/chat_server.py` (this script with `--serve`, limits
raised for many sessions) with `--workers W` on Redis, connects `--sessions`
sessions to one room (from `--clients` client sockets, so the kernel spreads
them over the workers), lets one session send `--messages` messages and times
until every session has received every message. Prints one JSON line:
messages/s (published) and deliveries/s (messages x sessions).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pywebtransport import (  # noqa: E402
    ClientConfig,
    GroupManager,
    RedisBackend,
    ServerApp,
    ServerConfig,
    WebTransportClient,
    WebTransportSession,
    generate_self_signed_cert,
)


def free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_redis() -> tuple[asyncio.subprocess.Process, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed; pass --redis URL")
    port = free_port(socket.SOCK_STREAM)
    process = await asyncio.create_subprocess_exec(
        binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            await asyncio.sleep(0.05)
    raise SystemExit("redis-server did not start")


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


async def connect(client: WebTransportClient, url: str) -> WebTransportSession:
    deadline = time.monotonic() + 20
    while True:
        try:
            return await client.connect(url, timeout=2.0)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def receive(session: WebTransportSession, count: int) -> None:
    for _ in range(count):
        stream = await session.accept_unidirectional_stream()
        await stream.read_all()


def serve(args: argparse.Namespace) -> None:
    """The server child: the chat relay on `app.groups` over Redis, with W workers."""
    config = ServerConfig(
        certfile=args.cert,
        keyfile=args.key,
        max_connections=4 * args.sessions,
        max_sessions=4 * args.sessions,
        max_sessions_per_connection=args.sessions,
    )
    app = ServerApp(config, groups=GroupManager(backend=RedisBackend(args.redis)))

    @app.pattern_route("/chat/{room}")
    async def chat(session: WebTransportSession, room: str) -> None:
        await app.groups.join(room, session)
        async for stream in session.incoming_unidirectional_streams():
            await app.groups.publish(room, await stream.read_all())

    app.run("127.0.0.1", args.port, workers=args.workers)


async def main(args: argparse.Namespace) -> dict[str, object]:
    redis_process = None
    redis_url = args.redis
    if redis_url is None:
        redis_process, redis_url = await start_redis()
    cert = generate_self_signed_cert("127.0.0.1", output_dir=tempfile.mkdtemp())
    port = free_port(socket.SOCK_DGRAM)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    server = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", "--port", str(port), "--sessions", str(args.sessions),
        "--cert", cert.certfile, "--key", cert.keyfile, "--workers", str(args.workers),
        "--redis", redis_url, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    config = ClientConfig(
        ca_certs=cert.certfile,
        verify_mode=ssl.CERT_REQUIRED,
        connect_timeout=10.0,
        # Credit for every message up front: the benchmark measures fan-out, not credit.
        initial_max_streams_uni=args.messages + 10,
        quic_max_concurrent_uni_streams=args.messages + 10,
    )
    clients = [WebTransportClient(config) for _ in range(args.clients)]
    url = f"https://127.0.0.1:{port}/chat/bench"
    try:
        sessions = []
        for index in range(args.sessions):
            sessions.append(await connect(clients[index % len(clients)], url))
        await asyncio.sleep(1.0)  # every handler has joined
        payload = b"x" * args.size
        receivers = [asyncio.create_task(receive(s, args.messages)) for s in sessions]
        started = time.perf_counter()
        sender = sessions[0]
        for _ in range(args.messages):
            stream = await sender.create_unidirectional_stream()
            await stream.write(payload, end_stream=True)
        await asyncio.wait_for(asyncio.gather(*receivers), args.timeout)
        elapsed = time.perf_counter() - started
    finally:
        # Concurrently: each close may wait out its connections' closing period.
        await asyncio.gather(*(client.close() for client in clients))
        await stop(server)
        if redis_process is not None:
            await stop(redis_process)
    return {
        "scenario": "group_fanout_redis",
        "sessions": args.sessions,
        "workers": args.workers,
        "messages": args.messages,
        "size": args.size,
        "seconds": round(elapsed, 3),
        "messages_per_s": round(args.messages / elapsed, 1),
        "deliveries_per_s": round(args.messages * args.sessions / elapsed, 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--clients", type=int, default=50, help="client sockets")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--redis", metavar="URL")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.serve:
        serve(arguments)
    else:
        print(json.dumps(asyncio.run(main(arguments))), flush=True)
