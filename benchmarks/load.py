"""Load scenarios, written once for every implementation over its adapters.

``ours.Dialer`` / ``raw.Dialer`` open a session (one QUIC connection each) on the server's
``/op`` route, whose streams start with an opcode byte (``E`` echo, ``U`` count, ``H``
SHA-256, ``P`` process id) and which echoes datagrams starting with ``E``. The scenario
functions run in the worker's client process; ``capacity`` and ``workers`` also start
load-generating client children (``python -m benchmarks.load``, this module's ``main``)
that connect their share of the sessions, print ``CONNECTED``, wait for ``GO`` on stdin,
run for the given duration and print one JSON line.

Those two measure servers, so every server under test gets the same load generator
(``load_client``, default stock raw aioquic H3: the cheapest client here). On 2 cores the
clients compete with the server for CPU; a client per session costs about what the server
spends on it, so the client side saturates too, which the offered-load figure shows.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import json
import random
import signal
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import (
    SETTINGS,
    free_udp_port,
    jain,
    lat_summary,
    raise_nofile,
    read_cpu_s,
    read_rss_kb,
    run_loop,
)

ROOT = Path(__file__).resolve().parent.parent
RELAY = ROOT / "tests" / "integration" / "udp_relay.py"
perf = time.perf_counter
_LINE_LIMIT = 256 * 1024 * 1024  # a child's samples come back as one JSON line
# An overloaded server may answer a connect or an echo very late, or never (a connection
# that timed out): after this long it counts as failed instead of hanging the run.
_GRACE = 30.0
_tasks: set[asyncio.Task[Any]] = set()


def spawn(coro: Any) -> None:
    t = asyncio.ensure_future(coro)
    _tasks.add(t)
    t.add_done_callback(_tasks.discard)


# --------------------------------------------------------------------------- child processes


class Child:
    """A child process spoken to in lines (stdin) and answering in lines (stdout)."""

    def __init__(self, proc: asyncio.subprocess.Process, err: Any) -> None:
        self.proc, self._err = proc, err

    @classmethod
    async def start(cls, argv: list[str]) -> Child:
        err = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            limit=_LINE_LIMIT,
        )
        return cls(proc, err)

    def stderr_last(self) -> str:
        """The child's last line of error output (an exception's message)."""
        self._err.seek(0)
        lines = self._err.read().decode(errors="replace").strip().splitlines()
        return str(lines[-1]) if lines else "no error output"

    async def line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        try:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise RuntimeError(f"child silent for {timeout:.0f} s: {self.stderr_last()}") from None
        if not raw:
            raise RuntimeError(f"child exited: {self.stderr_last()}")
        return str(raw.decode())

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")

    async def stop(self, timeout: float = 15.0) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        self._err.close()


async def _run_children(
    ctx: Any, argvs: list[list[str]], connect_timeout: float, run_timeout: float, pids: list[int]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Start the children, wait until all are connected, then run them together.

    Returns the children's results and what the servers (`pids`) did meanwhile: RSS growth
    from before the first child started to all connected, CPU from GO to the last result.
    """
    rss0 = sum(read_rss_kb(p) or 0 for p in pids)
    children = [await Child.start(argv) for argv in argvs]
    try:
        t0 = perf()
        for c in children:
            await c.line(max(connect_timeout - (perf() - t0), 1.0))
        connect_s = perf() - t0
        await asyncio.sleep(ctx.params.get("load_settle", 1.0))
        rss1 = sum(read_rss_kb(p) or 0 for p in pids)
        cpu0 = [read_cpu_s(p) for p in pids]
        t1 = perf()
        for c in children:
            c.send("GO")
        results = [json.loads(await c.line(run_timeout)) for c in children]
        wall = perf() - t1
        cpu = sum((read_cpu_s(p) or 0.0) - (c0 or 0.0) for p, c0 in zip(pids, cpu0, strict=True))
    finally:
        await asyncio.gather(*(c.stop() for c in children))
    server = {
        "connect_s": round(connect_s, 2),
        "server_cpu_pct": round(100 * cpu / wall, 1),
        "server_rss_kib": rss1 - rss0,
    }
    return results, server


