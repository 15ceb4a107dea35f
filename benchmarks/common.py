"""Helpers shared by the benchmark processes: stats, /proc readers, certificate, server child.

Nothing here imports pywebtransport or aioquic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

MiB = 1024 * 1024
KiB = 1024

# The settings every implementation runs with (ours through ServerConfig/ClientConfig, raw
# aioquic through QuicConfiguration and the same QUIC limits). Overridable per run (--set).
SETTINGS: dict[str, Any] = {
    "max_datagram_size": 1350,  # UDP payload size (our default)
    "congestion_control_algorithm": "cubic",
    "quic_receive_window": 16 * MiB,  # QUIC max_data
    "quic_stream_receive_window": 1 * MiB,  # QUIC max_stream_data
    "max_stream_write_buffer_size": 1 * MiB,  # ours: write() high-water; raw: un-acked bytes
    "quic_max_concurrent_bidi_streams": 2000,  # multiplex opens 1000 streams at once
    "connection_idle_timeout": 60.0,
}
# Ours only: capacity and WebTransport-level limits that raw aioquic does not have.
OURS_EXTRA: dict[str, Any] = {
    "initial_max_data": 16 * MiB,
    "flow_control_window": 16 * MiB,
    "initial_max_streams_bidi": 2000,
    # Passed explicitly (the library's defaults are lower and may change): capacity opens
    # 3,000 sessions, one connection each.
    "max_sessions": 10000,
    "max_connections": 10000,
    "max_pending_datagrams": 1000,
    "max_stream_read_buffer_size": 1 * MiB,
}
OURS_SERVER_EXTRA: dict[str, Any] = {
    "max_sessions_per_connection": 10,
    # Every benchmark client comes from 127.0.0.1: per-address limits (sized for
    # fairness between real client addresses) would refuse the load generator.
    "max_connections_per_address": 10000,
    "max_sessions_per_address": 10000,
    "max_handshakes_per_address": 1024,
}


def pct(values: list[float], p: float) -> float | None:
    """Percentile with linear interpolation (p in 0..100); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def lat_summary(samples_s: list[float], prefix: str, ps: tuple[float, ...]) -> dict[str, Any]:
    """Latency samples in seconds -> {prefix_p50_ms: ...} (p99.9 is named p999)."""
    ms = [s * 1000.0 for s in samples_s]
    out: dict[str, Any] = {}
    for p in ps:
        v = pct(ms, p)
        out[f"{prefix}_p{str(p).replace('.', '')}_ms"] = None if v is None else round(v, 4)
    return out


def jain(rates: list[float]) -> float:
    """Jain's fairness index: 1.0 when every share is equal, 1/n when one takes all."""
    total = sum(r * r for r in rates)
    return sum(rates) ** 2 / (len(rates) * total) if total else 0.0


def fairness(done_s: list[float]) -> dict[str, Any]:
    """Per-stream completion times of equal-sized concurrent transfers -> fairness figures.

    Jain's index over per-stream throughput (size / completion time): 1.0 when every
    stream finishes together (round-robin service), about 0.03 for 1,000 streams served
    one after another.
    """
    if not done_s:
        return {}
    return {
        "mux_jain": round(jain([1.0 / max(t, 1e-9) for t in done_s]), 3),
        "mux_first_done_s": round(min(done_s), 3),
        "mux_median_done_s": round(statistics.median(done_s), 3),
    }


