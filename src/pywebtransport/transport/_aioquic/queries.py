"""Read-only queries of aioquic's state: stream delivery, credit, datagrams, statistics."""

from __future__ import annotations

import socket
from typing import Any, cast

from aioquic.quic.connection import QuicConnection
from cryptography import x509

from .features import FEATURES, enabled


def nothing_sent(quic: QuicConnection, stream_id: int) -> bool:
    """Return True when a stream has data queued of which no byte has left yet.

    Args:
        quic: The connection.
        stream_id: The stream.

    Returns:
        The answer (True when the feature is off: the caller then transmits
        once more than it needs to).
    """
    if not enabled("stream_state"):
        return True
    tuned: Any = quic
    stream = tuned._streams.get(stream_id)
    return (
        stream is not None
        and not stream.sender.buffer_is_empty
        and not stream.sender.highest_offset
    )


def reset_final_size(quic: QuicConnection, stream_id: int) -> int | None:
    """Return the final size a peer's RESET_STREAM gave a stream (stream offset, bytes).

    Args:
        quic: The connection.
        stream_id: A stream whose receiving half the peer reset.

    Returns:
        The final size, or None when unknown (the feature is off, or aioquic has
        already forgotten the stream).
    """
    if not enabled("stream_state"):
        return None
    tuned: Any = quic
    stream = tuned._streams.get(stream_id)
    final: int | None = None if stream is None else stream.receiver._final_size
    return final


def sent_offset(quic: QuicConnection, stream_id: int) -> int | None:
    """Return how far a stream's data has left (the final size, once it is reset).

    Args:
        quic: The connection.
        stream_id: A stream this side sends on.

    Returns:
        The highest stream offset sent, or None when unknown (the feature is
        off, or aioquic has already forgotten the stream).
    """
    if not enabled("stream_state"):
        return None
    tuned: Any = quic
    stream = tuned._streams.get(stream_id)
    return None if stream is None else int(stream.sender.highest_offset)


def send_finished(quic: QuicConnection, stream_id: int) -> bool:
    """Return whether the peer acknowledged a stream's data and FIN (or its reset).

    Args:
        quic: The connection.
        stream_id: A stream whose sending half was finished or reset.

    Returns:
        True once nothing of it can still be lost (aioquic may have forgotten
        the stream); False while in flight, and always False when the feature
        is off (a graceful close then waits for its bound).
    """
    if not enabled("stream_state"):
        return False
    tuned: Any = quic
    stream = tuned._streams.get(stream_id)
    return stream is None or bool(stream.sender.is_finished)


def send_buffered(quic: QuicConnection, stream_id: int) -> int:
    """Return the bytes of a stream not yet acknowledged by the peer.

    Args:
        quic: The connection.
        stream_id: The stream.

    Returns:
        The count (0 when the feature is off: writes then never wait).
    """
    if not enabled("stream_state"):
        return 0
    tuned: Any = quic
    stream = tuned._streams.get(stream_id)
    return 0 if stream is None else len(stream.sender._buffer)


def has_unacked_stream_data(quic: QuicConnection) -> bool:
    """Return whether any stream has data the peer has not acknowledged yet.

    Args:
        quic: The connection.

    Returns:
        True while data is in flight or queued (always True when the feature
        is off: a close then waits for its bound).
    """
    if not enabled("stream_state"):
        return True
    tuned: Any = quic
    return any(
        stream.sender._buffer and not stream.sender.is_finished
        for stream in tuned._streams.values()
    )


def pending_datagrams(quic: QuicConnection) -> int:
    """Return the datagrams handed to aioquic that it has not sent yet.

    Args:
        quic: The connection.

    Returns:
        The count (0 when the feature is off: then nothing waits in our queues).
    """
    if not enabled("datagram_queue"):
        return 0
    tuned: Any = quic
    return len(tuned._datagrams_pending)


