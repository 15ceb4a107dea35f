"""Tables (Markdown), the plot (SVG) and the BENCHMARK.md / docs/benchmarks.md writer."""

# ruff: noqa: RUF001, E501  (the tables use typographic signs; Markdown rows stay on one line)

from __future__ import annotations

import html
import json
import statistics
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PLOT = Path(__file__).resolve().parent / "results" / "plot.svg"
DOCS = ROOT / "docs" / "benchmarks.md"

# (scenario, result key, label, higher_is_better, target for ours/rawH3 or None)
METRICS: list[tuple[str, str, str, bool, str | None]] = [
    ("handshake", "connect_p50_ms", "connect p50 ms", False, "≤ 1.10"),
    ("handshake", "connect_p90_ms", "connect p90 ms", False, None),
    ("handshake", "close_p50_ms", "close p50 ms", False, None),
    ("handshake", "close_p90_ms", "close p90 ms", False, None),
    ("rtt_stream", "reused_p50_ms", "64 B RTT, reused stream, p50 ms", False, "≤ 1.10"),
    ("rtt_stream", "reused_p99_ms", "64 B RTT, reused stream, p99 ms", False, None),
    ("rtt_stream", "fresh_p50_ms", "64 B RTT, fresh stream, p50 ms", False, "≤ 1.20"),
    ("rtt_stream", "fresh_p99_ms", "64 B RTT, fresh stream, p99 ms", False, None),
    ("rtt_datagram", "dgram_p50_ms", "64 B datagram RTT p50 ms", False, "≤ 1.10"),
    ("rtt_datagram", "dgram_p99_ms", "64 B datagram RTT p99 ms", False, None),
    ("upload", "upload_MiBps", "upload 32 MiB, MiB/s", True, "≥ 1.00"),
    ("upload", "upload_client_cpu_ms_per_MiB", "upload, client CPU ms/MiB", False, "≤ 1.00"),
    ("upload", "upload_server_cpu_ms_per_MiB", "upload, server CPU ms/MiB", False, "≤ 1.00"),
    ("download", "download_MiBps", "download 32 MiB, MiB/s", True, "≥ 1.00"),
    ("download", "download_client_cpu_ms_per_MiB", "download, client CPU ms/MiB", False, "≤ 1.00"),
    ("download", "download_server_cpu_ms_per_MiB", "download, server CPU ms/MiB", False, "≤ 1.00"),
    ("multiplex", "multiplex_MiBps", "multiplex 1000×8 KiB echo, MiB/s", True, None),
    ("multiplex", "multiplex_wall_s", "multiplex wall s", False, None),
    ("datagram_pps", "recv_pps", "datagrams received per s", True, "≥ 0.90"),
    ("datagram_pps", "send_pps", "datagrams sent per s", True, None),
    ("datagram_pps", "received_pct", "datagrams received %", True, None),
    ("conn_rate", "cps", "connections per s (connect+close)", True, None),
    ("conn_rate", "server_cpu_ms_per_conn", "server CPU ms per connection", False, None),
    ("idle_memory", "server_kib_per_session", "idle RSS per session, server KiB", False, None),
    ("idle_memory", "client_kib_per_session", "idle RSS per session, client KiB", False, None),
]
IMPLS = ("ours", "rawh3", "rawquic")


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:.1f}"
        if abs(v) >= 10:
            return f"{v:.2f}"
        return f"{v:.3f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def cells(recs: list[dict[str, Any]], loop: str) -> dict[tuple[str, str, str], float | None]:
    """(impl, scenario, key) -> median over rounds of the run's figure."""
    vals: dict[tuple[str, str, str], list[float]] = {}
    for r in recs:
        if r.get("loop") != loop or not r.get("ok"):
            continue
        for k, v in (r.get("results") or {}).items():
            if isinstance(v, (int, float)):
                vals.setdefault((r["impl"], r["scenario"], k), []).append(float(v))
    return {k: statistics.median(v) for k, v in vals.items()}


def _meets(ratio: float | None, target: str | None) -> str:
    if ratio is None or target is None:
        return ""
    op, val = target.split()
    ok = ratio <= float(val) if op == "≤" else ratio >= float(val)
    return " ✓" if ok else " ✗"


