"""The pacer's burst survives a coarse event-loop clock (uvloop's moves in 1 ms steps)."""

from __future__ import annotations

from aioquic.quic.recovery import QuicPacketPacer
from hypothesis import given
from hypothesis import strategies as st

from pywebtransport.transport._aioquic import BurstPacer as _BurstPacer

MDS = 1350


def _packets_per_tick(pacer: QuicPacketPacer, cwnd: int, srtt: float, tick: float) -> float:
    """Packets the pacer lets out per clock step, averaged over 20 steps."""
    pacer.update_rate(congestion_window=cwnd, smoothed_rtt=srtt)
    sent = 0
    now = 1.0
    for _ in range(20):
        now += tick
        # Send until the pacer asks to wait (bounded: never more than the window).
        while pacer.next_send_time(now) is None and sent < 10**6:
            pacer.update_after_send(now)
            sent += 1
    return sent / 20


def test_large_window_on_a_millisecond_clock_is_not_throttled_to_one_packet() -> None:
    # The state a loopback bulk transfer reaches: a 21 MB window at aioquic's 1 ms RTT floor.
    cwnd, srtt, tick = 21_600_000, 0.001, 0.001
    assert _packets_per_tick(QuicPacketPacer(max_datagram_size=MDS), cwnd, srtt, tick) <= 1.5
    assert _packets_per_tick(_BurstPacer(max_datagram_size=MDS), cwnd, srtt, tick) >= 200


@given(
    cwnd=st.integers(min_value=2 * MDS, max_value=64 * 1024 * 1024),
    srtt=st.floats(min_value=0.001, max_value=0.5),
    tick=st.sampled_from([0.0001, 0.001, 0.004]),
)
def test_burst_is_bounded_and_never_below_its_floor(cwnd: int, srtt: float, tick: float) -> None:
    pacer = _BurstPacer(max_datagram_size=MDS)
    per_tick = _packets_per_tick(pacer, cwnd, srtt, tick)
    # At most the 256-packet cap (+1 for the packet sent when the bucket runs dry)...
    assert per_tick <= 257
    # ...and at least what the rate allows per step, up to the burst: 2 ms of the rate,
    # at least 10 packets (2 on paths of 5 ms or more).
    rate = min(cwnd / srtt / MDS, 1e6)  # packets per second; 1 µs is the shortest packet time
    floor = 2 if srtt >= 0.005 else 10
    burst = min(max(rate * 0.002, floor), 256)
    assert per_tick >= min(rate * tick, burst) * 0.9


def test_on_a_long_path_a_small_window_is_not_sent_in_one_burst() -> None:
    """20 ms, 10 packets of window: 2 packets at a time, so the receiver ACKs more often."""
    pacer = _BurstPacer(max_datagram_size=MDS)
    pacer.update_rate(congestion_window=10 * MDS, smoothed_rtt=0.02)
    now = 1.0
    burst = 0
    while pacer.next_send_time(now) is None and burst < 100:
        pacer.update_after_send(now)
        burst += 1
    assert burst <= 3
    # On loopback (1 ms) the same window may leave at once: the clock's steps are coarse there.
    pacer = _BurstPacer(max_datagram_size=MDS)
    pacer.update_rate(congestion_window=10 * MDS, smoothed_rtt=0.001)
    burst = 0
    while pacer.next_send_time(now) is None and burst < 100:
        pacer.update_after_send(now)
        burst += 1
    assert burst >= 10
