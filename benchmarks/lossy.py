"""Lossy paths, congestion control by congestion control: `make bench-lossy`.

    python -m benchmarks.lossy [--rounds 3] [--out benchmarks/results/lossy.jsonl]

Each case uploads 4 MiB through the userspace relay of the `lossy` scenario
(tests/integration/udp_relay.py: seeded random loss each way, half the RTT of
delay each way) and checks the SHA-256 the server returns. Ours runs with
CUBIC and with BBR; raw aioquic, stock and tuned, runs with CUBIC (aioquic has
no BBR) in the same rounds, interleaved. Printed: the median MiB/s of each,
the spread over the rounds, and ours / raw as ratios. Records (with the git
revision) go to the results file, which the figures in
docs/guides/networks.md come from.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
CASES: dict[str, dict[str, Any]] = {
    "20ms": {"loss_pcts": [0, 1, 5], "lossy_size": 4 * MiB, "lossy_rtt_ms": 20},
    "100ms": {"loss_pcts": [1], "lossy_size": 4 * MiB, "lossy_rtt_ms": 100},
}
RUNS = (("ours", "cubic"), ("ours", "bbr"), ("rawh3", "cubic"), ("rawh3t", "cubic"))


def _git() -> dict[str, Any]:
    def run(*argv: str) -> str:
        return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True).stdout.strip()

    dirty = bool(run("git", "status", "--short", "src"))
    return {"rev": run("git", "rev-parse", "HEAD"), "dirty": dirty}


def measure(rounds: int, out: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    git = _git()
    with out.open("w") as sink:
        for round_ in range(rounds):
            for case, params in CASES.items():
                for impl, cc in RUNS:
                    argv = [
                        sys.executable, "-m", "benchmarks.worker", "--impl", impl,
                        "--scenario", "lossy", "--loop", "uvloop", "--timeout", "300",
                        "--params", json.dumps(params),
                        "--set", json.dumps({"congestion_control_algorithm": cc}),
                    ]  # fmt: skip
                    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
                    got = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
                    if not got:
                        got = [{"impl": impl, "ok": False, "error": done.stderr[-500:]}]
                    for record in got:
                        record.update(case=case, cc=cc, round=round_, git=git)
                        sink.write(json.dumps(record) + "\n")
                        sink.flush()
                        records.append(record)
                        print(case, impl, cc, round_, record.get("results"), flush=True)
    return records


def summary(records: list[dict[str, Any]]) -> str:
    figures: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    for record in records:
        if not record.get("ok"):
            continue
        for key, value in record.get("results", {}).items():
            if key.endswith("_MiBps"):
                figures[(record["case"], key, record["impl"], record["cc"])].append(value)
    lines = [
        "| path | loss | raw stock | raw tuned | ours CUBIC | ours BBR | BBR / stock | BBR / tuned"
        " | CUBIC / stock | CUBIC / tuned |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case, key in sorted({(c, k) for c, k, _, _ in figures}, key=lambda ck: (ck[0], ck[1])):

        def cell(impl: str, cc: str, case: str = case, key: str = key) -> tuple[float, str]:
            values = figures.get((case, key, impl, cc), [])
            if not values:
                return 0.0, "-"
            median = statistics.median(values)
            return median, f"{median:.2f} ({min(values):.2f}-{max(values):.2f})"

        stock, stock_text = cell("rawh3", "cubic")
        tuned, tuned_text = cell("rawh3t", "cubic")
        cubic, cubic_text = cell("ours", "cubic")
        bbr, bbr_text = cell("ours", "bbr")
        loss = key.removeprefix("loss").removesuffix("_MiBps")
        pairs = ((bbr, stock), (bbr, tuned), (cubic, stock), (cubic, tuned))
        ratios = " | ".join(f"{a / b:.2f}x" if a and b else "-" for a, b in pairs)
        lines.append(
            f"| {case} | {loss} % | {stock_text} | {tuned_text} | {cubic_text} | {bbr_text} | "
            f"{ratios} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lossy.jsonl")
    ap.add_argument("--from", dest="source", type=Path, help="summarise a saved results file")
    args = ap.parse_args()
    if args.source is not None:
        records = [json.loads(line) for line in args.source.read_text().splitlines() if line]
    else:
        records = measure(args.rounds, args.out)
    revisions = sorted({(r["git"]["rev"][:7], r["git"]["dirty"]) for r in records if "git" in r})
    print(f"\nMiB/s, median (min-max) of {args.rounds} rounds; revision(s) {revisions}")
    print(summary(records))


if __name__ == "__main__":
    main()
