"""The WebTransport drafts spoken, as data: what each puts on the wire.

One server serves every dialect at once: it announces the SETTINGS of all of
them (extra settings are harmless to peers) and answers each CONNECT in the
dialect the request and the client's SETTINGS show. A client picks the newest
dialect its server's SETTINGS advertise.

| dialect  | enabling SETTING                  | `:protocol`       | session flow control |
|----------|-----------------------------------|-------------------|----------------------|
| draft-02 | ENABLE_WEBTRANSPORT 0x2b603742 = 1 | `webtransport`    | no                   |
| draft-07 | WEBTRANSPORT_MAX_SESSIONS > 0     | `webtransport`    | no                   |
| draft-15 | WT_ENABLED 0x2c7cf000 > 0         | `webtransport-h3` | WT_MAX_DATA, ...     |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ...shared.constants import (
    SETTINGS_ENABLE_CONNECT_PROTOCOL,
    SETTINGS_ENABLE_WEBTRANSPORT_DRAFT02,
    SETTINGS_H3_DATAGRAM,
    SETTINGS_H3_DATAGRAM_DRAFT04,
    SETTINGS_WT_ENABLED,
    SETTINGS_WT_INITIAL_MAX_DATA,
    SETTINGS_WT_INITIAL_MAX_STREAMS_BIDI,
    SETTINGS_WT_INITIAL_MAX_STREAMS_UNI,
    SETTINGS_WT_MAX_SESSIONS,
)

__all__ = [
    "DIALECTS",
    "DRAFT02",
    "DRAFT07",
    "DRAFT15",
    "Dialect",
    "Limits",
    "all_settings",
    "choose_dialect",
    "dialect_of_request",
]


@dataclass(frozen=True, slots=True)
class Limits:
    """What this endpoint grants a peer.

    Attributes:
        max_sessions: Sessions a peer may open on one connection (draft-07 SETTING).
        initial_max_data: Session-level receive window announced in SETTINGS (draft-15).
        flow_control_window: Session-level window kept open past what the application
            read, once the initial one is used (draft-15 WT_MAX_DATA updates).
        initial_max_streams_bidi: Bidirectional streams a peer may open per session (draft-15).
        initial_max_streams_uni: Unidirectional streams a peer may open per session (draft-15).
    """

    max_sessions: int = 1
    initial_max_data: int = 4 * 1024 * 1024
    flow_control_window: int = 4 * 1024 * 1024
    initial_max_streams_bidi: int = 100
    initial_max_streams_uni: int = 100


@dataclass(frozen=True, slots=True)
class Dialect:
    """What one WebTransport draft puts on the wire.

    Attributes:
        name: Short name, e.g. ``"draft-02"``.
        protocol_token: The `:protocol` value a client sends.
        request_headers: Extra headers on a client's CONNECT.
        response_headers: Extra headers on a server's 2xx answer.
        flow_control: Whether sessions have their own flow control
            (WT_MAX_DATA / WT_MAX_STREAMS capsules, initial values in SETTINGS).
    """

    name: str
    protocol_token: bytes
    request_headers: tuple[tuple[bytes, bytes], ...] = ()
    response_headers: tuple[tuple[bytes, bytes], ...] = ()
    flow_control: bool = False

    def settings(self, limits: Limits) -> dict[int, int]:
        """Return the HTTP/3 SETTINGS this dialect needs beyond aioquic's own.

        Args:
            limits: What this endpoint grants its peer.

        Returns:
            Setting identifiers mapped to values.
        """
        settings = {SETTINGS_ENABLE_CONNECT_PROTOCOL: 1, SETTINGS_H3_DATAGRAM: 1}
        if self is DRAFT02:
            settings[SETTINGS_H3_DATAGRAM_DRAFT04] = 1
            settings[SETTINGS_ENABLE_WEBTRANSPORT_DRAFT02] = 1
        elif self is DRAFT07:
            settings[SETTINGS_WT_MAX_SESSIONS] = limits.max_sessions
        else:
            settings[SETTINGS_WT_ENABLED] = 1
            settings[SETTINGS_WT_INITIAL_MAX_DATA] = limits.initial_max_data
            settings[SETTINGS_WT_INITIAL_MAX_STREAMS_BIDI] = limits.initial_max_streams_bidi
            settings[SETTINGS_WT_INITIAL_MAX_STREAMS_UNI] = limits.initial_max_streams_uni
        return settings

    def spoken_by(self, settings: dict[int, int]) -> bool:
        """Return whether a peer's SETTINGS show it speaks this dialect.

        Args:
            settings: The peer's HTTP/3 SETTINGS.

        Returns:
            True when the dialect's enabling setting is present and non-zero.
        """
        if self is DRAFT02:
            return settings.get(SETTINGS_ENABLE_WEBTRANSPORT_DRAFT02, 0) == 1
        if self is DRAFT07:
            return settings.get(SETTINGS_WT_MAX_SESSIONS, 0) > 0
        return settings.get(SETTINGS_WT_ENABLED, 0) > 0


DRAFT02: Final = Dialect(
    name="draft-02",
    protocol_token=b"webtransport",
    request_headers=((b"sec-webtransport-http3-draft02", b"1"),),
    response_headers=((b"sec-webtransport-http3-draft", b"draft02"),),
)
"""draft-ietf-webtrans-http3-02, spoken by Chromium and Firefox by default."""

DRAFT07: Final = Dialect(name="draft-07", protocol_token=b"webtransport")
"""draft-ietf-webtrans-http3-07, spoken by Chromium with `EnableWebTransportDraft07`."""

DRAFT15: Final = Dialect(name="draft-15", protocol_token=b"webtransport-h3", flow_control=True)
"""draft-ietf-webtrans-http3-15 (SETTINGS_WT_ENABLED, `webtransport-h3`, session flow
control), spoken by pywebtransport 0.20/0.21 and other current implementations."""

DIALECTS: Final = (DRAFT15, DRAFT07, DRAFT02)
"""Every dialect spoken, newest first: a client picks the first its server advertises."""


def all_settings(limits: Limits) -> dict[int, int]:
    """Return the SETTINGS of every dialect at once.

    Args:
        limits: What this endpoint grants its peer.

    Returns:
        Setting identifiers mapped to values.
    """
    settings: dict[int, int] = {}
    for dialect in reversed(DIALECTS):
        settings.update(dialect.settings(limits))
    return settings


def choose_dialect(settings: dict[int, int]) -> Dialect | None:
    """Pick the newest dialect a server's SETTINGS advertise (client side).

    Args:
        settings: The server's HTTP/3 SETTINGS.

    Returns:
        The dialect, or None when the server speaks no WebTransport.
    """
    for dialect in DIALECTS:
        if dialect.spoken_by(settings):
            return dialect
    return None


def dialect_of_request(protocol: bytes, peer_settings: dict[int, int]) -> Dialect:
    """Pick the dialect to answer a CONNECT in (server side).

    Args:
        protocol: The request's `:protocol` value.
        peer_settings: The client's SETTINGS (empty when not received yet).

    Returns:
        draft-15 for `webtransport-h3`; otherwise the newest of draft-07 and
        draft-02 the client's SETTINGS show (Chromium in draft-07 mode announces
        both settings).
    """
    if protocol == DRAFT15.protocol_token:
        return DRAFT15
    return DRAFT07 if DRAFT07.spoken_by(peer_settings) else DRAFT02
