"""The three stateless responses: Version Negotiation, Retry, and a refusal in an Initial packet.

Each is no larger than three times the datagram that provoked it (the
anti-amplification limit of RFC 9000 section 8.1).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

# aioquic.buffer re-exports these from its C extension without __all__.
from aioquic.quic.connection import TRANSPORT_CLOSE_FRAME_CAPACITY
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicFrameType,
    QuicHeader,
    QuicPacketType,
    QuicProtocolVersion,
    encode_quic_retry,
    encode_quic_version_negotiation,
)
from aioquic.quic.packet_builder import QuicPacketBuilder

from .tokens import _MAX_CID_SIZE

MIN_INITIAL_DATAGRAM_SIZE = 1200
"""Smallest datagram a server may answer for an Initial (RFC 9000 §14.1)."""

AMPLIFICATION_FACTOR = 3
"""A server sends at most this many bytes per byte received from an unvalidated address."""

DEFAULT_CONNECTION_ID_LENGTH = 8
"""Length of the connection IDs the gate picks (aioquic's default `connection_id_length`)."""

SUPPORTED_VERSIONS: tuple[int, ...] = (
    QuicProtocolVersion.VERSION_1,
    QuicProtocolVersion.VERSION_2,
)
"""The QUIC versions aioquic speaks, listed in Version Negotiation packets."""


def _check_answerable(header: QuicHeader, datagram_size: int) -> None:
    if header.version is None:
        raise ValueError("a short header packet cannot be answered statelessly")
    if datagram_size < MIN_INITIAL_DATAGRAM_SIZE:
        raise ValueError(
            f"a {datagram_size}-byte datagram must be dropped, not answered "
            f"(RFC 9000 §14.1: at least {MIN_INITIAL_DATAGRAM_SIZE})"
        )


def _check_amplification(response: bytes, datagram_size: int) -> bytes:
    if len(response) > AMPLIFICATION_FACTOR * datagram_size:
        raise ValueError(
            f"a {len(response)}-byte response to a {datagram_size}-byte datagram "
            f"exceeds the anti-amplification limit ({AMPLIFICATION_FACTOR}x)"
        )
    return response


def _new_cid(length: int, avoid: bytes) -> bytes:
    if not 1 <= length <= _MAX_CID_SIZE:
        raise ValueError(f"connection ID length must be 1 to 20, got {length}")
    while True:
        cid = os.urandom(length)
        if cid != avoid:
            return cid


def build_version_negotiation(
    header: QuicHeader,
    *,
    datagram_size: int,
    supported_versions: Sequence[int] = SUPPORTED_VERSIONS,
) -> bytes:
    """Build the Version Negotiation packet answering a long header of an unknown version.

    Args:
        header: The client packet's header (from `pull_quic_header`).
        datagram_size: Size of the UDP payload that carried it.
        supported_versions: The versions to offer.

    Returns:
        The Version Negotiation packet (RFC 9000 §17.2.1), with the client's
        connection IDs echoed crosswise.

    Raises:
        ValueError: The packet is a short header, a Version Negotiation packet,
            already of a supported version, or in a datagram smaller than
            1200 bytes (RFC 9000 §6.1, §14.1).
    """
    _check_answerable(header, datagram_size)
    if header.version == QuicProtocolVersion.NEGOTIATION:
        raise ValueError("never answer a Version Negotiation packet (RFC 9000 §6.1)")
    if header.version in supported_versions:
        raise ValueError(f"version 0x{header.version:08x} is supported: no negotiation needed")
    if not supported_versions:
        raise ValueError("no version to offer")
    packet = encode_quic_version_negotiation(
        source_cid=header.destination_cid,
        destination_cid=header.source_cid,
        supported_versions=list(supported_versions),
    )
    return _check_amplification(packet, datagram_size)


def build_retry(
    header: QuicHeader,
    *,
    source_cid: bytes,
    token: bytes,
    datagram_size: int,
) -> bytes:
    """Build the Retry packet answering a client's first Initial.

    Args:
        header: The client Initial's header (from `pull_quic_header`).
        source_cid: The server's new connection ID, which the client's next
            Initial uses as Destination Connection ID; the token must be bound
            to it (`RetryTokens.issue(retry_source_cid=...)`).
        token: The Retry token.
        datagram_size: Size of the UDP payload that carried the Initial.

    Returns:
        The Retry packet (RFC 9000 §17.2.5) with its integrity tag.

    Raises:
        ValueError: The packet is not an Initial, the datagram is smaller than
            1200 bytes, `source_cid` equals the client's Destination Connection
            ID or is not 1 to 20 bytes, or the token is empty.
    """
    _check_answerable(header, datagram_size)
    assert header.version is not None
    if header.packet_type != QuicPacketType.INITIAL:
        raise ValueError(f"only an Initial gets a Retry, not {header.packet_type.name}")
    if not 1 <= len(source_cid) <= _MAX_CID_SIZE:
        raise ValueError(f"Retry source connection ID must be 1 to 20 bytes, got {len(source_cid)}")
    if source_cid == header.destination_cid:
        raise ValueError("Retry source connection ID must differ from the client's (§17.2.5.1)")
    if not token:
        raise ValueError("a Retry packet needs a token (a client drops an empty one)")
    packet = encode_quic_retry(
        version=header.version,
        source_cid=source_cid,
        destination_cid=header.source_cid,
        original_destination_cid=header.destination_cid,
        retry_token=token,
    )
    return _check_amplification(packet, datagram_size)


def build_refusal(
    header: QuicHeader,
    *,
    datagram_size: int,
    error_code: int = QuicErrorCode.CONNECTION_REFUSED,
    reason: str = "",
    source_cid: bytes | None = None,
) -> bytes:
    """Build a server Initial packet that closes the connection attempt at once.

    The packet carries only a transport CONNECTION_CLOSE (frame type 0x1c),
    sealed with the Initial keys derived from the client's Destination
    Connection ID, so the client learns it is refused without any TLS work on
    either side (RFC 9000 §10.2.3 allows CONNECTION_CLOSE in Initial packets).
    CONNECTION_CLOSE is not ack-eliciting, so the datagram needs no padding to
    1200 bytes (§14.1); it is only padded as far as header protection needs
    to sample the packet, which keeps the response far below the
    anti-amplification limit.

    Args:
        header: The client Initial's header (from `pull_quic_header`).
        datagram_size: Size of the UDP payload that carried the Initial.
        error_code: The transport error code: CONNECTION_REFUSED (0x2) by
            default, INVALID_TOKEN (0xb) for a bad Retry token.
        reason: A short UTF-8 reason phrase (at most 512 bytes encoded).
        source_cid: The server's Source Connection ID; random when omitted.

    Returns:
        The datagram to send back.

    Raises:
        ValueError: The packet is not an Initial of a version aioquic can
            protect, the datagram is smaller than 1200 bytes, the reason is too
            long, or the error code does not fit a QUIC varint.
    """
    _check_answerable(header, datagram_size)
    assert header.version is not None
    if header.packet_type != QuicPacketType.INITIAL:
        raise ValueError(f"only an Initial can be refused this way, not {header.packet_type.name}")
    if header.version not in SUPPORTED_VERSIONS:
        raise ValueError(f"no Initial keys for version 0x{header.version:08x}")
    if not 0 <= error_code < 2**62:
        raise ValueError(f"error code out of varint range: {error_code}")
    phrase = reason.encode()
    if len(phrase) > 512:
        raise ValueError(f"reason phrase too long ({len(phrase)} bytes, at most 512)")
    host_cid = source_cid
    if host_cid is None:
        host_cid = _new_cid(DEFAULT_CONNECTION_ID_LENGTH, avoid=header.destination_cid)
    crypto = CryptoPair()
    crypto.setup_initial(cid=header.destination_cid, is_client=False, version=header.version)
    builder = QuicPacketBuilder(
        host_cid=host_cid,
        peer_cid=header.source_cid,
        version=header.version,
        is_client=False,
        max_datagram_size=MIN_INITIAL_DATAGRAM_SIZE,
    )
    builder.start_packet(QuicPacketType.INITIAL, crypto)
    buf = builder.start_frame(
        QuicFrameType.TRANSPORT_CLOSE, capacity=TRANSPORT_CLOSE_FRAME_CAPACITY + len(phrase)
    )
    buf.push_uint_var(error_code)
    # Frame type 0: the refusal is not caused by any frame of the client's.
    buf.push_uint_var(QuicFrameType.PADDING)
    buf.push_uint_var(len(phrase))
    buf.push_bytes(phrase)
    datagrams, _ = builder.flush()
    return _check_amplification(b"".join(datagrams), datagram_size)
