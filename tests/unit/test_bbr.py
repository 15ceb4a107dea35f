"""BBR's model against a simulated path: bottleneck rate, delay, random loss, a queue.

The controller is driven exactly as aioquic's recovery drives it (packets sent,
acknowledged, lost; RTT samples) by a small discrete-event simulation of one
bottleneck link with a fixed propagation delay and seeded random loss. No
network, no clock: each run is the same every time. The loopback tests with
`congestion_control_algorithm="bbr"` are in tests/integration.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

import pytest
from aioquic.quic.congestion.base import QuicCongestionControl, create_congestion_control
from aioquic.quic.packet import QuicPacketType
from aioquic.quic.packet_builder import QuicSentPacket
from aioquic.tls import Epoch
from hypothesis import given, settings
from hypothesis import strategies as st

from pywebtransport.transport._aioquic.bbr import (
    CRUISE_CWND_GAIN,
    CWND_GAIN,
    BbrCongestionControl,
    BbrState,
)

pytestmark = pytest.mark.timeout(60)

MSS = 1200


class RecordingPacer:
    def __init__(self) -> None:
        self.rate = 0.0

    def set_pacing_rate(self, rate: float, rtt: float) -> None:
        self.rate = rate


@dataclass
class Outcome:
    goodput: float
    """Bytes per second acknowledged over the run."""
    max_queue: int
    """Most packets ever waiting at the bottleneck."""
    lost: int
    in_flight_at_end: int


def simulate(
    cc: QuicCongestionControl,
    *,
    rate: float,
    rtt: float,
    loss: float = 0.0,
    duration: float = 8.0,
    queue_limit: int | None = None,
    seed: int = 1,
) -> Outcome:
    """Send as fast as `cc` allows through one bottleneck; return what arrived."""
    rng = random.Random(seed)
    events: list[tuple[float, int, str, QuicSentPacket]] = []
    number = 0
    now = 0.0
    link_free = 0.0
    next_send = 0.0
    delivered = 0
    lost = 0
    max_queue = 0
    pacer_rate = getattr(cc, "pacing_rate", None)
    while now < duration:
        while cc.bytes_in_flight + MSS <= cc.congestion_window and now >= next_send:
            packet = QuicSentPacket(
                epoch=Epoch.ONE_RTT,
                in_flight=True,
                is_ack_eliciting=True,
                is_crypto_packet=False,
                packet_number=number,
                packet_type=QuicPacketType.ONE_RTT,
                sent_time=now,
                sent_bytes=MSS,
            )
            number += 1
            cc.on_packet_sent(packet=packet)
            queued = max(0.0, link_free - now) * rate / MSS
            max_queue = max(max_queue, int(queued))
            if (queue_limit is not None and queued >= queue_limit) or rng.random() < loss:
                # Dropped: found lost when later packets are acknowledged.
                found = now + rtt * 1.25 + queued * MSS / rate
                heapq.heappush(events, (found, number, "lost", packet))
            else:
                link_free = max(now, link_free) + MSS / rate
                heapq.heappush(events, (link_free + rtt, number, "ack", packet))
            pacing = getattr(cc, "pacing_rate", 0.0) if pacer_rate is not None else 0.0
            next_send = now + MSS / pacing if pacing else now
        wake = events[0][0] if events else duration
        if cc.bytes_in_flight + MSS <= cc.congestion_window:
            wake = min(wake, next_send)
        now = max(now, wake)
        while events and events[0][0] <= now:
            delivered, lost = _deliver(cc, events, now, delivered, lost)
    goodput = delivered / duration
    while events:  # the sender stops; what is in flight is acknowledged or lost
        delivered, lost = _deliver(cc, events, events[0][0], delivered, lost)
    return Outcome(goodput, max_queue, lost, cc.bytes_in_flight)


def _deliver(
    cc: QuicCongestionControl,
    events: list[tuple[float, int, str, QuicSentPacket]],
    now: float,
    delivered: int,
    lost: int,
) -> tuple[int, int]:
    _, _, kind, packet = heapq.heappop(events)
    if kind == "ack":
        cc.on_packet_acked(now=now, packet=packet)
        cc.on_rtt_measurement(now=now, rtt=now - (packet.sent_time or 0.0))
        return delivered + packet.sent_bytes, lost
    cc.on_packets_lost(now=now, packets=[packet])
    return delivered, lost + 1


def bbr() -> BbrCongestionControl:
    cc = BbrCongestionControl(max_datagram_size=MSS)
    cc.attach_pacer(RecordingPacer())
    return cc


RATE = 2.5e6  # 20 Mbit/s
RTT = 0.02


def test_registered_with_aioquic() -> None:
    cc = create_congestion_control("bbr", max_datagram_size=MSS)
    assert isinstance(cc, BbrCongestionControl)


def test_clean_path_fills_the_bottleneck_without_a_standing_queue() -> None:
    cc = bbr()
    out = simulate(cc, rate=RATE, rtt=RTT)
    assert out.goodput > 0.85 * RATE
    assert cc.state is BbrState.PROBE_BW
    assert 0.8 * RATE < cc._max_bw.value < 1.3 * RATE
    # Two BDPs in flight at most (1.5 cruising): the queue stays under one BDP (42 packets).
    assert out.max_queue < 3 * RATE * RTT / MSS


def test_cruising_keeps_a_smaller_window_than_probing() -> None:
    # Cruising at an overestimated rate (ACK aggregation inflates the max filter), two BDPs
    # would leave a standing queue of one BDP; the cruise window bounds it to half of one.
    seen = set()
    for step in range(24):
        cc = bbr()
        simulate(cc, rate=RATE, rtt=RTT, duration=2.0 + step * 0.03)
        if cc.state is not BbrState.PROBE_BW:
            continue
        bdp = cc._max_bw.value * cc._min_rtt
        cruising = cc._pacing_gain <= 1.0
        bound = (CRUISE_CWND_GAIN if cruising else CWND_GAIN) * bdp + 3 * MSS
        assert cc.congestion_window <= bound + 1
        seen.add(cruising)
    assert seen == {True, False}


@pytest.mark.parametrize("loss", [0.01, 0.05])
def test_random_loss_is_noise_for_bbr_and_congestion_for_reno(loss: float) -> None:
    ours = simulate(bbr(), rate=RATE, rtt=RTT, loss=loss)
    reno = simulate(
        create_congestion_control("reno", max_datagram_size=MSS), rate=RATE, rtt=RTT, loss=loss
    )
    assert ours.goodput > 2 * reno.goodput, (ours, reno)
    assert ours.goodput > (0.9 if loss == 0.01 else 0.8) * RATE


def test_a_shallow_queue_bounds_what_is_in_flight() -> None:
    cc = bbr()
    out = simulate(cc, rate=RATE, rtt=0.1, queue_limit=64, duration=10.0)
    assert out.goodput > 0.85 * RATE
    # Losses stay a small share: the window (2 BDP) does not keep the queue overflowing.
    assert out.lost < 0.02 * out.goodput * 10 / MSS


def test_persistent_congestion_restarts_the_model() -> None:
    cc = bbr()
    simulate(cc, rate=RATE, rtt=RTT, duration=2.0)
    assert cc.state is BbrState.PROBE_BW
    cc.on_persistent_congestion()
    assert cc.state is BbrState.STARTUP
    assert cc.congestion_window == 4 * MSS
    out = simulate(cc, rate=RATE, rtt=RTT, duration=3.0)
    assert out.goodput > 0.5 * RATE


def test_min_rtt_expiry_probes_rtt_with_a_small_window() -> None:
    cc = bbr()
    simulate(cc, rate=RATE, rtt=RTT, duration=2.0)
    cc.on_rtt_measurement(now=20.0, rtt=RTT * 3)  # 10 s without a lower sample
    assert cc.state is BbrState.PROBE_RTT
    assert cc.congestion_window == 4 * MSS


@settings(max_examples=25, deadline=None)
@given(
    rate=st.floats(min_value=2e5, max_value=2e7),
    rtt=st.floats(min_value=0.001, max_value=0.2),
    loss=st.sampled_from([0.0, 0.001, 0.01, 0.03, 0.1]),
    seed=st.integers(0, 1000),
)
def test_invariants_hold_on_any_path(rate: float, rtt: float, loss: float, seed: int) -> None:
    """Accounting balances (nothing left in flight once all is acknowledged or lost);
    the window never drops below 4 packets; data moves."""
    cc = bbr()
    out = simulate(cc, rate=rate, rtt=rtt, loss=loss, duration=3.0, seed=seed)
    assert out.in_flight_at_end == 0
    assert cc.congestion_window >= 4 * MSS
    assert cc.pacing_rate > 0
    assert out.goodput > 0


def _trickle(cc: BbrCongestionControl, start: float, rounds: int) -> float:
    """One small packet per round trip (an application sending now and then)."""
    now = start
    for number in range(rounds):
        packet = QuicSentPacket(
            epoch=Epoch.ONE_RTT,
            in_flight=True,
            is_ack_eliciting=True,
            is_crypto_packet=False,
            packet_number=10_000_000 + number,
            packet_type=QuicPacketType.ONE_RTT,
            sent_time=now,
            sent_bytes=100,
        )
        cc.on_packet_sent(packet=packet)
        now += RTT
        cc.on_packet_acked(now=now, packet=packet)
        cc.on_rtt_measurement(now=now, rtt=RTT)
    return now


def test_an_application_limited_trickle_does_not_shrink_the_model() -> None:
    cc = bbr()
    simulate(cc, rate=RATE, rtt=RTT, duration=2.0)
    before = cc._max_bw.value
    assert before > 0.8 * RATE
    _trickle(cc, 3.0, rounds=40)  # four times the bandwidth filter's window
    assert cc._max_bw.value >= before


def test_an_idle_start_does_not_end_startup() -> None:
    # Small messages before the first transfer are not a full pipe: STARTUP waits for real
    # data before it decides the bandwidth stopped growing.
    cc = bbr()
    _trickle(cc, 0.0, rounds=20)
    assert cc.state is BbrState.STARTUP
