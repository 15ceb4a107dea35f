"""Session-level flow control of draft-15 (WT_MAX_DATA, WT_MAX_STREAMS_*, WT_*_BLOCKED).

`SessionFlow` is pure bookkeeping: each method returns the capsules to send as
`(capsule type, value)` pairs and never touches a stream. Per-stream receive
credit (QUIC MAX_STREAM_DATA following the reader) is kept on the stream
records (see `protocol.WebTransportCore.read`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...shared.constants import (
    CAPSULE_WT_DATA_BLOCKED,
    CAPSULE_WT_MAX_DATA,
    CAPSULE_WT_MAX_STREAMS_BIDI,
    CAPSULE_WT_MAX_STREAMS_UNI,
    CAPSULE_WT_STREAMS_BLOCKED_BIDI,
    CAPSULE_WT_STREAMS_BLOCKED_UNI,
    SETTINGS_WT_INITIAL_MAX_DATA,
    SETTINGS_WT_INITIAL_MAX_STREAMS_BIDI,
    SETTINGS_WT_INITIAL_MAX_STREAMS_UNI,
)
from ...shared.utils import decode_varint
from .dialects import Limits

__all__ = ["FLOW_CAPSULES", "Capsule", "SessionFlow"]

Capsule = tuple[int, int]
"""A flow-control capsule to send: (capsule type, varint value)."""

FLOW_CAPSULES = frozenset(
    {
        CAPSULE_WT_MAX_DATA,
        CAPSULE_WT_MAX_STREAMS_BIDI,
        CAPSULE_WT_MAX_STREAMS_UNI,
        CAPSULE_WT_DATA_BLOCKED,
        CAPSULE_WT_STREAMS_BLOCKED_BIDI,
        CAPSULE_WT_STREAMS_BLOCKED_UNI,
    }
)
"""Capsule types `SessionFlow.receive_capsule` handles."""


@dataclass(slots=True)
class _Grant:
    """One limit we grant the peer: streams of one kind."""

    initial: int
    sent: int
    opened: int = 0
    done: int = 0


class SessionFlow:
    """Both directions of one session's flow control.

    Args:
        limits: What we grant the peer (initial values from SETTINGS).
        peer_settings: The peer's SETTINGS so far (empty when not received yet).
    """

    __slots__ = (
        "_bidi",
        "_blocked_bidi_at",
        "_blocked_data_at",
        "_blocked_uni_at",
        "_consumed",
        "_max_data_sent",
        "_uni",
        "_window",
        "opened_bidi",
        "opened_uni",
        "remote_max_bidi",
        "remote_max_data",
        "remote_max_uni",
        "sent",
    )

    def __init__(self, limits: Limits, peer_settings: dict[int, int]) -> None:
        self._window = limits.flow_control_window
        self._max_data_sent = limits.initial_max_data
        self._consumed = 0
        self._bidi = _Grant(limits.initial_max_streams_bidi, limits.initial_max_streams_bidi)
        self._uni = _Grant(limits.initial_max_streams_uni, limits.initial_max_streams_uni)
        self.remote_max_data = 0
        self.remote_max_bidi = 0
        self.remote_max_uni = 0
        self.sent = 0
        """Stream bytes sent in the session."""
        self.opened_bidi = 0
        self.opened_uni = 0
        self._blocked_data_at = -1
        self._blocked_bidi_at = -1
        self._blocked_uni_at = -1
        self.apply_peer_settings(peer_settings)

    def apply_peer_settings(self, settings: dict[int, int]) -> None:
        """Start from the peer's initial limits (SETTINGS may arrive after the session).

        Args:
            settings: The peer's SETTINGS.
        """
        self.remote_max_data = max(
            self.remote_max_data, settings.get(SETTINGS_WT_INITIAL_MAX_DATA, 0)
        )
        self.remote_max_bidi = max(
            self.remote_max_bidi, settings.get(SETTINGS_WT_INITIAL_MAX_STREAMS_BIDI, 0)
        )
        self.remote_max_uni = max(
            self.remote_max_uni, settings.get(SETTINGS_WT_INITIAL_MAX_STREAMS_UNI, 0)
        )

    # ------------------------------------------------------------------ what we grant

    def admit(self, unidirectional: bool) -> bool:
        """Count a stream the peer opened.

        Args:
            unidirectional: The kind of stream.

        Returns:
            False when it exceeds what we granted (a flow-control violation).
        """
        grant = self._uni if unidirectional else self._bidi
        grant.opened += 1
        return grant.opened <= grant.sent

    def peer_stream_done(self, unidirectional: bool) -> list[Capsule]:
        """Count a peer stream that finished; may grant a new one.

        Args:
            unidirectional: The kind of stream.

        Returns:
            Capsules to send.
        """
        grant = self._uni if unidirectional else self._bidi
        grant.done += 1
        return self._grant_streams(force=False)

    def consumed(self, count: int) -> list[Capsule]:
        """Count stream bytes the application read; may raise WT_MAX_DATA.

        Args:
            count: Bytes read.

        Returns:
            Capsules to send.
        """
        self._consumed += count
        return self._grant_data(force=False)

    def _grant_data(self, *, force: bool) -> list[Capsule]:
        target = self._consumed + self._window
        sent = self._max_data_sent
        if target > sent and (force or target - sent >= self._window // 2):
            self._max_data_sent = target
            return [(CAPSULE_WT_MAX_DATA, target)]
        return []

    def _grant_streams(self, *, force: bool) -> list[Capsule]:
        capsules: list[Capsule] = []
        for grant, capsule_type in (
            (self._bidi, CAPSULE_WT_MAX_STREAMS_BIDI),
            (self._uni, CAPSULE_WT_MAX_STREAMS_UNI),
        ):
            target = grant.done + grant.initial
            # Batch updates: wait until the peer has fewer than half its streams left.
            if target > grant.sent and (
                force or grant.sent - grant.opened < max(1, grant.initial // 2)
            ):
                grant.sent = target
                capsules.append((capsule_type, target))
        return capsules

    def receive_capsule(
        self, capsule_type: int, payload: bytes
    ) -> tuple[bool, list[Capsule]] | None:
        """Apply a flow-control capsule from the peer.

        Args:
            capsule_type: One of `FLOW_CAPSULES`.
            payload: Its value (one varint).

        Returns:
            Whether our sending credit grew, and capsules to send in answer
            (a BLOCKED capsule is answered with a fresh limit); None when the
            capsule is malformed.
        """
        field = decode_varint(payload, 0)
        if field is None or field[1] != len(payload):
            return None
        value = field[0]
        if capsule_type == CAPSULE_WT_MAX_DATA:
            grew = value > self.remote_max_data
            self.remote_max_data = max(self.remote_max_data, value)
            return grew, []
        if capsule_type == CAPSULE_WT_MAX_STREAMS_BIDI:
            grew = value > self.remote_max_bidi
            self.remote_max_bidi = max(self.remote_max_bidi, value)
            return grew, []
        if capsule_type == CAPSULE_WT_MAX_STREAMS_UNI:
            grew = value > self.remote_max_uni
            self.remote_max_uni = max(self.remote_max_uni, value)
            return grew, []
        if capsule_type == CAPSULE_WT_DATA_BLOCKED:
            return False, self._grant_data(force=True)
        return False, self._grant_streams(force=True)

    # ------------------------------------------------------------------ what the peer grants us

    def can_open(self, unidirectional: bool) -> tuple[bool, list[Capsule]]:
        """Return whether the peer's limit lets us open another stream.

        Args:
            unidirectional: The kind of stream.

        Returns:
            The answer, and a WT_STREAMS_BLOCKED capsule to send the first time
            a given limit blocks us.
        """
        if unidirectional:
            if self.opened_uni < self.remote_max_uni:
                return True, []
            if self._blocked_uni_at == self.remote_max_uni:
                return False, []
            self._blocked_uni_at = self.remote_max_uni
            return False, [(CAPSULE_WT_STREAMS_BLOCKED_UNI, self.remote_max_uni)]
        if self.opened_bidi < self.remote_max_bidi:
            return True, []
        if self._blocked_bidi_at == self.remote_max_bidi:
            return False, []
        self._blocked_bidi_at = self.remote_max_bidi
        return False, [(CAPSULE_WT_STREAMS_BLOCKED_BIDI, self.remote_max_bidi)]

    def opened(self, unidirectional: bool) -> None:
        """Count a stream we opened.

        Args:
            unidirectional: The kind of stream.
        """
        if unidirectional:
            self.opened_uni += 1
        else:
            self.opened_bidi += 1

    def send_credit(self) -> tuple[int, list[Capsule]]:
        """Return how many more stream bytes the peer lets the session send.

        Returns:
            The byte count, and a WT_DATA_BLOCKED capsule to send the first time
            a given limit blocks us.
        """
        credit = self.remote_max_data - self.sent
        if credit > 0:
            return credit, []
        if self._blocked_data_at == self.remote_max_data:
            return 0, []
        self._blocked_data_at = self.remote_max_data
        return 0, [(CAPSULE_WT_DATA_BLOCKED, self.remote_max_data)]
