"""Server and client processes for the lossy-path tests (run inside a namespace).

    python lossy_peer.py server --cert C --key K --port P
    python lossy_peer.py client --ca C --port P [--nft-ns NS] [--sizes 1048576,...]

The server answers, on each bidirectional stream: `UP` + data -> the data's sha-256
(hex); `DOWN <seed> <size>` -> that many seeded pseudo-random bytes; `COUNT` -> how many
distinct datagrams arrived. It prints `CLOSED <code> <clean>` for every session that ends.
The client moves every stream concurrently, checks every digest, sends datagrams one per
10 ms, reads the nftables drop counter around that phase, closes the session and prints
one JSON line of results. PWT_PEER_LOG=1 logs at DEBUG to stderr (shown when a test fails).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import random
import subprocess
import sys
import time
from typing import Any

from pywebtransport import (
    ClientConfig,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)


def seeded(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


async def serve(args: argparse.Namespace) -> None:
    async def handler(session: WebTransportSession) -> None:
        seen: set[bytes] = set()

        async def datagrams() -> None:
            async for datagram in session.incoming_datagrams():
                seen.add(datagram)

        async def one(stream: Any) -> None:
            data = await stream.read_all(max_size=64 * 1024 * 1024)
            if data.startswith(b"UP"):
                await stream.write(hashlib.sha256(data[2:]).hexdigest().encode(), end_stream=True)
            elif data.startswith(b"DOWN"):
                _, seed, size = data.split()
                await stream.write(seeded(int(seed), int(size)), end_stream=True)
            elif data == b"COUNT":
                await stream.write(str(len(seen)).encode(), end_stream=True)

        tasks = [asyncio.create_task(datagrams())]
        async for stream in session.incoming_bidirectional_streams():
            tasks.append(asyncio.create_task(one(stream)))
        info = await session.wait_closed()
        print(f"CLOSED {info.error_code} {info.clean}", flush=True)
        for task in tasks:
            task.cancel()

    config = ServerConfig(
        certfile=args.cert,
        keyfile=args.key,
        bind_host="127.0.0.1",
        bind_port=args.port,
        max_datagram_size=1350,
        congestion_control_algorithm=args.congestion_control,
    )
    async with WebTransportServer(config, handler=handler) as server:
        print("READY", flush=True)
        await server.serve_forever()


def dropped(ns: str | None) -> int:
    if ns is None:
        return 0
    out = subprocess.run(
        ["nft", "-j", "list", "counter", "inet", "pwtloss", "to_server"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for item in json.loads(out)["nftables"]:
        if "counter" in item:
            return int(item["counter"]["packets"])
    return 0


async def client(args: argparse.Namespace) -> None:
    config = ClientConfig(
        ca_certs=args.ca,
        connect_timeout=20.0,
        max_datagram_size=1350,
        congestion_control_algorithm=args.congestion_control,
    )
    sizes = [int(s) for s in args.sizes.split(",")]
    result: dict[str, Any] = {"ok": False}
    start = time.monotonic()
    async with WebTransportClient(config) as wt:
        session = await wt.connect(f"https://127.0.0.1:{args.port}/lossy")

        async def up(i: int, size: int) -> bool:
            data = seeded(1000 + i, size)
            stream = await session.create_bidirectional_stream()
            await stream.write(b"UP" + data, end_stream=True)
            return (await stream.read_all()).decode() == hashlib.sha256(data).hexdigest()

        async def down(i: int, size: int) -> bool:
            stream = await session.create_bidirectional_stream()
            await stream.write(f"DOWN {2000 + i} {size}".encode(), end_stream=True)
            got = await stream.read_all(max_size=64 * 1024 * 1024)
            return hashlib.sha256(got).digest() == hashlib.sha256(seeded(2000 + i, size)).digest()

        checks = await asyncio.gather(
            *(up(i, size) for i, size in enumerate(sizes)),
            *(down(i, size) for i, size in enumerate(sizes[: args.down])),
        )
        result["streams_ok"] = checks
        result["stream_seconds"] = round(time.monotonic() - start, 2)
        before = dropped(args.nft_ns)
        for i in range(args.datagrams):
            await session.send_datagram(f"dg-{i:05d}".encode() + b"." * 200)
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        lost_on_path = dropped(args.nft_ns) - before
        stream = await session.create_bidirectional_stream()
        await stream.write(b"COUNT", end_stream=True)
        received = int(await stream.read_all())
        result.update(
            datagrams_sent=args.datagrams,
            datagrams_received=received,
            packets_dropped_during_datagrams=lost_on_path,
        )
        await session.close()
        result["close"] = [session.close_info.error_code, session.close_info.clean]  # type: ignore[union-attr]
        result["ok"] = all(checks)
        result["seconds"] = round(time.monotonic() - start, 2)
    print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("server", "client"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--ca")
    parser.add_argument("--sizes", default="1048576,1572864,2097152")
    parser.add_argument("--down", type=int, default=1)
    parser.add_argument("--datagrams", type=int, default=200)
    parser.add_argument("--nft-ns", default=None)
    parser.add_argument("--congestion-control", default="cubic")
    args = parser.parse_args()
    if os.environ.get("PWT_PEER_LOG"):
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    asyncio.run(serve(args) if args.role == "server" else client(args))


if __name__ == "__main__":
    sys.exit(main())
