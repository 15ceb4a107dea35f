"""Real paths, congestion control by congestion control: `make bench-lossy`.

    python -m benchmarks.lossy [--rounds 3] [--out benchmarks/results/lossy.jsonl]
        [--cases "20ms burst 4,100ms"] [--runs ours:cubic,rawh3:cubic,rawh3t:cubic]
        [--loop asyncio] [--variants transmit_now]

Every case runs through the path model of tests/integration/udp_relay.py (seeded):

- lossy: 4 MiB uploads at 20 ms RTT with 0, 1, 5 % random loss each way; 2 % in bursts
  of 4 datagrams on average; 1 % reordered (held 5-15 ms, so that dozens of later
  datagrams overtake each) without loss; 100 ms with 1 %; and a one-way delay that differs by
  direction (5 ms up, 45 ms down) with 1 %;
- bottleneck: an 8 MiB upload through 20 Mbit/s with a 64-datagram drop-tail queue at
  20 ms, with 64 B echo round trips on the same connection, idle and during it;
- shared: two connections upload through that bottleneck for 12 s, BBR with BBR, BBR
  with CUBIC, CUBIC with CUBIC: each flow's share (counted at the bottleneck) and
  Jain's index.

Every upload is checked byte-exact (the server returns its SHA-256). Ours runs with
CUBIC and with BBR; raw aioquic, stock and tuned, runs with CUBIC (aioquic has no BBR)
in the same rounds, interleaved; the shared cases are ours only. Printed: medians, the
spread over the rounds, and ratios. Records (with the git revision) go to the results
file, which the figures in docs/guides/networks.md come from.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from .common import git_info
from .variants import ENV as VARIANT_ENV
from .variants import VARIANTS

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
LOSSY = {"lossy_size": 4 * MiB}
BOTTLENECK = {"bn_mbps": 20, "bn_queue": 64, "bn_rtt_ms": 20}
# case -> (scenario, params)
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "20ms": ("lossy", {**LOSSY, "loss_pcts": [0, 1, 5], "lossy_rtt_ms": 20}),
    "20ms burst 4": ("lossy", {**LOSSY, "loss_pcts": [2], "lossy_rtt_ms": 20, "lossy_burst": 4}),
    "20ms reorder 1": (
        "lossy",
        {**LOSSY, "loss_pcts": [0], "lossy_rtt_ms": 20, "lossy_reorder": 1},
    ),
    "100ms": ("lossy", {**LOSSY, "loss_pcts": [1], "lossy_rtt_ms": 100}),
    "5ms up 45ms down": (
        "lossy",
        {**LOSSY, "loss_pcts": [1], "lossy_rtt_ms": 50, "lossy_up_ms": 5, "lossy_down_ms": 45},
    ),
    "bottleneck": ("bottleneck", {**BOTTLENECK, "bn_size": 8 * MiB}),
    **{
        f"shared {a}+{b}": ("shared", {**BOTTLENECK, "share_ccs": [a, b], "share_s": 12.0})
        for a, b in (("bbr", "bbr"), ("bbr", "cubic"), ("cubic", "cubic"))
    },
}
RUNS = (("ours", "cubic"), ("ours", "bbr"), ("rawh3", "cubic"), ("rawh3t", "cubic"))


def measure(
    rounds: int,
    out: Path,
    cases: list[str] | None = None,
    runs_wanted: list[tuple[str, str]] | None = None,
    loop: str = "uvloop",
    variants: list[str] | None = None,
) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    git = git_info()
    chosen = {case: CASES[case] for case in cases} if cases else CASES
    with out.open("w") as sink:
        for round_ in range(rounds):
            for case, (scenario, params) in chosen.items():
                runs: tuple[tuple[str, str], ...] = (
                    (("ours", "cubic"),) if scenario == "shared" else RUNS
                )
                if runs_wanted:
                    runs = tuple(run for run in runs if run in runs_wanted)
                # A variant (benchmarks/variants.py) runs as ours with CUBIC, labelled.
                labelled = [(impl, cc, impl) for impl, cc in runs]
                if scenario == "lossy":
                    labelled += [("ours", "cubic", f"ours+{name}") for name in variants or ()]
                for impl, cc, label in labelled:
                    variant = label.partition("+")[2]
                    env = {**os.environ, VARIANT_ENV: variant}
                    if variant:
                        env.update(VARIANTS[variant].environment)
                    argv = [
                        sys.executable, "-m", "benchmarks.worker", "--impl", impl,
                        "--scenario", scenario, "--loop", loop, "--timeout", "300",
                        "--params", json.dumps(params),
                        "--set", json.dumps({"congestion_control_algorithm": cc}),
                    ]  # fmt: skip
                    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env)
                    got = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
                    if not got:
                        got = [{"impl": impl, "ok": False, "error": done.stderr[-500:]}]
                    for record in got:
                        record.update(case=case, cc=cc, round=round_, git=git, impl=label)
                        if scenario == "shared":
                            record["cc"] = "+".join(params["share_ccs"])
                        sink.write(json.dumps(record) + "\n")
                        sink.flush()
                        records.append(record)
                        print(case, label, cc, round_, record.get("results"), flush=True)
    return records


def _figures(records: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], list[float]]:
    """(case, figure, impl, cc) -> the values over the rounds."""
    figures: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    for record in records:
        if not record.get("ok"):
            continue
        for key, value in record.get("results", {}).items():
            if isinstance(value, int | float):
                figures[(record["case"], key, record["impl"], record["cc"])].append(value)
    return figures


def _wins(records: list[dict[str, Any]], mine: str = "ours") -> dict[tuple[str, str], str]:
    """(case, figure) -> in how many rounds `mine` with CUBIC beat each other run."""
    rivals = [("rawh3", "stock"), ("rawh3t", "tuned")]
    if mine != "ours":
        rivals.insert(0, ("ours", "ours"))
    by_round: dict[tuple[str, str, Any], dict[str, float]] = defaultdict(dict)
    for record in records:
        if record.get("ok") and record.get("cc") == "cubic" and record.get("scenario") == "lossy":
            for key, value in record.get("results", {}).items():
                if key.endswith("MiBps"):
                    by_round[(record["case"], key, record["round"])][record["impl"]] = value
    out: dict[tuple[str, str], str] = {}
    for case, key in sorted({(case, key) for case, key, _ in by_round}):
        parts = []
        for impl, name in rivals:
            pairs = [
                got for (c, k, _), got in by_round.items()
                if (c, k) == (case, key) and mine in got and impl in got
            ]  # fmt: skip
            won = sum(got[mine] > got[impl] for got in pairs)
            parts.append(f"{won} of {len(pairs)} against {name}")
        out[(case, key)] = ", ".join(parts)
    return out


def _cell(values: list[float], digits: int = 2) -> tuple[float, str]:
    if not values:
        return 0.0, "-"
    median = statistics.median(values)
    return median, f"{median:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def _ratios(pairs: tuple[tuple[float, float], ...]) -> str:
    return " | ".join(f"{a / b:.2f}x" if a and b else "-" for a, b in pairs)


def summary(records: list[dict[str, Any]]) -> str:
    figures = _figures(records)
    lines = [
        "Uploads, MiB/s: median (min-max)",
        "",
        "| path | loss | raw stock | raw tuned | ours CUBIC | ours BBR | BBR / stock | BBR / tuned"
        " | CUBIC / stock | CUBIC / tuned |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(c, k) for c, k, _, _ in figures if k.startswith("loss") and "MiBps" in k})
    for case, key in keys:
        stock, stock_text = _cell(figures.get((case, key, "rawh3", "cubic"), []))
        tuned, tuned_text = _cell(figures.get((case, key, "rawh3t", "cubic"), []))
        cubic, cubic_text = _cell(figures.get((case, key, "ours", "cubic"), []))
        bbr, bbr_text = _cell(figures.get((case, key, "ours", "bbr"), []))
        loss = key.removeprefix("loss").removesuffix("_MiBps")
        ratios = _ratios(((bbr, stock), (bbr, tuned), (cubic, stock), (cubic, tuned)))
        lines.append(
            f"| {case} | {loss} % | {stock_text} | {tuned_text} | {cubic_text} | {bbr_text} | "
            f"{ratios} |"
        )
    lines += [
        "",
        "Rounds in which ours with CUBIC moved more than the baseline in the same round",
        "",
    ]
    lines += [f"- {case}, {key}: {text}" for (case, key), text in _wins(records).items()]
    for label in sorted({r["impl"] for r in records if str(r.get("impl")).startswith("ours+")}):
        lines += ["", f"Variant {label} (benchmarks/variants.py), CUBIC", ""]
        for (case, key), text in _wins(records, label).items():
            mine = _cell(figures.get((case, key, label, "cubic"), []))
            if not mine[0]:
                continue  # the variant did not run on this path
            base = _cell(figures.get((case, key, "ours", "cubic"), []))
            ratio = f"{mine[0] / base[0]:.2f}x ours" if base[0] else "-"
            lines.append(f"- {case}, {key}: {mine[1]} ({ratio}); rounds won: {text}")
    lines += [
        "",
        "Bottleneck (20 Mbit/s, 64-datagram queue, 20 ms): goodput as a share of the rate;"
        " 64 B echo round trips, ms",
        "",
        "| sender | goodput / rate | idle p50 | loaded p50 | loaded p99 | queue drops |",
        "|---|---|---|---|---|---|",
    ]
    names = {"rawh3": "raw stock", "rawh3t": "raw tuned", "ours": "ours"}
    for impl, cc in RUNS:
        got = {
            key: figures.get(("bottleneck", key, impl, cc), [])
            for key in ("bn_util", "idle_p50_ms", "loaded_p50_ms", "loaded_p99_ms")
        }
        if not got["bn_util"]:
            continue
        drops = figures.get(("bottleneck", "queue_dropped", impl, cc), [])
        cells = [_cell(got["bn_util"])[1]] + [
            _cell(got[k], 1)[1] for k in ("idle_p50_ms", "loaded_p50_ms", "loaded_p99_ms")
        ]
        lines.append(f"| {names[impl]} {cc.upper()} | {' | '.join(cells)} | {_cell(drops, 0)[1]} |")
    lines += [
        "",
        "Two flows sharing the bottleneck (12 s; share counted at the bottleneck after 2 s)",
        "",
        "| flows | first flow's share | second flow's share | Jain's index | link use |",
        "|---|---|---|---|---|",
    ]
    for case in sorted({c for c, _, _, _ in figures if c.startswith("shared")}):
        cc = case.removeprefix("shared ")
        first, second = cc.split("+")
        cells = [
            _cell(figures.get((case, key, "ours", cc), []), 3)[1]
            for key in (f"flow0_{first}_share", f"flow1_{second}_share", "jain", "link_util")
        ]
        lines.append(f"| {first.upper()} + {second.upper()} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lossy.jsonl")
    ap.add_argument(
        "--from",
        dest="source",
        type=Path,
        nargs="+",
        help="summarise saved results files (several: their rounds pooled)",
    )
    ap.add_argument(
        "--cases", help=f"comma-separated cases to run (default all: {', '.join(CASES)})"
    )
    ap.add_argument(
        "--runs", help="comma-separated impl:cc pairs to run (default all), e.g. ours:cubic"
    )
    ap.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop", help="every process's loop"
    )
    ap.add_argument(
        "--variants",
        help="candidate changes run as extra runs of ours: " + ", ".join(VARIANTS),
    )
    args = ap.parse_args()
    cases = args.cases.split(",") if args.cases else None
    unknown = [case for case in cases or () if case not in CASES]
    if unknown:
        ap.error(f"unknown cases {unknown}; cases are {list(CASES)}")
    pairs = [run.partition(":") for run in args.runs.split(",")] if args.runs else []
    runs = [(impl, cc) for impl, _, cc in pairs] or None
    variants = args.variants.split(",") if args.variants else []
    if set(variants) - VARIANTS.keys():
        ap.error(
            f"unknown variants {sorted(set(variants) - VARIANTS.keys())}; known: {list(VARIANTS)}"
        )
    if runs and not set(runs) <= set(RUNS):
        ap.error(f"unknown runs {sorted(set(runs) - set(RUNS))}; runs are {list(RUNS)}")
    if args.source is not None:
        records = []
        for index, path in enumerate(args.source):
            for line in path.read_text().splitlines():
                if line:
                    record = json.loads(line)
                    record["round"] = f"{index}:{record.get('round')}"  # rounds stay apart
                    records.append(record)
        if cases:
            records = [r for r in records if r.get("case") in cases]
    else:
        records = measure(args.rounds, args.out, cases, runs, args.loop, variants)
    revisions = sorted({(r["git"]["rev"][:7], r["git"]["dirty"]) for r in records if "git" in r})
    rounds = len({r.get("round") for r in records})
    print(f"\n{rounds} rounds; revision(s) {revisions}")
    print(summary(records))


if __name__ == "__main__":
    main()
