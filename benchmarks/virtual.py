"""The lossy paths on a virtual clock: what each implementation decides, without CPU time.

    python -m benchmarks.virtual [--seeds 20] [--jobs 2] [--cases "20ms burst 4"]
        [--out benchmarks/results/virtual.jsonl] [--from FILE]

The uploads of `benchmarks/lossy.py` (4 MiB, byte-exact through the server's SHA-256),
with the same path model (`Link` of tests/integration/udp_relay.py, one seeded random
generator for both directions, as in the relay), the same clients and servers
(`benchmarks/ours.py`, `benchmarks/raw.py`) and the same settings, run in one process on
the deterministic harness's `VirtualLoop` (tests/deterministic/simnet.py) instead of
over sockets and a relay process.

The virtual clock moves only when every endpoint is idle: processing takes no time, and
a seed gives the same run every time on any machine under any load. What differs
between two implementations here is only what they decide (pacing, ACKs, loss recovery,
flow control, scheduling), never how fast they run or how their event loop's clock
ticks; the real-clock runs (`make bench-lossy`) measure both. A seed is one loss
pattern, paired across implementations at its start (the patterns then diverge as the
implementations send different packets). Raw aioquic's client here is benchmarks/raw.py's
own protocol, connected without aioquic's `connect()` (which binds a real socket).
Printed: medians over the seeds, each ratio of medians, and in how many seeds ours was
faster.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from aioquic.asyncio.server import QuicServer
from aioquic.quic.connection import QuicConnection

from . import load, ours, raw
from .common import SETTINGS, git_info, make_cert
from .lossy import CASES

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT))

from tests.deterministic.simnet import VirtualLoop, run_virtual  # noqa: E402
from udp_relay import Link  # type: ignore[import-not-found]  # noqa: E402

PORT = 4433
RUNS = (("ours", "cubic"), ("ours", "bbr"), ("rawh3", "cubic"), ("rawh3t", "cubic"))
POINTS = [
    (case, loss)
    for case, (scenario, params) in CASES.items()
    if scenario == "lossy"
    for loss in params["loss_pcts"]
]


def _install_path(loop: VirtualLoop, seed: int, params: dict[str, Any], loss: float) -> Any:
    """The relay's path model on the virtual network; returns its two links."""
    half = params["lossy_rtt_ms"] / 2
    rng = random.Random(seed)
    common = {
        "loss": loss,
        "burst": float(params.get("lossy_burst", 1)),
        "reorder": float(params.get("lossy_reorder", 0)),
    }
    up_ms, down_ms = params.get("lossy_up_ms", half), params.get("lossy_down_ms", half)
    up = Link(rng, delay=(up_ms / 1000, up_ms / 1000), **common)
    down = Link(rng, delay=(down_ms / 1000, down_ms / 1000), **common)

    def path(data: bytes, source: Any, destination: Any, now: float) -> list[float]:
        link = up if destination[1] == PORT else down
        return link.admit(now, len(data))  # type: ignore[no-any-return]

    loop.network.path = path
    return up, down


async def _raw_conn(impl: str, settings: dict[str, Any]) -> raw.Conn:
    loop = asyncio.get_running_loop()
    cls = type("Cli", (raw.ClientProtocol,), {"impl": impl, "settings": settings})
    quic = QuicConnection(configuration=raw.quic_config(impl, True, settings))
    transport, proto = await loop.create_datagram_endpoint(
        lambda: cls(quic), local_addr=("127.0.0.1", 0)
    )
    stack = contextlib.AsyncExitStack()
    stack.callback(transport.close)
    client: Any = proto
    client.connect(("127.0.0.1", PORT))
    await client.wait_connected()
    await client.open_session(f"127.0.0.1:{PORT}", "/op")
    return raw.Conn(client, stack)


async def _raw_server(impl: str, cert: str, key: str, settings: dict[str, Any]) -> Any:
    proto = type("Srv", (raw.ServerProtocol,), {"impl": impl, "settings": settings})
    cfg = raw.quic_config(impl, False, settings)
    cfg.load_cert_chain(cert, key)
    server_cls = raw.TunedServer if impl in raw.TUNED else QuicServer
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: server_cls(configuration=cfg, create_protocol=proto),
        local_addr=("127.0.0.1", PORT),
    )
    return transport


async def _upload(
    loop: VirtualLoop, impl: str, cc: str, case: str, loss: float, seed: int, size: int
) -> dict[str, Any]:
    params = CASES[case][1]
    settings = {**SETTINGS, "congestion_control_algorithm": cc}
    cert, key = make_cert()
    up, down = _install_path(loop, seed, params, loss)
    if impl == "ours":
        server = ours.WebTransportServer(
            ours.server_config(cert, key, PORT, settings), handler=ours.handler
        )
        await server.listen()
        dialer = ours.Dialer(PORT, settings)
        conn: Any = await dialer.connect("/op")
        close_server: Any = server.close
    else:
        transport = await _raw_server(impl, cert, key, settings)
        conn = await _raw_conn(impl, settings)

        async def close_server() -> None:
            transport.close()

    t0 = loop.time()
    await load._upload(conn, size, 18)  # the server's SHA-256 must match
    elapsed = loop.time() - t0
    await conn.close()
    await close_server()
    return {
        "MiBps": round(size / (1024 * 1024) / elapsed, 3),
        "s": round(elapsed, 3),
        "dropped": up.counts["dropped"] + down.counts["dropped"],
    }