def _load_client(ctx: Any) -> str:
    """The implementation of the load-generating children ("same": the one under test)."""
    client = ctx.params.get("load_client", "rawh3")
    return str(ctx.env.impl if client == "same" else client)


async def _wait_go() -> None:
    if not await asyncio.to_thread(sys.stdin.readline):
        raise SystemExit("parent went away before GO")


# --------------------------------------------------------------------------- capacity


async def capacity(ctx: Any) -> dict[str, Any]:
    """N concurrent sessions, each sending a 100 B stream message and a 100 B datagram every
    100 ms on a fixed schedule (open loop; the server echoes both, round trips measured
    from the scheduled time), from several client processes; a fresh server per N."""
    p = ctx.params
    out: dict[str, Any] = {}
    knee = None
    for n in p["capacity_ns"]:
        server = await asyncio.to_thread(ctx.env.start_server)
        try:
            res = await _capacity_one(ctx, server.port, server.pid, n)
        finally:
            ctx.env.stop(server)
        out.update({f"n{n}_{k}": v for k, v in res.items()})
        p99 = res.get("rtt_p99_ms")
        if knee is None and (p99 is None or p99 > 50.0):
            knee = n
    out["p99_over_50ms_at_n"] = knee
    out["capacity_max_n"] = max(p["capacity_ns"])
    return out


