"""`WebTransportClient`: open WebTransport sessions to a server.

Example:
    ```python
    from pywebtransport import ClientConfig, WebTransportClient

    async with WebTransportClient(ClientConfig(ca_certs="ca.pem")) as client:
        session = await client.connect("https://example.com:4433/echo")
        stream = await session.create_bidirectional_stream()
        await stream.write(b"hello", end_stream=True)
        print(await stream.read_all())
    ```
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import logging
import socket
import ssl
import sys
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .shared.config import ClientConfig
from .shared.events import EventEmitter, EventType
from .shared.exceptions import (
    CertificateError,
    ClientError,
    ConnectionError,
    TimeoutError,
)
from .shared.utils import format_address
from .transport import _aioquic
from .transport._core.records import SessionRecord
from .transport._dispatch import FACADES
from .transport._engine import ConnectionEngine
from .transport._setup import (
    apply_log_level,
    build_quic_configuration,
    close_secrets_log,
    tune_udp_socket,
)
from .transport.connection import WebTransportConnection
from .transport.manager import ConnectionManager, SessionManager
from .transport.session import WebTransportSession

# Linux reports a closed port to a connected UDP socket at once (ICMP port unreachable,
# read back as ECONNREFUSED); elsewhere the client's socket stays unconnected, as before.
_REPORTS_UNREACHABLE = sys.platform.startswith("linux")


def _connectable(addr: Any) -> tuple[str, int] | None:
    # asyncio takes (host, port) and resolves it again; an IPv6 scope id would be lost in
    # that, so link-local addresses stay unconnected.
    if not _REPORTS_UNREACHABLE or (len(addr) > 3 and addr[3]):
        return None
    return (str(addr[0]), int(addr[1]))


__all__ = ["WebTransportClient"]

logger = logging.getLogger("pywebtransport.client")

# TLS alerts (RFC 8446 section 6.2) that mean the certificate was refused; aioquic
# closes with CRYPTO_ERROR = 0x100 + alert.
_CERTIFICATE_ALERTS = {42, 43, 44, 45, 46, 48, 49, 50, 112, 116}


class _InvalidURL(ClientError, ValueError):
    """The URL is not an `https://host[:port]/path` URL."""


class _UnknownHost(ClientError, socket.gaierror):
    """The host name of the URL does not resolve (also a `socket.gaierror`)."""


class WebTransportClient(EventEmitter):
    """Opens WebTransport sessions; each `connect()` uses a new QUIC connection.

    Certificates are verified by default (system store, or `ca_certs`);
    `server_certificate_hashes` pins certificates by SHA-256 like the
    browser's `serverCertificateHashes`; only `verify_mode=ssl.CERT_NONE`
    turns verification off. A connection closes when its last session does.

    Args:
        config: Client configuration (defaults to `ClientConfig()`).
    """

    def __init__(self, config: ClientConfig | None = None) -> None:
        self._config = config if config is not None else ClientConfig()
        config = self._config
        apply_log_level(config)
        super().__init__(
            max_listeners=config.max_event_listeners,
            max_history=config.event_history_capacity,
            max_queue_size=config.event_queue_capacity,
        )
        self._connection_manager = ConnectionManager(
            max_connections=config.max_connections,
            cleanup_interval=config.resource_cleanup_interval,
        )
        self._session_manager = SessionManager(
            max_sessions=config.max_sessions, cleanup_interval=config.resource_cleanup_interval
        )
        self._client_closed = False
        self._default_headers: dict[str, str] = {}
        self._stats = {"connect_attempts": 0, "connect_successes": 0, "connect_failures": 0}
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def config(self) -> ClientConfig:
        """The client's configuration."""
        return self._config

    @property
    def is_closed(self) -> bool:
        """True after `close()`."""
        return self._client_closed

    @property
    def connection_manager(self) -> ConnectionManager:
        """The client's open connections."""
        return self._connection_manager

    @property
    def session_manager(self) -> SessionManager:
        """The client's open sessions."""
        return self._session_manager

    def set_default_headers(self, headers: dict[str, str]) -> None:
        """Set headers sent with every CONNECT of this client.

        Args:
            headers: Header names and values.
        """
        self._default_headers = dict(headers)

    async def connect(
        self,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        wt_available_protocols: list[str] | None = None,
        timeout: float | None = None,
    ) -> WebTransportSession:
        """Open a session at `url` on a new QUIC connection.

        Args:
            url: ``https://host[:port]/path[?query]``.
            headers: Extra request headers.
            wt_available_protocols: Subprotocols offered, in preference order.
            timeout: Seconds for the whole connect (default `connect_timeout`).

        Returns:
            The established session.

        Raises:
            ClientError: The URL is invalid (also a `ValueError`), its host does
                not resolve (also a `socket.gaierror`), a header name or value is
                not valid in HTTP/3, or the client is closed.
            CertificateError: `ca_certs` cannot be read, or the server's
                certificate failed verification.
            HandshakeError: The server refused the session (`status_code` has the HTTP status).
            ConnectionError: The QUIC connection could not be established.
            TimeoutError: The connect did not finish within `timeout`.
        """
        if self._client_closed:
            raise ClientError("client is closed", url=url)
        host, port, path, authority = _parse_url(url)
        wait = self._config.connect_timeout if timeout is None else timeout
        self._stats["connect_attempts"] += 1
        loop = asyncio.get_running_loop()
        end = loop.time() + wait
        conn: WebTransportConnection | None = None
        try:
            try:
                async with asyncio.timeout(wait):
                    conn = await self._open_connection(url, host, port, authority)
            except builtins.TimeoutError as exc:
                raise TimeoutError(
                    f"QUIC handshake with {host}:{port} did not finish within {wait}s",
                    operation="connect",
                ) from exc
            merged = {**self._default_headers, **(headers or {})}
            session = await conn.create_session(
                path,
                headers=merged,
                wt_available_protocols=wt_available_protocols,
                timeout=max(0.001, end - loop.time()),
            )
        except BaseException:
            self._stats["connect_failures"] += 1
            if conn is not None:
                conn.abort()
            raise
        self._stats["connect_successes"] += 1
        return session

    def _quic_configuration(self, host: str) -> Any:
        config = self._config
        quic_config = build_quic_configuration(config, is_client=True, server_name=host)
        if config.server_certificate_hashes:
            if not _aioquic.enabled("peer_certificate"):
                close_secrets_log(quic_config)
                raise CertificateError(
                    "server_certificate_hashes cannot be checked with the installed aioquic "
                    f"({_aioquic.FEATURES['peer_certificate'].reason})"
                )
            # Pinned hashes replace CA verification, as in the browser API.
            quic_config.verify_mode = ssl.CERT_NONE
        try:
            if config.ca_certs:
                _check_ca_file(config.ca_certs)
                quic_config.load_verify_locations(cafile=config.ca_certs)
            if config.certfile and config.keyfile:
                try:
                    quic_config.load_cert_chain(config.certfile, config.keyfile)
                except (OSError, ValueError) as exc:
                    raise CertificateError(
                        f"cannot load client certificate {config.certfile!r}: {exc}",
                        path=config.certfile,
                    ) from exc
        except CertificateError:
            close_secrets_log(quic_config)
            raise
        return quic_config

    async def _open_connection(
        self, url: str, host: str, port: int, authority: str
    ) -> WebTransportConnection:
        config = self._config
        quic_config = self._quic_configuration(host)
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            close_secrets_log(quic_config)
            raise _UnknownHost(
                f"cannot resolve host {host!r} of {url!r}: {exc.strerror or exc}", url=url
            ) from exc
        if self._connection_manager.is_full:
            close_secrets_log(quic_config)
            raise ClientError(f"max_connections={config.max_connections} reached", url=url)
        targets = _happy_eyeballs_order([(info[0], info[4]) for info in infos])
        engine = await self._race(targets, quic_config, config.connection_attempt_delay)
        conn = WebTransportConnection(engine)
        engine.authority = authority
        engine.on_session_pending = self._on_session_pending
        engine.on_session_ready = self._on_session_ready
        engine.on_session_closed = self._on_session_closed
        engine.on_closed = self._on_connection_closed
        if self.has_listeners(EventType.CONNECTION_ESTABLISHED):
            self.emit_nowait(
                EventType.CONNECTION_ESTABLISHED, engine.established_event_data(), self
            )
        if not self._connection_manager.try_add(conn):
            engine.abort()
            raise ClientError(f"max_connections={config.max_connections} reached", url=url)
        if config.server_certificate_hashes:
            certificate = _aioquic.peer_certificate(engine.quic)
            digest = (
                hashlib.sha256(certificate.public_bytes(Encoding.DER)).digest()
                if certificate is not None
                else b""
            )
            if digest not in config.server_certificate_hashes:
                engine.abort()
                raise CertificateError(
                    f"certificate of {host}:{port} (sha-256 {digest.hex()}) matches none of "
                    "server_certificate_hashes"
                )
        return conn

    async def _race(
        self, targets: list[tuple[int, Any]], quic_config: Any, delay: float
    ) -> ConnectionEngine:
        """Connect to the first address that completes a handshake (RFC 8305 style).

        Attempts start `delay` seconds apart (or at once when one fails); the
        first handshake to complete wins and the others are dropped.
        """
        loop = asyncio.get_running_loop()
        attempts: list[asyncio.Task[ConnectionEngine]] = []
        failures: list[BaseException] = []
        winner: ConnectionEngine | None = None
        try:
            for index, (family, addr) in enumerate(targets):
                if index and delay > 0:
                    pending = [a for a in attempts if not a.done()]
                    if pending:
                        await asyncio.wait(pending, timeout=delay)
                winner = _first_success(attempts, failures)
                if winner is not None:
                    return winner
                # Each attempt owns a configuration (the key log file is shared by name).
                attempt_config = quic_config if index == 0 else _copy_configuration(quic_config)
                attempts.append(loop.create_task(self._attempt(family, addr, attempt_config)))
            while attempts:
                pending = [a for a in attempts if not a.done()]
                if pending:
                    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                winner = _first_success(attempts, failures)
                if winner is not None:
                    return winner
                if not pending:
                    break
            raise failures[0] if failures else ConnectionError("no address to connect to")
        finally:
            for attempt in attempts:
                if not attempt.done():
                    attempt.cancel()
                elif not attempt.cancelled() and attempt.exception() is None:
                    engine = attempt.result()
                    if engine is not winner:
                        engine.abort()
            if attempts:
                await asyncio.gather(*attempts, return_exceptions=True)

    async def _attempt(self, family: int, addr: Any, quic_config: Any) -> ConnectionEngine:
        config = self._config
        quic = _aioquic.new_quic_connection(
            quic_config,
            _aioquic.ConnectionTuning(
                max_streams_bidi=config.quic_max_concurrent_bidi_streams,
                max_streams_uni=config.quic_max_concurrent_uni_streams,
            ),
        )
        engine = ConnectionEngine(quic, config, max_sessions=config.max_sessions, dispatch=FACADES)
        local: tuple[Any, ...] = ("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0)
        loop = asyncio.get_running_loop()
        try:
            # Connected to the server (Linux): its host's ICMP port unreachable then reaches
            # the engine, so a port where nothing listens fails the connect at once.
            transport, _ = await loop.create_datagram_endpoint(
                lambda: engine,
                local_addr=local,
                remote_addr=_connectable(addr),
                family=family,
            )
        except OSError as exc:
            close_secrets_log(quic_config)
            raise ConnectionError(f"cannot open a UDP socket for {addr}: {exc}") from exc
        tune_udp_socket(transport)
        quic.connect(addr, now=loop.time())
        engine.transmit()
        try:
            await asyncio.shield(engine.handshake)
        except ConnectionError as exc:
            code = exc.error_code or 0
            if 0x100 <= code <= 0x1FF and (code - 0x100) in _CERTIFICATE_ALERTS:
                why = engine.close_reason[1] if engine.close_reason else str(exc)
                hint = ""
                if "self-signed" in why or "self signed" in why or "issuer" in why:
                    hint = (
                        "; to trust a self-signed certificate, pin its SHA-256 with "
                        "ClientConfig(server_certificate_hashes=[...]) (CLI: --cert-hash HEX) "
                        "or pass the certificate file as ca_certs (CLI: --ca FILE)"
                    )
                raise CertificateError(
                    f"certificate of {format_address(str(addr[0]), int(addr[1]))} was "
                    f"rejected: {why}{hint}",
                    error_code=code,
                ) from exc
            raise
        except BaseException:
            # Timed out or cancelled mid-handshake: drop the connection and its socket.
            engine.abort()
            raise
        return engine

    def _on_session_pending(self, record: SessionRecord) -> None:
        if self.has_listeners(EventType.SESSION_PENDING):
            data = {
                "session_id": record.session_id,
                "path": record.path,
                "headers": record.headers,
                "session": record.owner,
            }
            self.emit_nowait(EventType.SESSION_PENDING, data, self)

    def _on_session_ready(self, record: SessionRecord) -> None:
        self._session_manager.try_add(record.owner)

    def _on_session_closed(self, record: SessionRecord) -> None:
        session: WebTransportSession = record.owner
        self._session_manager.discard(session)
        conn = session.connection
        if not conn.sessions and not conn.is_closed and not conn.is_closing:
            # The client closes a QUIC connection when its last session closes.
            task = asyncio.get_running_loop().create_task(conn.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _on_connection_closed(self, engine: ConnectionEngine) -> None:
        if engine.connection is not None:
            self._connection_manager.discard(engine.connection)
        if self.has_listeners(EventType.CONNECTION_CLOSED):
            self.emit_nowait(EventType.CONNECTION_CLOSED, engine.closed_event_data(), self)

    async def close(self) -> None:
        """Close every session and connection of this client (idempotent).

        Returns once every connection's queued stream data (close capsules
        included) was acknowledged by the peer (at most half of `close_timeout`)
        and CONNECTION_CLOSE was sent: about one round trip. The client has no
        use for QUIC's closing period, so its sockets are closed at once.
        """
        if self._client_closed:
            return
        self._client_closed = True
        await self._session_manager.shutdown()
        await self._connection_manager.shutdown()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def diagnostics(self) -> dict[str, Any]:
        """Return counters and the state of connections and sessions.

        Returns:
            The snapshot.
        """
        return {
            **self._stats,
            "connections": await self._connection_manager.get_stats(),
            "sessions": await self._session_manager.get_stats(),
        }

    async def __aenter__(self) -> WebTransportClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _first_success(
    attempts: list[asyncio.Task[ConnectionEngine]], failures: list[BaseException]
) -> ConnectionEngine | None:
    for attempt in attempts:
        if not attempt.done() or attempt.cancelled():
            continue
        error = attempt.exception()
        if error is None:
            return attempt.result()
        if error not in failures:
            failures.append(error)
    return None


def _happy_eyeballs_order(targets: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    """Deduplicate resolved addresses and alternate families, IPv6 first (RFC 8305 section 4)."""
    seen: set[tuple[int, Any]] = set()
    v6: list[tuple[int, Any]] = []
    v4: list[tuple[int, Any]] = []
    for family, addr in targets:
        key = (family, addr[:2])
        if key in seen:
            continue
        seen.add(key)
        (v6 if family == socket.AF_INET6 else v4).append((family, addr))
    ordered: list[tuple[int, Any]] = []
    for index in range(max(len(v6), len(v4))):
        ordered.extend(group[index] for group in (v6, v4) if index < len(group))
    return ordered


def _copy_configuration(quic_config: Any) -> Any:
    from dataclasses import replace

    copy = replace(quic_config)
    if quic_config.secrets_log_file is not None:
        copy.secrets_log_file = open(quic_config.secrets_log_file.name, "a", buffering=1)  # noqa: SIM115
    return copy


def _check_ca_file(path: str) -> None:
    """Read and parse a CA file before any packet is sent (aioquic fails only mid-handshake)."""
    try:
        with open(path, "rb") as file:
            pem = file.read()
    except OSError as exc:
        raise CertificateError(
            f"cannot read the CA file ca_certs={path!r}: {exc.strerror or exc}", path=path
        ) from exc
    try:
        x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise CertificateError(
            f"the CA file ca_certs={path!r} holds no PEM certificate", path=path
        ) from exc


def _parse_url(url: str) -> tuple[str, int, str, str]:
    try:
        parts = urlsplit(url)
        port = parts.port or 443
    except ValueError as exc:
        raise _InvalidURL(f"invalid URL {url!r}: {exc}", url=url) from exc
    if parts.scheme != "https" or not parts.hostname:
        raise _InvalidURL(
            f"invalid WebTransport URL {url!r}: expected https://host[:port]/path", url=url
        )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    host = parts.hostname
    return host, port, path, format_address(host, port)