def table(recs: list[dict[str, Any]], loop: str) -> str:
    c = cells(recs, loop)
    lines = [
        "| scenario | metric | ours | raw H3 | raw QUIC | ours ÷ raw H3 | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for sc, key, label, up, target in METRICS:
        o, h, q = (c.get((i, sc, key)) for i in IMPLS)
        if o is None and h is None and q is None:
            continue
        ratio = o / h if o is not None and h else None
        arrow = "↑" if up else "↓"
        rtxt = f"{ratio:.2f}x{_meets(ratio, target)}" if ratio is not None else "–"
        lines.append(
            f"| {sc} | {label} {arrow} | {fmt(o)} | {fmt(h)} | {fmt(q)} | {rtxt} | {target or ''} |"
        )
    up_o = c.get(("ours", "upload", "upload_MiBps"))
    mux_o = c.get(("ours", "multiplex", "multiplex_MiBps"))
    mux64 = c.get(("ours", "multiplex_issue", "multiplex_MiBps"))
    mux64_wall = c.get(("ours", "multiplex_issue", "multiplex_wall_s"))
    mem_o = c.get(("ours", "idle_memory", "server_kib_per_session"))
    extra = []
    if mux64 is not None and mux64_wall is not None:
        extra.append(
            f"multiplex 1000×64 KiB (the issue's figure, ours only, one run): completed in "
            f"{mux64_wall:.1f} s, {mux64:.2f} MiB/s"
        )
    for name, mux in (("1000×64 KiB", mux64), ("1000×8 KiB", mux_o)):
        if up_o and mux:
            r = mux / up_o
            extra.append(
                f"multiplex {name} ÷ own single-stream upload: **{r:.2f}x** "
                f"(target ≥ 0.75{_meets(r, '≥ 0.75')})"
            )
    if mem_o is not None:
        extra.append(
            f"idle memory per session (server): **{mem_o:.1f} KiB** (target ≤ 64 KiB"
            f"{' ✓' if mem_o <= 64 else ' ✗'})"
        )
    failed = [r for r in recs if r.get("loop") == loop and not r.get("ok")]
    for r in failed:
        extra.append(
            f"failed run: {r.get('impl')} {r.get('scenario')} round {r.get('round')}: "
            f"`{str(r.get('error'))[:200]}`"
        )
    return "\n".join(lines) + ("\n\n" + "\n".join(f"- {e}" for e in extra) if extra else "")


def svg_plot(recs: list[dict[str, Any]], loop: str) -> str:
    """Two grouped bar charts: throughput (MiB/s) and latency p50 (ms), ours vs raw."""
    c = cells(recs, loop)
    panels = [
        (
            "Throughput, MiB/s (higher is better)",
            [
                ("upload", "upload_MiBps", "upload"),
                ("download", "download_MiBps", "download"),
                ("multiplex", "multiplex_MiBps", "multiplex"),
            ],
        ),
        (
            "Latency p50, ms (lower is better)",
            [
                ("handshake", "connect_p50_ms", "connect"),
                ("rtt_stream", "reused_p50_ms", "RTT reused"),
                ("rtt_stream", "fresh_p50_ms", "RTT fresh"),
                ("rtt_datagram", "dgram_p50_ms", "RTT dgram"),
            ],
        ),
    ]
    colors = {"ours": "#1f77b4", "rawh3": "#ff7f0e", "rawquic": "#7f7f7f"}
    names = {"ours": "pywebtransport", "rawh3": "raw aioquic H3", "rawquic": "raw aioquic QUIC"}
    w, ph = 760, 260
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{2 * ph + 60}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{2 * ph + 60}" fill="white"/>',
    ]
    for i, (name, _) in enumerate(colors.items()):
        x = 60 + i * 200
        out.append(f'<rect x="{x}" y="10" width="14" height="14" fill="{colors[name]}"/>')
        out.append(f'<text x="{x + 20}" y="22">{names[name]}</text>')
    for p, (title, groups) in enumerate(panels):
        y0 = 40 + p * ph
        vals = [c.get((i, sc, k)) or 0.0 for sc, k, _ in groups for i in IMPLS]
        vmax = max(vals) or 1.0
        top, bottom, left = y0 + 25, y0 + ph - 40, 60
        out.append(
            f'<text x="{left}" y="{y0 + 15}" font-weight="bold">{html.escape(title)} — {loop}</text>'
        )
        out.append(f'<line x1="{left}" y1="{bottom}" x2="{w - 20}" y2="{bottom}" stroke="black"/>')
        gw = (w - left - 20) / len(groups)
        bw = gw / 4
        for g, (sc, k, label) in enumerate(groups):
            gx = left + g * gw + bw / 2
            for j, impl in enumerate(IMPLS):
                v = c.get((impl, sc, k))
                if v is None:
                    continue
                h = (bottom - top) * v / vmax
                x = gx + j * bw
                out.append(
                    f'<rect x="{x:.1f}" y="{bottom - h:.1f}" width="{bw - 4:.1f}" '
                    f'height="{h:.1f}" fill="{colors[impl]}"/>'
                )
                out.append(
                    f'<text x="{x + (bw - 4) / 2:.1f}" y="{bottom - h - 3:.1f}" '
                    f'text-anchor="middle" font-size="10">{fmt(v)}</text>'
                )
            out.append(
                f'<text x="{gx + 1.5 * bw:.1f}" y="{bottom + 16}" text-anchor="middle">'
                f"{html.escape(label)}</text>"
            )
    out.append("</svg>")
    return "\n".join(out)


