"""What the fence does to aioquic, feature by feature, and which features are on."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Final

from aioquic.h3.connection import ProtocolError as H3ProtocolError
from aioquic.h3.exceptions import H3Error


def _aioquic_version() -> str:
    try:
        return version("aioquic")
    except PackageNotFoundError:  # pragma: no cover - aioquic vendored without metadata
        return "unknown"


AIOQUIC_VERSION: Final = _aioquic_version()

_ENV = "PYWEBTRANSPORT_AIOQUIC_PATCHES"

REFUSALS: Final[tuple[type[Exception], ...]] = (
    ValueError,
    AssertionError,
    RuntimeError,
    H3Error,
    H3ProtocolError,
)
"""What aioquic raises when it refuses a stream operation in a state that a race with
the peer can produce (a stream the peer reset or stopped meanwhile, one already
finished, one aioquic forgot): `ValueError` and `AssertionError` from QUIC streams,
HTTP/3's own errors from `H3Connection`. Callers that expect such a refusal catch
exactly these."""


@dataclass(slots=True)
class Feature:
    """One use of aioquic internals.

    Attributes:
        name: Short name (also used in `PYWEBTRANSPORT_AIOQUIC_PATCHES`).
        purpose: What it gives the library.
        fallback: What happens when it is off.
        enabled: Whether it is in use in this process.
        reason: Why it is off, when it is.
        essential: A protection, a protocol capability or a correctness
            query rather than an optimisation: `off` in the environment
            variable leaves it on (naming it switches it off), and losing it
            to a different aioquic is reported by a second, loud warning
            naming what is exposed.
        relies_on: The aioquic functions it copies, replaces or whose
            behaviour it assumes (`Class.method`); each one's logic digest must
            be one of those recorded in `DIGESTS`, or the feature is off.
    """

    name: str
    purpose: str
    fallback: str
    enabled: bool = True
    reason: str = ""
    essential: bool = False
    relies_on: tuple[str, ...] = ()


FEATURES: Final[dict[str, Feature]] = {
    feature.name: feature
    for feature in (
        Feature(
            "stream_window",
            "a stream's receive window follows what its reader consumed (receive backpressure)",
            "aioquic doubles windows as data arrives: a slow reader buffers without bound",
            relies_on=(
                "QuicConnection._write_stream_limits",
                "QuicConnection._on_max_stream_data_delivery",
                "QuicConnection._handle_stream_frame",
            ),
        ),
        Feature(
            "stream_state",
            "write() waits while too much data is unacknowledged (send backpressure) and "
            "flush() until all is; a graceful close waits until the peer acknowledged every "
            "finished stream and queued data before the close capsule and CONNECTION_CLOSE; "
            "draft-15 session "
            "credit of a stream reset unread is given back up to its final size, and data "
            "queued behind a reset of ours stops counting against the peer's credit",
            "writes never wait for acknowledgements (a writer faster than the path buffers in "
            "aioquic without bound) and flush() returns at once; a graceful close waits its "
            "whole close_timeout (unless the peer closes first); a "
            "stream reset unread gives back up to its receive window (session data limits "
            "loosen by at most one window per such stream); data queued behind a reset of "
            "ours keeps counting against the peer's session credit",
            essential=True,
            relies_on=(
                "QuicStreamSender.write",
                "QuicStreamSender.on_data_delivery",
                "QuicStreamSender.on_reset_delivery",
                "QuicStreamSender.get_frame",
                "QuicStreamSender.get_reset_frame",
                "QuicStreamReceiver.handle_reset",
                "QuicConnection._handle_reset_stream_frame",
            ),
        ),
        Feature(
            "datagram_queue",
            "outgoing datagrams wait in a bounded per-session queue (high-water mark, maximum "
            "age) until QUIC can send them",
            "every datagram goes straight to aioquic's unbounded queue: a fast sender grows "
            "memory and delays fresh datagrams behind stale ones",
            relies_on=(
                "QuicConnection.send_datagram_frame",
                "QuicConnection._write_datagram_frame",
            ),
        ),
        Feature(
            "stream_credit",
            "create_*_stream() waits for the peer's QUIC stream credit",
            "streams open at once and aioquic holds their data until credit arrives; a "
            "reset of such a stream is sent before its credit, which the peer takes for a "
            "stream-limit violation and closes the connection",
            essential=True,
            relies_on=(
                "QuicConnection.get_next_available_stream_id",
                "QuicConnection._get_or_create_stream_for_send",
            ),
        ),
        Feature(
            "stream_limits",
            "quic_max_concurrent_bidi/uni_streams cap the streams a peer may have open at once "
            "(a denial-of-service bound)",
            "peers may keep aioquic's own 128 streams of each kind open (before aioquic 1.7: "
            "no cap at all, the limit doubles as it fills); the configured limits are not in "
            "force",
            essential=True,
            relies_on=("QuicConnection._write_connection_limits", "QuicConnection._stream_limit"),
        ),
        Feature(
            "pacer",
            "a pacer burst sized for event-loop clocks (bulk transfers no longer stall at one "
            "packet per millisecond on uvloop)",
            "aioquic's pacer",
            relies_on=(
                "QuicPacketPacer.update_rate",
                "QuicPacketPacer.next_send_time",
                "QuicPacketPacer.update_after_send",
            ),
        ),
        Feature(
            "stream_scheduling",
            "packets are built from the streams that have something to send (data, FIN, "
            "RESET_STREAM, STOP_SENDING) or owe MAX_STREAM_DATA, served round-robin",
            "aioquic visits every open stream for every packet it builds",
            relies_on=(
                "QuicConnection._write_application",
                "QuicConnection._write_stream_frame",
                "QuicConnection._write_reset_stream_frame",
                "QuicConnection._write_stop_sending_frame",
                "QuicConnection._handle_stream_frame",
                "QuicConnection._handle_reset_stream_frame",
                "QuicConnection._handle_stop_sending_frame",
                "QuicConnection._handle_max_stream_data_frame",
                "QuicConnection._unblock_streams",
                "QuicConnection._on_max_stream_data_delivery",
                "QuicConnection.send_stream_data",
                "QuicConnection.reset_stream",
                "QuicConnection.stop_stream",
                "QuicStreamSender.get_frame",
                "QuicStreamSender.get_reset_frame",
                "QuicStreamSender.on_data_delivery",
                "QuicStreamSender.on_reset_delivery",
                "QuicStreamReceiver.get_stop_frame",
                "QuicStreamReceiver.on_stop_sending_delivery",
            ),
        ),
        Feature(
            "frame_table",
            "one frame-handler table shared by all connections (about 7 KiB per connection)",
            "aioquic's per-connection table",
        ),
        Feature(
            "cid_routing",
            "server connection ids carry the worker index (and a QUIC-LB server id when "
            "configured) and stateless reset tokens derived from the shared secret, so the "
            "reuseport program of run(workers=N) keeps a client on its worker when its "
            "address changes",
            "random connection ids: with several workers a client whose address changes "
            "may reach another worker and lose its connection; no QUIC-LB routing",
            essential=True,
            relies_on=("QuicConnection._replenish_connection_ids",),
        ),
        Feature(
            "connection_ids",
            "2 active connection ids each way instead of 8 (memory; RFC 9000 minimum)",
            "aioquic issues 8",
            relies_on=("QuicConnection._replenish_connection_ids",),
        ),
        Feature(
            "tls_release",
            "TLS buffers, key-exchange keys, the server key schedule and the keys of spent "
            "epochs are freed after the handshake (about 53 KiB per connection)",
            "kept for the connection's lifetime",
        ),
        Feature(
            "qpack_static",
            "QPACK uses the static table only, both ways: peers are told our dynamic table "
            "holds nothing, one stateless decoder serves every connection (about 9 KiB per "
            "connection)",
            "aioquic's encoder and decoder with dynamic tables",
            relies_on=("H3Connection.__init__", "H3Connection._get_local_settings"),
        ),
        Feature(
            "h3_settings",
            "SETTINGS of every WebTransport dialect (draft-02, -07, -15) and "
            "max_field_section_size are announced",
            "aioquic's own SETTINGS: draft-02 peers only (browsers, the reference library's "
            "draft-07/-15 peers cannot connect), no field-size limit",
            essential=True,
            relies_on=("H3Connection.__init__", "H3Connection._get_local_settings"),
        ),
        Feature(
            "early_settings",
            "a server sends its SETTINGS in its first flight (clients CONNECT one RTT earlier)",
            "SETTINGS follow the handshake",
            relies_on=("QuicConnection._unblock_streams",),
        ),
        Feature(
            "malformed_request",
            "a malformed request resets its stream only (RFC 9114 section 4.1.2)",
            "aioquic closes the whole connection, every session on it included",
            relies_on=("H3Connection._receive_request_or_push_data",),
        ),
        Feature(
            "stats",
            "RTT, loss and congestion figures in connection statistics",
            "those figures are None",
        ),
        Feature(
            "datagram_limit",
            "max_datagram_size follows the peer's max_datagram_frame_size and the packet size",
            "a conservative limit computed from the configured packet size",
        ),
        Feature(
            "peer_certificate",
            "server_certificate_hashes (certificate pinning) can be checked",
            "connecting with server_certificate_hashes raises CertificateError (fails closed)",
            essential=True,
        ),
        Feature(
            "prompt_acks",
            "while the peer's packets have a gap (one lost or overtaken), an owed ACK leaves at "
            "the end of the receive batch instead of after aioquic's 1 ms ACK delay and the "
            "deferred transmit (RFC 9000 section 13.2.1, as TCP for out-of-order data): a "
            "sender on a lossy path detects its losses sooner",
            "ACKs keep aioquic's delay and the deferred transmit after a loss too",
            relies_on=("QuicConnection._write_application",),
        ),
        Feature(
            "batch_reads",
            "under asyncio's selector loop, datagrams already queued on a socket are read in "
            "one go (one ACK and one transmit per batch, as uvloop does)",
            "one datagram per loop iteration",
        ),
    )
}
"""Every optimisation and fix that relies on aioquic internals, by name."""


def enabled(name: str) -> bool:
    """Return whether a feature is in use.

    Args:
        name: A key of `FEATURES`.

    Returns:
        True when it is on.
    """
    return FEATURES[name].enabled


_ENV_ON: Final = frozenset({"", "on", "all", "1"})
_ENV_OFF: Final = frozenset({"off", "none", "0"})


def parse_patch_setting(setting: str) -> set[str]:
    """Return the features a `PYWEBTRANSPORT_AIOQUIC_PATCHES` value switches off.

    Args:
        setting: The variable's value: `on` (or empty, `all`, `1`), `off`
            (`none`, `0`: every optimisation; essential features stay on), or
            a comma-separated list of feature names.

    Returns:
        The names switched off.

    Raises:
        ValueError: An unknown value or feature name (the message lists the valid ones).
    """
    value = setting.strip().lower()
    if value in _ENV_ON:
        return set()
    if value in _ENV_OFF:
        return {name for name, feature in FEATURES.items() if not feature.essential}
    names = {name.strip() for name in value.split(",") if name.strip()}
    unknown = sorted(names - FEATURES.keys())
    if unknown or not names:
        raise ValueError(
            f"{_ENV}={setting!r}: unknown feature {', '.join(unknown) or '(none named)'}; "
            f"use on, off, or a comma-separated list of: {', '.join(sorted(FEATURES))}"
        )
    return names


def apply_environment() -> None:
    for name in parse_patch_setting(os.environ.get(_ENV, "")):
        feature = FEATURES[name]
        feature.enabled = False
        feature.reason = f"switched off by {_ENV}"
