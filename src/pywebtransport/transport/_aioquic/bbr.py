"""BBR congestion control for aioquic, registered as `"bbr"`.

A model-based controller after the IETF CCWG BBR draft
(draft-ietf-ccwg-bbr) and the BBR papers (Cardwell et al., ACM Queue 2016):
instead of halving its window on every loss, as Reno and CUBIC do, it
measures the path, the bottleneck bandwidth (a windowed maximum of
delivery-rate samples) and the round-trip propagation time (a windowed
minimum), paces at the bandwidth and keeps about two bandwidth-delay products
in flight. Random loss on a radio link is not congestion: a round that loses
no more than `LOSS_THRESH` of its packets leaves the model alone; a round
that loses more bounds the data in flight (`inflight_hi`), as the draft's
BBRv3 loss response does.

What this implementation does, in the draft's terms:

- Delivery-rate sampling per acknowledged packet (draft-cheng-iccrg-delivery-
  rate-estimation): each sent packet records the connection's delivered bytes
  and times; its ACK yields (delivered now - then) / max(send interval, ACK
  interval). aioquic's congestion interface does not say when the sender ran
  out of data, so a packet sent while less than half a BDP was in flight
  counts as application-limited: its sample may raise the bandwidth model
  but never lower it (after a bulk transfer, a few small messages would
  otherwise shrink the estimate, and the next transfer would start slowly).
- Rounds counted by delivered bytes; `max_bw` over 10 rounds; `min_rtt` over
  10 s, refreshed by a PROBE_RTT of 200 ms at 4 packets when it expires.
- States STARTUP (pacing gain 2.77, leave when the bandwidth grew less than
  25 % in 3 rounds that were not application-limited, or a round lost too
  much), DRAIN (gain 0.35 until the data in flight fits one BDP), PROBE_BW
  (an 8-phase gain cycle 1.25, 0.75, 1 x 6, one min_rtt per phase) and
  PROBE_RTT.
- The congestion window is 2 x BDP plus 3 packets for ACK aggregation while
  probing (STARTUP, DRAIN, PROBE_BW's 1.25 phase) and 1.5 x BDP plus 3 packets
  while cruising. This departs from the draft (2 x BDP throughout): ACK
  aggregation and timer jitter inflate the bandwidth filter by a few percent, so
  pacing runs a little above the bottleneck and the queue fills until the window
  stops it; with 2 x BDP that is a standing queue of up to one BDP, round
  trips doubled for everyone behind it; 1.5 x BDP bounds it to half of one.
  The recorded figures (a 20 Mbit/s bottleneck, benchmarks/lossy.py) are in
  docs/guides/networks.md. Capped
  by `inflight_hi` after a lossy round: 0.7 x what was in flight, but never
  under 1.25 x BDP (what probing needs to measure the bandwidth; lower, the
  model would shrink round after round on a lossy radio link); raised again,
  1/16 per round, while rounds stay clean. Never below 4 packets. Persistent congestion (RFC 9002
  section 7.6) restarts the model from STARTUP.

Pacing: the controller hands its pacing rate to the connection's pacer
(`attach_pacer`, done by `new_quic_connection` when the `pacer` feature is
on). Without it, aioquic paces at window / RTT.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from typing import Any, Final

from aioquic.quic.congestion.base import QuicCongestionControl, register_congestion_control
from aioquic.quic.packet_builder import QuicSentPacket

__all__ = ["BbrCongestionControl", "BbrState"]

STARTUP_PACING_GAIN: Final = 4 * math.log(2)  # 2.77: doubles the rate each round
DRAIN_PACING_GAIN: Final = 0.35
PROBE_BW_GAINS: Final = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
CWND_GAIN: Final = 2.0
CRUISE_CWND_GAIN: Final = 1.5
"""The window's BDP multiple while PROBE_BW paces at or below the model's bandwidth."""
STARTUP_GROWTH: Final = 1.25
"""The bandwidth must grow by this factor within `STARTUP_ROUNDS` rounds to stay in STARTUP."""
STARTUP_ROUNDS: Final = 3
BW_WINDOW_ROUNDS: Final = 10
MIN_RTT_WINDOW: Final = 10.0
PROBE_RTT_DURATION: Final = 0.2
MIN_PIPE_PACKETS: Final = 4
ACK_AGGREGATION_PACKETS: Final = 3
LOSS_THRESH: Final = 0.02
"""A round losing more than this share of its packets is congestion; less is noise."""
INFLIGHT_HI_BETA: Final = 0.7
"""What is left of the data in flight after a lossy round (the draft's BBRBeta)."""
_MIN_INTERVAL: Final = 1e-4
"""Shorter sample intervals are clock noise (uvloop's clock moves in 1 ms steps)."""


class BbrState(enum.StrEnum):
    """The controller's states (their values appear in qlog)."""

    STARTUP = "startup"
    DRAIN = "drain"
    PROBE_BW = "probe_bw"
    PROBE_RTT = "probe_rtt"


class _MaxFilter:
    """A windowed maximum over rounds: the best sample of the last `window` rounds."""

    __slots__ = ("_best", "_window")

    def __init__(self, window: int) -> None:
        self._window = window
        self._best: list[tuple[int, float]] = []  # (round, value), values decreasing

    def update(self, round_count: int, value: float) -> None:
        best = self._best
        while best and best[-1][1] <= value:
            best.pop()
        best.append((round_count, value))
        while best[0][0] <= round_count - self._window:
            best.pop(0)

    def reset(self) -> None:
        self._best.clear()

    @property
    def value(self) -> float:
        return self._best[0][1] if self._best else 0.0


class BbrCongestionControl(QuicCongestionControl):
    """BBR on aioquic's congestion-control interface (see the module).

    Args:
        max_datagram_size: The connection's packet size in bytes.

    Attributes:
        state: One of `BbrState`.
        pacing_rate: Bytes per second the pacer is given (0 before any sample).
        inflight_hi: The bound on data in flight a lossy round set, or None.
    """

    def __init__(self, *, max_datagram_size: int) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        self._mss = max_datagram_size
        self._initial_window = self.congestion_window
        self._pacer: Any = None
        self.pacing_rate = 0.0
        self._restart()
        self._min_rtt = math.inf
        self._min_rtt_stamp = 0.0
        self._srtt = 0.0
        # Delivery-rate estimation (per connection).
        self._delivered = 0
        self._delivered_time = 0.0
        self._first_sent_time = 0.0

    def _restart(self) -> None:
        self.state = BbrState.STARTUP
        self.inflight_hi: int | None = None
        self._max_bw = _MaxFilter(BW_WINDOW_ROUNDS)
        self._round_count = 0
        self._next_round_delivered = 0
        self._round_lost = 0
        self._round_delivered_start = 0
        self._full_bw = 0.0
        self._full_bw_rounds = 0
        self._filled_pipe = False
        self._cycle_index = 0
        self._cycle_stamp = 0.0
        self._probe_rtt_done: float | None = None
        self._pacing_gain = STARTUP_PACING_GAIN

    # ------------------------------------------------------------------ aioquic's interface

    def on_packet_sent(self, *, packet: QuicSentPacket) -> None:
        """Count the packet in flight and stamp it for delivery-rate sampling."""
        if self.bytes_in_flight == 0:
            # Sending resumes after an idle period: intervals start now.
            self._first_sent_time = self._delivered_time = packet.sent_time or 0.0
        # Sent with the pipe less than half full: the application, not the path, set the
        # rate, and the sample must not lower the model (a few small messages after a
        # bulk transfer would otherwise shrink the bandwidth estimate to theirs).
        # (STARTUP, before there is a BDP: less than half the window in flight.)
        pipe = self._bdp() if self._filled_pipe else self.congestion_window
        app_limited = self.bytes_in_flight < pipe / 2
        self.bytes_in_flight += packet.sent_bytes
        sample: Any = packet
        sample.wt_rate = (
            self._delivered,
            self._delivered_time,
            self._first_sent_time,
            app_limited,
        )

    def on_packet_acked(self, *, now: float, packet: QuicSentPacket) -> None:
        """Take one acknowledged packet: a delivery-rate sample, then the model."""
        self.bytes_in_flight -= packet.sent_bytes
        self._delivered += packet.sent_bytes
        self._delivered_time = now
        stamped: Any = packet
        sent_rate: tuple[int, float, float, bool] | None = getattr(stamped, "wt_rate", None)
        if sent_rate is None:
            return
        delivered_then, delivered_time_then, first_sent_then, app_limited = sent_rate
        sent_time = packet.sent_time or now
        self._first_sent_time = sent_time
        round_start = False
        if delivered_then >= self._next_round_delivered:
            round_start = True
            self._next_round_delivered = self._delivered
            self._round_count += 1
        interval = max(sent_time - first_sent_then, now - delivered_time_then)
        if interval >= _MIN_INTERVAL:
            rate = (self._delivered - delivered_then) / interval
            if rate >= self._max_bw.value or (round_start and not app_limited):
                self._max_bw.update(self._round_count, rate)
        if round_start:
            self._end_round(app_limited)
        self._advance(now)
        self._set_window(packet.sent_bytes)

    def on_packets_expired(self, *, packets: Iterable[QuicSentPacket]) -> None:
        """Forget packets that no longer count (their space was discarded)."""
        for packet in packets:
            self.bytes_in_flight -= packet.sent_bytes

    def on_packets_lost(self, *, now: float, packets: Iterable[QuicSentPacket]) -> None:
        """Count lost packets against the round; the model reacts when the round ends."""
        for packet in packets:
            self.bytes_in_flight -= packet.sent_bytes
            self._round_lost += packet.sent_bytes
        if not self._filled_pipe and self._round_loss_rate() > LOSS_THRESH:
            # STARTUP overshot the path: leave it now rather than a round later.
            self._end_round()
            self._advance(now)
            self._set_window(0)

    def on_persistent_congestion(self) -> None:
        """The path changed (RFC 9002 section 7.6): restart the model from STARTUP."""
        self._restart()
        self.congestion_window = MIN_PIPE_PACKETS * self._mss
        self._pace()

    def on_rtt_measurement(self, *, now: float, rtt: float) -> None:
        """Keep the windowed minimum RTT (and enter PROBE_RTT when it expired)."""
        self._srtt = rtt if self._srtt == 0 else 0.875 * self._srtt + 0.125 * rtt
        expired = now > self._min_rtt_stamp + MIN_RTT_WINDOW
        if rtt <= self._min_rtt or expired:
            self._min_rtt = rtt
            self._min_rtt_stamp = now
            if expired and self._filled_pipe and self.state is not BbrState.PROBE_RTT:
                self.state = BbrState.PROBE_RTT
                self._pacing_gain = 1.0
                self._probe_rtt_done = None
                self._set_window(0)

    def get_log_data(self) -> dict[str, Any]:
        """What qlog records: aioquic's fields plus the model."""
        data = super().get_log_data()
        data.update(
            bbr_state=self.state, pacing_rate=int(self.pacing_rate), max_bw=int(self._max_bw.value)
        )
        return data

    # ------------------------------------------------------------------ pacing

    def attach_pacer(self, pacer: Any) -> None:
        """Pace with the model's rate: `pacer` has `set_pacing_rate(bytes_per_second, rtt)`."""
        self._pacer = pacer
        self._pace()

    def _pace(self) -> None:
        bw = self._max_bw.value
        if bw > 0:
            self.pacing_rate = self._pacing_gain * bw
        elif self._srtt > 0:
            self.pacing_rate = self._pacing_gain * self.congestion_window / self._srtt
        else:
            self.pacing_rate = 0.0
        if self._pacer is not None and self.pacing_rate > 0:
            rtt = 0.0 if math.isinf(self._min_rtt) else self._min_rtt
            self._pacer.set_pacing_rate(self.pacing_rate, rtt)

    # ------------------------------------------------------------------ the model

    def _bdp(self) -> float:
        bw = self._max_bw.value
        if bw <= 0 or math.isinf(self._min_rtt):
            return float(self._initial_window)
        return bw * self._min_rtt

    def _round_loss_rate(self) -> float:
        delivered = self._delivered - self._round_delivered_start
        total = delivered + self._round_lost
        # Too few packets for a rate: a single loss at the start is not 1 in 2.
        if total < 8 * self._mss:
            return 0.0
        return self._round_lost / total

    def _end_round(self, app_limited: bool = False) -> None:
        lossy = self._round_loss_rate() > LOSS_THRESH
        if lossy:
            base = max(self.bytes_in_flight + self._round_lost, self.congestion_window)
            if self.inflight_hi is not None:
                base = min(base, self.inflight_hi)
            # Never below what probing needs to measure the bandwidth: a bound under
            # it would let the model shrink round after round.
            floor = int(PROBE_BW_GAINS[0] * self._bdp()) + ACK_AGGREGATION_PACKETS * self._mss
            self.inflight_hi = max(int(base * INFLIGHT_HI_BETA), floor)
            if not self._filled_pipe:
                self._filled_pipe = True
        elif self.inflight_hi is not None:
            self.inflight_hi += max(self._mss, self.inflight_hi // 16)
            if self.inflight_hi > 4 * self._bdp():
                self.inflight_hi = None  # no longer binding
        if not self._filled_pipe and not app_limited:
            # A round the application held back says nothing about the pipe being full.
            bw = self._max_bw.value
            if bw >= self._full_bw * STARTUP_GROWTH:
                self._full_bw = bw
                self._full_bw_rounds = 0
            else:
                self._full_bw_rounds += 1
                if self._full_bw_rounds >= STARTUP_ROUNDS:
                    self._filled_pipe = True
        self._round_lost = 0
        self._round_delivered_start = self._delivered

    def _advance(self, now: float) -> None:
        state = self.state
        if state is BbrState.STARTUP and self._filled_pipe:
            state = self.state = BbrState.DRAIN
            self._pacing_gain = DRAIN_PACING_GAIN
        if state is BbrState.DRAIN and self.bytes_in_flight <= self._bdp():
            self._enter_probe_bw(now)
        elif state is BbrState.PROBE_BW:
            elapsed = now - self._cycle_stamp
            gain = self._pacing_gain
            if gain > 1:
                # Probe until the pipe holds gain x BDP (or loses), at most 2 RTTs.
                phase_over = elapsed > self._min_rtt and (
                    self._round_lost > 0
                    or self.bytes_in_flight >= gain * self._bdp()
                    or elapsed > 2 * self._min_rtt
                )
            elif gain < 1:
                phase_over = elapsed > self._min_rtt or self.bytes_in_flight <= self._bdp()
            else:
                phase_over = elapsed > self._min_rtt
            if phase_over:
                self._cycle_index = (self._cycle_index + 1) % len(PROBE_BW_GAINS)
                self._cycle_stamp = now
                self._pacing_gain = PROBE_BW_GAINS[self._cycle_index]
        elif state is BbrState.PROBE_RTT:
            if self._probe_rtt_done is None:
                if self.bytes_in_flight <= MIN_PIPE_PACKETS * self._mss:
                    self._probe_rtt_done = now + PROBE_RTT_DURATION
            elif now >= self._probe_rtt_done:
                self._min_rtt_stamp = now
                self._enter_probe_bw(now)
        self._pace()

    def _enter_probe_bw(self, now: float) -> None:
        self.state = BbrState.PROBE_BW
        # Start in a cruising phase, as the draft randomises away from probing up.
        self._cycle_index = 2
        self._cycle_stamp = now
        self._pacing_gain = PROBE_BW_GAINS[self._cycle_index]

    def _set_window(self, acked: int) -> None:
        floor = MIN_PIPE_PACKETS * self._mss
        if self.state is BbrState.PROBE_RTT:
            self.congestion_window = floor
            return
        gain = CWND_GAIN
        if self.state is BbrState.PROBE_BW and self._pacing_gain <= 1.0:
            gain = CRUISE_CWND_GAIN
        target = int(gain * self._bdp()) + ACK_AGGREGATION_PACKETS * self._mss
        if self.inflight_hi is not None:
            target = min(target, self.inflight_hi)
        window = self.congestion_window
        if self._filled_pipe:
            window = min(window + acked, target)
        elif window < target or self._delivered < self._initial_window:
            # STARTUP grows the window by what was delivered (doubling per round).
            window += acked
        self.congestion_window = max(window, floor)


register_congestion_control("bbr", BbrCongestionControl)
