"""Our library (pywebtransport, public API only): the benchmark server and client scenarios.

Server routes (session path): ``/echo`` every bidi stream echoes each chunk, FIN after the
peer's FIN; ``/sink`` counts until FIN and replies the count; ``/source`` reads a decimal size
until FIN and sends that many bytes + FIN; ``/dg`` echoes datagrams starting with ``E`` (from
an ``incoming_datagrams()`` loop), counts all others, and answers each bidi stream with the
count as JSON; ``/dgev`` echoes datagrams from a ``DATAGRAM_RECEIVED`` event handler; ``/op``
(the load scenarios) picks each stream's behaviour by its first byte like the raw server
(``E`` echo, ``U`` count, ``H`` SHA-256, ``P`` process id) and echoes ``E`` datagrams.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from pywebtransport import (
    ClientConfig,
    Event,
    EventType,
    ServerApp,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
    WebTransportStream,
)

from .common import (
    OURS_EXTRA,
    OURS_SERVER_EXTRA,
    CpuMeter,
    MiB,
    RssMeter,
    fairness,
    lat_summary,
    med,
)

perf = time.perf_counter
_tasks: set[asyncio.Task[Any]] = set()


def spawn(coro: Any) -> None:
    t = asyncio.ensure_future(coro)
    _tasks.add(t)
    t.add_done_callback(_tasks.discard)


def _fields(settings: dict[str, Any]) -> dict[str, Any]:
    return {**OURS_EXTRA, **settings, "log_level": "WARNING"}


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
    # The FIN leaves with the last data when it came with it, as raw aioquic's echo does.
    while True:
        data = await stream.read()
        done = not stream.can_read
        if data or done:
            await stream.write(data, end_stream=done)
        if done:
            return


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


async def _hash(stream: Any) -> None:
    digest = hashlib.sha256()
    while data := await stream.read():
        digest.update(data)
    await stream.write(digest.hexdigest().encode(), end_stream=True)


async def _pid(stream: Any) -> None:
    await stream.read_all()
    await stream.write(str(os.getpid()).encode(), end_stream=True)


_OPS = {b"E": _echo, b"U": _sink, b"H": _hash, b"P": _pid}


async def _op(stream: Any) -> None:
    await _OPS[await stream.readexactly(1)](stream)


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
    elif path == "/dgev":

        async def echo_datagram(event: Event) -> None:
            await session.send_datagram(event.data["data"])

        session.events.on(EventType.DATAGRAM_RECEIVED, echo_datagram)
        per_stream = _echo
    elif path == "/op":

        async def echo_datagrams() -> None:
            async for d in session.incoming_datagrams():
                if d[:1] == b"E":
                    await session.send_datagram(d)

        spawn(_guard(echo_datagrams()))
        per_stream = _op
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


def app_main(
    port: int, cert: str, key: str, settings: dict[str, Any], workers: int, loop: str
) -> None:
    """The `workers` scenario's server: `ServerApp.run(workers=W)` with the `/op` route.

    Readiness is not printed by the workers: the client polls `/op` for process ids.
    """
    app = ServerApp(server_config(cert, key, port, settings), use_uvloop=loop == "uvloop")
    app.route("/op")(handler)

    @app.on_startup
    def exit_with_parent() -> None:
        # Runs in each worker after the fork: a worker must not outlive the benchmark.
        parent = os.getppid()

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(0)

        threading.Thread(target=watch, daemon=True).start()

    sys.stdout.write(f"READY {port}\n")
    sys.stdout.flush()
    app.run("127.0.0.1", port, workers=workers)


# --------------------------------------------------------------------------- client


class Ctx:
    def __init__(
        self,
        port: int,
        server_pid: int | None,
        params: dict[str, Any],
        settings: dict[str, Any],
        env: Any = None,
    ) -> None:
        self.port, self.server_pid, self.params = port, server_pid, params
        self.settings, self.env = settings, env
        self.config = client_config(settings)

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def client(self) -> WebTransportClient:
        return WebTransportClient(self.config)

    def dialer(self, port: int | None = None, **overrides: Any) -> Dialer:
        return Dialer(port or self.port, {**self.settings, **overrides})


# --------------------------------------------------------------------------- load adapters
# The load scenarios (benchmarks/load.py) are written once against these small adapters;
# raw.py has the same three classes over aioquic.


class Stream:
    """A bidi stream whose first write carries the opcode byte of the `/op` route."""

    def __init__(self, stream: WebTransportStream, op: bytes) -> None:
        self.s, self._op = stream, op

    async def write(self, data: bytes, end_stream: bool = False) -> None:
        if self._op:
            data, self._op = self._op + data, b""
        if len(data) <= 65536:
            await self.s.write(data, end_stream=end_stream)
        else:
            await self.s.write_all(data, end_stream=end_stream)

    async def readexactly(self, n: int) -> bytes:
        return await self.s.readexactly(n)

    async def read_all(self) -> bytes:
        return await self.s.read_all()


class Conn:
    def __init__(self, session: WebTransportSession) -> None:
        self.session = session
        self._reader: asyncio.Task[None] | None = None

    async def stream(self, op: bytes) -> Stream:
        return Stream(await self.session.create_bidirectional_stream(), op)

    async def send_datagram(self, data: bytes) -> None:
        await self.session.send_datagram(data)

    def on_datagram(self, callback: Callable[[bytes], None]) -> None:
        async def read() -> None:
            with contextlib.suppress(Exception):
                async for d in self.session.incoming_datagrams():
                    callback(d)

        self._reader = asyncio.ensure_future(read())

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await _close(self.session)


class Dialer:
    """Opens sessions (one QUIC connection each) from one `WebTransportClient`."""

    def __init__(self, port: int, settings: dict[str, Any]) -> None:
        self.port = port
        self.client = WebTransportClient(client_config(settings))

    async def connect(self, path: str = "/op") -> Conn:
        return Conn(await self.client.connect(f"https://127.0.0.1:{self.port}{path}"))

    async def aclose(self) -> None:
        await self.client.close()


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
    """Datagram echo through both receive APIs: ``receive_datagram()`` (the server answers
    from an ``incoming_datagrams()`` loop) and ``DATAGRAM_RECEIVED`` event handlers on both
    sides (an async handler feeding a queue, as the docs show)."""
    n, warm = ctx.params["n_rtt"], 10
    out: dict[str, Any] = {}
    async with ctx.client() as client:
        session = await client.connect(ctx.url("/dg"))

        async def receive(deadline: float) -> bytes:
            return await session.receive_datagram(timeout=max(deadline - perf(), 0.001))

        out.update(await _dgram_rtts(session, receive, n, warm, "dgram"))
        await _close(session)

        session = await client.connect(ctx.url("/dgev"))
        queue: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_datagram(event: Event) -> None:
            queue.put_nowait(event.data["data"])

        session.events.on(EventType.DATAGRAM_RECEIVED, on_datagram)

        async def from_queue(deadline: float) -> bytes:
            return await asyncio.wait_for(queue.get(), max(deadline - perf(), 0.0))

        out.update(await _dgram_rtts(session, from_queue, n, warm, "dgram_ev"))
        await _close(session)
    return out


async def _dgram_rtts(
    session: WebTransportSession, receive: Any, n: int, warm: int, prefix: str
) -> dict[str, Any]:
    rtts: list[float] = []
    lost = 0
    for i in range(warm + n):
        payload = b"E" + struct.pack("!I", i) + bytes(59)
        t0 = perf()
        await session.send_datagram(payload)
        while True:
            try:
                got = await receive(t0 + 0.5)
            except TimeoutError:
                lost += i >= warm
                break
            if got[:5] == payload[:5]:
                if i >= warm:
                    rtts.append(perf() - t0)
                break
    return {**lat_summary(rtts, prefix, (50, 99)), f"{prefix}_lost": lost}


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
    done: list[float] = []

    async def one(session: WebTransportSession, t0: float) -> int:
        s = await session.create_bidirectional_stream()
        await s.write_all(payload, end_stream=True)
        n = len(await s.read_all())
        done.append(perf() - t0)
        return n

    async with ctx.client() as client:
        for rep in range(reps + 1):
            session = await client.connect(ctx.url("/echo"))
            count = 20 if rep == 0 else nstreams
            done.clear()
            t0 = perf()
            got = await asyncio.wait_for(
                asyncio.gather(*[one(session, t0) for _ in range(count)]),
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
        **fairness(done),
    }


async def sc_echo_single(ctx: Ctx) -> dict[str, Any]:
    """One stream carrying what the multiplex spreads over many, echoed, read while written."""
    size = ctx.params["streams"] * ctx.params["chunk"]
    payload = bytes(size)
    walls: list[float] = []
    async with ctx.client() as client:
        session = await client.connect(ctx.url("/echo"))
        for data in (bytes(max(size // 8, 1)), payload):
            s = await session.create_bidirectional_stream()
            t0 = perf()
            reader = asyncio.ensure_future(s.read_all(max_size=size))
            await s.write_all(data, end_stream=True)
            if len(await reader) != len(data):
                raise RuntimeError("echo_single: short echo")
            walls.append(perf() - t0)
        await _close(session)
    return {"echo_single_MiBps": round(size / MiB / walls[-1], 2)}


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


async def sc_conn_rate_client_close(ctx: Ctx) -> dict[str, Any]:
    """A fresh `WebTransportClient` per cycle; leaving ``async with`` closes it (timed)."""
    dur, max_cycles = ctx.params["duration"], ctx.params["close_cycles"]
    warm = min(100, max_cycles // 10)
    # A counted soak (close_soak) reports the slope over its second half: the first
    # thousand cycles grow the heap in one step (allocator arenas, bounded caches
    # filling), which a leak would not stop at. The total from `warm` is reported too.
    half = max_cycles // 2 if max_cycles <= 100_000 else None
    close_s: list[float] = []
    cpu = CpuMeter(ctx.server_pid)
    rss: RssMeter | None = None
    slope: RssMeter | None = None
    series: list[list[Any]] = []  # [cycle, server KiB grown since `warm`] every 500 cycles
    t0, n = perf(), 0
    while perf() - t0 < dur and n < max_cycles:
        async with WebTransportClient(ctx.config) as client:
            await client.connect(ctx.url("/echo"))
            tc = perf()
        close_s.append(perf() - tc)
        n += 1
        if n == warm:
            rss = RssMeter(ctx.server_pid)
        if n == half:
            slope = RssMeter(ctx.server_pid)
        if rss is not None and half is not None and n % 500 == 0:
            series.append([n, rss.total()["server_rss_kib_total"]])
    el = perf() - t0
    c = cpu.per_mib("x", MiB * n)
    memory: dict[str, Any] = {}
    if slope is not None and half is not None and rss is not None:
        memory = {
            **slope.growth(n - half),
            **rss.total(),
            "rss_slope_from_cycle": half,
            "server_rss_kib_series": series,
        }
    elif rss is not None:
        memory = rss.growth(n - warm)
    return {
        "cycles_per_s": round(n / el, 1),
        "cycles": n,
        **lat_summary(close_s, "client_close", (50, 99)),
        "server_cpu_ms_per_cycle": c.get("x_server_cpu_ms_per_MiB"),
        **memory,
    }


async def sc_idle_cost(ctx: Ctx) -> dict[str, Any]:
    n, settle, window = ctx.params["sessions"], ctx.params["settle"], ctx.params["idle_window"]
    held: list[WebTransportSession] = []
    async with ctx.client() as client:
        for _ in range(5):
            await _close(await client.connect(ctx.url("/echo")))
        await asyncio.sleep(settle / 3)
        rss = RssMeter(ctx.server_pid)
        for _ in range(n):
            held.append(await client.connect(ctx.url("/echo")))
        await asyncio.sleep(settle)
        result: dict[str, Any] = rss.per_session(n)
        if window:
            cpu = CpuMeter(ctx.server_pid)
            await asyncio.sleep(window)
            result.update(cpu.per_session_minute(n, window))
            if any(s.is_closed for s in held):
                raise RuntimeError("idle sessions closed during the window")
    return result


async def sc_fanout(ctx: Ctx) -> dict[str, Any]:
    """`benchmarks/fanout.py` (its own Redis, `ServerApp` workers and clients)."""
    from . import fanout

    p = ctx.params
    args = argparse.Namespace(
        sessions=p["fanout_sessions"],
        clients=p["fanout_clients"],
        workers=p["fanout_workers"],
        messages=p["fanout_messages"],
        size=64,
        redis=None,
        timeout=p["fanout_timeout"],
    )
    result = await fanout.main(args)
    result.pop("scenario", None)
    return result


def _load(name: str) -> Any:
    async def run(ctx: Ctx) -> dict[str, Any]:
        from . import load

        return await getattr(load, name)(ctx)  # type: ignore[no-any-return]

    return run


SCENARIOS = {
    "handshake": sc_handshake,
    "rtt_stream": sc_rtt_stream,
    "rtt_datagram": sc_rtt_datagram,
    "upload": sc_upload,
    "download": sc_download,
    "multiplex": sc_multiplex,
    "multiplex_1000": sc_multiplex,
    "multiplex_issue": sc_multiplex,
    "echo_single": sc_echo_single,
    "datagram_pps": sc_datagram_pps,
    "conn_rate": sc_conn_rate,
    "conn_rate_client_close": sc_conn_rate_client_close,
    "close_soak": sc_conn_rate_client_close,
    "idle_cost": sc_idle_cost,
    "fanout": sc_fanout,
    "capacity": _load("capacity"),
    "latency_under_load": _load("latency_under_load"),
    "lossy": _load("lossy"),
    "bottleneck": _load("bottleneck"),
    "shared": _load("shared"),
    "workers": _load("workers"),
}