def render_main(recs: list[dict[str, Any]], meta: dict[str, Any]) -> tuple[str, str]:
    m = meta.get("machine", {})
    rounds = meta.get("rounds", {})
    s = meta.get("settings", {})
    loops = [lp for lp in ("uvloop", "asyncio") if any(r.get("loop") == lp for r in recs)]
    parts = [
        f"Measured {m.get('date_utc', '?')} by `make bench` (`python -m benchmarks`) in "
        f"{meta.get('wall_s', '?')} s.",
        "",
        "| machine | |",
        "|---|---|",
        f"| `nproc` | {m.get('nproc')} |",
        f"| CPU | `{m.get('cpu')}` |",
        f"| Python | {m.get('python')} |",
        f"| aioquic | {m.get('aioquic')} |",
        f"| pywebtransport | {m.get('pywebtransport')} (this tree) |",
        f"| loops | uvloop {m.get('uvloop')} ({rounds.get('uvloop', 0)} rounds), "
        f"default asyncio ({rounds.get('asyncio', 0)} rounds) |",
        f"| kernel | {m.get('kernel')}, loopback 127.0.0.1 |",
        "",
        "**Settings (every implementation, every run):** "
        + ", ".join(f"`{k}`={v}" for k, v in s.items())
        + ". Raw aioquic gets the same packet size, congestion control, `max_data` / "
        "`max_stream_data` and concurrent-stream limit through `QuicConfiguration`, and "
        "keeps at most `max_stream_write_buffer_size` bytes un-acked per stream (64 KiB "
        "`send_stream_data()` calls). Each record in `benchmarks/results/last-run.jsonl` "
        "carries the settings of its run.",
        "",
    ]
    svg = svg_plot(recs, "uvloop" if "uvloop" in loops else loops[0]) if loops else ""
    for lp in loops:
        parts += [f"### Loop: {lp}", "", table(recs, lp), ""]
    parts.append("![throughput and latency vs raw aioquic](benchmarks/results/plot.svg)")
    return "\n".join(parts), svg


