"""The handshake gate: per Initial, accept, ask for a Retry, refuse or drop."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum

# aioquic.buffer re-exports these from its C extension without __all__.
from aioquic.buffer import Buffer, BufferReadError  # type: ignore[attr-defined]
from aioquic.quic.packet import (
    PACKET_LONG_HEADER,
    QuicErrorCode,
    QuicHeader,
    QuicPacketType,
    pull_quic_header,
)

from ...shared.exceptions import ConfigurationError
from .addresses import AddressCounter, NetworkAddress
from .responses import (
    DEFAULT_CONNECTION_ID_LENGTH,
    MIN_INITIAL_DATAGRAM_SIZE,
    SUPPORTED_VERSIONS,
    _new_cid,
    build_refusal,
    build_retry,
    build_version_negotiation,
)
from .tokens import _MAX_CID_SIZE, InvalidRetryToken, RetryTokens

DEFAULT_MAX_HANDSHAKES = 1024
"""Handshakes in flight (validated or not) beyond which new clients are refused."""

DEFAULT_MAX_HANDSHAKES_PER_ADDRESS = 16
"""Handshakes in flight from one address (IPv4 /32, IPv6 /64) of each kind."""

DEFAULT_RETRY_THRESHOLD = 64
"""In `RetryMode.AUTO`, handshakes in flight from which unvalidated clients get a Retry."""

MIN_CLIENT_CID_LENGTH = 8
"""Shortest Destination Connection ID of a client's first Initial (RFC 9000 §7.2)."""


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
