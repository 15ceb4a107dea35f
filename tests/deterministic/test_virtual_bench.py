"""`benchmarks/virtual.py`: its uploads arrive whole, through the path model, the same every time.

The figures of docs/guides/networks.md's virtual-clock table rest on these three things.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.virtual import run_one

pytestmark = pytest.mark.timeout(60)

SIZE = 256 * 1024


@pytest.mark.parametrize("impl", ["ours", "rawh3t"])
def test_an_upload_through_a_lossy_path_is_whole_and_repeatable(impl: str) -> None:
    first = run_one(impl, "cubic", "20ms", 5, seed=7, size=SIZE)
    assert first["ok"], first.get("error")  # the server's SHA-256 matched what was sent
    results = first["results"]
    assert results["dropped"] > 0  # the path model was on the network
    assert results["s"] > 0.02  # at least one 20 ms round trip of virtual time
    assert run_one(impl, "cubic", "20ms", 5, seed=7, size=SIZE) == first
