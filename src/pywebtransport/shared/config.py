"""Frozen, validated configuration objects for clients and servers.

Every config is a `@dataclass(frozen=True, slots=True, kw_only=True)` that
validates itself in `__post_init__`: an invalid value raises
`ConfigurationError` at construction, with a message naming the field and the
allowed values, and `config_key` / `config_value` set on the exception.
Configs are never mutated; `update()` returns a new, validated copy.

Example:
    ```python
    from pywebtransport import ClientConfig

    config = ClientConfig(connect_timeout=5.0, alpn_protocols=["h3"])
    faster = config.update(read_timeout=10.0)
    ```
"""

from __future__ import annotations

import dataclasses
import logging
import math
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from .constants import (
    DEFAULT_ALPN_PROTOCOLS,
    DEFAULT_BIND_HOST,
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_DATAGRAM_SIZE,
    DEFAULT_PORT,
    MAX_QUIC_DATAGRAM_SIZE,
)
from .exceptions import ConfigurationError

__all__ = ["BaseConfig", "ClientConfig", "ServerConfig"]

_KIB = 1024
_MIB = 1024 * 1024

# QUIC requires paths to carry at least 1200-byte packets, and aioquic breaks
# above MAX_QUIC_DATAGRAM_SIZE, so anything outside this range cannot work.
_MIN_DATAGRAM_SIZE = 1200
_MAX_DATAGRAM_SIZE = MAX_QUIC_DATAGRAM_SIZE

_CONGESTION_CONTROL_ALGORITHMS = ("reno", "cubic", "bbr")
_RETRY_MODES = ("auto", "always", "never")

# Integer fields whose value may legitimately be zero (an empty history, a peer
# that may not open streams); every other integer limit must be positive.
_NON_NEGATIVE_INT_FIELDS = frozenset(
    {"event_history_capacity", "initial_max_streams_bidi", "initial_max_streams_uni"}
)

# Fields holding a duration in seconds that may be None (meaning "no limit").
_OPTIONAL_TIMEOUT_FIELDS = frozenset(
    {"keep_alive_interval", "read_timeout", "write_timeout", "outgoing_datagram_max_age"}
)

# Durations that must be strictly positive; `connection_attempt_delay` may be 0.
_POSITIVE_DURATION_FIELDS = frozenset(
    {
        "close_timeout",
        "connection_idle_timeout",
        "pending_event_ttl",
        "resource_cleanup_interval",
        "stream_creation_timeout",
        "connect_timeout",
        "handshake_timeout",
    }
)

_INT_LIMIT_FIELDS = (
    "event_history_capacity",
    "event_queue_capacity",
    "flow_control_window",
    "initial_max_data",
    "initial_max_streams_bidi",
    "initial_max_streams_uni",
    "max_capsule_size",
    "max_connections",
    "max_event_listeners",
    "max_field_section_size",
    "max_pending_datagrams",
    "max_pending_streams",
    "max_sessions",
    "max_stream_read_buffer_size",
    "max_stream_write_buffer_size",
    "max_total_pending_events",
    "outgoing_datagram_high_water_mark",
    "quic_max_concurrent_bidi_streams",
    "quic_max_concurrent_uni_streams",
    "quic_receive_window",
    "quic_stream_receive_window",
)


def _fail(key: str, value: Any, requirement: str) -> ConfigurationError:
    return ConfigurationError(
        f"Invalid value for '{key}': {value!r}; {requirement}",
        config_key=key,
        config_value=value,
    )


def _check_int(key: str, value: Any, *, minimum: int, maximum: int | None = None) -> None:
    # bool is an int subclass, but `max_sessions=True` is always a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(key, value, f"must be an integer >= {minimum}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise _fail(key, value, f"must be an integer {bound}")


def _check_server_id(value: Any) -> None:
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or (value and not 1 <= len(raw) <= 3):
        raise _fail(
            "quic_lb_server_id", value, 'must be 1 to 3 bytes in hex (e.g. "0a01"), or empty'
        )