def render_defaults(recs: list[dict[str, Any]], variants: list[str], loop: str, rounds: int) -> str:
    vals: dict[tuple[str, str], list[float]] = {}
    for r in recs:
        if not r.get("ok"):
            continue
        for k, v in (r.get("results") or {}).items():
            vals.setdefault((r["variant"], k), []).append(float(v))

    def m(variant: str, key: str) -> float | None:
        v = vals.get((variant, key))
        return statistics.median(v) if v else None

    base = variants[0]
    lines = [
        f"Ours only, {loop}, {rounds} interleaved rounds, 32 MiB on one stream; one knob changed "
        "at a time from the baseline (`python -m benchmarks --study defaults`, "
        "`benchmarks/results/defaults.jsonl`).",
        "",
        "| variant | upload MiB/s | vs base | download MiB/s | vs base | upload CPU ms/MiB (client / server) | download CPU ms/MiB (client / server) |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        up, dn = m(v, "upload_MiBps"), m(v, "download_MiBps")
        bu, bd = m(base, "upload_MiBps"), m(base, "download_MiBps")
        ru = f"{up / bu:.2f}x" if up and bu else "–"
        rd = f"{dn / bd:.2f}x" if dn and bd else "–"
        lines.append(
            f"| {v} | {fmt(up)} | {ru} | {fmt(dn)} | {rd} | "
            f"{fmt(m(v, 'upload_client_cpu_ms_per_MiB'))} / {fmt(m(v, 'upload_server_cpu_ms_per_MiB'))} | "
            f"{fmt(m(v, 'download_client_cpu_ms_per_MiB'))} / {fmt(m(v, 'download_server_cpu_ms_per_MiB'))} |"
        )
    return "\n".join(lines)


SKELETON = """# Benchmarks

pywebtransport against raw aioquic on this machine. Regenerate with `make bench`
(`python -m benchmarks`); the blocks between `BEGIN GENERATED` / `END GENERATED` markers
are rewritten by the runner, everything else is kept.

## Method

Server and client are separate processes on 127.0.0.1 (`benchmarks/worker.py`: a fresh
server child and UDP port per run, one self-signed ECDSA P-256 certificate). For each
scenario, round *r* runs ours, raw H3, raw QUIC in that order, so all three see the same
machine noise; each cell is the median over rounds of that run's own figure (latency
percentiles over its samples after 10 warm-up round trips; throughput after a warm-up
transfer). CPU figures are user+system time of each process from `/proc/<pid>/stat` over
the measured phase. MiB = 2^20 bytes. Ratios are ours ÷ raw H3; ✓/✗ mark the issue's
targets. Implementations:

- **ours**: the public API only (`WebTransportServer(ServerConfig(...), handler=...)`,
  `WebTransportClient(ClientConfig(...)).connect(url)`, stream `write`/`write_all`/`read`/
  `readexactly`/`read_all`, `send_datagram`/`receive_datagram`/`incoming_datagrams`).
- **raw H3**: aioquic `H3Connection(enable_webtransport=True)`: extended CONNECT, WebTransport
  bidi streams parsed by H3Connection on both sides, HTTP datagrams (`benchmarks/raw.py`).
- **raw QUIC**: aioquic QUIC streams and DATAGRAM frames, no HTTP/3.

Scenarios: handshake (connect → session ready, then close; 30 after 3 warm-up), 64 B echo
round trip on one reused stream and on a fresh stream each time (200 each), 64 B datagram
echo (200, one in flight), upload and download of 32 MiB on one stream, 1,000 concurrent
streams × 8 KiB echoed on one session (64 KiB times out for every implementation), 20,000 64 B datagrams sent back to back (the server
counts; received per second = count ÷ (last − first arrival)), sequential connect+close
for 3 s, and idle RSS growth for 500 sessions (one connection each).

<!-- BEGIN GENERATED: main -->
<!-- END GENERATED: main -->

## Defaults that serve users

<!-- BEGIN GENERATED: defaults -->
<!-- END GENERATED: defaults -->
"""


def _replace(text: str, name: str, body: str) -> str:
    start, end = f"<!-- BEGIN GENERATED: {name} -->", f"<!-- END GENERATED: {name} -->"
    i, j = text.index(start) + len(start), text.index(end)
    return text[:i] + "\n" + body.strip() + "\n" + text[j:]


def write_outputs(path: Path, main: str | None, defaults: str | None, svg: str | None) -> None:
    text = path.read_text() if path.exists() else SKELETON
    if main is not None:
        text = _replace(text, "main", main)
    if defaults is not None:
        text = _replace(text, "defaults", defaults)
    path.write_text(text)
    if svg:
        PLOT.parent.mkdir(exist_ok=True)
        PLOT.write_text(svg + "\n")
    if main is not None:
        write_docs(main, svg)


def write_docs(main: str, svg: str | None) -> None:
    body = main.replace("![throughput and latency vs raw aioquic](benchmarks/results/plot.svg)", "")
    doc = [
        "# Benchmarks",
        "",
        "How pywebtransport compares with raw aioquic (QUIC streams, and aioquic's own HTTP/3 "
        "WebTransport) on one machine. The method, the profile and the defaults study are in "
        "`BENCHMARK.md` at the repository root; this page is a copy of its table, written by "
        "`make bench`.",
        "",
        body.strip(),
        "",
    ]
    if svg:
        doc += ['<div class="bench-plot">', svg, "</div>", ""]
    DOCS.write_text("\n".join(doc))
    _ = json
