"""The stream schedule that replaces aioquic's walk over every open stream.

Two real aioquic connections (the boundary's tuned class) exchange packets in
memory with an explicit clock and a loss pattern; every byte, FIN, reset and
STOP_SENDING must still arrive, finished streams must be forgotten (and peer
streams re-credited), and busy streams must share packets round-robin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aioquic.quic import events as qe
from aioquic.quic.connection import QuicConnection
from wire import CLIENT_ADDR, SERVER_ADDR, make_quic_pair

from pywebtransport.shared.utils import CertificateInfo
from pywebtransport.transport import _aioquic

pytestmark = [pytest.mark.timeout(60), pytest.mark.aioquic_patch("stream_scheduling")]


class Link:
    """Moves datagrams between a client and a server, dropping the ones `drop` picks."""

    def __init__(
        self, certificate: CertificateInfo, drop: Callable[[int], bool] = lambda n: False
    ) -> None:
        self.client, self.server = make_quic_pair(certificate)
        self.now = 1.0
        self.drop: Callable[[int], bool] = lambda n: False  # the handshake is not under test
        self.sent = 0
        self.events: dict[str, list[qe.QuicEvent]] = {"client": [], "server": []}
        self.client.connect(SERVER_ADDR, now=self.now)
        self.run()
        assert any(isinstance(e, qe.HandshakeCompleted) for e in self.events["client"])
        self.drop = drop

    def _move(self, src: QuicConnection, dst: QuicConnection, addr: Any, side: str) -> bool:
        moved = False
        for data, _ in src.datagrams_to_send(now=self.now):
            moved = True
            self.sent += 1
            if not self.drop(self.sent):
                dst.receive_datagram(data, addr, now=self.now)
        while (event := dst.next_event()) is not None:
            self.events[side].append(event)
        return moved

    def run(self, until: Callable[[], bool] | None = None, limit: float = 30.0) -> None:
        """Exchange packets, running timers when both sides are quiet, until `until()`.

        Without `until`, until nothing is left to send or retransmit (only the
        idle timers are due, seconds away).
        """
        deadline = self.now + limit
        while self.now < deadline:
            self.now += 0.001
            moved = self._move(self.client, self.server, CLIENT_ADDR, "server")
            moved = self._move(self.server, self.client, SERVER_ADDR, "client") or moved
            if until is not None and until():
                return
            if not moved:
                timers = [t for t in (self.client.get_timer(), self.server.get_timer()) if t]
                if not timers or (until is None and min(timers) > self.now + 5):
                    return
                self.now = max(self.now, min(timers))
                for quic in (self.client, self.server):
                    timer = quic.get_timer()
                    if timer is not None and timer <= self.now:
                        quic.handle_timer(now=self.now)
        raise AssertionError("the exchange did not finish")

    def received(self, side: str) -> dict[int, bytearray]:
        out: dict[int, bytearray] = {}
        for event in self.events[side]:
            if isinstance(event, qe.StreamDataReceived):
                out.setdefault(event.stream_id, bytearray()).extend(event.data)
        return out

    def ended(self, side: str) -> set[int]:
        return {
            e.stream_id
            for e in self.events[side]
            if isinstance(e, qe.StreamDataReceived) and e.end_stream
        }


def _payload(stream_id: int, size: int) -> bytes:
    return bytes((stream_id + i) % 251 for i in range(size))


def _streams(quic: QuicConnection) -> dict[int, Any]:
    tuned: Any = quic
    return tuned._streams  # type: ignore[no-any-return]


@pytest.mark.parametrize("loss", [0, 7, 3])
def test_many_streams_arrive_byte_exact_under_loss(certificate: CertificateInfo, loss: int) -> None:
    link = Link(certificate, drop=lambda n: loss > 0 and n % loss == 0)
    ids = [link.client.get_next_available_stream_id() + 4 * i for i in range(40)]
    for stream_id in ids:
        link.client.send_stream_data(stream_id, _payload(stream_id, 20_000), end_stream=True)
    link.run(until=lambda: link.ended("server") >= set(ids))
    got = link.received("server")
    for stream_id in ids:
        assert bytes(got[stream_id]) == _payload(stream_id, 20_000)


def test_finished_streams_are_forgotten_and_peer_streams_recredited(
    certificate: CertificateInfo,
) -> None:
    link = Link(certificate, drop=lambda n: n % 5 == 0)
    limit = _aioquic.ConnectionTuning(max_streams_bidi=128, max_streams_uni=128).max_streams_bidi
    for round_ in range(3):
        # More streams than the server's limit over the rounds: each round's streams
        # must finish and be re-credited for the next round to open.
        ids = []
        for _ in range(limit // 2):
            stream_id = link.client.get_next_available_stream_id()
            ids.append(stream_id)
            link.client.send_stream_data(stream_id, b"ping %d" % round_, end_stream=True)
        link.run(until=lambda ids=ids: link.ended("server") >= set(ids))
        for stream_id in ids:
            link.server.send_stream_data(stream_id, b"pong", end_stream=True)
        link.run(until=lambda ids=ids: link.ended("client") >= set(ids))
        link.run()  # ACKs settle; both sides forget the streams
        assert not set(ids) & set(_streams(link.client))
        assert not set(ids) & set(_streams(link.server))
    assert _aioquic.can_open_stream(link.client, unidirectional=False)


def test_resets_and_stop_sending_survive_loss(certificate: CertificateInfo) -> None:
    link = Link(certificate, drop=lambda n: n % 2 == 0)
    reset_id = link.client.get_next_available_stream_id()
    link.client.send_stream_data(reset_id, b"partial")
    stop_id = reset_id + 4
    link.client.send_stream_data(stop_id, b"hello")
    link.run(until=lambda: {reset_id, stop_id} <= set(link.received("server")))
    link.client.reset_stream(reset_id, 0x10)
    link.server.stop_stream(stop_id, 0x20)
    link.run(
        until=lambda: (
            any(
                isinstance(e, qe.StreamReset) and e.stream_id == reset_id
                for e in link.events["server"]
            )
            and any(
                isinstance(e, qe.StopSendingReceived) and e.stream_id == stop_id
                for e in link.events["client"]
            )
        )
    )


def test_a_stream_held_by_flow_control_resumes_on_max_stream_data(
    certificate: CertificateInfo,
) -> None:
    link = Link(certificate, drop=lambda n: n % 4 == 0)
    stream_id = link.client.get_next_available_stream_id()
    # A managed window only moves when the reader says so: the sender must park
    # the stream at the window and take it up again on MAX_STREAM_DATA.
    assert _aioquic.manage_stream_window(link.server, stream_id)
    tuned: Any = link.client
    window = int(tuned._remote_max_stream_data_bidi_remote)
    data = _payload(stream_id, window * 3)
    link.client.send_stream_data(stream_id, data, end_stream=True)
    link.run()
    assert len(link.received("server")[stream_id]) == window
    assert _streams(link.client)[stream_id] in tuned.wt_schedule.blocked
    _aioquic.set_stream_window(link.server, stream_id, window * 3)
    link.run(until=lambda: stream_id in link.ended("server"))
    assert bytes(link.received("server")[stream_id]) == data


def test_busy_streams_share_packets_round_robin(certificate: CertificateInfo) -> None:
    link = Link(certificate)
    ids = [link.client.get_next_available_stream_id() + 4 * i for i in range(8)]
    for stream_id in ids:
        link.client.send_stream_data(stream_id, bytes(200_000))
    # The first flight the congestion window allows: every stream gets a turn
    # before any gets a second one.
    link.client.datagrams_to_send(now=link.now)
    offsets = [_streams(link.client)[s].sender.highest_offset for s in ids]
    assert all(offset > 0 for offset in offsets), offsets
    assert max(offsets) <= 2 * min(offsets), offsets


def test_an_idle_connection_holds_no_schedule(certificate: CertificateInfo) -> None:
    link = Link(certificate)
    stream_id = link.client.get_next_available_stream_id()
    link.client.send_stream_data(stream_id, b"x", end_stream=True)
    link.run(until=lambda: stream_id in link.ended("server"))
    link.run()
    tuned: Any = link.client
    assert tuned.wt_schedule is None
