"""Profile ours vs raw H3: ``python -m benchmarks.profile [--scenario upload] [--size BYTES]``.

``--scenario multiplex --streams 1000 --chunk 65536`` profiles the multiplex echo instead.

Runs the scenario once per implementation with cProfile in both processes and prints, for
each side, the functions with the most own time (tottime) and their call counts per MiB.
Profiles are kept in ``benchmarks/results/profile/<impl>-<scenario>/{client,server}.prof``.
"""

from __future__ import annotations

import argparse
import io
import json
import pstats
import subprocess
import sys
from pathlib import Path

from .common import MiB

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "results" / "profile"


def top(path: Path, mib: float, n: int) -> str:
    st = pstats.Stats(str(path), stream=io.StringIO())
    rows = []
    total = 0.0
    for (file, line, fn), (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        total += tt
        short = f"{Path(file).parent.name}/{Path(file).name}:{line}({fn})" if line else fn
        rows.append((tt, ct, nc, short))
    rows.sort(reverse=True)
    out = [f"  total own time {total:.2f} s = {total * 1000 / mib:.1f} ms/MiB"]
    out.append(f"  {'tottime s':>9} {'cumtime s':>9} {'ncalls':>9} {'calls/MiB':>9}  function")
    for tt, ct, nc, name in rows[:n]:
        out.append(f"  {tt:9.3f} {ct:9.3f} {nc:9d} {nc / mib:9.0f}  {name}")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scenario", default="upload", choices=["upload", "download", "multiplex"])
    ap.add_argument("--size", type=int, default=16 * MiB)
    ap.add_argument("--streams", type=int, default=1000, help="multiplex: concurrent streams")
    ap.add_argument("--chunk", type=int, default=64 * 1024, help="multiplex: bytes per stream")
    ap.add_argument("--impl", action="append", help="default: ours and rawh3")
    ap.add_argument("--loop", default="uvloop")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--set", default="{}", help="settings overrides (JSON)")
    args = ap.parse_args()
    for impl in args.impl or ["ours", "rawh3"]:
        d = OUT / f"{impl}-{args.scenario}"
        d.mkdir(parents=True, exist_ok=True)
        params: dict[str, int] = {"size": args.size, "reps": 1}
        mib = args.size * 1.125 / MiB  # the run moves a size/8 warm-up plus the measured transfer
        if args.scenario == "multiplex":
            params = {"streams": args.streams, "chunk": args.chunk, "mux_reps": 1}
            params["mux_timeout"] = 300
            mib = args.streams * args.chunk / MiB
        argv = [sys.executable, "-m", "benchmarks.worker", "--impl", impl]
        argv += ["--scenario", args.scenario, "--loop", args.loop, "--params", json.dumps(params)]
        argv += ["--profile", str(d), "--set", args.set, "--timeout", "300"]
        res = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
        rec = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"== {impl} {args.scenario} {mib:.0f} MiB, cProfile: {rec.get('results')}")
        for side in ("client", "server"):
            p = d / f"{side}.prof"
            if p.exists():
                print(f"-- {side}")
                print(top(p, mib, args.top))


if __name__ == "__main__":
    main()
