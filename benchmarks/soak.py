"""Soak: a default server in a child process under churn, resets, loss and vanishing clients.

  python -m benchmarks.soak --minutes 10          the soak; JSON lines on stdout
  python -m benchmarks.soak --smoke               a few seconds; exits 1 if nothing got through
  python -m benchmarks.soak --minutes 10 --out F  also append the lines to F

Lanes run at once against one `WebTransportServer` with default settings
(`tests/integration/crowd.py`'s `ServerProcess`):

- churn: `--churners` clients in a loop: connect, open a session, echo 16 KiB on a
  stream and one datagram, close;
- resets: one session opening streams, writing 32 KiB and resetting them or
  stopping reading, with an echo every 20 streams to check it still works;
- lossy: one client through `tests/integration/udp_relay.py` (3 % loss, 5-15 ms
  delay, 5 % reordered, 1 % duplicated) churning sessions with 64 KiB echoes;
- vanishing: every `--vanish-every` seconds a hand-run client (real aioquic)
  opens a session, echoes once and goes silent without a close or an ACK.

Every `--interval` seconds one line: server RSS, connections and sessions open
(the managers' `get_stats()`), sessions the server admitted, and per-lane
successes and failures. After the lanes stop, the server is watched for up to
`--drain` seconds (default: idle timeout + 10 s) until it holds nothing. The
last line (``"final": true``) adds the RSS drift since the first sample after
warm-up, the relay's counts and the commonest failures. Every line carries the
git revision. This is a benchmark scenario, not a test: read the figures, do
not time-box them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import ssl
import sys
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from tests.integration.crowd import RawClient, ServerProcess, close_all, crowd_hosts

from pywebtransport import ClientConfig, ServerConfig, WebTransportClient, WebTransportSession
from pywebtransport.shared.exceptions import WebTransportError

from .common import free_udp_port, git_info, machine_info, make_cert

ROOT = Path(__file__).resolve().parent.parent
RELAY = ROOT / "tests" / "integration" / "udp_relay.py"
MIB = 1024 * 1024
FAILURES = (WebTransportError, TimeoutError, OSError, AssertionError)


def git_revision() -> str:
    """Short commit of the checkout, with ``-dirty`` when its code (src/, benchmarks/) differs
    from it; results written by earlier runs do not count."""
    info = git_info()
    if info["rev"] is None:
        return "unknown"
    return str(info["rev"])[:7] + ("-dirty" if info["dirty"] else "")


class Soak:
    """The lanes, their counters and the sampler."""

    def __init__(self, args: argparse.Namespace, out: TextIO | None) -> None:
        self.args = args
        self.out = out
        self.rev = git_revision()
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.stop = asyncio.Event()
        self.vanished: list[tuple[float, RawClient]] = []
        self.start = 0.0

    def emit(self, line: dict[str, Any]) -> None:
        text = json.dumps({"scenario": "soak", "rev": self.rev, **line})
        print(text, flush=True)
        if self.out is not None:
            self.out.write(text + "\n")
            self.out.flush()

    def failed(self, lane: str, exc: BaseException) -> None:
        self.counts[f"{lane}_failed"] += 1
        self.errors[f"{lane}: {type(exc).__name__}: {str(exc)[:80]}"] += 1

    async def pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    # ------------------------------------------------------------------ lanes

    async def churn(self, url: str, config: ClientConfig, lane: str, size: int) -> None:
        payload = os.urandom(size)
        while not self.stop.is_set():
            try:
                async with WebTransportClient(config) as client:
                    session = await asyncio.wait_for(client.connect(url), 20)
                    stream = await session.create_bidirectional_stream()
                    await stream.write(payload, end_stream=True)
                    if await asyncio.wait_for(stream.read_all(), 20) != payload:
                        raise AssertionError("echo differs")
                    await session.send_datagram(b"soak")
                    with contextlib.suppress(TimeoutError):
                        await session.receive_datagram(timeout=1.0)
                    await session.close()
                self.counts[f"{lane}_ok"] += 1
            except FAILURES as exc:
                self.failed(lane, exc)
                await self.pause(0.5)

    async def resets(self, url: str, config: ClientConfig) -> None:
        chunk = os.urandom(32 * 1024)
        while not self.stop.is_set():
            try:
                async with WebTransportClient(config) as client:
                    session = await asyncio.wait_for(client.connect(url), 20)
                    await self._reset_streams(session, chunk)
                    await session.close()
            except FAILURES as exc:
                self.failed("resets", exc)
                await self.pause(0.5)

    async def _reset_streams(self, session: WebTransportSession, chunk: bytes) -> None:
        index = 0
        while not self.stop.is_set():
            index += 1
            stream = await session.create_bidirectional_stream()
            if index % 20 == 0:
                await stream.write(b"alive", end_stream=True)
                if await asyncio.wait_for(stream.read_all(), 20) != b"alive":
                    raise AssertionError("echo differs after resets")
                self.counts["resets_checked"] += 1
                continue
            await stream.write(chunk)
            if index % 2:
                await stream.reset(error_code=7)
            else:
                await stream.stop_receiving(error_code=9)
                await stream.reset(error_code=9)
            self.counts["resets_ok"] += 1
            await self.pause(0.05)

    async def vanishing(self, server: ServerProcess, idle_timeout: float) -> None:
        loop = asyncio.get_running_loop()
        hosts = crowd_hosts()
        index = 0
        while not self.stop.is_set():
            client = RawClient(server.address, host=hosts[index % len(hosts)])
            index += 1
            self.vanished.append((loop.time(), client))
            status = await client.open_session("/echo", timeout=10.0)
            if status == 200 and await client.echo(timeout=10.0):
                self.counts["vanishing_ok"] += 1
            else:
                code = client.terminated.error_code if client.terminated else None
                self.errors[f"vanishing: status {status}, close code {code}"] += 1
                self.counts["vanishing_failed"] += 1
            client.abandon()
            # The server has long given up on these: free the sockets.
            while self.vanished and loop.time() - self.vanished[0][0] > idle_timeout + 10:
                self.vanished.pop(0)[1].close()
            await self.pause(self.args.vanish_every)

    async def sampler(self, server: ServerProcess) -> list[dict[str, Any]]:
        samples: list[dict[str, Any]] = []
        while not self.stop.is_set():
            samples.append(await self.sample(server))
            await self.pause(self.args.interval)
        return samples

    async def sample(self, server: ServerProcess, **extra: Any) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        stats = await server.stats()
        line = {
            "t": round(loop.time() - self.start, 1),
            "server_rss_mib": round(stats["rss"] / MIB, 2),
            "connections": stats["connections"]["current_count"],
            "sessions": stats["sessions"]["current_count"],
            "admitted": stats["admitted"],
            "connections_created": stats["connections"]["total_created"],
            **dict(sorted(self.counts.items())),
            "vanished_held_sockets": len(self.vanished),
            **extra,
        }
        self.emit(line)
        return line


async def start_relay(target: int) -> tuple[asyncio.subprocess.Process, int]:
    port = free_udp_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(RELAY),
        "--listen",
        str(port),
        "--target",
        str(target),
        "--delay",
        "5-15",
        "--loss",
        "3",
        "--reorder",
        "5",
        "--dup",
        "1",
        "--seed",
        "1",
        stdout=asyncio.subprocess.PIPE,
        # Its report has a byte count per client port, and this lane churns ports:
        # the one JSON line outgrows asyncio's default 64 KiB line limit.
        limit=64 * 1024 * 1024,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 15)
    if not line.startswith(b"READY"):
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"relay not ready: {line!r}")
    return proc, port


async def stop_relay(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    if proc.returncode is not None:
        return {}
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 5)
        await asyncio.wait_for(proc.wait(), 5)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return {}
    with contextlib.suppress(ValueError):
        counts: dict[str, Any] = json.loads(line)
        return counts
    return {}


async def run(args: argparse.Namespace, out: TextIO | None) -> int:
    certfile, keyfile = make_cert()
    idle_timeout = ServerConfig(certfile=certfile, keyfile=keyfile).connection_idle_timeout
    config = ClientConfig(ca_certs=certfile, verify_mode=ssl.CERT_REQUIRED, connect_timeout=10.0)
    soak = Soak(args, out)
    loop = asyncio.get_running_loop()
    server = await ServerProcess.start(certfile, keyfile)
    relay: asyncio.subprocess.Process | None = None
    try:
        relay, relay_port = await start_relay(server.port)
        soak.emit(
            {
                "event": "start",
                "minutes": args.minutes,
                "churners": args.churners,
                "idle_timeout": idle_timeout,
                "machine": machine_info(),
            }
        )
        soak.start = loop.time()
        lanes = [soak.churn(server.url(), config, "churn", 16 * 1024) for _ in range(args.churners)]
        lanes.append(soak.resets(server.url(), config))
        lanes.append(soak.churn(f"https://127.0.0.1:{relay_port}/echo", config, "lossy", 65536))
        lanes.append(soak.vanishing(server, idle_timeout))
        tasks = [asyncio.create_task(lane) for lane in lanes]
        sampler = asyncio.create_task(soak.sampler(server))
        await asyncio.sleep(args.minutes * 60)
        soak.stop.set()
        samples = await sampler
        await asyncio.wait(tasks, timeout=30)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

        drain_end = loop.time() + (args.drain if args.drain is not None else idle_timeout + 10)
        last = await soak.sample(server, phase="drain")
        while loop.time() < drain_end and (last["connections"] or last["sessions"]):
            await asyncio.sleep(min(args.interval, max(0.0, drain_end - loop.time())))
            last = await soak.sample(server, phase="drain")

        warm = next((s for s in samples if s["t"] >= args.warmup), samples[-1] if samples else last)
        relay_counts = await stop_relay(relay)
        relay = None
        soak.emit(
            {
                "final": True,
                **last,
                "rss_drift_mib": round(last["server_rss_mib"] - warm["server_rss_mib"], 2),
                "rss_peak_mib": max(s["server_rss_mib"] for s in [*samples, last]),
                "connections_peak": max(s["connections"] for s in [*samples, last]),
                "sessions_peak": max(s["sessions"] for s in [*samples, last]),
                "relay": relay_counts,
                "failures": dict(soak.errors.most_common(8)),
            }
        )
        if args.smoke and not (last["admitted"] and soak.counts["churn_ok"]):
            print("soak smoke: no session got through", file=sys.stderr)
            return 1
        return 0
    finally:
        close_all(client for _, client in soak.vanished)
        if relay is not None:
            await stop_relay(relay)
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--smoke", action="store_true", help="8 seconds, samples every second")
    parser.add_argument("--churners", type=int, default=4, help="parallel churning clients")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before the baseline")
    parser.add_argument("--vanish-every", type=float, default=2.0, help="seconds between vanishers")
    parser.add_argument("--drain", type=float, default=None, help="seconds to watch after")
    parser.add_argument("--out", type=Path, default=None, help="also append the lines here")
    args = parser.parse_args()
    if args.smoke:
        args.minutes, args.interval, args.warmup = 8 / 60, 1.0, 2.0
        args.churners, args.vanish_every = 2, 0.5
        args.drain = 0.0 if args.drain is None else args.drain
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(args.out.open("a")) if args.out else None
        code = asyncio.run(run(args, out))
    sys.exit(code)


if __name__ == "__main__":
    main()
