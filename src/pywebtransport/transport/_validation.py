"""Address validation and refusal at the first Initial, without I/O (RFC 9000 §8.1, §6, §10.2).

A server endpoint hands every datagram that matches no known connection to
`HandshakeGate.screen()` and acts on the returned `Screening`: drop it, send
the prepared response (Version Negotiation, Retry or a CONNECTION_CLOSE in an
Initial packet) or create a connection for it. Nothing here touches a socket,
a loop or the clock: time is the `now` argument, and aioquic is used only
through its public module-level API (`pull_quic_header`, `encode_quic_retry`,
`encode_quic_version_negotiation`, `CryptoPair`, `QuicPacketBuilder`).

The pieces also stand alone:

- `RetryTokens` issues and validates stateless, authenticated, expiring Retry
  tokens bound to the client address and both connection IDs.
- `build_retry()`, `build_version_negotiation()` and `build_refusal()` make the
  three stateless responses, each no larger than three times the datagram
  that provoked it (the anti-amplification limit of RFC 9000 §8.1).
- `AddressCounter` counts holders per source address under a per-address and a
  global bound; `HandshakeAdmission` uses two of them to decide, per Initial,
  between accepting, asking for a Retry and refusing.

Refusing with `build_refusal()` costs one AEAD seal and no TLS work: the client
sees CONNECTION_REFUSED straight away instead of after a full handshake.
"""

from __future__ import annotations

import math
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum

