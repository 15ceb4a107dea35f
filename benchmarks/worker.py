"""One benchmark run: ``python -m benchmarks.worker --impl IMPL --scenario NAME [...]``.

Starts the server in a child process (``--serve``, same interpreter and loop), runs the
client scenario in this process and prints one JSON line. ``--profile DIR`` writes cProfile
stats of both processes (``DIR/client.prof``, ``DIR/server.prof``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import signal
import sys
import time
import traceback
from typing import Any

from .common import (
    SETTINGS,
    ServerProcess,
    emit_json,
    free_udp_port,
    make_cert,
    run_loop,
    server_lifeline,
    watchdog,
)

IMPLS = ("ours", "rawh3", "rawquic")


def _scenarios(impl: str) -> dict[str, Any]:
    if impl == "ours":
        from . import ours

        return ours.SCENARIOS
    from . import raw

    return raw.SCENARIOS


def serve(args: argparse.Namespace, settings: dict[str, Any]) -> None:
    server_lifeline(args.timeout + 30)
    if args.profile:
        prof = cProfile.Profile()

        def dump(*_: Any) -> None:
            prof.disable()
            prof.dump_stats(os.path.join(args.profile, "server.prof"))
            os._exit(0)

        signal.signal(signal.SIGTERM, dump)
        prof.enable()
    if args.impl == "ours":
        from .ours import serve_main

        run_loop(lambda: serve_main(args.port, args.cert, args.key, settings), args.loop)
    else:
        from .raw import serve_main as raw_serve

        run_loop(lambda: raw_serve(args.impl, args.port, args.cert, args.key, settings), args.loop)


def client(args: argparse.Namespace, settings: dict[str, Any]) -> dict[str, Any]:
    rec: dict[str, Any] = {"impl": args.impl, "scenario": args.scenario, "loop": args.loop}
    rec["ok"] = False
    params = json.loads(args.params)
    t0 = time.perf_counter()
    argv = [
        sys.executable,
        "-m",
        "benchmarks.worker",
        "--serve",
        "--impl",
        args.impl,
        "--loop",
        args.loop,
        "--cert",
        args.cert,
        "--key",
        args.key,
        "--set",
        json.dumps(settings),
        "--timeout",
        str(args.timeout),
    ]
    if args.profile:
        argv += ["--profile", args.profile]
    server: ServerProcess | None = None

    def expire() -> None:
        rec["error"] = f"watchdog: exceeded {args.timeout:.0f}s"
        if server is not None:
            server.stop()
        emit_json(rec)

    watchdog(args.timeout, expire)
    try:
        for attempt in range(3):
            try:
                server = ServerProcess([*argv, "--port", str(free_udp_port())]).start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        assert server is not None
        fn = _scenarios(args.impl)[args.scenario]
        if args.impl == "ours":
            from .ours import Ctx

            ctx: Any = Ctx(server.port, server.pid, params, settings)
        else:
            from .raw import Ctx as RawCtx

            ctx = RawCtx(args.impl, server.port, server.pid, params, settings)
        budget = args.timeout - 5

        async def main() -> dict[str, Any]:
            async with asyncio.timeout(budget):
                return await fn(ctx)  # type: ignore[no-any-return]

        prof = cProfile.Profile() if args.profile else None
        if prof:
            prof.enable()
        try:
            rec["results"] = run_loop(main, args.loop)
        finally:
            if prof:
                prof.disable()
                prof.dump_stats(os.path.join(args.profile, "client.prof"))
        rec["ok"] = True
    except BaseException as e:
        rec["error"] = f"{type(e).__name__}: {e}"[:500]
        rec["traceback"] = traceback.format_exc()[-2000:]
        if server is not None:
            rec["server_stderr"] = server.stderr_tail(1000)
    finally:
        if server is not None:
            if args.profile:  # let the server dump its profile
                time.sleep(0.5)
            server.stop()
    rec["wall_s"] = round(time.perf_counter() - t0, 2)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--impl", choices=IMPLS, default="ours")
    ap.add_argument("--scenario", default="upload")
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    ap.add_argument("--params", default="{}", help="scenario parameters (JSON)")
    ap.add_argument("--set", default="{}", help="settings overriding common.SETTINGS (JSON)")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--profile", help="directory for cProfile output of both processes")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--cert", help=argparse.SUPPRESS)
    ap.add_argument("--key", help=argparse.SUPPRESS)
    args = ap.parse_args()
    settings = {**SETTINGS, **json.loads(args.set)}
    if args.serve:
        serve(args, settings)
        return
    if not args.cert:
        args.cert, args.key = make_cert()
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    rec = client(args, settings)
    rec["settings"] = settings
    emit_json(rec)
    os._exit(0 if rec["ok"] else 1)


if __name__ == "__main__":
    main()
