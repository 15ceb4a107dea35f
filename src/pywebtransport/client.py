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
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.serialization import Encoding

from .shared.config import ClientConfig
from .shared.events import EventEmitter
from .shared.exceptions import (
    CertificateError,
    ClientError,
    ConnectionError,
    TimeoutError,
)
from .transport.connection import (
    WebTransportConnection,
    _Pump,
    adopt_quic_connection,
    build_quic_configuration,
    close_secrets_log,
    selector_socket,
    tune_udp_socket,
)
from .transport.manager import ConnectionManager, SessionManager
from .transport.session import WebTransportSession

__all__ = ["WebTransportClient"]

logger = logging.getLogger("pywebtransport.client")

# TLS alerts (RFC 8446 §6.2) that mean the certificate was refused; aioquic
# closes with CRYPTO_ERROR = 0x100 + alert.
_CERTIFICATE_ALERTS = {42, 43, 44, 45, 46, 48, 49, 50, 112, 116}


class _InvalidURL(ClientError, ValueError):
    """The URL is not an `https://host[:port]/path` URL."""


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
        super().__init__(max_listeners=self._config.max_event_listeners)
        self._connection_manager = ConnectionManager(max_connections=self._config.max_connections)
        self._session_manager = SessionManager(max_sessions=self._config.max_sessions)
        self._client_closed = False
        self._default_headers: dict[str, str] = {}
        self._stats = {"connect_attempts": 0, "connect_successes": 0, "connect_failures": 0}

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
            ClientError: The URL is invalid (also a `ValueError`), a header name or
                value is not valid in HTTP/3 (e.g. surrounding whitespace), or the
                client is closed.
            CertificateError: The server's certificate failed verification.
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
                    conn = await self._open_connection(host, port, authority)
            except builtins.TimeoutError as exc:
                if conn is not None:
                    conn.abort()
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
                await conn.close()
            raise
        self._stats["connect_successes"] += 1
        return session

    async def _open_connection(
        self, host: str, port: int, authority: str
    ) -> WebTransportConnection:
        config = self._config
        quic_config = build_quic_configuration(config, is_client=True, server_name=host)
        pinned = config.server_certificate_hashes
        if pinned:
            # Pinned hashes replace CA verification, as in the browser API.
            quic_config.verify_mode = ssl.CERT_NONE
        if config.ca_certs:
            try:
                quic_config.load_verify_locations(cafile=config.ca_certs)
            except (OSError, ssl.SSLError) as exc:
                close_secrets_log(quic_config)
                raise CertificateError(
                    f"cannot load CA file {config.ca_certs!r}: {exc}", path=config.ca_certs
                ) from exc
        if config.certfile and config.keyfile:
            try:
                quic_config.load_cert_chain(config.certfile, config.keyfile)
            except (OSError, ValueError) as exc:
                close_secrets_log(quic_config)
                raise CertificateError(
                    f"cannot load client certificate {config.certfile!r}: {exc}",
                    path=config.certfile,
                ) from exc
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        family, _, _, _, addr = infos[0]
        from aioquic.quic.connection import QuicConnection

        quic = QuicConnection(configuration=quic_config)
        adopt_quic_connection(quic, config)
        if family == socket.AF_INET6:
            local: tuple[Any, ...] = ("::", 0)
        else:
            local = ("0.0.0.0", 0)
        transport, pump = await loop.create_datagram_endpoint(
            lambda: _Pump(quic), local_addr=local, family=family
        )
        tune_udp_socket(transport)
        pump.owned_socket = selector_socket(transport)
        conn = WebTransportConnection(
            config=config, quic=quic, pump=pump, max_sessions=config.max_sessions
        )
        conn._authority = authority
        conn.on_session_closed = self._on_session_closed
        conn.on_session_opened = self._session_manager.try_add
        conn.on_closed = self._connection_manager.discard
        if not self._connection_manager.try_add(conn):
            transport.close()
            raise ClientError(f"max_connections={config.max_connections} reached")
        pump.connect(addr)
        try:
            await asyncio.shield(conn._connected)
        except ConnectionError as exc:
            transport.close()
            code = exc.error_code or 0
            if 0x100 <= code <= 0x1FF and (code - 0x100) in _CERTIFICATE_ALERTS:
                why = conn.close_reason[1] if conn.close_reason else str(exc)
                raise CertificateError(
                    f"certificate of {host}:{port} was rejected: {why}",
                    error_code=code,
                ) from exc
            raise
        except BaseException:
            # Timed out or cancelled mid-handshake: drop the connection and its socket.
            conn.abort()
            raise
        if pinned:
            certificate = quic.tls._peer_certificate
            digest = (
                hashlib.sha256(certificate.public_bytes(Encoding.DER)).digest()
                if certificate is not None
                else b""
            )
            if digest not in pinned:
                conn.abort()
                raise CertificateError(
                    f"certificate of {host}:{port} (sha-256 {digest.hex()}) matches none of "
                    "server_certificate_hashes"
                )
        return conn

    def _on_session_closed(self, session: WebTransportSession) -> None:
        self._session_manager.discard(session)
        conn = session.connection
        if not conn._sessions and not conn.is_closed:
            # The client closes a QUIC connection when its last session closes.
            task = asyncio.get_running_loop().create_task(conn.close())
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def close(self) -> None:
        """Close every session and connection of this client (idempotent)."""
        if self._client_closed:
            return
        self._client_closed = True
        await self._session_manager.shutdown()
        await self._connection_manager.shutdown()

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
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return host, port, path, authority
