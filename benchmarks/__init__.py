"""pywebtransport benchmark suite: our library vs raw aioquic (QUIC and H3), side by side.

Run from the repository root: ``python -m benchmarks`` (full run, writes BENCHMARK.md and
the plot) or ``python -m benchmarks --smoke`` (every scenario with tiny sizes, completion only).
Grown out of the shared wtbench harness; this copy is the maintained one.
"""