def run_one(
    impl: str, cc: str, case: str, loss: float, seed: int, size: int | None = None
) -> dict[str, Any]:
    """One upload on a fresh virtual loop.

    Args:
        impl: `ours`, `rawh3` (stock) or `rawh3t` (tuned).
        cc: The congestion control.
        case: A lossy case of `benchmarks.lossy.CASES`.
        loss: Its loss percentage.
        seed: The path's random seed.
        size: Bytes to upload (default: the case's).

    Returns:
        The record: `results` (MiBps, virtual seconds, datagrams dropped) when `ok`,
        else `error`.
    """
    nbytes = size or CASES[case][1]["lossy_size"]
    record: dict[str, Any] = {"impl": impl, "cc": cc, "case": case, "loss": loss, "seed": seed}
    try:
        record["results"] = run_virtual(
            lambda loop: _upload(loop, impl, cc, case, loss, seed, nbytes)
        )
        record["ok"] = True
    except Exception as exc:  # a stalled or failed upload is a result too
        record.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:300])
    return record


def _one(job: tuple[str, str, str, float, int]) -> dict[str, Any]:
    return run_one(*job)


def measure(
    seeds: int, jobs: int, out: Path, cases: list[str] | None, runs: tuple[tuple[str, str], ...]
) -> list[dict[str, Any]]:
    points = [(case, loss) for case, loss in POINTS if not cases or case in cases]
    work = [
        (impl, cc, case, loss, seed)
        for seed in range(seeds)
        for case, loss in points
        for impl, cc in runs
    ]
    git = git_info()
    records = []
    with out.open("w") as sink, ProcessPoolExecutor(jobs) as pool:
        for record in pool.map(_one, work):
            record["git"] = git
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            records.append(record)
            print(record["case"], record["loss"], record["impl"], record["cc"], record["seed"],
                  record.get("results") or record.get("error"), flush=True)  # fmt: skip
    return records


def summary(records: list[dict[str, Any]]) -> str:
    runs: dict[tuple[str, float], dict[tuple[str, str], dict[int, float]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    failed: dict[tuple[str, float, str, str], int] = defaultdict(int)
    for r in records:
        point = (r["case"], r["loss"])
        if r.get("ok"):
            runs[point][(r["impl"], r["cc"])][r["seed"]] = r["results"]["MiBps"]
        else:
            failed[(*point, r["impl"], r["cc"])] += 1
    seeds = len({r["seed"] for r in records})
    lines = [
        f"Virtual clock, {seeds} seeds; uploads, MiB/s: median (min-max); wins: seeds in which"
        " ours with CUBIC was faster",
        "",
        "| path | loss | raw stock | raw tuned | ours CUBIC | ours BBR | CUBIC / stock"
        " | CUBIC / tuned | BBR / stock | CUBIC wins vs stock | vs tuned | failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for point in sorted(runs):
        got = runs[point]

        def cell(key: tuple[str, str], got: Any = got) -> tuple[float, str]:
            values = list(got.get(key, {}).values())
            if not values:
                return 0.0, "-"
            median = statistics.median(values)
            return median, f"{median:.2f} ({min(values):.2f}-{max(values):.2f})"

        def ratio(a: float, b: float) -> str:
            return f"{a / b:.2f}x" if a and b else "-"

        def wins(other: tuple[str, str], got: Any = got) -> str:
            mine, theirs = got.get(("ours", "cubic"), {}), got.get(other, {})
            both = [seed for seed in mine if seed in theirs]
            won = sum(mine[seed] > theirs[seed] for seed in both)
            return f"{won} of {len(both)}" if both else "-"

        stock, tuned = cell(("rawh3", "cubic")), cell(("rawh3t", "cubic"))
        cubic, bbr = cell(("ours", "cubic")), cell(("ours", "bbr"))
        bad = sum(n for key, n in failed.items() if key[:2] == point)
        lines.append(
            f"| {point[0]} | {point[1]:g} % | {stock[1]} | {tuned[1]} | {cubic[1]} | {bbr[1]} | "
            f"{ratio(cubic[0], stock[0])} | {ratio(cubic[0], tuned[0])} | "
            f"{ratio(bbr[0], stock[0])} | {wins(('rawh3', 'cubic'))} | "
            f"{wins(('rawh3t', 'cubic'))} | {bad} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument(
        "--jobs", type=int, default=2, help="processes (the results do not depend on it)"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "virtual.jsonl")
    ap.add_argument("--from", dest="source", type=Path, help="summarise a saved results file")
    ap.add_argument(
        "--cases", help=f"comma-separated cases (default all: {', '.join(dict(POINTS))})"
    )
    ap.add_argument("--runs", help="comma-separated impl:cc pairs (default all), e.g. ours:cubic")
    args = ap.parse_args()
    cases = args.cases.split(",") if args.cases else None
    unknown = [case for case in cases or () if case not in dict(POINTS)]
    runs = RUNS
    if args.runs:
        runs = tuple(tuple(pair.split(":", 1)) for pair in args.runs.split(","))  # type: ignore[misc]
        unknown += [":".join(run) for run in runs if run not in RUNS]
    if unknown:
        ap.error(f"unknown {', '.join(unknown)}; cases: {', '.join(dict(POINTS))}; runs: "
                 f"{', '.join(':'.join(run) for run in RUNS)}")  # fmt: skip
    if args.source:
        records = [json.loads(line) for line in args.source.read_text().splitlines() if line]
    else:
        records = measure(args.seeds, args.jobs, args.out, cases, runs)
    print()
    print(summary(records))


if __name__ == "__main__":
    main()
