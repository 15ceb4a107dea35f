"""``python -m benchmarks``: the benchmark suite (ours vs raw aioquic H3, stock and tuned).

Every run is a fresh set of processes (``benchmarks.worker``: server child + client) on
127.0.0.1. Rounds are interleaved (ours, rawh3, rawh3t, ours, ...) so that all
implementations see the same machine noise; each table cell is the median over rounds.

  python -m benchmarks                  make bench: both loops, < 10 min on 2 cores; writes
                                        benchmarks/results/last-run.jsonl, BENCHMARK.md, docs
  python -m benchmarks --full           make bench-full: the heavy runs (capacity to 3,000
                                        sessions, lossy path, workers, idle CPU, 1,000-stream
                                        multiplex against raw, 5,000-cycle close soak); writes
                                        benchmarks/results/full-run.jsonl and the same docs
  python -m benchmarks --smoke          every scenario of both with tiny sizes; completion only
  python -m benchmarks --scenario NAME  only these (repeatable); the records go to a file
                                        outside the tree and nothing is rewritten unless --write
  python -m benchmarks --study defaults ours only: packet size, windows, buffer, congestion control
  python -m benchmarks --from FILE      re-render BENCHMARK.md from a saved JSONL
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import SETTINGS, KiB, MiB, git_info, have_uvloop, machine_info, make_cert
from .report import load_run, render_defaults, write_outputs

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
RUN_FILES = {"bench": RESULTS / "last-run.jsonl", "full": RESULTS / "full-run.jsonl"}
IMPLS = ("ours", "rawh3", "rawh3t")
OURS = ("ours",)
LOOPS = ("uvloop", "asyncio")

# Parameters every scenario reads (per-scenario overrides in the plans below).
BASE: dict[str, Any] = {
    "size": 32 * MiB,
    "reps": 1,
    "n_rtt": 200,
    "n_handshake": 30,
    "streams": 100,
    "chunk": 64 * KiB,
    "mux_reps": 1,
    "mux_timeout": 60,
    "n_dgram": 20000,
    "duration": 2.0,
    "close_cycles": 1_000_000,  # bounded by duration
    "sessions": 300,
    "settle": 1.5,
    "idle_window": 0,
    "capacity_ns": [100],
    "capacity_clients": 2,
    "capacity_duration": 4.0,
    "capacity_interval": 0.1,
    "capacity_connect_timeout": 120,
    "load_settle": 1.0,
    "load_client": "rawh3",  # capacity and workers: one load generator for every server
    "lul_warm": 0.3,
    "loss_pcts": [0, 1, 5],
    "lossy_size": 4 * MiB,
    "lossy_rtt_ms": 20,
    "bn_mbps": 20,
    "bn_queue": 64,
    "bn_rtt_ms": 20,
    "bn_size": 8 * MiB,
    "share_ccs": ["cubic", "cubic"],
    "share_s": 12.0,
    "worker_counts": [1, 2],
    "workers_duration": 5.0,
    "workers_clients": 2,
    "workers_concurrency": 8,
    "workers_sessions": 20,
    "fanout_sessions": 500,
    "fanout_clients": 50,
    "fanout_workers": 2,
    "fanout_messages": 100,
    "fanout_timeout": 300,
}

# name -> how it runs: impls, parameter overrides, settings overrides, timeout (s),
# loops (default both), rounds (default the profile's).
Plan = dict[str, dict[str, Any]]
BENCH: Plan = {
    "handshake": {},
    "rtt_stream": {},
    "rtt_datagram": {},
    # Bulk is the headline: 5 rounds per loop, reported with their spread (the stock
    # pacer's stall makes raw aioquic's figure jump from round to round).
    "upload": {"rounds": 5},
    "download": {"rounds": 5},
    "multiplex": {},
    # The figure, 1,000 x 64 KiB: ours only, once per loop (raw aioquic needs far
    # more than 120 s for it; the 3-way 1,000-stream run is in --full at 8 KiB).
    "multiplex_issue": {
        "impls": OURS,
        "params": {"streams": 1000, "chunk": 64 * KiB, "mux_timeout": 150},
        "timeout": 180,
        "rounds": 1,
    },
    # The same 64 MiB on one stream (read while written): what the multiplex is set against.
    "echo_single": {
        "impls": OURS,
        "params": {"streams": 1000, "chunk": 64 * KiB},
        "rounds": 1,
    },
    "datagram_pps": {},
    "conn_rate": {},
    "conn_rate_client_close": {},
    "idle_cost": {},
    # One round per loop: the load scenarios are long and their figures coarse.
    "capacity": {"timeout": 180, "rounds": 1},
    "latency_under_load": {"rounds": 1},
    "fanout": {"impls": OURS, "loops": ("uvloop",), "rounds": 1, "timeout": 330},
}
FULL: Plan = {
    "capacity": {
        "params": {
            "capacity_ns": [100, 300, 1000, 3000],
            "capacity_clients": 3,
            "capacity_duration": 8.0,
        },
        "timeout": 900,
    },
    "lossy": {"timeout": 300},
    # A 20 Mbit/s bottleneck with a 64-datagram queue: goodput and latency under load, and
    # two flows sharing it (congestion control by congestion control: make bench-lossy).
    "bottleneck": {"timeout": 300},
    "shared": {"timeout": 300},
    "workers": {"timeout": 300},
    # Idle CPU: one window of two keep-alive intervals (30 s default); raw aioquic sends no
    # keep-alives, so both sides' idle timeout is raised above the window. Tuning changes
    # nothing on an idle connection: ours and stock only.
    "idle_cost": {
        "impls": ("ours", "rawh3"),
        "params": {"sessions": 1000, "settle": 3.0, "idle_window": 60.0},
        "settings": {"connection_idle_timeout": 120.0},
        "timeout": 300,
    },
    "multiplex_1000": {
        "params": {"streams": 1000, "chunk": 8 * KiB, "mux_timeout": 120},
        "timeout": 180,
    },
    # 5,000 sequential fresh-client connect+close cycles: does memory stay flat?
    "close_soak": {
        "impls": OURS,
        "loops": ("uvloop",),
        "params": {"close_cycles": 5000, "duration": 240.0},
        "timeout": 300,
    },
}
PROFILES = {"bench": BENCH, "full": FULL}
SMOKE: dict[str, Any] = {
    "size": 256 * KiB,
    "n_rtt": 5,
    "n_handshake": 2,
    "streams": 20,
    "chunk": 4 * KiB,
    "n_dgram": 200,
    "duration": 0.2,
    "close_cycles": 3,
    "sessions": 5,
    "settle": 0.1,
    "idle_window": 0.2,
    "capacity_ns": [4],
    "capacity_clients": 2,
    "capacity_duration": 0.3,
    "load_settle": 0.05,
    "lul_warm": 0.05,
    "loss_pcts": [5],
    "lossy_size": 32 * KiB,
    "bn_size": 64 * KiB,
    "share_s": 1.0,
    "share_warm_s": 0.2,
    "worker_counts": [2],
    "workers_duration": 0.3,
    "workers_clients": 1,
    "workers_concurrency": 2,
    "workers_sessions": 2,
    "fanout_sessions": 4,
    "fanout_clients": 2,
    "fanout_messages": 3,
    "fanout_timeout": 30,
}
# The defaults study: ours only, one knob changed at a time from common.SETTINGS.
STUDY: dict[str, dict[str, Any]] = {
    "baseline (1350 B, 1 MiB, 1 MiB, cubic)": {},
    "packet 1452 B": {"max_datagram_size": 1452},
    "packet 16383 B": {"max_datagram_size": 16383},
    "stream window 256 KiB": {"quic_stream_receive_window": 256 * KiB},
    "stream window 4 MiB": {"quic_stream_receive_window": 4 * MiB},
    "connection window 4 MiB": {"quic_receive_window": 4 * MiB},
    "write buffer 4 MiB": {"max_stream_write_buffer_size": 4 * MiB},
    "reno": {"congestion_control_algorithm": "reno"},
}


def log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def spec_of(scenario: str) -> dict[str, Any]:
    return FULL[scenario] if scenario in FULL and scenario not in BENCH else BENCH[scenario]


def run_one(
    impls: str,
    scenario: str,
    loop: str,
    params: dict[str, Any],
    settings: dict[str, Any] | None = None,
    timeout: float = 120.0,
) -> list[dict[str, Any]]:
    """One worker process (`scenario` may be a comma-separated list); its records."""
    argv = [sys.executable, "-m", "benchmarks.worker", "--impl", impls, "--scenario", scenario]
    argv += ["--loop", loop, "--params", json.dumps(params), "--timeout", str(timeout)]
    if settings:
        argv += ["--set", json.dumps(settings)]
    names = scenario.split(",")
    try:
        out = subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=timeout + 15)
        recs = [json.loads(line) for line in out.stdout.decode().splitlines() if line.strip()]
    except (subprocess.TimeoutExpired, json.JSONDecodeError) as e:
        recs = [{"ok": False, "error": repr(e)}]
    got = {r.get("scenario") for r in recs}
    for name in names:  # a worker that died before reporting a scenario
        if name not in got:
            err = next((r.get("error") for r in recs if r.get("scenario") is None), None)
            recs.append({"scenario": name, "ok": False, "error": err or "no record"})
    recs = [r for r in recs if r.get("scenario") is not None]
    for r in recs:
        r.setdefault("impl", impls)
        r.setdefault("loop", loop)
    return recs


def plan(
    profile: Plan, loops: list[str], rounds: dict[str, int], impls: tuple[str, ...] | None
) -> list[tuple[str, str, int, str]]:
    """(loop, scenario, round, impl), interleaved: per scenario, round r runs every impl."""
    out = []
    for loop in loops:
        for sc, spec in profile.items():
            if loop not in spec.get("loops", (loop,)):
                continue
            for r in range(spec.get("rounds", rounds[loop])):
                for impl in spec.get("impls", impls or IMPLS):
                    if impls is None or impl in impls:
                        out.append((loop, sc, r, impl))
    return out


def smoke(loops: list[str], scenarios: list[str] | None) -> None:
    """Every scenario of both profiles with tiny sizes, completion only: ours and stock raw H3
    on the first loop, ours and tuned raw H3 on the other (asyncio: the tuned batched reads;
    the tuned pacer and buffers are the same code on both loops). One worker process per
    (impl, loop) runs all its scenarios against one server."""
    t0 = time.perf_counter()
    names = scenarios or list(dict.fromkeys([*BENCH, *FULL]))
    combos = [(loops[0], "ours"), (loops[0], "rawh3")]
    if len(loops) > 1:
        combos += [(loops[1], "ours"), (loops[1], "rawh3t")]
    failed: list[dict[str, Any]] = []
    for loop, impl in combos:
        mine = []
        for sc in names:
            spec = spec_of(sc)
            if impl in spec.get("impls", IMPLS) and loop in spec.get("loops", LOOPS):
                mine.append(sc)
        if not mine:
            continue
        params = {**BASE, **SMOKE}
        for rec in run_one(impl, ",".join(mine), loop, params, timeout=150):
            ok = rec.get("ok")
            status = "ok" if ok else f"FAILED: {rec.get('error')}"
            log(
                f"smoke {loop:7s} {rec.get('scenario', '?'):24s} {impl:7s} "
                f"{rec.get('wall_s', '-'):>6}s {status}"
            )
            if not ok:
                failed.append(rec)
    log(f"smoke: {len(failed)} failed, {time.perf_counter() - t0:.1f} s")
    for rec in failed:
        log(json.dumps(rec)[:3000])
    sys.exit(1 if failed else 0)


def main() -> None:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, completion only (< 60 s)")
    ap.add_argument("--full", action="store_true", help="the heavy runs (make bench-full)")
    ap.add_argument("--study", choices=["defaults"], help="the defaults study (ours only)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds on uvloop")
    ap.add_argument("--asyncio-rounds", type=int, default=1, help="rounds on the asyncio loop")
    ap.add_argument("--loops", default="uvloop,asyncio", help="comma-separated")
    ap.add_argument("--impls", help="comma-separated (default ours,rawh3,rawh3t; +rawquic)")
    ap.add_argument("--scenario", action="append", help="only these scenarios (repeatable)")
    ap.add_argument("--from", dest="from_file", help="re-render from a saved JSONL")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARK.md"))
    ap.add_argument("--write", action="store_true", help="rewrite the docs after --scenario")
    ap.add_argument("--no-write", action="store_true", help="print the tables only")
    args = ap.parse_args()
    os.chdir(ROOT)
    loops = [x for x in args.loops.split(",") if x and (x != "uvloop" or have_uvloop())]
    t_start = time.perf_counter()
    make_cert()
    git = git_info()
    os.environ["PWT_BENCH_GIT"] = json.dumps(git)

    if args.smoke:
        smoke(loops, args.scenario)
        return

    RESULTS.mkdir(exist_ok=True)
    if args.study == "defaults":
        recs = []
        loop = loops[0]
        study_params = {**BASE, "reps": 1}
        for r in range(args.rounds):
            for name, over in STUDY.items():
                for sc in ("upload", "download"):
                    rec = run_one("ours", sc, loop, study_params, {**SETTINGS, **over})[0]
                    rec["variant"], rec["round"] = name, r
                    recs.append(rec)
                    log(f"study r{r} {name:40s} {sc:9s} {rec.get('results') or rec.get('error')}")
        with open(RESULTS / "defaults.jsonl", "w") as f:
            for rec in recs:
                f.write(json.dumps(rec) + "\n")
        text = render_defaults(recs, list(STUDY), loop, args.rounds)
        print(text)
        if not args.no_write:
            write_outputs(Path(args.out), {"defaults": text})
        return

    if args.from_file:
        profile_name, _meta, _recs = load_run(Path(args.from_file))
        runs = {name: p for name, p in RUN_FILES.items() if p.exists()}
        runs[profile_name] = Path(args.from_file)
    else:
        profile_name = "full" if args.full else "bench"
        profile = PROFILES[profile_name]
        if args.scenario:
            unknown = set(args.scenario) - set(profile)
            if unknown:
                ap.error(f"not in the {profile_name} profile: {sorted(unknown)}")
            profile = {k: v for k, v in profile.items() if k in args.scenario}
        impls = tuple(args.impls.split(",")) if args.impls else None
        rounds = {"uvloop": args.rounds, "asyncio": args.asyncio_rounds}
        if args.full:
            rounds = {"uvloop": 1, "asyncio": 1}
        todo = plan(profile, loops, rounds, impls)
        recs = []
        for i, (loop, sc, r, impl) in enumerate(todo, 1):
            spec = profile[sc]
            params = {**BASE, **spec.get("params", {})}
            settings = {**SETTINGS, **spec.get("settings", {})}
            for rec in run_one(impl, sc, loop, params, settings, spec.get("timeout", 120.0)):
                rec["round"] = r
                recs.append(rec)
                res = rec.get("results") or rec.get("error")
                el = time.perf_counter() - t_start
                log(f"[{i}/{len(todo)} {el:5.0f}s] {loop} {sc} r{r} {impl}: {res}")
        meta = {
            "profile": profile_name,
            "machine": machine_info(),
            "git": git,
            "rounds": rounds,
            "params": BASE,
            "plan": profile,
            "settings": SETTINGS,
            "wall_s": round(time.perf_counter() - t_start, 1),
        }
        path = RUN_FILES[profile_name]
        if args.scenario and not args.write:
            path = Path(tempfile.gettempdir()) / f"pwt-bench-{profile_name}-partial.jsonl"
        with open(path, "w") as f:
            f.write(json.dumps({"meta": meta}) + "\n")
            for rec in recs:
                f.write(json.dumps(rec) + "\n")
        log(f"records: {path}")
        if args.scenario and not args.write:
            args.no_write = True
        runs = {name: p for name, p in RUN_FILES.items() if p.exists()}
        runs[profile_name] = path
    if args.no_write:
        from .report import render_run

        print(render_run(*load_run(runs[profile_name])[1:]))
    else:
        written = write_outputs(Path(args.out), None, runs)
        log(f"wrote {', '.join(str(p) for p in written)}")
    log(f"total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
