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
    100 ms (the server echoes both), from several client processes; a fresh server per N."""
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
        next_t = start + interval * i / n
        try:
            while True:
                now = perf()
                if next_t > now:
                    await asyncio.sleep(next_t - now)
                t0 = perf()
                if t0 >= end:
                    return
                counts["sent"] += 1
                await stream.write(msg)
                await conn.send_datagram(b"E" + struct.pack("!d", t0) + bytes(size - 9))
                counts["dg_sent"] += 1
                async with asyncio.timeout(end + _GRACE - perf()):
                    await stream.readexactly(size)
                rtt_us.append(int((perf() - t0) * 1e6))
                next_t += interval
                if next_t < perf():  # fell behind: the missed sends are not made up
                    counts["late"] += 1
                    next_t = perf()
        except TimeoutError:
            counts["timeouts"] += 1
        except Exception:
            counts["errors"] += 1

    await asyncio.gather(*(run(i, c, s) for i, (c, s) in enumerate(pairs)))
    await asyncio.sleep(0.3)  # datagram echoes still in flight
    print(json.dumps({"rtt_us": rtt_us, "dg_us": dg_us, **counts}), flush=True)
    with contextlib.suppress(Exception):
        async with asyncio.timeout(10):
            await asyncio.gather(*(c.close() for c, _s in pairs), return_exceptions=True)


# --------------------------------------------------------------------------- workers


async def workers(ctx: Any) -> dict[str, Any]:
    """Sessions/s and messages/s against 1 and 2 server processes sharing one port
    (`ServerApp.run(workers=W)`; raw: W aioquic servers bound with SO_REUSEPORT)."""
    p, env = ctx.params, ctx.env
    out: dict[str, Any] = {}
    for w in p["worker_counts"]:
        port = free_udp_port()
        servers = []
        try:
            if env.impl == "ours":
                servers.append(
                    await asyncio.to_thread(env.start_server, "--app-workers", str(w), port=port)
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
        out.update({f"w{w}_{k}": v for k, v in res.items()})
    if all(f"w{w}_sessions_per_s" in out for w in (1, 2)):
        for key in ("sessions_per_s", "msgs_per_s"):
            one = out[f"w1_{key}"]
            out[f"{key}_scale"] = round(out[f"w2_{key}"] / one, 2) if one else None
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


# --------------------------------------------------------------------------- lossy path


async def lossy(ctx: Any) -> dict[str, Any]:
    """Upload through a userspace relay (tests/integration/udp_relay.py) that drops the
    given percentage of datagrams each way and delays each by half the RTT; the server
    returns the SHA-256 of what it received, which must match."""
    p = ctx.params
    size, rtt_ms = p["lossy_size"], p["lossy_rtt_ms"]
    payload = random.Random(18).randbytes(size)
    digest = hashlib.sha256(payload).hexdigest()
    out: dict[str, Any] = {}
    for loss in p["loss_pcts"]:
        listen = free_udp_port()
        relay = await Child.start(
            [
                sys.executable, str(RELAY), "--listen", str(listen), "--target", str(ctx.port),
                "--delay", str(rtt_ms / 2), "--loss", str(loss), "--seed", "18",
            ]
        )  # fmt: skip
        try:
            await relay.line(10)
            dialer = ctx.dialer(listen)
            try:
                conn = await dialer.connect("/op")
                s = await conn.stream(b"H")
                t0 = perf()
                await s.write(payload, end_stream=True)
                got = (await s.read_all()).decode()
                el = perf() - t0
                await conn.close()
            finally:
                await dialer.aclose()
            if got != digest:
                raise RuntimeError(f"loss {loss}%: SHA-256 mismatch ({got!r})")
        finally:
            relay.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(Exception):
                counts = json.loads(await relay.line(5))
                out[f"loss{loss:g}_dropped"] = counts.get("dropped")
            await relay.stop(5)
        out[f"loss{loss:g}_MiBps"] = round(size / (1024 * 1024) / el, 3)
        out[f"loss{loss:g}_s"] = round(el, 2)
    out["sha256_ok"] = 1
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
