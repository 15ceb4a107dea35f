"""Retry tokens: stateless, authenticated, expiring, bound to the client's address and IDs."""

from __future__ import annotations

import math
import os
import struct
from enum import StrEnum

# aioquic.buffer re-exports these from its C extension without __all__.
from aioquic.quic.packet import (
    QuicErrorCode,
)
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ...shared.exceptions import ConfigurationError, ProtocolError
from .addresses import NetworkAddress, _packed_address

DEFAULT_TOKEN_LIFETIME = 10.0
"""Seconds a Retry token stays valid.

A client echoes a Retry token at once, so one round trip would do; ten seconds
also cover a lost second Initial retransmitted after a few PTO back-offs.
"""

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
