"""Benchmark runs: ``python -m benchmarks.worker --impl IMPL --scenario NAME[,NAME...] [...]``.

Starts the server in a child process (``--serve``, same interpreter and loop), runs the
client scenarios in this process one after another and prints one JSON line per scenario.
Scenarios that need servers of their own (``OWN_SERVER``: fresh servers per step, worker
processes, Redis) start them through ``Env``. ``--profile DIR`` writes cProfile stats of
both processes (``DIR/client.prof``, ``DIR/server.prof``).
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
    git_info,
    make_cert,
    pkg_version,
    run_loop,
    server_lifeline,
    watchdog,
)
from .variants import apply_from_environment as apply_variant

IMPLS = ("ours", "rawh3", "rawh3t", "rawquic")
# Scenarios that start their own servers (or none of ours): no default server child.
OWN_SERVER = frozenset({"capacity", "workers", "fanout"})


def _scenarios(impl: str) -> dict[str, Any]:
    if impl == "ours":
        from . import ours

        return ours.SCENARIOS
    from . import raw

    return raw.SCENARIOS


class Env:
    """What a scenario needs to start more processes like the ones of this run."""

    def __init__(self, args: argparse.Namespace, settings: dict[str, Any]) -> None:
        self.impl, self.loop, self.cert, self.key = args.impl, args.loop, args.cert, args.key
        self.settings, self.timeout, self.profile = settings, args.timeout, args.profile
        self.servers: list[ServerProcess] = []

    def server_argv(self, *extra: str) -> list[str]:
        argv = [sys.executable, "-m", "benchmarks.worker", "--serve", "--impl", self.impl]
        argv += ["--loop", self.loop, "--cert", self.cert, "--key", self.key]
        argv += ["--set", json.dumps(self.settings), "--timeout", str(self.timeout), *extra]
        if self.profile:
            argv += ["--profile", self.profile]
        return argv

    def start_server(
        self, *extra: str, port: int | None = None, env: dict[str, str] | None = None
    ) -> ServerProcess:
        """A server child on `port` (default: a free one, retried on a clash)."""
        for attempt in range(3):
            p = port or free_udp_port()
            try:
                argv = [*self.server_argv(*extra), "--port", str(p)]
                server = ServerProcess(argv, env=env).start()
            except RuntimeError:
                if attempt == 2 or port:
                    raise
                continue
            self.servers.append(server)
            return server
        raise AssertionError("unreachable")

    def stop(self, server: ServerProcess) -> None:
        server.stop()
        if server in self.servers:
            self.servers.remove(server)

    def stop_servers(self) -> None:
        while self.servers:
            self.servers.pop().stop()

    def child_argv(self, impl: str, *extra: str) -> list[str]:
        """A load-generating client child (``benchmarks.load``) of `impl` on this loop."""
        argv = [sys.executable, "-m", "benchmarks.load", "--impl", impl, "--loop", self.loop]
        return [*argv, "--set", json.dumps(self.settings), *extra]


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
    if args.impl == "ours" and args.app_workers:
        from .ours import app_main

        app_main(args.port, args.cert, args.key, settings, args.app_workers, args.loop)
    elif args.impl == "ours":
        from .ours import serve_main

        run_loop(lambda: serve_main(args.port, args.cert, args.key, settings), args.loop)
    else:
        from .raw import serve_main as raw_serve

        run_loop(
            lambda: raw_serve(args.impl, args.port, args.cert, args.key, settings, args.reuse_port),
            args.loop,
        )


def client(args: argparse.Namespace, settings: dict[str, Any]) -> list[dict[str, Any]]:
    scenarios = args.scenario.split(",")
    params = json.loads(args.params)
    stamp = {"git": json.loads(os.environ.get("PWT_BENCH_GIT") or "null") or git_info()}
    stamp["aioquic"] = pkg_version("aioquic")
    recs: list[dict[str, Any]] = []
    env = Env(args, settings)
    server: ServerProcess | None = None
    current: dict[str, Any] = {}

    def expire() -> None:
        current["error"] = f"watchdog: exceeded {args.timeout:.0f}s"
        env.stop_servers()
        for rec in recs:
            emit_json(rec)
        if current and current not in recs:
            emit_json(current)

    watchdog(args.timeout, expire)
    deadline = time.perf_counter() + args.timeout - 5
    try:
        if not set(scenarios) <= OWN_SERVER:
            server = env.start_server()
        for name in scenarios:
            current = {"impl": args.impl, "scenario": name, "loop": args.loop, "ok": False}
            current.update(stamp)
            recs.append(current)
            _run_scenario(args, settings, env, server, name, params, current, deadline)
    finally:
        if args.profile:  # let the servers dump their profiles
            time.sleep(0.5)
        env.stop_servers()
    return recs


def _run_scenario(
    args: argparse.Namespace,
    settings: dict[str, Any],
    env: Env,
    server: ServerProcess | None,
    name: str,
    params: dict[str, Any],
    rec: dict[str, Any],
    deadline: float,
) -> None:
    t0 = time.perf_counter()
    rec["loadavg"] = round(os.getloadavg()[0], 2)
    try:
        fn = _scenarios(args.impl)[name]
        port = server.port if server is not None else 0
        pid = server.pid if server is not None else None
        if args.impl == "ours":
            from .ours import Ctx

            ctx: Any = Ctx(port, pid, params, settings, env)
        else:
            from .raw import Ctx as RawCtx

            ctx = RawCtx(args.impl, port, pid, params, settings, env)

        async def main() -> dict[str, Any]:
            async with asyncio.timeout(deadline - time.perf_counter()):
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
    rec["wall_s"] = round(time.perf_counter() - t0, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--impl", choices=IMPLS, default="ours")
    ap.add_argument("--scenario", default="upload", help="one name or a comma-separated list")
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    ap.add_argument("--params", default="{}", help="scenario parameters (JSON)")
    ap.add_argument("--set", default="{}", help="settings overriding common.SETTINGS (JSON)")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--profile", help="directory for cProfile output of both processes")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--cert", help=argparse.SUPPRESS)
    ap.add_argument("--key", help=argparse.SUPPRESS)
    ap.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--app-workers", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    settings = {**SETTINGS, **json.loads(args.set)}
    variant = apply_variant("server" if args.serve else "client") if args.impl == "ours" else None
    if args.serve:
        serve(args, settings)
        return
    if not args.cert:
        args.cert, args.key = make_cert()
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    recs = client(args, settings)
    for rec in recs:
        rec["settings"] = settings
        if variant is not None:
            rec["variant"] = variant
        emit_json(rec)
    os._exit(0 if all(r["ok"] for r in recs) else 1)


if __name__ == "__main__":
    main()
