"""Where the close soak's server memory goes: glibc's heap, in use and free, per 1,000 cycles.

    python -m benchmarks.soak_native [--impl ours|rawh3] [--cycles 5000] [--every 1000]

A server (ours, or stock raw aioquic H3: ``benchmarks.raw``) runs in a child process on
uvloop with the suite's settings; this process connects and closes a fresh client
(``WebTransportClient``, the same for both servers) ``--cycles`` times, one after another,
and at cycle 100 and every ``--every`` cycles asks the server for its memory:

- ``rss``: the process's resident set (``/proc/self/status``);
- ``in_use``: bytes glibc's malloc has handed out and not had back (``mallinfo2``:
  ``uordblks`` + ``hblkhd``), which is what the Python objects, OpenSSL, pylsqpack and
  every other native library hold;
- ``free``: bytes glibc holds in its arenas for reuse (``fordblks``), which count in RSS
  but belong to nobody;
- ``heap``: all of malloc's arenas and large mappings (``arena`` + ``hblkhd``);
- ``py_mapped``, ``py_used``, ``py_arenas``: Python's small-object allocator, which maps
  its own arenas outside malloc's heap (``sys._debugmallocstats``): bytes mapped, bytes in
  live objects, arenas (a partly used arena cannot be given back).

At the end the server calls ``malloc_trim(0)`` and reports again: what RSS drops by is
free memory glibc kept, not memory anyone holds. Run it under ``MALLOC_ARENA_MAX=1`` (the
child inherits the environment) to see how much the number of arenas matters.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KiB = 1024


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _memory(libc: ctypes.CDLL) -> dict[str, int]:
    libc.mallinfo2.restype = _Mallinfo2
    info = libc.mallinfo2()
    status = Path("/proc/self/status").read_text()
    rss = int(status.split("VmRSS:")[1].split()[0])
    threads = int(status.split("Threads:")[1].split()[0])
    return {
        "rss": rss,
        "in_use": (info.uordblks + info.hblkhd) // KiB,
        "free": info.fordblks // KiB,
        "heap": (info.arena + info.hblkhd) // KiB,
        **_pymalloc(),
        "threads": threads,
    }


def _pymalloc() -> dict[str, int]:
    """Python's small-object allocator, whose arenas are mapped outside malloc's heap."""
    import tempfile

    with tempfile.TemporaryFile("w+") as sink:
        saved = os.dup(2)
        sys.stderr.flush()
        os.dup2(sink.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        text = sink.read()
    stats: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition("=")
        name, value = name.strip(), value.strip().replace(",", "")
        if name == "# arenas allocated current":
            stats["py_arenas"] = int(value)
        elif name.startswith("# bytes in allocated blocks"):
            stats["py_used"] = int(value) // KiB
        elif name == "Total" and "py_mapped" not in stats:  # the arenas' (the map's follows)
            stats["py_mapped"] = int(value) // KiB
    return stats


def serve(impl: str, port: int, cert: str, key: str) -> None:
    """The server child: reports its memory on SIGUSR1, trims and reports on SIGUSR2."""
    from .common import SETTINGS, run_loop

    libc = ctypes.CDLL("libc.so.6")

    def report(trim: bool) -> None:
        if trim:
            libc.malloc_trim(0)
        sys.stdout.write(json.dumps(_memory(libc)) + "\n")
        sys.stdout.flush()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, report, False)
        loop.add_signal_handler(signal.SIGUSR2, report, True)
        if impl == "ours":
            from .ours import serve_main

            await serve_main(port, cert, key, dict(SETTINGS))
        else:
            from .raw import serve_main as raw_serve

            await raw_serve(impl, port, cert, key, dict(SETTINGS))

    run_loop(main, "uvloop")


def soak(impl: str, cycles: int, every: int) -> list[dict[str, Any]]:
    from .common import make_cert

    cert, key = make_cert()
    port = 20000 + os.getpid() % 20000
    argv = [sys.executable, "-m", "benchmarks.soak_native", "--serve", impl]
    argv += ["--port", str(port), "--cert", cert, "--key", key]
    server = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    try:
        assert server.stdout.readline().startswith("READY")
        return asyncio.run(_cycles(server, port, cycles, every))
    finally:
        server.terminate()
        server.wait(10)


async def _cycles(
    server: subprocess.Popen[str], port: int, cycles: int, every: int
) -> list[dict[str, Any]]:
    from pywebtransport import WebTransportClient

    from .common import SETTINGS
    from .ours import client_config

    config = client_config(dict(SETTINGS))
    marks = {100, *range(every, cycles + 1, every)}
    rows: list[dict[str, Any]] = []

    async def sample(cycle: int | str, sig: int) -> None:
        await asyncio.sleep(0.5)  # the last connections' closing periods end
        server.send_signal(sig)
        line = await asyncio.to_thread(server.stdout.readline)  # type: ignore[union-attr]
        rows.append({"cycle": cycle, **json.loads(line)})
        print(json.dumps(rows[-1]), flush=True)

    started = time.perf_counter()
    for cycle in range(1, cycles + 1):
        async with WebTransportClient(config) as client:
            await client.connect(f"https://127.0.0.1:{port}/echo")
        if cycle in marks:
            await sample(cycle, signal.SIGUSR1)
    elapsed = time.perf_counter() - started
    await sample("trimmed", signal.SIGUSR2)
    print(f"# {cycles} cycles in {elapsed:.0f} s", flush=True)
    return rows


def _slopes(rows: list[dict[str, Any]]) -> str:
    counted = [row for row in rows if isinstance(row["cycle"], int)]
    first, last = counted[0], counted[-1]
    span = (last["cycle"] - first["cycle"]) / 1000
    trimmed = rows[-1]
    parts = [
        f"{name} {(last[name] - first[name]) / span:+.0f}"
        for name in ("rss", "in_use", "free", "heap", "py_mapped", "py_used")
    ]
    return (
        f"KiB per 1,000 cycles from cycle {first['cycle']} to {last['cycle']}: "
        + ", ".join(parts)
        + f"; malloc_trim(0) at the end took RSS from {last['rss']} to {trimmed['rss']} KiB"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impl", default="ours", choices=("ours", "rawh3"))
    ap.add_argument("--cycles", type=int, default=5000)
    ap.add_argument("--every", type=int, default=1000)
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--cert", help=argparse.SUPPRESS)
    ap.add_argument("--key", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.cert, args.key)
        return
    rev = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    arenas = os.environ.get("MALLOC_ARENA_MAX", "default")
    print(f"# impl {args.impl}, revision {rev}, uvloop, MALLOC_ARENA_MAX={arenas}", flush=True)
    rows = soak(args.impl, args.cycles, args.every)
    print("# " + _slopes(rows))


if __name__ == "__main__":
    main()