def can_open_stream(quic: QuicConnection, unidirectional: bool) -> bool:
    """Return whether the peer's QUIC stream limit lets us open another stream.

    Args:
        quic: The connection.
        unidirectional: The kind of stream.

    Returns:
        The answer (True when the feature is off).
    """
    if not enabled("stream_credit"):
        return True
    tuned: Any = quic
    if unidirectional:
        return bool(tuned._local_next_stream_id_uni // 4 < tuned._remote_max_streams_uni)
    return bool(tuned._local_next_stream_id_bidi // 4 < tuned._remote_max_streams_bidi)


# --------------------------------------------------------------------------- queries


def datagram_limits(quic: QuicConnection) -> tuple[int, int] | None:
    """Return the peer's DATAGRAM frame limit and the current packet size.

    Args:
        quic: A connected connection.

    Returns:
        (the peer's `max_datagram_frame_size`, 0 when it takes none; the
        UDP payload size in use), or None when the feature is off.
    """
    if not enabled("datagram_limit"):
        return None
    tuned: Any = quic
    return int(tuned._remote_max_datagram_frame_size or 0), int(tuned._max_datagram_size)


def stats(quic: QuicConnection) -> dict[str, Any]:
    """Return RTT, byte, packet and congestion figures.

    Args:
        quic: The connection.

    Returns:
        `rtt_smoothed`, `rtt_min`, `rtt_latest` (seconds), `bytes_sent`,
        `bytes_received`, `packets_sent`, `congestion_window`; all None when
        the feature is off.
    """
    keys = (
        "rtt_smoothed",
        "rtt_min",
        "rtt_latest",
        "bytes_sent",
        "bytes_received",
        "packets_sent",
        "congestion_window",
    )
    if not enabled("stats"):
        return dict.fromkeys(keys)
    tuned: Any = quic
    recovery = tuned._loss
    paths = tuned._network_paths
    rtt_min = recovery._rtt_min
    return {
        "rtt_smoothed": recovery._rtt_smoothed,
        "rtt_min": None if rtt_min == float("inf") else rtt_min,
        "rtt_latest": recovery._rtt_latest,
        "bytes_sent": sum(path.bytes_sent for path in paths),
        "bytes_received": sum(path.bytes_received for path in paths),
        "packets_sent": tuned._packet_number,
        "congestion_window": getattr(recovery._cc, "congestion_window", None),
    }


def peer_address(quic: QuicConnection) -> Any:
    """Return the peer's current network address.

    Args:
        quic: The connection.

    Returns:
        The address tuple, or None before any packet.
    """
    getter = getattr(quic, "get_peer_address", None)
    if getter is not None:
        return getter()
    if enabled("stats"):
        tuned: Any = quic
        paths = tuned._network_paths
        return paths[0].addr if paths else None
    return None


def peer_certificate(quic: QuicConnection) -> x509.Certificate | None:
    """Return the certificate the peer presented in the TLS handshake.

    Args:
        quic: A connection whose handshake completed.

    Returns:
        The certificate, or None when none was presented.

    Raises:
        RuntimeError: The feature is off: the certificate cannot be read.
    """
    if not enabled("peer_certificate"):
        raise RuntimeError(FEATURES["peer_certificate"].reason or "peer_certificate is off")
    return cast(x509.Certificate | None, cast(Any, quic.tls)._peer_certificate)


def selector_socket(transport: Any) -> socket.socket | None:
    """Return the socket of an asyncio selector datagram transport, else None.

    asyncio's selector loop reads one datagram per loop iteration; uvloop reads
    several per poll and hides its socket, so this is None there.

    Args:
        transport: A datagram transport.

    Returns:
        The non-blocking socket to drain, or None.
    """
    if not enabled("batch_reads"):
        return None
    sock = getattr(transport, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def is_stateless_reset(quic: QuicConnection, data: bytes) -> bool:
    """Tell whether a datagram is the peer's stateless reset (RFC 9000 section 10.3).

    aioquic stores the tokens the server announces but never checks for them.
    A short-header datagram whose last 16 bytes are the token of the
    connection id in use is a reset: the server has no state for the
    connection (another worker or host received it, or it restarted).

    Args:
        quic: A client connection.
        data: A received datagram.

    Returns:
        True for a stateless reset.
    """
    if len(data) < _MIN_STATELESS_RESET or data[0] & 0x80:
        return False
    token: bytes | None = quic._peer_cid.stateless_reset_token
    return bool(token) and data.endswith(token)  # type: ignore[arg-type]


_MIN_STATELESS_RESET = 21