async def _capacity_one(ctx: Any, port: int, pid: int, n: int) -> dict[str, Any]:
    p = ctx.params
    dialer = ctx.dialer(port)
    for _ in range(3):  # first-connection costs (imports, caches) out of the per-session RSS
        conn = await dialer.connect("/op")
        await conn.close()
    await dialer.aclose()
    await asyncio.sleep(p["load_settle"])
    k = max(1, min(p["capacity_clients"], n))
    shares = [n // k + (i < n % k) for i in range(k)]
    dur = p["capacity_duration"]
    common = ["--mode", "capacity", "--port", str(port), "--duration", str(dur)]
    common += ["--interval", str(p["capacity_interval"])]
    client = _load_client(ctx)
    argvs = [ctx.env.child_argv(client, *common, "--sessions", str(share)) for share in shares]
    results, server = await _run_children(
        ctx, argvs, p["capacity_connect_timeout"], dur + _GRACE + 30, [pid]
    )
    rtts = [us / 1e6 for r in results for us in r["rtt_us"]]
    dgs = [us / 1e6 for r in results for us in r["dg_us"]]
    sent = sum(r["sent"] for r in results)
    dg_sent = sum(r["dg_sent"] for r in results)
    offered = n * dur / p["capacity_interval"]
    return {
        **lat_summary(rtts, "rtt", (50, 99, 99.9)),
        **lat_summary(dgs, "dgram", (50, 99)),
        "dgram_lost_pct": round(100 * (1 - len(dgs) / dg_sent), 2) if dg_sent else None,
        "msgs_per_s": round(len(rtts) / dur, 1),
        "offered_pct": round(100 * sent / offered, 1) if offered else None,
        "late_pct": round(100 * sum(r["late"] for r in results) / sent, 1) if sent else None,
        "errors": sum(r["errors"] for r in results),
        "timeouts": sum(r["timeouts"] for r in results),
        "connect_errors": sum(r["connect_errors"] for r in results),
        "server_cpu_pct": server["server_cpu_pct"],
        "server_kib_per_session": round(server["server_rss_kib"] / n, 1),
        "connect_s": server["connect_s"],
    }


async def _child_capacity(dialer: Any, args: argparse.Namespace) -> None:
    n, interval, size = args.sessions, args.interval, 100
    sem = asyncio.Semaphore(16)
    dg_us: list[int] = []

    def on_datagram(d: bytes) -> None:
        if d[:1] == b"E":
            dg_us.append(int((perf() - struct.unpack_from("!d", d, 1)[0]) * 1e6))

    counts = {"sent": 0, "dg_sent": 0, "errors": 0, "timeouts": 0, "connect_errors": 0, "late": 0}

    async def open_one() -> tuple[Any, Any] | None:
        async with sem:
            try:
                async with asyncio.timeout(_GRACE):
                    conn = await dialer.connect("/op")
                    conn.on_datagram(on_datagram)
                    return conn, await conn.stream(b"E")
            except Exception:
                counts["connect_errors"] += 1
                return None

    pairs = [p for p in await asyncio.gather(*[open_one() for _ in range(n)]) if p]
    print("CONNECTED", len(pairs), flush=True)
    await _wait_go()
    rtt_us: list[int] = []
    start = perf()
    end = start + args.duration
    msg = bytes(size)

    async def run(i: int, conn: Any, stream: Any) -> None:
        # Open loop: the k-th send is due at a fixed time whether or not earlier echoes came
        # back, and each round trip is measured from that time, so a server that falls
        # behind shows as queueing delay instead of as fewer sends.
        scheduled: collections.deque[float] = collections.deque()
        sending = True

        async def echoes() -> None:
            while scheduled or sending:
                await stream.readexactly(size)
                rtt_us.append(int((perf() - scheduled.popleft()) * 1e6))

        reader = asyncio.ensure_future(echoes())
        try:
            due = start + interval * i / n
            while due < end and not reader.done():
                now = perf()
                if due > now:
                    await asyncio.sleep(due - now)
                elif now - due > interval:
                    counts["late"] += 1  # sent, but over an interval after its time
                scheduled.append(due)
                counts["sent"] += 1
                await stream.write(msg)
                await conn.send_datagram(b"E" + struct.pack("!d", due) + bytes(size - 9))
                counts["dg_sent"] += 1
                due += interval
            sending = False
            async with asyncio.timeout(max(end + _GRACE - perf(), 1.0)):
                await reader
        except TimeoutError:
            counts["timeouts"] += 1
        except Exception:
            counts["errors"] += 1
        finally:
            reader.cancel()

    await asyncio.gather(*(run(i, c, s) for i, (c, s) in enumerate(pairs)))
    await asyncio.sleep(0.3)  # datagram echoes still in flight
    print(json.dumps({"rtt_us": rtt_us, "dg_us": dg_us, **counts}), flush=True)
    with contextlib.suppress(Exception):
        async with asyncio.timeout(10):
            await asyncio.gather(*(c.close() for c, _s in pairs), return_exceptions=True)


# --------------------------------------------------------------------------- workers


async def workers(ctx: Any) -> dict[str, Any]:
    """Sessions/s and messages/s against 1 and 2 server processes sharing one port
    (`ServerApp.run(workers=W)`; raw: W aioquic servers bound with SO_REUSEPORT).

    Ours also runs W=2 with connection-id routing off (`w2_kernelhash_*`: the kernel
    hashes addresses, as raw's servers do): `routing_*_ratio` is with ÷ without.
    """
    p, env = ctx.params, ctx.env
    out: dict[str, Any] = {}
    counts: list[Any] = list(p["worker_counts"])
    if env.impl == "ours" and 2 in counts:
        counts.append("2_kernelhash")
    for label in counts:
        w = int(str(label).split("_")[0])
        port = free_udp_port()
        servers = []
        try:
            if env.impl == "ours":
                patches = {"PYWEBTRANSPORT_AIOQUIC_PATCHES": "cid_routing"}
                servers.append(
                    await asyncio.to_thread(
                        env.start_server,
                        "--app-workers",
                        str(w),
                        port=port,
                        env=patches if label == "2_kernelhash" else None,
                    )
                )
            else:
                for _ in range(w):
                    servers.append(
                        await asyncio.to_thread(env.start_server, "--reuse-port", port=port)
                    )
            pids = await _server_pids(ctx, port, w)
            res = await _workers_phases(ctx, port, pids)
        finally:
            for server in servers:
                env.stop(server)
        out.update({f"w{label}_{k}": v for k, v in res.items()})
    if all(f"w{w}_sessions_per_s" in out for w in (1, 2)):
        for key in ("sessions_per_s", "msgs_per_s"):
            one = out[f"w1_{key}"]
            out[f"{key}_scale"] = round(out[f"w2_{key}"] / one, 2) if one else None
            hashed = out.get(f"w2_kernelhash_{key}")
            if hashed:
                out[f"routing_{key}_ratio"] = round(out[f"w2_{key}"] / hashed, 2)
    return out


async def _server_pids(ctx: Any, port: int, count: int, timeout: float = 30.0) -> list[int]:
    """Connect until `count` distinct server processes answered (new source port each)."""
    dialer = ctx.dialer(port)
    pids: set[int] = set()
    deadline = perf() + timeout
    error: Exception | None = None
    try:
        while len(pids) < count:
            try:
                conn = await asyncio.wait_for(dialer.connect("/op"), 3)
                s = await conn.stream(b"P")
                await s.write(b"", end_stream=True)
                pids.add(int(await asyncio.wait_for(s.read_all(), 3)))
                await conn.close()
            except Exception as e:  # not listening yet
                error = e
                await asyncio.sleep(0.1)
            if perf() > deadline:
                raise RuntimeError(f"saw {len(pids)} of {count} server processes: {error!r}")
    finally:
        await dialer.aclose()
    return sorted(pids)


async def _workers_phases(ctx: Any, port: int, pids: list[int]) -> dict[str, Any]:
    p = ctx.params
    dur, k = p["workers_duration"], p["workers_clients"]
    out: dict[str, Any] = {}
    for mode, extra, key in (
        ("sessions", ["--concurrency", str(p["workers_concurrency"])], "sessions_per_s"),
        ("messages", ["--sessions", str(p["workers_sessions"])], "msgs_per_s"),
    ):
        argv = ctx.env.child_argv(
            _load_client(ctx), "--mode", mode, "--port", str(port), "--duration", str(dur), *extra
        )
        results, server = await _run_children(ctx, [argv] * k, 60, dur + _GRACE + 30, pids)
        out[key] = round(sum(r["count"] for r in results) / dur, 1)
        out[f"{mode}_errors"] = sum(r["errors"] for r in results)
        out[f"{mode}_server_cpu_pct"] = server["server_cpu_pct"]
    return out


async def _child_sessions(dialer: Any, args: argparse.Namespace) -> None:
    """Connect + session + close in `concurrency` loops; closes finish in the background."""
    print("CONNECTED", flush=True)
    await _wait_go()
    counts = {"count": 0, "errors": 0}
    end = perf() + args.duration

    async def loop() -> None:
        while perf() < end:
            try:
                async with asyncio.timeout(_GRACE):
                    conn = await dialer.connect("/op")
            except Exception:
                counts["errors"] += 1
                continue
            counts["count"] += 1
            spawn(conn.close())

    await asyncio.gather(*(loop() for _ in range(args.concurrency)))
    print(json.dumps(counts), flush=True)
    with contextlib.suppress(Exception):
        async with asyncio.timeout(10):
            await asyncio.gather(*_tasks, return_exceptions=True)


async def _child_messages(dialer: Any, args: argparse.Namespace) -> None:
    """Closed-loop 100 B echo on one stream per session, as fast as it goes."""
    pairs = []
    for _ in range(args.sessions):
        conn = await dialer.connect("/op")
        pairs.append((conn, await conn.stream(b"E")))
    print("CONNECTED", flush=True)
    await _wait_go()
    counts = {"count": 0, "errors": 0}
    end = perf() + args.duration
    msg = bytes(100)

    async def loop(stream: Any) -> None:
        try:
            while perf() < end:
                await stream.write(msg)
                async with asyncio.timeout(end + _GRACE - perf()):
                    await stream.readexactly(100)
                counts["count"] += 1
        except Exception:
            counts["errors"] += 1

    await asyncio.gather(*(loop(s) for _c, s in pairs))
    print(json.dumps(counts), flush=True)
    with contextlib.suppress(Exception):
        async with asyncio.timeout(10):
            await asyncio.gather(*(c.close() for c, _s in pairs), return_exceptions=True)


# --------------------------------------------------------------------------- latency under load


async def latency_under_load(ctx: Any) -> dict[str, Any]:
    """64 B echo round trips on one session: idle, while a bulk upload runs on another stream
    of the same connection, and while one runs on another connection."""
    n = ctx.params["n_rtt"]
    warm = min(10, n)
    dialer = ctx.dialer()
    out: dict[str, Any] = {}
    try:
        conn = await dialer.connect("/op")
        echo = await conn.stream(b"E")
        msg = bytes(range(64))

        async def sample() -> list[float]:
            rtts: list[float] = []
            for i in range(warm + n):
                t0 = perf()
                await echo.write(msg)
                if await echo.readexactly(64) != msg:
                    raise RuntimeError("echo mismatch")
                if i >= warm:
                    rtts.append(perf() - t0)
            return rtts

        out.update(lat_summary(await sample(), "idle", (50, 99)))
        other = await dialer.connect("/op")
        for name, bulk_conn in (("same", conn), ("other", other)):
            rtts, mibps = await _under_bulk(ctx, bulk_conn, sample)
            out.update(lat_summary(rtts, name, (50, 99)))
            out[f"{name}_bulk_MiBps"] = mibps
        await other.close()
        await conn.close()
    finally:
        await dialer.aclose()
    return out


async def _under_bulk(ctx: Any, conn: Any, sample: Any) -> tuple[list[float], float]:
    bulk = await conn.stream(b"U")
    chunk = bytes(256 * 1024)
    sent = [0]
    stop = asyncio.Event()

    async def pump() -> None:
        while not stop.is_set():
            await bulk.write(chunk)
            sent[0] += len(chunk)

    task = asyncio.ensure_future(pump())
    try:
        await asyncio.sleep(ctx.params.get("lul_warm", 0.3))  # let the window open
        b0, t0 = sent[0], perf()
        rtts = await sample()
        mibps = (sent[0] - b0) / (1024 * 1024) / (perf() - t0)
        if task.done():
            task.result()  # the bulk writer failed: report that, not a quiet figure
    finally:
        stop.set()
        await task
    await bulk.write(b"", end_stream=True)
    counted = int(await asyncio.wait_for(bulk.read_all(), 60))
    if counted != sent[0]:
        raise RuntimeError(f"bulk: server counted {counted}, sent {sent[0]}")
    return rtts, round(mibps, 2)


# --------------------------------------------------------------------------- network paths


class Relay:
    """The path model (tests/integration/udp_relay.py) as a child, in front of the server."""

    def __init__(self, child: Child, port: int, started: float) -> None:
        self.child, self.port, self.started = child, port, started
        self.report: dict[str, Any] = {}

    @classmethod
    async def start(cls, target: int, *options: str) -> Relay:
        port = free_udp_port()
        argv = [sys.executable, str(RELAY), "--listen", str(port), "--target", str(target)]
        child = await Child.start([*argv, "--seed", "18", *options])
        try:
            await child.line(10)
        except BaseException:
            await child.stop(5)
            raise
        return cls(child, port, perf())

    async def stop(self) -> dict[str, Any]:
        """Stop the relay; its report (counts, per-flow bytes) is kept in `report`."""
        self.child.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(Exception):
            self.report = json.loads(await self.child.line(5))
        await self.child.stop(5)
        return self.report

    async def __aenter__(self) -> Relay:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _upload(conn: Any, size: int, seed: int, until: asyncio.Event | None = None) -> int:
    """Upload `size` bytes (or until `until` is set) on an `H` stream; the server's SHA-256
    must match what was sent. Returns the bytes sent."""
    block = random.Random(seed).randbytes(256 * 1024)
    digest = hashlib.sha256()
    stream = await conn.stream(b"H")
    sent = 0
    while sent < size and not (until is not None and until.is_set()):
        chunk = block[: min(len(block), size - sent)]
        await stream.write(chunk)
        digest.update(chunk)
        sent += len(chunk)
    await stream.write(b"", end_stream=True)
    got = (await stream.read_all()).decode()
    if got != digest.hexdigest():
        raise RuntimeError(f"upload of {sent} B: SHA-256 mismatch ({got!r})")
    return sent


def _silent_seconds(report: dict[str, Any]) -> float:
    """Seconds of the relay's bins in which no client sent anything, between the first
    and the last bin in which one did."""
    flows = list(report.get("flows", {}).values())
    if not flows:
        return 0.0
    width = max(len(bins) for bins in flows)
    sent = [any(i < len(bins) and bins[i] for bins in flows) for i in range(width)]
    busy = [i for i, carried in enumerate(sent) if carried]
    if not busy:
        return 0.0
    return round(sum(not carried for carried in sent[busy[0] : busy[-1]]) * report["bin_s"], 2)


async def lossy(ctx: Any) -> dict[str, Any]:
    """Upload through the relay, which drops the given percentage of datagrams each way
    (`lossy_burst`: in bursts of that mean length) and delays each by half the RTT (or
    by `lossy_up_ms` / `lossy_down_ms`; `lossy_reorder` percent wait 5-15 ms more, so
    that later datagrams overtake them); the server returns the SHA-256 of what it
    received, which must match."""
    p = ctx.params
    size, half = p["lossy_size"], p["lossy_rtt_ms"] / 2
    path = (
        "--delay-up", str(p.get("lossy_up_ms", half)),
        "--delay-down", str(p.get("lossy_down_ms", half)),
        "--burst", str(p.get("lossy_burst", 1)),
        "--reorder", str(p.get("lossy_reorder", 0)),
    )  # fmt: skip
    out: dict[str, Any] = {}
    for loss in p["loss_pcts"]:
        options = (*path, "--loss", str(loss))
        async with await Relay.start(ctx.port, *options) as relay:
            dialer = ctx.dialer(relay.port)
            try:
                conn = await dialer.connect("/op")
                t0 = perf()
                await _upload(conn, size, 18)
                el = perf() - t0
                await conn.close()
            finally:
                await dialer.aclose()
        report = relay.report
        out[f"loss{loss:g}_dropped"] = report.get("dropped")
        # What each side sent (retransmissions, ACKs) and how long the sender was silent
        # mid-transfer (loss recovery's waits): where two implementations part.
        for way in ("up", "down"):
            counts = report.get(way) or {}
            out[f"loss{loss:g}_{way}_sent"] = counts.get("forwarded", 0) + counts.get("dropped", 0)
            out[f"loss{loss:g}_{way}_dropped"] = counts.get("dropped", 0)
        out[f"loss{loss:g}_silent_s"] = _silent_seconds(report)
        out[f"loss{loss:g}_MiBps"] = round(size / (1024 * 1024) / el, 3)
        out[f"loss{loss:g}_s"] = round(el, 2)
    out["sha256_ok"] = 1
    return out


def _bottleneck_options(p: dict[str, Any]) -> tuple[str, ...]:
    return (
        "--delay", str(p["bn_rtt_ms"] / 2), "--rate", str(p["bn_mbps"]),
        "--queue", str(p["bn_queue"]),
    )  # fmt: skip


async def bottleneck(ctx: Any) -> dict[str, Any]:
    """One upload through a bottleneck (`bn_mbps`, drop-tail queue of `bn_queue` datagrams,
    `bn_rtt_ms`): its goodput as a share of the bottleneck rate, and 64 B echo round trips
    on another stream of the same connection, idle and during the upload (latency under
    load: what the sender's congestion control leaves standing in the queue)."""
    p = ctx.params
    size, gap = p["bn_size"], p.get("bn_probe_gap_s", 0.05)
    out: dict[str, Any] = {}
    async with await Relay.start(ctx.port, *_bottleneck_options(p)) as relay:
        dialer = ctx.dialer(relay.port)
        try:
            conn = await dialer.connect("/op")
            echo = await conn.stream(b"E")
            msg = bytes(range(64))

            async def probe() -> float:
                t0 = perf()
                await echo.write(msg)
                if await echo.readexactly(64) != msg:
                    raise RuntimeError("echo mismatch")
                return perf() - t0

            idle = []
            for _ in range(20):
                idle.append(await probe())
                await asyncio.sleep(gap)
            t0 = perf()
            upload = asyncio.ensure_future(_upload(conn, size, 19))
            loaded = []
            while not upload.done():
                loaded.append(await probe())
                await asyncio.sleep(gap)
            await upload
            el = perf() - t0
            await conn.close()
        finally:
            await dialer.aclose()
    out.update(lat_summary(idle, "idle", (50, 99)))
    out.update(lat_summary(loaded, "loaded", (50, 99)))
    out["bn_MiBps"] = round(size / (1024 * 1024) / el, 3)
    out["bn_util"] = round(size * 8 / el / (p["bn_mbps"] * 1e6), 3)
    out["queue_dropped"] = relay.report.get("queue_dropped")
    out["sha256_ok"] = 1
    return out


async def shared(ctx: Any) -> dict[str, Any]:
    """Two connections upload at once through one bottleneck, each with its congestion
    control (`share_ccs`), for `share_s` seconds. Each flow's share is counted at the
    bottleneck (the relay's per-flow bytes, retransmissions included) over the time both
    ran, after `share_warm_s`; every upload is checked byte-exact."""
    p = ctx.params
    ccs, duration, warm = p["share_ccs"], p["share_s"], p.get("share_warm_s", 2.0)
    async with await Relay.start(ctx.port, *_bottleneck_options(p)) as relay:
        dialers = [ctx.dialer(relay.port, congestion_control_algorithm=cc) for cc in ccs]
        try:
            # Connected one after the other: the relay lists flows in this order.
            conns = [await d.connect("/op") for d in dialers]
            stop = asyncio.Event()
            begun = perf()
            uploads = [
                asyncio.ensure_future(_upload(c, 1 << 40, 20 + i, stop))
                for i, c in enumerate(conns)
            ]
            await asyncio.sleep(duration)
            ended = perf()
            stop.set()
            sent = await asyncio.gather(*uploads)
            for c in conns:
                await c.close()
        finally:
            for d in dialers:
                await d.aclose()
    report = relay.report
    bin_s = report["bin_s"]
    first = int((begun - relay.started + warm) / bin_s) + 1
    last = int((ended - relay.started) / bin_s)
    flows = list(report["flows"].values())
    if len(flows) != len(ccs) or last <= first:
        raise RuntimeError(f"relay saw {len(flows)} flows, window {first}..{last}")
    window = (last - first) * bin_s
    rates = [sum(bins[first:last]) * 8 / window / 1e6 for bins in flows]
    out: dict[str, Any] = {"share_window_s": round(window, 2), "sha256_ok": 1}
    for i, (cc, rate) in enumerate(zip(ccs, rates, strict=True)):
        out[f"flow{i}_{cc}_Mbps"] = round(rate, 2)
        out[f"flow{i}_{cc}_share"] = round(rate / sum(rates), 3)
        out[f"flow{i}_{cc}_sent_MiB"] = round(sent[i] / (1024 * 1024), 2)
    out["jain"] = round(jain(rates), 3)
    out["link_util"] = round(sum(rates) / p["bn_mbps"], 3)
    return out


# --------------------------------------------------------------------------- child main


def _dialer(args: argparse.Namespace, settings: dict[str, Any]) -> Any:
    if args.impl == "ours":
        from .ours import Dialer

        return Dialer(args.port, settings)
    from .raw import Dialer as RawDialer

    return RawDialer(args.impl, args.port, settings)


def main() -> None:
    ap = argparse.ArgumentParser(description="a load-generating client child")
    ap.add_argument("--impl", required=True)
    ap.add_argument("--loop", default="uvloop")
    ap.add_argument("--set", default="{}")
    ap.add_argument("--mode", choices=["capacity", "sessions", "messages"], required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--sessions", type=int, default=1)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    raise_nofile()
    settings = {**SETTINGS, **json.loads(args.set)}
    run = {"capacity": _child_capacity, "sessions": _child_sessions, "messages": _child_messages}

    async def go() -> None:
        dialer = _dialer(args, settings)
        try:
            await run[args.mode](dialer, args)
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    await dialer.aclose()

    run_loop(go, args.loop)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
