"""The admission gate: who may start a handshake, decided at the first Initial, without I/O.

Address validation and stateless refusal (RFC 9000 sections 8.1, 6, 10.2).
A server endpoint hands every datagram that matches no known connection to
`HandshakeGate.screen()` and acts on the returned `Screening`: drop it, send
the prepared response (Version Negotiation, Retry or a CONNECTION_CLOSE in an
Initial packet) or create a connection for it. Nothing here touches a socket,
a loop or the clock: time is the `now` argument, and aioquic is used only
through its public module-level API (`pull_quic_header`, `encode_quic_retry`,
`encode_quic_version_negotiation`, `CryptoPair`, `QuicPacketBuilder`).

The pieces also stand alone, one module each:

- `tokens`: `RetryTokens` issues and validates stateless, authenticated, expiring Retry
  tokens bound to the client address and both connection IDs.
- `responses`: `build_retry()`, `build_version_negotiation()` and `build_refusal()` make the
  three stateless responses, each no larger than three times the datagram
  that provoked it (the anti-amplification limit of RFC 9000 §8.1).
- `addresses`: `AddressCounter` counts holders per source address under a per-address and a
  global bound (the server counts connections and sessions with it too).
- `gate`: `HandshakeAdmission` uses two of them to decide, per Initial,
  between accepting, asking for a Retry and refusing.

Refusing with `build_refusal()` costs one AEAD seal and no TLS work: the client
sees CONNECTION_REFUSED straight away instead of after a full handshake.
"""

from __future__ import annotations

from .addresses import AddressCounter, NetworkAddress, address_key
from .gate import (
    DEFAULT_MAX_HANDSHAKES,
    DEFAULT_MAX_HANDSHAKES_PER_ADDRESS,
    DEFAULT_RETRY_THRESHOLD,
    MIN_CLIENT_CID_LENGTH,
    Admission,
    GateAction,
    HandshakeAdmission,
    HandshakeGate,
    RetryMode,
    Screening,
)
from .responses import (
    AMPLIFICATION_FACTOR,
    DEFAULT_CONNECTION_ID_LENGTH,
    MIN_INITIAL_DATAGRAM_SIZE,
    SUPPORTED_VERSIONS,
    build_refusal,
    build_retry,
    build_version_negotiation,
)
from .tokens import DEFAULT_TOKEN_LIFETIME, InvalidRetryToken, RetryTokens, TokenRejection

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
    "NetworkAddress",
    "RetryMode",
    "RetryTokens",
    "Screening",
    "TokenRejection",
    "address_key",
    "build_refusal",
    "build_retry",
    "build_version_negotiation",
]