# aioquic.buffer re-exports these from its C extension without __all__.
from aioquic.buffer import Buffer, BufferReadError  # type: ignore[attr-defined]
from aioquic.quic.connection import TRANSPORT_CLOSE_FRAME_CAPACITY
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import (
    PACKET_LONG_HEADER,
    QuicErrorCode,
    QuicFrameType,
    QuicHeader,
    QuicPacketType,
    QuicProtocolVersion,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.packet_builder import QuicPacketBuilder
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..shared.exceptions import ConfigurationError, ProtocolError

__all__ = [
    "AMPLIFICATION_FACTOR",
    "DEFAULT_CONNECTION_ID_LENGTH",
    "DEFAULT_MAX_HANDSHAKES",
    "DEFAULT_MAX_HANDSHAKES_PER_ADDRESS",
    "DEFAULT_RETRY_THRESHOLD",
    "DEFAULT_TOKEN_LIFETIME",
    "MIN_CLIENT_CID_LENGTH",
    "MIN_INITIAL_DATAGRAM_SIZE",
    "SUPPORTED_VERSIONS",
    "AddressCounter",
    "Admission",
    "GateAction",
    "HandshakeAdmission",
    "HandshakeGate",
    "InvalidRetryToken",
    "RetryMode",
    "RetryTokens",
    "Screening",
    "TokenRejection",
    "address_key",
    "build_refusal",
    "build_retry",
    "build_version_negotiation",
]

MIN_INITIAL_DATAGRAM_SIZE = 1200
"""Smallest datagram a server may answer for an Initial (RFC 9000 §14.1)."""

AMPLIFICATION_FACTOR = 3
"""A server sends at most this many bytes per byte received from an unvalidated address."""

DEFAULT_CONNECTION_ID_LENGTH = 8
"""Length of the connection IDs the gate picks (aioquic's default `connection_id_length`)."""

DEFAULT_TOKEN_LIFETIME = 10.0
"""Seconds a Retry token stays valid.

A client echoes a Retry token at once, so one round trip would do; ten seconds
also cover a lost second Initial retransmitted after a few PTO back-offs.
"""

DEFAULT_MAX_HANDSHAKES = 1024
"""Handshakes in flight (validated or not) beyond which new clients are refused."""

DEFAULT_MAX_HANDSHAKES_PER_ADDRESS = 16
"""Handshakes in flight from one address (IPv4 /32, IPv6 /64) of each kind."""

DEFAULT_RETRY_THRESHOLD = 64
"""In `RetryMode.AUTO`, handshakes in flight from which unvalidated clients get a Retry."""

SUPPORTED_VERSIONS: tuple[int, ...] = (
    QuicProtocolVersion.VERSION_1,
    QuicProtocolVersion.VERSION_2,
)
"""The QUIC versions aioquic speaks, listed in Version Negotiation packets."""

MIN_CLIENT_CID_LENGTH = 8
"""Shortest Destination Connection ID of a client's first Initial (RFC 9000 §7.2)."""

CLOCK_SKEW = 1.0
"""Seconds a token's issue time may lie ahead of `now` (several processes sharing a key)."""

# Token layout: format byte, AES-GCM nonce, then sealed (issue time in ms, ODCID
# length, ODCID). The address and the Retry SCID are not stored, only authenticated
# (associated data), so a token presented from elsewhere fails to open at all.
_TOKEN_FORMAT = 0x52
_NONCE_SIZE = 12
_TAG_SIZE = 16
_TIME = struct.Struct("!Q")
_MAX_CID_SIZE = 20
_MIN_TOKEN_SIZE = 1 + _NONCE_SIZE + _TIME.size + 1 + _TAG_SIZE
_MAX_TOKEN_SIZE = _MIN_TOKEN_SIZE + _MAX_CID_SIZE
_PORT = struct.Struct("!H")
_IPV4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"

NetworkAddress = tuple[str, int] | tuple[str, int, int, int]
"""A UDP peer address as asyncio reports it: `(host, port)` or `(host, port, flow, scope)`."""


# ---------------------------------------------------------------------- addresses


def _packed_host(address: NetworkAddress) -> bytes:
    """Return the 4 (IPv4, including IPv4-mapped IPv6) or 16 (IPv6) bytes of a host.

    Raises:
        ValueError: The host is not an IP literal.
    """
    host = address[0].partition("%")[0]
    try:
        if ":" in host:
            packed = socket.inet_pton(socket.AF_INET6, host)
            # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; the same
            # client must map to the same bytes whichever socket saw it.
            if packed.startswith(_IPV4_MAPPED_PREFIX):
                return packed[12:]
            return packed
        return socket.inet_pton(socket.AF_INET, host)
    except OSError as exc:
        raise ValueError(f"not an IP address: {address[0]!r}") from exc


def _packed_address(address: NetworkAddress) -> bytes:
    port = address[1]
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range: {port}")
    return _packed_host(address) + _PORT.pack(port)


def address_key(address: NetworkAddress) -> bytes:
    """Return the key under which per-address limits count a peer.

    IPv4 peers count per address (/32), IPv6 peers per /64: one host usually
    holds a whole /64, so counting per IPv6 address would let it pick a fresh
    address per connection. IPv4-mapped IPv6 addresses count as IPv4. The port
    is ignored.

    Args:
        address: The peer address, `(host, port)` or asyncio's IPv6 4-tuple.

    Returns:
        4 bytes for IPv4, 8 bytes for an IPv6 /64.

    Raises:
        ValueError: The host is not an IP literal.
    """
    packed = _packed_host(address)
    return packed if len(packed) == 4 else packed[:8]


# ---------------------------------------------------------------------- tokens


class TokenRejection(StrEnum):
    """Why `RetryTokens.validate()` rejected a token."""

    MALFORMED = "malformed"
    """Not shaped like a token of ours (e.g. a NEW_TOKEN token from another server).

    RFC 9000 §8.1.3 lets a server treat such an Initial as carrying no token.
    """

    UNAUTHENTIC = "unauthentic"
    """Shaped like ours but forged, altered, sealed with an unknown key, or
    presented for another address or connection ID."""

    EXPIRED = "expired"
    """Authentic, but issued more than the lifetime ago (or ahead of the clock)."""


class InvalidRetryToken(ProtocolError):
    """A client presented a Retry token that does not validate.

    The server should close the connection attempt with INVALID_TOKEN
    (RFC 9000 §8.1.3), except for `TokenRejection.MALFORMED`, which it may
    treat as no token at all.

    Args:
        rejection: Why the token was rejected.

    Attributes:
        rejection: Why the token was rejected.
    """

    def __init__(self, rejection: TokenRejection) -> None:
        super().__init__(
            f"invalid Retry token: {rejection.value}",
            error_code=QuicErrorCode.INVALID_TOKEN,
            remote=True,
        )
        self.rejection = rejection


class RetryTokens:
    """Stateless, authenticated, expiring Retry tokens (RFC 9000 §8.1.2-8.1.4).

    A token seals its issue time and the original destination connection ID
    with AES-GCM under a server key; the client address (IP and port) and the
    Retry packet's source connection ID are bound as associated data. Nothing
    is stored per token: any process holding the key can validate it.

    Keys rotate without breaking tokens in flight: `rotate()` keeps the
    previous key for validation. Rotate at most once per `lifetime` so a token
    never outlives both keys. Each token uses a random 96-bit nonce, which is
    safe for far more tokens than a key should ever seal (2^32); rotating daily
    keeps well within that.

    `now` is always an argument: pass the same clock to `issue()` and
    `validate()` (a monotonic loop time in one process; wall-clock time when
    several processes share the key).

    Args:
        key: AES key (16, 24 or 32 bytes); a random 16-byte key when omitted.
        previous_key: A key still accepted for validation (e.g. from before a restart).
        lifetime: Seconds a token stays valid after it is issued.

    Raises:
        ConfigurationError: A key has the wrong length or `lifetime` is not positive.
    """

    __slots__ = ("_current", "_lifetime_ms", "_previous")

    def __init__(
        self,
        key: bytes | None = None,
        *,
        previous_key: bytes | None = None,
        lifetime: float = DEFAULT_TOKEN_LIFETIME,
    ) -> None:
        if not (math.isfinite(lifetime) and lifetime > 0):
            raise ConfigurationError(f"token lifetime must be positive, got {lifetime!r}")
        self._lifetime_ms = round(lifetime * 1000)
        self._current = self._aead(os.urandom(16) if key is None else key)
        self._previous = None if previous_key is None else self._aead(previous_key)

    @staticmethod
    def _aead(key: bytes) -> AESGCM:
        if len(key) not in (16, 24, 32):
            raise ConfigurationError(f"Retry token key must be 16, 24 or 32 bytes, got {len(key)}")
        return AESGCM(key)

    @property
    def lifetime(self) -> float:
        """Seconds a token stays valid after it is issued."""
        return self._lifetime_ms / 1000

    def rotate(self, key: bytes | None = None) -> None:
        """Seal new tokens with a new key; the current key stays valid for validation.

        Args:
            key: The new AES key (16, 24 or 32 bytes); random when omitted.

        Raises:
            ConfigurationError: The key has the wrong length.
        """
        fresh = self._aead(os.urandom(16) if key is None else key)
        self._previous, self._current = self._current, fresh

    def issue(
        self,
        *,
        address: NetworkAddress,
        original_destination_cid: bytes,
        retry_source_cid: bytes,
        now: float,
    ) -> bytes:
        """Return a token for the Retry packet answering a client's first Initial.

        Args:
            address: The client's address, as the Initial came from it.
            original_destination_cid: The Destination Connection ID of that Initial.
            retry_source_cid: The Source Connection ID of the Retry packet (the
                Destination Connection ID the client's next Initial will carry).
            now: Current time, on the clock later given to `validate()`.

        Returns:
            The token (38 to 58 bytes).

        Raises:
            ValueError: A connection ID is longer than 20 bytes, the host is
                not an IP literal, or `now` is negative or not finite.
        """
        if len(original_destination_cid) > _MAX_CID_SIZE:
            raise ValueError("original destination connection ID longer than 20 bytes")
        plain = (
            _TIME.pack(_milliseconds(now))
            + bytes([len(original_destination_cid)])
            + original_destination_cid
        )
        nonce = os.urandom(_NONCE_SIZE)
        sealed = self._current.encrypt(nonce, plain, _associated(address, retry_source_cid))
        return bytes([_TOKEN_FORMAT]) + nonce + sealed

    @staticmethod
    def is_ours(token: bytes) -> bool:
        """Tell whether a token is shaped like one of ours (not whether it is valid).

        Args:
            token: The token field of a client Initial.

        Returns:
            True when `validate()` would try to authenticate it.
        """
        return _MIN_TOKEN_SIZE <= len(token) <= _MAX_TOKEN_SIZE and token[0] == _TOKEN_FORMAT

    def validate(
        self,
        token: bytes,
        *,
        address: NetworkAddress,
        destination_cid: bytes,
        now: float,
    ) -> bytes:
        """Check a token from a client Initial and return the original destination CID.

        Args:
            token: The token field of the Initial.
            address: The address the Initial came from.
            destination_cid: The Destination Connection ID of the Initial (the
                Retry packet's Source Connection ID when the token is genuine).
            now: Current time, on the clock given to `issue()`.

        Returns:
            The Destination Connection ID of the client's first Initial, which
            the server connection must echo as `original_destination_connection_id`.

        Raises:
            InvalidRetryToken: The token is malformed, unauthentic (including
                another address or connection ID) or expired.
            ValueError: The host is not an IP literal, or `now` is negative or not finite.
        """
        if not self.is_ours(token):
            raise InvalidRetryToken(TokenRejection.MALFORMED)
        if len(destination_cid) > _MAX_CID_SIZE:
            raise InvalidRetryToken(TokenRejection.UNAUTHENTIC)
        now_ms = _milliseconds(now)
        nonce = token[1 : 1 + _NONCE_SIZE]
        sealed = token[1 + _NONCE_SIZE :]
        associated = _associated(address, destination_cid)
        plain: bytes | None = None
        for aead in (self._current, self._previous):
            if aead is None:
                continue
            try:
                plain = aead.decrypt(nonce, sealed, associated)
            except InvalidTag:
                continue
            break
        if plain is None:
            raise InvalidRetryToken(TokenRejection.UNAUTHENTIC)
        (issued_ms,) = _TIME.unpack_from(plain)
        original = plain[_TIME.size + 1 :]
        if len(original) != plain[_TIME.size]:
            # Only our key could have sealed this, so it is a bug, not an attack.
            raise InvalidRetryToken(TokenRejection.MALFORMED)
        if not -CLOCK_SKEW * 1000 <= now_ms - issued_ms <= self._lifetime_ms:
            raise InvalidRetryToken(TokenRejection.EXPIRED)
        return original


def _milliseconds(now: float) -> int:
    if not (math.isfinite(now) and now >= 0):
        raise ValueError(f"now must be a finite, non-negative time, got {now!r}")
    return min(round(now * 1000), 2**64 - 1)


def _associated(address: NetworkAddress, retry_source_cid: bytes) -> bytes:
    if len(retry_source_cid) > _MAX_CID_SIZE:
        raise ValueError("retry source connection ID longer than 20 bytes")
    return (
        bytes([_TOKEN_FORMAT])
        + _packed_address(address)
        + bytes([len(retry_source_cid)])
        + retry_source_cid
    )


# ---------------------------------------------------------------------- responses


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


# ---------------------------------------------------------------------- admission


class AddressCounter:
    """Counts holders (handshakes, connections, sessions) per source address.

    Each address (`address_key`) may hold at most `per_address` at once, and
    all together at most `total`. Use it around anything a peer can make the
    server hold, so that one address cannot take the whole table.

    Args:
        total: Bound on all holders together.
        per_address: Bound on the holders of one address.

    Raises:
        ConfigurationError: A bound is smaller than 1.
    """

    __slots__ = ("_counts", "_per_address", "_total", "_used")

    def __init__(self, *, total: int, per_address: int) -> None:
        if total < 1 or per_address < 1:
            raise ConfigurationError(
                f"address counter bounds must be at least 1, got total={total}, "
                f"per_address={per_address}"
            )
        self._total = total
        self._per_address = per_address
        self._counts: dict[bytes, int] = {}
        self._used = 0

    @property
    def used(self) -> int:
        """Holders counted, over all addresses."""
        return self._used

    @property
    def total(self) -> int:
        """Bound on all holders together."""
        return self._total

    @property
    def per_address(self) -> int:
        """Bound on the holders of one address."""
        return self._per_address

    @property
    def addresses(self) -> int:
        """Number of addresses holding at least one."""
        return len(self._counts)

    def count(self, address: NetworkAddress) -> int:
        """Return how many the address holds.

        Args:
            address: The peer address.

        Returns:
            The count for the address's key.
        """
        return self._counts.get(address_key(address), 0)

    def can_acquire(self, address: NetworkAddress) -> bool:
        """Tell whether `try_acquire()` would succeed, without counting.

        Args:
            address: The peer address.

        Returns:
            True when neither bound is reached.
        """
        return self._used < self._total and self.count(address) < self._per_address

    def try_acquire(self, address: NetworkAddress) -> bool:
        """Count one more holder for an address if both bounds allow it.

        Args:
            address: The peer address.

        Returns:
            True when counted (pair with one `release()`), False when a bound is reached.
        """
        key = address_key(address)
        held = self._counts.get(key, 0)
        if self._used >= self._total or held >= self._per_address:
            return False
        self._counts[key] = held + 1
        self._used += 1
        return True

    def release(self, address: NetworkAddress) -> None:
        """Count one holder less for an address.

        Args:
            address: The peer address given to a successful `try_acquire()`.

        Raises:
            ValueError: The address holds nothing (an unpaired release).
        """
        key = address_key(address)
        held = self._counts.get(key, 0)
        if held <= 0:
            raise ValueError(f"release without acquire for {address[0]!r}")
        if held == 1:
            del self._counts[key]
        else:
            self._counts[key] = held - 1
        self._used -= 1


class RetryMode(StrEnum):
    """When a server asks clients to prove their address with a Retry."""

    ALWAYS = "always"
    """Every new client (one extra round trip each)."""

    NEVER = "never"
    """No client: past the handshake bounds, clients are refused."""

    AUTO = "auto"
    """Once handshakes in flight reach the threshold, as mature QUIC servers do."""


@dataclass(frozen=True, slots=True)
class Admission:
    """A handshake slot from `HandshakeAdmission.try_admit()`; give it back with `release()`."""

    address: NetworkAddress
    """The client address the slot is counted for."""

    validated: bool
    """True when the address was proven by a Retry token."""


class HandshakeAdmission:
    """Bounds handshakes in flight and decides when to ask for a Retry.

    Unvalidated and validated handshakes are counted apart, each with its own
    per-address bound, under one global bound `max_handshakes`. The split
    keeps spoofing harmless: unvalidated Initials forged with a victim's
    address fill only the victim's unvalidated quota, and in `RetryMode.AUTO`
    an address over that quota is sent a Retry (stateless) instead of being
    refused, so the real owner proves itself and is counted as validated.

    Handshakes in flight never count against established connections or
    sessions: release the slot when the handshake completes or fails.

    Args:
        max_handshakes: Bound on all handshakes in flight.
        max_handshakes_per_address: Bound per address, for each kind.
        retry: When to ask for a Retry.
        retry_threshold: In `RetryMode.AUTO`, handshakes in flight from which
            unvalidated clients get a Retry.

    Raises:
        ConfigurationError: A bound is smaller than 1 or the threshold is negative.
    """

    __slots__ = ("_max", "_retry", "_threshold", "_unvalidated", "_validated")

    def __init__(
        self,
        *,
        max_handshakes: int = DEFAULT_MAX_HANDSHAKES,
        max_handshakes_per_address: int = DEFAULT_MAX_HANDSHAKES_PER_ADDRESS,
        retry: RetryMode | str = RetryMode.AUTO,
        retry_threshold: int = DEFAULT_RETRY_THRESHOLD,
    ) -> None:
        if retry_threshold < 0:
            raise ConfigurationError(f"retry threshold must be >= 0, got {retry_threshold}")
        try:
            self._retry = RetryMode(retry)
        except ValueError as exc:
            raise ConfigurationError(
                f"retry mode must be one of {[m.value for m in RetryMode]}, got {retry!r}"
            ) from exc
        self._threshold = retry_threshold
        self._max = max_handshakes
        self._unvalidated = AddressCounter(
            total=max_handshakes, per_address=max_handshakes_per_address
        )
        self._validated = AddressCounter(
            total=max_handshakes, per_address=max_handshakes_per_address
        )

    @property
    def retry(self) -> RetryMode:
        """When a Retry is asked for."""
        return self._retry

    @property
    def in_flight(self) -> int:
        """Handshakes in flight, validated or not."""
        return self._unvalidated.used + self._validated.used

    @property
    def unvalidated(self) -> int:
        """Handshakes in flight whose address is not proven."""
        return self._unvalidated.used

    def should_retry(self, address: NetworkAddress | None = None) -> bool:
        """Tell whether a client without a valid token should be sent a Retry.

        Args:
            address: The client's address; in `RetryMode.AUTO` an address over
                its unvalidated quota is also asked to prove itself.

        Returns:
            True to send a Retry, False to go on with `try_admit()`.
        """
        if self._retry is RetryMode.ALWAYS:
            return True
        if self._retry is RetryMode.NEVER:
            return False
        if self.in_flight >= self._threshold:
            return True
        return address is not None and not self._unvalidated.can_acquire(address)

    def try_admit(self, address: NetworkAddress, *, validated: bool) -> Admission | None:
        """Take a handshake slot for a client, if the bounds allow it.

        Args:
            address: The client's address.
            validated: True when its Initial carried a valid Retry token.

        Returns:
            The slot (give it back with `release()`), or None to refuse the client.
        """
        if self.in_flight >= self._max:
            return None
        counter = self._validated if validated else self._unvalidated
        if not counter.try_acquire(address):
            return None
        return Admission(address=address, validated=validated)

    def release(self, admission: Admission) -> None:
        """Give back a slot once its handshake has completed or failed.

        Args:
            admission: The slot from `try_admit()`.

        Raises:
            ValueError: The address holds no slot of that kind (an unpaired release).
        """
        counter = self._validated if admission.validated else self._unvalidated
        counter.release(admission.address)


# ---------------------------------------------------------------------- the gate


class GateAction(Enum):
    """What a server endpoint does with a datagram for no known connection."""

    DROP = "drop"
    """Ignore it (garbage, too small, not an Initial, or a Version Negotiation)."""

    NEGOTIATE_VERSION = "negotiate_version"
    """Send `Screening.response`, a Version Negotiation packet."""

    RETRY = "retry"
    """Send `Screening.response`, a Retry packet; keep no state."""

    REFUSE = "refuse"
    """Send `Screening.response`, an Initial with CONNECTION_CLOSE; keep no state."""

    ACCEPT = "accept"
    """Create a server connection for it and feed it the datagram."""


@dataclass(frozen=True, slots=True)
class Screening:
    """The outcome of `HandshakeGate.screen()` for one datagram."""

    action: GateAction
    """What to do."""

    reason: str
    """A short, fixed explanation for logs and counters (e.g. ``"handshake table full"``)."""

    response: bytes | None = None
    """The datagram to send back to the sender, for NEGOTIATE_VERSION, RETRY and REFUSE."""

    header: QuicHeader | None = None
    """The parsed header of the datagram's first packet, when it parsed."""

    admission: Admission | None = None
    """For ACCEPT: the handshake slot to release when the handshake ends."""

    original_destination_cid: bytes | None = None
    """For ACCEPT after a Retry: pass as `original_destination_connection_id`."""

    retry_source_cid: bytes | None = None
    """For ACCEPT after a Retry: pass as `retry_source_connection_id`."""


class HandshakeGate:
    """Screens datagrams that match no connection: the whole stateless front of a server.

    For each datagram it parses the first packet's header and decides, in this
    order: drop what cannot start a connection (short headers, non-Initials,
    datagrams under 1200 bytes); answer an unknown version with Version
    Negotiation; validate a Retry token when there is one (INVALID_TOKEN
    close when it is ours but bad, as if absent when it is not ours); send a
    Retry when `HandshakeAdmission.should_retry()` says so; refuse with
    CONNECTION_REFUSED when no handshake slot is left; otherwise accept.

    Only call it for datagrams whose Destination Connection ID routes to no
    existing connection, or a client's retransmitted Initial would start a
    second handshake.

    Args:
        tokens: Issues and validates the Retry tokens.
        admission: Bounds the handshakes in flight.
        supported_versions: The QUIC versions the server connections accept.
        connection_id_length: Length of the Retry source connection IDs.
    """

    __slots__ = ("_admission", "_cid_length", "_tokens", "_versions")

    def __init__(
        self,
        *,
        tokens: RetryTokens | None = None,
        admission: HandshakeAdmission | None = None,
        supported_versions: Sequence[int] = SUPPORTED_VERSIONS,
        connection_id_length: int = DEFAULT_CONNECTION_ID_LENGTH,
    ) -> None:
        if not 1 <= connection_id_length <= _MAX_CID_SIZE:
            raise ConfigurationError(
                f"connection ID length must be 1 to 20, got {connection_id_length}"
            )
        if not supported_versions:
            raise ConfigurationError("a server must support at least one QUIC version")
        self._tokens = RetryTokens() if tokens is None else tokens
        self._admission = HandshakeAdmission() if admission is None else admission
        self._versions = tuple(supported_versions)
        self._cid_length = connection_id_length

    @property
    def tokens(self) -> RetryTokens:
        """The Retry token issuer."""
        return self._tokens

    @property
    def admission(self) -> HandshakeAdmission:
        """The handshake bounds."""
        return self._admission

    def screen(self, data: bytes, address: NetworkAddress, *, now: float) -> Screening:
        """Decide what to do with a datagram that matches no known connection.

        Args:
            data: The UDP payload.
            address: The address it came from (an IP literal and a port).
            now: Current time, on the clock of `tokens`.

        Returns:
            The decision; on ACCEPT a handshake slot is already taken.

        Raises:
            ValueError: The address is not an IP literal and port, or `now`
                is negative or not finite.
        """
        size = len(data)
        if not size or not data[0] & PACKET_LONG_HEADER:
            return Screening(action=GateAction.DROP, reason="not a long header")
        try:
            header = pull_quic_header(Buffer(data=data))
        except (ValueError, BufferReadError):
            return Screening(action=GateAction.DROP, reason="unparsable header")
        if header.packet_type == QuicPacketType.VERSION_NEGOTIATION:
            return Screening(action=GateAction.DROP, reason="version negotiation", header=header)
        if size < MIN_INITIAL_DATAGRAM_SIZE:
            return Screening(action=GateAction.DROP, reason="datagram too small", header=header)
        if header.version not in self._versions:
            return Screening(
                action=GateAction.NEGOTIATE_VERSION,
                reason="unsupported version",
                response=build_version_negotiation(
                    header, datagram_size=size, supported_versions=self._versions
                ),
                header=header,
            )
        if header.packet_type != QuicPacketType.INITIAL:
            return Screening(action=GateAction.DROP, reason="not an Initial", header=header)
        if header.token and self._tokens.is_ours(header.token):
            return self._screen_token(header, address, size, now)
        if len(header.destination_cid) < MIN_CLIENT_CID_LENGTH:
            return Screening(
                action=GateAction.DROP, reason="destination CID too short", header=header
            )
        if self._admission.should_retry(address):
            return self._retry(header, address, size, now)
        admitted = self._admission.try_admit(address, validated=False)
        if admitted is None:
            return self._refuse(header, size, "handshake table full")
        return Screening(
            action=GateAction.ACCEPT, reason="admitted", header=header, admission=admitted
        )

    def _screen_token(
        self, header: QuicHeader, address: NetworkAddress, size: int, now: float
    ) -> Screening:
        try:
            original = self._tokens.validate(
                header.token, address=address, destination_cid=header.destination_cid, now=now
            )
        except InvalidRetryToken as exc:
            return self._refuse(
                header,
                size,
                f"{exc.rejection.value} token",
                error_code=QuicErrorCode.INVALID_TOKEN,
            )
        admitted = self._admission.try_admit(address, validated=True)
        if admitted is None:
            return self._refuse(header, size, "handshake table full")
        return Screening(
            action=GateAction.ACCEPT,
            reason="admitted after retry",
            header=header,
            admission=admitted,
            original_destination_cid=original,
            retry_source_cid=header.destination_cid,
        )

    def _retry(
        self, header: QuicHeader, address: NetworkAddress, size: int, now: float
    ) -> Screening:
        source_cid = _new_cid(self._cid_length, avoid=header.destination_cid)
        token = self._tokens.issue(
            address=address,
            original_destination_cid=header.destination_cid,
            retry_source_cid=source_cid,
            now=now,
        )
        return Screening(
            action=GateAction.RETRY,
            reason="address validation",
            response=build_retry(header, source_cid=source_cid, token=token, datagram_size=size),
            header=header,
        )

    def _refuse(
        self,
        header: QuicHeader,
        size: int,
        reason: str,
        *,
        error_code: int = QuicErrorCode.CONNECTION_REFUSED,
    ) -> Screening:
        return Screening(
            action=GateAction.REFUSE,
            reason=reason,
            response=build_refusal(header, datagram_size=size, error_code=error_code),
            header=header,
        )
