"""Outgoing datagrams: handed to QUIC at once, or queued per session and fed round-robin."""

from __future__ import annotations

from collections import deque
from typing import Final

from .base import ProtocolBase
from .records import SessionRecord

PACKET_OVERHEAD: Final = 50
"""Short header, packet number, AEAD tag and slack in a 1-RTT packet."""
FRAME_OVERHEAD: Final = 1 + 2
"""DATAGRAM frame type and a 2-byte length (QUIC stacks send DATAGRAM_WITH_LENGTH)."""
_DATAGRAM_BUDGET: Final = 256
"""Datagrams handed to QUIC ahead of what it sent; the rest wait in session queues."""


def max_datagram_payload(packet_size: int, peer_frame_limit: int | None, prefix: int) -> int:
    """Return the largest datagram payload that fits in one QUIC packet.

    Args:
        packet_size: The UDP payload size in use.
        peer_frame_limit: The peer's `max_datagram_frame_size` (0 when it
            takes no datagrams), or None when unknown.
        prefix: Bytes of the session's quarter stream id.

    Returns:
        The byte count (0 when no datagram fits).
    """
    frame = packet_size - PACKET_OVERHEAD
    if peer_frame_limit is not None:
        frame = min(frame, peer_frame_limit)
    return max(0, frame - FRAME_OVERHEAD - prefix)


class DatagramLayer(ProtocolBase):
    """Sending datagrams (see `base` for how the layers fit)."""

    __slots__ = ()

    def send_datagram(self, session: SessionRecord, data: bytes | bytearray | memoryview) -> bool:
        """Hand a datagram to QUIC at once, when nothing waits in the session's queue.

        QUIC gets at most a few hundred datagrams ahead of what it can send;
        past that, datagrams wait in the session's queue (`queue_datagram`).

        Args:
            session: An established session.
            data: The payload (its size is checked by the caller).

        Returns:
            False when the datagram must be queued instead (nothing was done).
        """
        if session.outgoing or self.quic.pending_datagrams() >= _DATAGRAM_BUDGET:
            return False
        self.quic.send_datagram_frame(session.datagram_prefix + data)
        self.want_transmit = True
        return True

    def queue_datagram(
        self, session: SessionRecord, data: bytes | bytearray | memoryview, now: float
    ) -> bool:
        """Queue a datagram until QUIC can take it (`feed_datagrams` moves it on).

        When the queue holds `datagram_high_water_mark` datagrams, the oldest
        is dropped and counted in `session.datagrams_send_dropped`.

        Args:
            session: An established session.
            data: The payload.
            now: The current time (the datagram's age starts here).

        Returns:
            True when the queue is below its high-water mark afterwards.
        """
        queue = session.outgoing
        if queue is None:
            queue = session.outgoing = deque()
        if len(queue) >= self.datagram_high_water_mark:
            queue.popleft()
            session.datagrams_send_dropped += 1
        queue.append((now, bytes(data)))
        self._datagram_backlog[session.session_id] = session
        self.want_transmit = True
        return len(queue) < self.datagram_high_water_mark

    @property
    def has_datagram_backlog(self) -> bool:
        """True while sessions have datagrams queued for sending."""
        return bool(self._datagram_backlog)

    def feed_datagrams(self, now: float) -> None:
        """Hand queued datagrams to QUIC, round-robin across sessions, up to its budget.

        Datagrams older than `datagram_max_age` are dropped first (counted in
        `session.datagrams_expired`).

        Args:
            now: The current time.
        """
        quic = self.quic
        budget = _DATAGRAM_BUDGET - quic.pending_datagrams()
        max_age = self.datagram_max_age
        backlog = self._datagram_backlog
        while budget > 0 and backlog:
            for session_id, session in list(backlog.items()):
                queue = session.outgoing
                while queue:
                    queued_at, data = queue.popleft()
                    if max_age is not None and now - queued_at > max_age:
                        session.datagrams_expired += 1
                        continue
                    quic.send_datagram_frame(session.datagram_prefix + data)
                    budget -= 1
                    break
                if not queue or session.is_closed:
                    del backlog[session_id]
                if budget <= 0:
                    break
        self.want_transmit = True