def read_rss_kb(pid: int | str = "self") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class RssMeter:
    """Resident memory growth of the server and this (client) process since construction."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid: int | str = server_pid or "self"
        self.s0, self.c0 = read_rss_kb(self.server_pid), read_rss_kb()

    def per_session(self, n: int) -> dict[str, float | None]:
        """KiB per session on each side for `n` sessions opened since construction."""
        s1, c1 = read_rss_kb(self.server_pid), read_rss_kb()
        s0, c0 = self.s0, self.c0
        return {
            "server_kib_per_session": round((s1 - s0) / n, 1) if s0 and s1 else None,
            "client_kib_per_session": round((c1 - c0) / n, 1) if c0 and c1 else None,
        }

    def total(self) -> dict[str, float | None]:
        """KiB of growth on each side since construction."""
        s1, c1 = read_rss_kb(self.server_pid), read_rss_kb()
        s0, c0 = self.s0, self.c0
        return {
            "server_rss_kib_total": float(s1 - s0) if s0 and s1 else None,
            "client_rss_kib_total": float(c1 - c0) if c0 and c1 else None,
        }

    def growth(self, cycles: int) -> dict[str, float | None]:
        """KiB of growth per 1,000 cycles on each side since construction."""
        s1, c1 = read_rss_kb(self.server_pid), read_rss_kb()
        s0, c0 = self.s0, self.c0
        k = 1000 / max(cycles, 1)
        return {
            "server_rss_kib_per_1000": round((s1 - s0) * k, 1) if s0 and s1 else None,
            "client_rss_kib_per_1000": round((c1 - c0) * k, 1) if c0 and c1 else None,
        }


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def read_cpu_s(pid: int | str = "self") -> float | None:
    """utime + stime of a process (all threads), seconds, from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
        fields = data[data.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK
    except (OSError, ValueError, IndexError):
        return None


class CpuMeter:
    """CPU seconds of this (client) process and of the server process over a phase."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.c0 = read_cpu_s("self")
        self.s0 = read_cpu_s(server_pid) if server_pid else None

    def per_mib(self, prefix: str, nbytes: int) -> dict[str, Any]:
        c1 = read_cpu_s("self")
        s1 = read_cpu_s(self.server_pid) if self.server_pid else None
        mib = nbytes / MiB
        out: dict[str, Any] = {}
        if self.c0 is not None and c1 is not None:
            out[f"{prefix}_client_cpu_ms_per_MiB"] = round((c1 - self.c0) * 1000 / mib, 2)
        if self.s0 is not None and s1 is not None:
            out[f"{prefix}_server_cpu_ms_per_MiB"] = round((s1 - self.s0) * 1000 / mib, 2)
        return out

    def per_session_minute(self, n: int, window_s: float) -> dict[str, Any]:
        """CPU ms per session per minute on each side over a window of `window_s`."""
        c1 = read_cpu_s("self")
        s1 = read_cpu_s(self.server_pid) if self.server_pid else None
        k = 1000 * 60 / (n * window_s)
        out: dict[str, Any] = {}
        if self.s0 is not None and s1 is not None:
            out["server_cpu_ms_per_session_min"] = round((s1 - self.s0) * k, 3)
        if self.c0 is not None and c1 is not None:
            out["client_cpu_ms_per_session_min"] = round((c1 - self.c0) * k, 3)
        return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def pkg_version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


def git_info() -> dict[str, Any]:
    """The tree being measured: HEAD's revision and whether its code (src/, benchmarks/) differs."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=20
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    rev = git("rev-parse", "HEAD")
    # What is measured is the library and the benchmark code; the files the runs write
    # (results, the generated docs) do not make a tree dirty.
    status = git(
        "status", "--porcelain", "--", "src", "benchmarks", ":!benchmarks/results",
    )  # fmt: skip
    return {"rev": rev, "dirty": None if status is None else bool(status)}


def raise_nofile() -> None:
    """Raise this process's open-file limit to its hard limit (one socket per connection)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def machine_info() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "aioquic": pkg_version("aioquic"),
        "uvloop": pkg_version("uvloop"),
        "pywebtransport": pkg_version("pywebtransport"),
        "kernel": platform.release(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def run_loop(factory: Callable[[], Coroutine[Any, Any, Any]], loop_name: str) -> Any:
    """Run a coroutine on 'uvloop' or the default 'asyncio' loop."""
    if loop_name == "uvloop":
        import uvloop

        return uvloop.run(factory())
    return asyncio.run(factory())


def have_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CERT_DIR = os.path.join(tempfile.gettempdir(), "pwt-bench-cert")


def make_cert() -> tuple[str, str]:
    """One self-signed ECDSA P-256 certificate for 127.0.0.1, made once (renewed after 5 days)."""
    cert = os.path.join(CERT_DIR, "127.0.0.1.crt")
    key = os.path.join(CERT_DIR, "127.0.0.1.key")
    fresh = os.path.exists(cert) and time.time() - os.path.getmtime(cert) < 5 * 86400
    if not (fresh and os.path.exists(key)):
        from pywebtransport import generate_self_signed_cert

        generate_self_signed_cert("127.0.0.1", output_dir=CERT_DIR)
    return cert, key


class ServerProcess:
    """A server child (`python -m benchmarks.worker --serve ...`); always killed on exit.

    The child prints ``READY <port>`` when it listens and exits when its stdin closes.
    """

    def __init__(
        self, argv: list[str], ready_timeout: float = 30.0, env: dict[str, str] | None = None
    ) -> None:
        self.argv = argv
        self.ready_timeout = ready_timeout
        self.env = None if env is None else {**os.environ, **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._err = tempfile.NamedTemporaryFile(prefix="pwt-bench-server-", delete=False)  # noqa: SIM115

    def start(self) -> ServerProcess:
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err, env=self.env
        )
        got: list[bytes] = []
        t = threading.Thread(target=lambda: got.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        t.start()
        t.join(self.ready_timeout)
        line = got[0] if got else b""
        if not line.startswith(b"READY"):
            self.stop()
            raise RuntimeError(f"server not ready: {line!r}: {self.stderr_tail()}")
        parts = line.split()
        self.port = int(parts[1]) if len(parts) > 1 else 0
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stderr_tail(self, n: int = 2000) -> str:
        try:
            with open(self._err.name, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=3)
        if p is not None and p.stdin:
            with contextlib.suppress(OSError):
                p.stdin.close()
        if p is not None and p.stdout:
            p.stdout.close()
        self._err.close()
        with contextlib.suppress(OSError):
            os.unlink(self._err.name)


def server_lifeline(max_lifetime: float) -> None:
    """In a server child: exit when the parent closes our stdin, or after max_lifetime s."""

    def watch_stdin() -> None:
        # os.read, not sys.stdin: a forked child (ServerApp workers) closes sys.stdin, which
        # would deadlock on the buffer lock this thread held at the fork.
        try:
            while os.read(0, 1024):
                pass
        except OSError:
            pass
        os._exit(0)

    def hard_stop() -> None:
        time.sleep(max_lifetime)
        os._exit(3)

    threading.Thread(target=watch_stdin, daemon=True).start()
    threading.Thread(target=hard_stop, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))


def watchdog(seconds: float, on_expire: Callable[[], None]) -> None:
    """Hard stop for a client process whose scenario hangs past its budget."""

    def hard_stop() -> None:
        time.sleep(seconds)
        try:
            on_expire()
        finally:
            os._exit(4)

    threading.Thread(target=hard_stop, daemon=True).start()


def emit_json(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()