def _check_duration(key: str, value: Any, *, allow_none: bool, allow_zero: bool) -> None:
    if value is None and allow_none:
        return
    ok = (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        suffix = " or None (no limit)" if allow_none else ""
        raise _fail(key, value, f"must be a finite number of seconds {bound}{suffix}")


def _check_optional_str(key: str, value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise _fail(key, value, "must be a non-empty string or None")


def _to_str_tuple(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise _fail(key, value, "must be a list or tuple of non-empty strings")
    items = tuple(value)
    if not all(isinstance(item, str) and item for item in items):
        raise _fail(key, value, "must be a list or tuple of non-empty strings")
    return items


def _to_verify_mode(key: str, value: Any) -> ssl.VerifyMode:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(
            key, value, "must be an ssl.VerifyMode (CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED)"
        )
    try:
        return ssl.VerifyMode(value)
    except ValueError:
        raise _fail(
            key, value, "must be an ssl.VerifyMode (CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED)"
        ) from None


def _set(obj: object, name: str, value: Any) -> None:
    # The dataclasses are frozen; normalising in __post_init__ is the one
    # place where writing a field is legitimate.
    object.__setattr__(obj, name, value)


@dataclass(frozen=True, slots=True, kw_only=True)
class BaseConfig:
    """Settings shared by clients and servers.

    All durations are in seconds and all sizes in bytes. Instances are frozen
    and validated on construction.

    Attributes:
        alpn_protocols: ALPN protocols offered in the TLS handshake (a list is
            accepted and stored as a tuple). Must not be empty.
        close_timeout: How long a graceful close waits for the peer before
            resetting. Must be > 0.
        congestion_control_algorithm: QUIC congestion control: `"cubic"`,
            `"reno"` (aioquic's, loss-based) or `"bbr"` (this package's,
            model-based: paces at the measured bottleneck rate and treats
            loss below 2 % per round trip as noise; see the networks guide).
        connection_idle_timeout: QUIC idle timeout; a connection with no
            traffic for this long is closed. Must be > 0.
        event_history_capacity: Number of past events each `EventEmitter`
            keeps (0 disables the history). Must be >= 0.
        event_queue_capacity: Events queued by a paused `EventEmitter` before
            the oldest are dropped. Must be >= 1.
        flow_control_window: WebTransport session-level flow control window.
        initial_max_data: Initial WebTransport session data limit granted to
            the peer.
        initial_max_streams_bidi: Bidirectional streams the peer may open in a
            session initially. Must be >= 0.
        initial_max_streams_uni: Unidirectional streams the peer may open in a
            session initially. Must be >= 0.
        keep_alive_interval: Interval between QUIC PINGs on an idle
            connection, or None to send none. Must be smaller than
            `connection_idle_timeout`, or the connection would idle out first.
        log_level: Level set on the `pywebtransport` logger when a client or
            server is created with this config, e.g. `"DEBUG"` (stored
            upper-case); None (the default) leaves logging configuration alone.
            `init_tracing()` also attaches a handler.
        max_capsule_size: Largest HTTP capsule accepted from the peer.
        max_connections: Maximum number of concurrent QUIC connections.
        max_datagram_size: Largest QUIC packet (UDP payload) sent, between
            1200 (the QUIC minimum) and 16383 (the most aioquic can frame);
            the largest WebTransport datagram payload is a little smaller,
            see `WebTransportSession.max_datagram_size`.
        max_event_listeners: Listeners per event type before an
            `EventEmitter` logs a leak warning.
        max_field_section_size: Largest header block (QPACK field section)
            accepted from the peer.
        max_pending_datagrams: Datagrams queued for reading per session; the
            oldest are dropped when the queue is full.
        max_pending_streams: Peer streams held for one session that is not
            established yet (a stream may overtake its session's CONNECT or the
            answer); more are refused with WT_BUFFERED_STREAM_REJECTED. Each
            held stream buffers at most 64 KiB.
        max_sessions: Maximum number of concurrent WebTransport sessions.
        max_stream_read_buffer_size: Bytes buffered per stream for reading;
            beyond it, QUIC credit is withheld so the peer slows down.
        max_stream_write_buffer_size: Bytes buffered per stream for sending;
            `write()` waits when the buffer passes it.
        max_total_pending_events: Peer streams held across all sessions of one
            connection that are not established yet (see `max_pending_streams`).
        pending_event_ttl: How long a held stream waits for its session; it is
            then refused with WT_BUFFERED_STREAM_REJECTED.
        outgoing_datagram_high_water_mark: Datagrams a session queues for
            sending while QUIC cannot send them yet (congestion). `await
            send_datagram()` waits while the queue is this full;
            `send_datagram_nowait()` then drops the oldest queued datagram
            (counted). The W3C API's `outgoingHighWaterMark`.
        outgoing_datagram_max_age: Seconds a queued datagram stays sendable;
            older ones are dropped before sending (counted), as stale real-time
            data is worthless. None keeps them. The W3C API's `outgoingMaxAge`.
        quic_max_concurrent_bidi_streams: QUIC-level limit on peer-initiated
            bidirectional streams.
        quic_max_concurrent_uni_streams: QUIC-level limit on peer-initiated
            unidirectional streams.
        quic_receive_window: QUIC connection-level receive window.
        quic_stream_receive_window: QUIC per-stream receive window.
        read_timeout: Default timeout for a stream read, or None for none.
        resource_cleanup_interval: Interval between sweeps that drop closed
            connections and sessions from the managers. Must be > 0.
        stream_creation_timeout: How long `create_*_stream()` waits for the
            peer's stream credit before raising `TimeoutError`. Must be > 0.
        write_timeout: Default timeout for a stream write, or None for none.
        secrets_log_file: Path of a TLS key log file (NSS key log format, as
            read by Wireshark), or None. Not in the reference library.
        qlog_dir: Directory where a qlog trace is written per connection, or
            None. Not in the reference library.
    """

    alpn_protocols: tuple[str, ...] = DEFAULT_ALPN_PROTOCOLS
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT
    congestion_control_algorithm: str = "cubic"
    connection_idle_timeout: float = 60.0
    event_history_capacity: int = 0
    event_queue_capacity: int = 100
    flow_control_window: int = 4 * _MIB
    initial_max_data: int = 4 * _MIB
    initial_max_streams_bidi: int = 10
    initial_max_streams_uni: int = 10
    keep_alive_interval: float | None = 30.0
    log_level: str | None = None
    max_capsule_size: int = 64 * _KIB
    max_connections: int = 100
    max_datagram_size: int = DEFAULT_MAX_DATAGRAM_SIZE
    max_event_listeners: int = 10
    max_field_section_size: int = 64 * _KIB
    max_pending_datagrams: int = 100
    max_pending_streams: int = 10
    max_sessions: int = 10
    max_stream_read_buffer_size: int = 1 * _MIB
    max_stream_write_buffer_size: int = 1 * _MIB
    max_total_pending_events: int = 100
    pending_event_ttl: float = 5.0
    outgoing_datagram_high_water_mark: int = 32
    outgoing_datagram_max_age: float | None = 0.5
    quic_max_concurrent_bidi_streams: int = 100
    quic_max_concurrent_uni_streams: int = 100
    quic_receive_window: int = 16 * _MIB
    quic_stream_receive_window: int = 1 * _MIB
    read_timeout: float | None = 60.0
    resource_cleanup_interval: float = 15.0
    stream_creation_timeout: float = 10.0
    write_timeout: float | None = 30.0
    secrets_log_file: str | None = None
    qlog_dir: str | None = None

    def __post_init__(self) -> None:
        self._normalize()
        self.validate()

    def _normalize(self) -> None:
        self._normalize_common()

    def _normalize_common(self) -> None:
        """Converts accepted input forms (lists, ints, lower-case names) to stored forms."""
        _set(self, "alpn_protocols", _to_str_tuple("alpn_protocols", self.alpn_protocols))
        if isinstance(self.log_level, str):
            _set(self, "log_level", self.log_level.upper())
        for name in (*_OPTIONAL_TIMEOUT_FIELDS, *_POSITIVE_DURATION_FIELDS):
            value = getattr(self, name, None)
            if isinstance(value, int) and not isinstance(value, bool):
                _set(self, name, float(value))

    def validate(self) -> None:
        """Checks every field and the relations between fields.

        Called on construction; calling it again re-runs the same checks.

        Raises:
            ConfigurationError: A field is invalid. `config_key` names it and
                `config_value` holds the rejected value.
        """
        self._validate_base()

    def _validate_base(self) -> None:
        if not self.alpn_protocols:
            raise _fail("alpn_protocols", self.alpn_protocols, "must name at least one protocol")
        for name in _INT_LIMIT_FIELDS:
            _check_int(
                name, getattr(self, name), minimum=0 if name in _NON_NEGATIVE_INT_FIELDS else 1
            )
        _check_int(
            "max_datagram_size",
            self.max_datagram_size,
            minimum=_MIN_DATAGRAM_SIZE,
            maximum=_MAX_DATAGRAM_SIZE,
        )
        for name in sorted(_OPTIONAL_TIMEOUT_FIELDS):
            _check_duration(name, getattr(self, name), allow_none=True, allow_zero=False)
        for name in sorted(_POSITIVE_DURATION_FIELDS):
            if hasattr(self, name):
                _check_duration(name, getattr(self, name), allow_none=False, allow_zero=False)
        algorithm = self.congestion_control_algorithm
        if algorithm not in _CONGESTION_CONTROL_ALGORITHMS:
            raise _fail(
                "congestion_control_algorithm", algorithm, "must be 'cubic', 'reno' or 'bbr'"
            )
        levels = logging.getLevelNamesMapping()
        if self.log_level is not None and (
            not isinstance(self.log_level, str) or self.log_level not in levels
        ):
            raise _fail(
                "log_level", self.log_level, f"must be None or one of {', '.join(sorted(levels))}"
            )
        _check_optional_str("secrets_log_file", self.secrets_log_file)
        _check_optional_str("qlog_dir", self.qlog_dir)
        if (
            self.keep_alive_interval is not None
            and self.keep_alive_interval >= self.connection_idle_timeout
        ):
            raise _fail(
                "keep_alive_interval",
                self.keep_alive_interval,
                f"must be smaller than connection_idle_timeout ({self.connection_idle_timeout})"
                " or None",
            )

    def copy(self) -> Self:
        """Returns an equal, independent config (headers are copied too).

        Returns:
            A new config of the same class.
        """
        return dataclasses.replace(self)

    def update(self, **kwargs: Any) -> Self:
        """Returns a new config with some fields changed; this one is left as is.

        Args:
            **kwargs: Field names and their new values.

        Returns:
            A new, validated config of the same class.

        Raises:
            ConfigurationError: A keyword is not a field of this config, or a
                new value is invalid.
        """
        self._check_keys(kwargs)
        return dataclasses.replace(self, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Returns the fields as a dict; `from_dict()` turns it back into an equal config.

        Returns:
            A mapping of every field name to its value (mutable values copied).
        """
        result = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key, value in result.items():
            if isinstance(value, dict):
                result[key] = dict(value)
        return result

    @classmethod
    def from_dict(cls, config_dict: Mapping[str, Any]) -> Self:
        """Builds a config from a mapping such as the output of `to_dict()`.

        Args:
            config_dict: Field names and values; missing fields take their
                defaults.

        Returns:
            A new, validated config.

        Raises:
            ConfigurationError: A key is not a field of this config, or a
                value is invalid.
        """
        cls._check_keys(config_dict)
        return cls(**config_dict)

    @classmethod
    def _check_keys(cls, values: Mapping[str, Any]) -> None:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(key) for key in values if key not in known)
        if unknown:
            raise ConfigurationError(
                f"Unknown {cls.__name__} field(s): {', '.join(unknown)}",
                config_key=unknown[0],
                config_value=values[unknown[0]],
            )


def _normalize_headers(value: Any) -> dict[str | bytes, str | bytes]:
    items = value.items() if isinstance(value, Mapping) else value
    try:
        result = dict(items)
    except (TypeError, ValueError):
        raise _fail("headers", value, "must be a dict or a list of (name, value) pairs") from None
    for name, header_value in result.items():
        if not isinstance(name, str | bytes) or not isinstance(header_value, str | bytes):
            raise _fail("headers", value, "names and values must be str or bytes")
    return result


def _normalize_hashes(value: Any) -> tuple[bytes, ...]:
    requirement = "must be a list of 32-byte SHA-256 digests (bytes or 64-character hex strings)"
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise _fail("server_certificate_hashes", value, requirement)
    digests = []
    for item in value:
        digest: Any = item
        if isinstance(item, str):
            try:
                digest = bytes.fromhex(item.replace(":", ""))
            except ValueError:
                raise _fail("server_certificate_hashes", item, requirement) from None
        elif isinstance(item, bytearray | memoryview):
            digest = bytes(item)
        if not isinstance(digest, bytes) or len(digest) != 32:
            raise _fail("server_certificate_hashes", item, requirement)
        digests.append(digest)
    return tuple(digests)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig(BaseConfig):
    """Settings for `WebTransportClient`.

    Attributes:
        ca_certs: PEM file of CA certificates used to verify the server, or
            None for the system store.
        certfile: PEM client certificate for mutual TLS, or None. Requires
            `keyfile`.
        keyfile: PEM private key of `certfile`, or None. Requires `certfile`.
        connect_timeout: How long `connect()` waits for the QUIC handshake and
            the CONNECT response. Must be > 0.
        connection_attempt_delay: Delay between connection attempts to the
            addresses of one host (happy eyeballs). Must be >= 0.
        headers: Extra request headers sent with every CONNECT (a dict or a
            list of pairs; stored as a dict copy).
        user_agent: `user-agent` header, or None for `PyWebTransport/<version>`.
        verify_mode: How the server certificate is verified, an
            `ssl.VerifyMode`.
        wt_available_protocols: Application subprotocols offered in
            `wt-available-protocols`, or None to offer none.
        server_certificate_hashes: SHA-256 digests of DER certificates the
            server may present, like the browser's `serverCertificateHashes`.
            When set, a certificate matching one digest is accepted without
            CA verification. Accepts bytes or hex strings (colons allowed);
            stored as a tuple of 32-byte `bytes`. Not in the reference library.
    """

    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    connection_attempt_delay: float = 0.25
    headers: dict[str | bytes, str | bytes] = field(default_factory=dict, hash=False)
    user_agent: str | None = None
    verify_mode: ssl.VerifyMode = ssl.CERT_REQUIRED
    wt_available_protocols: tuple[str, ...] | None = None
    server_certificate_hashes: tuple[bytes, ...] = ()

    def _normalize(self) -> None:
        self._normalize_common()
        if isinstance(self.connection_attempt_delay, int) and not isinstance(
            self.connection_attempt_delay, bool
        ):
            _set(self, "connection_attempt_delay", float(self.connection_attempt_delay))
        _set(self, "headers", _normalize_headers(self.headers))
        _set(self, "verify_mode", _to_verify_mode("verify_mode", self.verify_mode))
        if self.wt_available_protocols is not None:
            _set(
                self,
                "wt_available_protocols",
                _to_str_tuple("wt_available_protocols", self.wt_available_protocols),
            )
        _set(
            self,
            "server_certificate_hashes",
            _normalize_hashes(self.server_certificate_hashes),
        )

    def validate(self) -> None:
        """Checks every field and the relations between fields.

        Raises:
            ConfigurationError: A field is invalid, or `certfile` and
                `keyfile` are not given together.
        """
        self._validate_base()
        for name in ("ca_certs", "certfile", "keyfile", "user_agent"):
            _check_optional_str(name, getattr(self, name))
        _check_duration(
            "connection_attempt_delay",
            self.connection_attempt_delay,
            allow_none=False,
            allow_zero=True,
        )
        _to_verify_mode("verify_mode", self.verify_mode)
        _normalize_headers(self.headers)
        _normalize_hashes(self.server_certificate_hashes)
        if self.wt_available_protocols is not None:
            _to_str_tuple("wt_available_protocols", self.wt_available_protocols)
        if (self.certfile is None) != (self.keyfile is None):
            missing = "keyfile" if self.keyfile is None else "certfile"
            raise _fail(
                missing,
                None,
                "a client certificate needs both certfile and keyfile",
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig(BaseConfig):
    """Settings for `WebTransportServer` and `ServerApp`.

    The certificate files are not read here: a missing or unreadable file
    makes `listen()` raise `CertificateError`.

    Attributes:
        certfile: PEM certificate chain of the server. Required.
        keyfile: PEM private key of `certfile`. Required.
        bind_host: Address to listen on; `"::"` listens on IPv6 and, where
            the OS allows dual-stack sockets, on IPv4 too.
        bind_port: UDP port to listen on, 0..65535; 0 picks a free port (read
            it back from `server.local_addresses`).
        ca_certs: PEM file of CA certificates used to verify client
            certificates, or None.
        verify_mode: Whether client certificates are requested/required, an
            `ssl.VerifyMode`.
        handshake_timeout: How long a connection may take from its first
            packet to a completed QUIC handshake before it is dropped. Must be > 0.
            Not in the reference library.
        max_sessions_per_connection: Sessions one QUIC connection may hold;
            further CONNECTs are answered 429. Not in the reference library.
        max_http_requests_per_connection: Plain HTTP/3 requests (not
            WebTransport) one connection may have in flight when the server
            answers them (an ASGI app's `http` scope, `ServerApp.mount_asgi`);
            more are answered 429. Each buffers at most one stream receive
            window of request body. Not in the reference library.
        wt_supported_protocols: Subprotocols this server speaks, in its
            preference order. When set, the server selects the client's first
            offered protocol that is in this list (answered as `wt-protocol`;
            `session.wt_protocol`) before handlers see the session; empty
            selects nothing. Not in the reference library.
        max_connections: Established QUIC connections at once (half-open
            handshakes are bounded by `max_handshakes` instead). A client over
            it is refused at its first Initial, with no TLS work. Default
            10,000: about 0.45 GiB at the measured cost of an idle connection
            with one session, 46 KiB (see the reliability guide).
        max_sessions: WebTransport sessions at once; more CONNECTs are
            answered 429. Default 10,000.
        max_connections_per_address: Established connections one client
            address (an IPv4 address, or an IPv6 /64) may hold; more are refused
            at the Initial. Not in the reference library.
        max_sessions_per_address: Sessions one client address may hold; more
            are answered 429. Not in the reference library.
        max_handshakes: QUIC handshakes in flight at once, a table of its own
            that never counts against connections or sessions; a client over
            it is refused at its first Initial. Not in the reference library.
        max_handshakes_per_address: Handshakes in flight one client address
            may hold (counted apart for addresses proven by a Retry). Not in
            the reference library.
        retry: When clients must prove their address with a QUIC Retry
            (stateless, authenticated, expiring tokens; one extra round trip):
            `"auto"` once `retry_threshold` handshakes are in flight or the
            address is over its quota, `"always"`, or `"never"`. Not in the
            reference library.
        retry_threshold: Handshakes in flight from which `retry="auto"`
            sends Retries. Not in the reference library.
        server_secret: A secret (16 bytes or more) shared by every process
            and host serving this address: Retry tokens one issues are
            accepted by all, and any of them can send the stateless reset of a
            connection it does not hold, which the client recognises. None: a
            random one per `listen()`, shared by the workers of
            `ServerApp.run(workers=N)`, which makes one before forking. Not in
            the reference library.
        quic_lb_server_id: This host's server id in its connection ids, in
            hex (1 to 3 bytes, e.g. `"0a01"`), laid out as the QUIC-LB draft's
            plaintext algorithm does (first octet with config rotation 0, the
            id, a nonce), so that a load balancer configured with it routes
            every packet of a connection to this host, whatever the client's
            address. Empty: none. Not in the reference library.
    """

    certfile: str = ""
    keyfile: str = ""
    bind_host: str = DEFAULT_BIND_HOST
    bind_port: int = DEFAULT_PORT
    ca_certs: str | None = None
    verify_mode: ssl.VerifyMode = ssl.CERT_NONE
    handshake_timeout: float = 10.0
    max_sessions_per_connection: int = 10
    max_http_requests_per_connection: int = 16
    wt_supported_protocols: tuple[str, ...] = ()
    max_connections: int = 10_000
    max_sessions: int = 10_000
    max_connections_per_address: int = 256
    max_sessions_per_address: int = 256
    max_handshakes: int = 1024
    max_handshakes_per_address: int = 16
    retry: str = "auto"
    retry_threshold: int = 64
    server_secret: bytes | None = field(default=None, repr=False)  # kept out of logs
    quic_lb_server_id: str = ""

    def _normalize(self) -> None:
        self._normalize_common()
        _set(self, "verify_mode", _to_verify_mode("verify_mode", self.verify_mode))
        _set(
            self,
            "wt_supported_protocols",
            _to_str_tuple("wt_supported_protocols", self.wt_supported_protocols),
        )

    def validate(self) -> None:
        """Checks every field and the relations between fields.

        Raises:
            ConfigurationError: A field is invalid, or `certfile` / `keyfile`
                is missing.
        """
        self._validate_base()
        for name in ("certfile", "keyfile"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise _fail(name, value, "a server needs a certificate file and a key file path")
        if not isinstance(self.bind_host, str):
            raise _fail("bind_host", self.bind_host, "must be a host name or IP address string")
        _check_int("bind_port", self.bind_port, minimum=0, maximum=65535)
        _check_optional_str("ca_certs", self.ca_certs)
        _to_verify_mode("verify_mode", self.verify_mode)
        _check_int("max_sessions_per_connection", self.max_sessions_per_connection, minimum=1)
        _to_str_tuple("wt_supported_protocols", self.wt_supported_protocols)
        for name in (
            "max_http_requests_per_connection",
            "max_connections_per_address",
            "max_sessions_per_address",
            "max_handshakes",
            "max_handshakes_per_address",
        ):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("retry_threshold", self.retry_threshold, minimum=0)
        if self.server_secret is not None and (
            not isinstance(self.server_secret, bytes) or len(self.server_secret) < 16
        ):
            raise ConfigurationError(
                "Invalid value for 'server_secret': must be bytes, 16 or more, or None "
                f"(got {type(self.server_secret).__name__} of length "
                f"{len(self.server_secret) if hasattr(self.server_secret, '__len__') else '-'})",
                config_key="server_secret",
            )
        _check_server_id(self.quic_lb_server_id)
        if self.retry not in _RETRY_MODES:
            raise _fail("retry", self.retry, f"must be one of {', '.join(_RETRY_MODES)}")
