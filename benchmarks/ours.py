"""Our library (pywebtransport, public API only): the benchmark server and client scenarios.

Server routes (session path): ``/echo`` every bidi stream echoes each chunk, FIN after the
peer's FIN; ``/sink`` counts until FIN and replies the count; ``/source`` reads a decimal size
until FIN and sends that many bytes + FIN; ``/dg`` echoes datagrams starting with ``E``, counts
all others, and answers each bidi stream with the count as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import struct
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

from .common import OURS_EXTRA, OURS_SERVER_EXTRA, CpuMeter, MiB, RssMeter, lat_summary, med

perf = time.perf_counter
_tasks: set[asyncio.Task[Any]] = set()


def spawn(coro: Any) -> None:
    t = asyncio.ensure_future(coro)
    _tasks.add(t)
    t.add_done_callback(_tasks.discard)


def _fields(settings: dict[str, Any]) -> dict[str, Any]:
    return {**OURS_EXTRA, **settings, "connection_idle_timeout": 60.0, "log_level": "WARNING"}


def client_config(settings: dict[str, Any]) -> ClientConfig:
    return ClientConfig(verify_mode=ssl.CERT_NONE, **_fields(settings))


def server_config(cert: str, key: str, port: int, settings: dict[str, Any]) -> ServerConfig:
    return ServerConfig(
        certfile=cert,
        keyfile=key,
        bind_host="127.0.0.1",
        bind_port=port,
        **{**OURS_SERVER_EXTRA, **_fields(settings)},
    )


# --------------------------------------------------------------------------- server


async def _echo(stream: Any) -> None:
    while data := await stream.read():
        await stream.write(data)
    await stream.write(b"", end_stream=True)


async def _sink(stream: Any) -> None:
    total = 0
    while data := await stream.read():
        total += len(data)
    await stream.write(str(total).encode(), end_stream=True)


_payloads: dict[int, bytes] = {}


async def _source(stream: Any) -> None:
    n = int(await stream.read_all())
    payload = _payloads.get(n) or _payloads.setdefault(n, bytes(n))
    await stream.write_all(payload, end_stream=True)


async def _guard(coro: Any) -> None:
    with contextlib.suppress(Exception):  # the peer went away; nothing to measure
        await coro


async def handler(session: WebTransportSession) -> None:
    path = session.path
    if path == "/dg":
        stats = {"count": 0, "first": 0.0, "last": 0.0}

        async def datagrams() -> None:
            async for d in session.incoming_datagrams():
                if d[:1] == b"E":
                    await session.send_datagram(d)
                    continue
                now = perf()
                if not stats["count"]:
                    stats["first"] = now
                stats["last"] = now
                stats["count"] += 1

        async def report(stream: Any) -> None:
            await stream.read_all()
            await stream.write(json.dumps(stats).encode(), end_stream=True)

        spawn(_guard(datagrams()))
        per_stream: Any = report
    else:
        per_stream = {"/echo": _echo, "/sink": _sink, "/source": _source}[path]
    async for stream in session.incoming_bidirectional_streams():
        spawn(_guard(per_stream(stream)))


async def serve_main(port: int, cert: str, key: str, settings: dict[str, Any]) -> None:
    server = WebTransportServer(server_config(cert, key, port, settings), handler=handler)
    await server.listen()
    sys.stdout.write(f"READY {port}\n")
    sys.stdout.flush()
    await server.serve_forever()


# --------------------------------------------------------------------------- client


class Ctx:
    def __init__(
        self, port: int, server_pid: int | None, params: dict[str, Any], settings: dict[str, Any]
    ) -> None:
        self.port, self.server_pid, self.params = port, server_pid, params
        self.config = client_config(settings)

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def client(self) -> WebTransportClient:
        return WebTransportClient(self.config)


async def _close(session: WebTransportSession) -> None:
    """Close a session and wait until its QUIC connection is gone (untimed part of a close)."""
    await session.close()
    await session.connection.close()


async def sc_handshake(ctx: Ctx) -> dict[str, Any]:
    n, warm = ctx.params["n_handshake"], 3
    conn_s: list[float] = []
    close_s: list[float] = []
    async with ctx.client() as client:
        for i in range(warm + n):
            t0 = perf()
            session = await client.connect(ctx.url("/echo"))
            t1 = perf()
            await session.close()
            t2 = perf()
            await session.connection.close()
            if i >= warm:
                conn_s.append(t1 - t0)
                close_s.append(t2 - t1)
    return {**lat_summary(conn_s, "connect", (50, 90)), **lat_summary(close_s, "close", (50, 90))}


async def sc_rtt_stream(ctx: Ctx) -> dict[str, Any]:
    n, warm = ctx.params["n_rtt"], 10
    payload = bytes(range(64))
    reused: list[float] = []
    fresh: list[float] = []
    async with ctx.client() as client:
        session = await client.connect(ctx.url("/echo"))
        stream = await session.create_bidirectional_stream()
        for i in range(warm + n):
            t0 = perf()
            await stream.write(payload)
            got = await stream.readexactly(64)
            if i >= warm:
                reused.append(perf() - t0)
            assert got == payload
        await stream.write(b"", end_stream=True)
        await stream.read_all()
        for i in range(warm + n):
            t0 = perf()
            s = await session.create_bidirectional_stream()
            await s.write(payload, end_stream=True)
            got = await s.read_all()
            if i >= warm:
                fresh.append(perf() - t0)
            assert got == payload
        await _close(session)
    return {**lat_summary(reused, "reused", (50, 99)), **lat_summary(fresh, "fresh", (50, 99))}


async def sc_rtt_datagram(ctx: Ctx) -> dict[str, Any]:
    n, warm, lost = ctx.params["n_rtt"], 10, 0
    rtts: list[float] = []
    async with ctx.client() as client:
        session = await client.connect(ctx.url("/dg"))
        for i in range(warm + n):
            payload = b"E" + struct.pack("!I", i) + bytes(59)
            t0 = perf()
            await session.send_datagram(payload)
            while True:
                try:
                    got = await session.receive_datagram(timeout=max(t0 + 0.5 - perf(), 0.001))
                except TimeoutError:
                    lost += i >= warm
                    break
                if got[:5] == payload[:5]:
                    if i >= warm:
                        rtts.append(perf() - t0)
                    break
        await _close(session)
    return {**lat_summary(rtts, "dgram", (50, 99)), "dgram_lost": lost}


async def sc_upload(ctx: Ctx) -> dict[str, Any]:
    size, reps = ctx.params["size"], ctx.params["reps"]
    payload = bytes(size)
    speeds: list[float] = []
    async with ctx.client() as client:
        session = await client.connect(ctx.url("/sink"))

        async def one(data: bytes) -> float:
            s = await session.create_bidirectional_stream()
            t0 = perf()
            await s.write_all(data, end_stream=True)
            reply = await s.read_all()
            dt = perf() - t0
            if int(reply) != len(data):
                raise RuntimeError(f"server counted {reply!r}, expected {len(data)}")
            return dt

        await one(bytes(max(size // 8, 1)))
        cpu = CpuMeter(ctx.server_pid)
        for _ in range(reps):
            speeds.append(size / MiB / await one(payload))
        out = cpu.per_mib("upload", size * reps)
        await _close(session)
    return {"upload_MiBps": round(med(speeds) or 0, 2), **out}


async def sc_download(ctx: Ctx) -> dict[str, Any]:
    size, reps = ctx.params["size"], ctx.params["reps"]
    speeds: list[float] = []
    async with ctx.client() as client:
        session = await client.connect(ctx.url("/source"))

        async def one(n: int) -> float:
            t0 = perf()
            s = await session.create_bidirectional_stream()
            await s.write(str(n).encode(), end_stream=True)
            got = 0
            while d := await s.read():
                got += len(d)
            dt = perf() - t0
            if got != n:
                raise RuntimeError(f"received {got}, expected {n}")
            return dt

        await one(max(size // 8, 1))
        cpu = CpuMeter(ctx.server_pid)
        for _ in range(reps):
            speeds.append(size / MiB / await one(size))
        out = cpu.per_mib("download", size * reps)
        await _close(session)
    return {"download_MiBps": round(med(speeds) or 0, 2), **out}


async def sc_multiplex(ctx: Ctx) -> dict[str, Any]:
    nstreams, chunk, reps = ctx.params["streams"], ctx.params["chunk"], ctx.params["mux_reps"]
    payload = bytes(chunk)
    walls: list[float] = []

    async def one(session: WebTransportSession) -> int:
        s = await session.create_bidirectional_stream()
        await s.write_all(payload, end_stream=True)
        return len(await s.read_all())

    async with ctx.client() as client:
        for rep in range(reps + 1):
            session = await client.connect(ctx.url("/echo"))
            count = 20 if rep == 0 else nstreams
            t0 = perf()
            got = await asyncio.wait_for(
                asyncio.gather(*[one(session) for _ in range(count)]),
                ctx.params.get("mux_timeout", 20),
            )
            if rep:
                walls.append(perf() - t0)
            if any(g != chunk for g in got):
                raise RuntimeError("multiplex: short echo")
            await _close(session)
    wall = med(walls) or 1.0
    return {
        "multiplex_MiBps": round(nstreams * chunk / MiB / wall, 2),
        "multiplex_wall_s": round(wall, 3),
    }


async def sc_datagram_pps(ctx: Ctx) -> dict[str, Any]:
    n = ctx.params["n_dgram"]
    payload = b"C" + bytes(63)
    async with ctx.client() as client:
        session = await client.connect(ctx.url("/dg"))
        t0 = perf()
        for i in range(n):
            await session.send_datagram(payload)
            if i % 32 == 31:  # send_datagram may not yield; let ACKs in like the raw sender
                await asyncio.sleep(0)
        send_s = perf() - t0
        prev, stats = -1, {"count": 0, "first": 0.0, "last": 0.0}
        deadline = perf() + 10
        while perf() < deadline:
            s = await session.create_bidirectional_stream()
            await s.write(b"", end_stream=True)
            stats = json.loads(await s.read_all())
            if stats["count"] == prev:
                break
            prev = stats["count"]
            await asyncio.sleep(0.2)
        await _close(session)
    recv, span = stats["count"], stats["last"] - stats["first"]
    return {
        "send_pps": round(n / send_s),
        "recv_pps": round(recv / span) if recv > 1 and span > 0 else None,
        "received_pct": round(100.0 * recv / n, 2),
    }


async def sc_conn_rate(ctx: Ctx) -> dict[str, Any]:
    dur = ctx.params["duration"]
    async with ctx.client() as client:
        cpu = CpuMeter(ctx.server_pid)
        t0, n = perf(), 0
        while perf() - t0 < dur:
            session = await client.connect(ctx.url("/echo"))
            await session.close()  # the client closes the connection in the background
            n += 1
        el = perf() - t0
        c = cpu.per_mib("x", MiB * n)
        await asyncio.sleep(0.2)
    return {"cps": round(n / el, 1), "server_cpu_ms_per_conn": c.get("x_server_cpu_ms_per_MiB")}


async def sc_idle_memory(ctx: Ctx) -> dict[str, Any]:
    n = ctx.params["sessions"]
    held: list[WebTransportSession] = []
    async with ctx.client() as client:
        for _ in range(5):
            await _close(await client.connect(ctx.url("/echo")))
        await asyncio.sleep(0.5)
        rss = RssMeter(ctx.server_pid)
        for _ in range(n):
            held.append(await client.connect(ctx.url("/echo")))
        await asyncio.sleep(1.5)
        result = rss.per_session(n)
    return result


SCENARIOS = {
    "handshake": sc_handshake,
    "rtt_stream": sc_rtt_stream,
    "rtt_datagram": sc_rtt_datagram,
    "upload": sc_upload,
    "download": sc_download,
    "multiplex": sc_multiplex,
    "multiplex_issue": sc_multiplex,
    "datagram_pps": sc_datagram_pps,
    "conn_rate": sc_conn_rate,
    "idle_memory": sc_idle_memory,
}
