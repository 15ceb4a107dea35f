"""pywebtransport benchmark suite: our library vs raw aioquic H3, stock and tuned, side by side.

Run from the repository root: ``python -m benchmarks`` (``make bench``: writes BENCHMARK.md,
the docs page and the plot), ``python -m benchmarks --full`` (``make bench-full``: the heavy
runs) or ``python -m benchmarks --smoke`` (every scenario with tiny sizes, completion only).
Grown out of the shared wtbench harness; this copy is the maintained one.
"""
