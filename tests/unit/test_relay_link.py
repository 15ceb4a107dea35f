"""The path model of the benchmark and test relay (tests/integration/udp_relay.py).

`Link` is pure: arrival times in, departure times out, seeded draws. The figures the
benchmarks quote for bottleneck and bursty-loss paths rest on it doing what its
options say, so its rate, queue, loss and ordering are checked here without sockets.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from integration.udp_relay import Link

pytestmark = pytest.mark.timeout(60)


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=0.002), min_size=1, max_size=400),
    sizes=st.lists(st.integers(min_value=40, max_value=1500), min_size=1, max_size=400),
    rate_mbps=st.sampled_from([1.0, 20.0, 100.0]),
    queue=st.integers(min_value=1, max_value=64),
)
def test_bottleneck_never_exceeds_its_rate_or_queue(
    gaps: list[float], sizes: list[int], rate_mbps: float, queue: int
) -> None:
    link = Link(random.Random(1), delay=(0.01, 0.01), rate_bps=rate_mbps * 1e6, queue=queue)
    now, departures = 0.0, []
    for gap, size in zip(gaps, sizes, strict=False):
        now += gap
        assert link.queued(now) <= queue
        for due in link.admit(now, size):
            assert due >= now + 0.01 + size * 8 / (rate_mbps * 1e6) - 1e-9
            departures.append((due, size))
        assert link.queued(now) <= queue
    # Serialisation: consecutive departures are at least one packet time apart.
    for (a, _), (b, size) in itertools.pairwise(departures):
        assert b - a >= size * 8 / (rate_mbps * 1e6) - 1e-9
    accepted = len(departures) + link.counts["queue_dropped"]
    assert accepted == min(len(gaps), len(sizes))


def test_drop_tail_drops_only_what_does_not_fit() -> None:
    link = Link(random.Random(1), rate_bps=8e6, queue=4)  # 1000 B take 1 ms
    dues = [link.admit(0.0, 1000) for _ in range(6)]
    assert [len(d) for d in dues] == [1, 1, 1, 1, 0, 0]
    assert dues[3] == [pytest.approx(0.004)]
    assert link.counts["queue_dropped"] == 2
    # One has left by 1.5 ms: room for exactly one more.
    assert len(link.admit(0.0015, 1000)) == 1
    assert link.admit(0.0015, 1000) == []


@pytest.mark.parametrize("burst", [1.0, 4.0, 16.0])
def test_loss_rate_and_burst_length(burst: float) -> None:
    link = Link(random.Random(7), loss=5.0, burst=burst)
    lost = [not link.admit(i * 1e-4, 1200) for i in range(200_000)]
    rate = sum(lost) / len(lost)
    assert rate == pytest.approx(0.05, rel=0.15)
    runs, length = [], 0
    for gone in lost:
        if gone:
            length += 1
        elif length:
            runs.append(length)
            length = 0
    # Independent loss gives runs of 1 / (1 - p) on average; a burst chain, `burst`.
    expected = burst if burst > 1 else 1 / (1 - 0.05)
    assert sum(runs) / len(runs) == pytest.approx(expected, rel=0.2)


def test_jitter_keeps_order_and_one_way_delay_is_per_link() -> None:
    rng = random.Random(3)
    up = Link(rng, delay=(0.005, 0.015))
    down = Link(rng, delay=(0.050, 0.050))
    dues = [up.admit(i * 1e-4, 100)[0] for i in range(1000)]
    # Strictly: a loop runs timers of equal deadline in no fixed order.
    assert all(a < b for a, b in itertools.pairwise(dues))
    assert all(d - i * 1e-4 >= 0.005 for i, d in enumerate(dues))
    assert down.admit(1.0, 100) == [pytest.approx(1.05)]


@pytest.mark.parametrize("options", [{}, {"dup": 50.0}, {"delay": (0.005, 0.015)}])
def test_datagrams_that_arrive_together_get_distinct_dues_in_arrival_order(
    options: dict[str, Any],
) -> None:
    # A fixed delay would give a burst read in one loop iteration one due each; the
    # relay's loop would then send them in heap order, reordering every burst.
    link = Link(random.Random(5), **options)
    dues = [due for _ in range(64) for due in link.admit(100_000.0, 1200)]
    assert len(dues) >= 64
    assert all(a < b for a, b in itertools.pairwise(dues))
