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
def test_burst_is_bounded_and_never_below_ten_packets(cwnd: int, srtt: float, tick: float) -> None:
    pacer = _BurstPacer(max_datagram_size=MDS)
    per_tick = _packets_per_tick(pacer, cwnd, srtt, tick)
    # At most the 256-packet cap (+1 for the packet sent when the bucket runs dry)...
    assert per_tick <= 257
    # ...and at least what the rate allows per step, up to the 10-packet minimum burst.
    rate_packets = cwnd / srtt * tick / MDS
    assert per_tick >= min(rate_packets, 10) * 0.9
