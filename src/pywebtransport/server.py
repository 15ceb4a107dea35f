"""`WebTransportServer`: accept WebTransport sessions over QUIC.

Example:
    ```python
    from pywebtransport import ServerConfig, WebTransportServer

    async def handler(session):
        async for stream in session.incoming_bidirectional_streams():
            await stream.write(await stream.read_all(), end_stream=True)

    config = ServerConfig(certfile="cert.pem", keyfile="key.pem", bind_port=4433)
    async with WebTransportServer(config, handler=handler) as server:
        await server.serve_forever()
    ```
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from aioquic.asyncio.server import QuicServer
from aioquic.quic.connection import QuicConnection

from .shared.config import ServerConfig
from .shared.constants import ErrorCodes
from .shared.events import EventEmitter, EventType
from .shared.exceptions import CertificateError, ServerError
from .shared.types import Address
from .transport.connection import (
    WebTransportConnection,
    _Pump,
    adopt_quic_connection,
    build_quic_configuration,
    close_secrets_log,
    drain_datagrams,
    selector_socket,
    tune_udp_socket,
)
from .transport.manager import ConnectionManager, SessionManager
from .transport.session import WebTransportSession

__all__ = ["SessionHandler", "WebTransportServer"]

logger = logging.getLogger("pywebtransport.server")

SessionHandler = Callable[[WebTransportSession], Awaitable[Any]]
"""An async callable that serves one accepted session."""

GOING_AWAY_CODE = ErrorCodes.APP_SERVICE_UNAVAILABLE
"""Session close code a server sends when it shuts down."""


class _QuicServer(QuicServer):
    """aioquic's server endpoint, reading queued datagrams in batches under asyncio."""

    _socket: socket.socket | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._socket = selector_socket(transport)

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        super().datagram_received(data, addr)
        if self._socket is not None:
            drain_datagrams(self._socket, super().datagram_received)


class WebTransportServer(EventEmitter):
    """A WebTransport server on one UDP socket.

    Each CONNECT request becomes a `WebTransportSession`. The server first
    emits `EventType.SESSION_REQUEST` (data: `session`, `connection`,
    `session_id`, `path`, `headers`) so listeners may `accept()` or
    `reject(status_code=...)` it; a session nobody decided on is accepted
    when a `handler` is set (and rejected with 404 otherwise). The handler
    then runs in its own task; when it returns the session is closed cleanly,
    when it raises the session is closed with `ErrorCodes.APP_INTERNAL_ERROR`.

    Args:
        config: Server configuration (certificate and key are required).
        handler: Coroutine function called with each accepted session.
    """

    def __init__(
        self, config: ServerConfig | None = None, *, handler: SessionHandler | None = None
    ) -> None:
        if config is None:
            raise ServerError("WebTransportServer needs a ServerConfig with certfile and keyfile")
        super().__init__(max_listeners=config.max_event_listeners)
        self._config = config
        self._handler = handler
        self._quic_server: QuicServer | None = None
        self._connection_manager = ConnectionManager(max_connections=config.max_connections)
        self._session_manager = SessionManager(max_sessions=config.max_sessions)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handshake_timers: dict[WebTransportConnection, asyncio.TimerHandle] = {}
        self._closing = False
        self._shutdown_done = asyncio.Event()
        self._local_addresses: list[Address] = []

    # ------------------------------------------------------------------ properties

    @property
    def config(self) -> ServerConfig:
        """The server's configuration."""
        return self._config

    @property
    def handler(self) -> SessionHandler | None:
        """The session handler."""
        return self._handler

    @handler.setter
    def handler(self, handler: SessionHandler | None) -> None:
        self._handler = handler

    @property
    def is_serving(self) -> bool:
        """True between `listen()` and `close()`."""
        return self._quic_server is not None and not self._closing

    @property
    def local_addresses(self) -> list[Address]:
        """The addresses the server is bound to (with the real port when port 0 was asked)."""
        return list(self._local_addresses)

    @property
    def local_address(self) -> Address | None:
        """The first bound address."""
        return self._local_addresses[0] if self._local_addresses else None

    @property
    def connection_manager(self) -> ConnectionManager:
        """The connections this server tracks."""
        return self._connection_manager

    @property
    def session_manager(self) -> SessionManager:
        """The sessions this server tracks."""
        return self._session_manager

    # ------------------------------------------------------------------ lifecycle

    def _load_certificates(self) -> Any:
        config = self._config
        quic_config = build_quic_configuration(config, is_client=False)
        for path in (config.certfile, config.keyfile):
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise CertificateError(
                    f"cannot read {path!r}: {exc.strerror}; create one with "
                    "`python -m pywebtransport gen-cert` or generate_self_signed_cert()",
                    path=path,
                ) from exc
        try:
            quic_config.load_cert_chain(config.certfile, config.keyfile)
        except (ValueError, TypeError, OSError) as exc:
            raise CertificateError(
                f"cannot load certificate {config.certfile!r} with key {config.keyfile!r}: {exc}",
                path=config.certfile,
            ) from exc
        if config.ca_certs:
            try:
                quic_config.load_verify_locations(cafile=config.ca_certs)
            except (OSError, ssl.SSLError) as exc:
                raise CertificateError(
                    f"cannot load CA file {config.ca_certs!r}: {exc}", path=config.ca_certs
                ) from exc
        return quic_config

    def reload_certificates(self, certfile: str | None = None, keyfile: str | None = None) -> None:
        """Serve a new certificate to new connections, without a restart.

        Browsers accept `serverCertificateHashes` only for certificates valid at
        most 14 days, so long-running servers rotate them: generate the next one
        (`generate_self_signed_cert`), hand pages both hashes during the overlap,
        then call this. Connections already open keep the certificate they
        started with.

        Args:
            certfile: New certificate file (default: re-read `config.certfile`).
            keyfile: New key file (default: re-read `config.keyfile`).

        Raises:
            CertificateError: The files cannot be read or do not match; the
                server keeps serving the previous certificate.
        """
        config = self._config.update(
            certfile=certfile or self._config.certfile, keyfile=keyfile or self._config.keyfile
        )
        previous, self._config = self._config, config
        try:
            fresh = self._load_certificates()
        except CertificateError:
            self._config = previous
            raise
        close_secrets_log(fresh)  # only its certificate is used
        if self._quic_server is not None:
            live = self._quic_server._configuration
            live.certificate = fresh.certificate
            live.certificate_chain = fresh.certificate_chain
            live.private_key = fresh.private_key
        logger.info("certificate reloaded from %s", config.certfile)

    async def listen(
        self, host: str | None = None, port: int | None = None, *, reuse_port: bool = False
    ) -> None:
        """Bind the UDP socket and start accepting connections.

        Args:
            host: Overrides `config.bind_host`.
            port: Overrides `config.bind_port` (0 picks a free port).
            reuse_port: Set `SO_REUSEPORT` so several processes can bind the
                same port and the kernel spreads clients over them (Linux,
                BSD). Used by `ServerApp.run(workers=N)`. A QUIC connection
                whose client address changes may then reach another process
                and fail: connection migration does not work across workers.

        Raises:
            CertificateError: The certificate or key cannot be read or loaded.
            ServerError: The address cannot be bound (e.g. port in use).
        """
        if self._quic_server is not None:
            raise ServerError("server is already listening")
        quic_config = self._load_certificates()
        bind_host = self._config.bind_host if host is None else host
        bind_port = self._config.bind_port if port is None else port
        await self._connection_manager.__aenter__()
        await self._session_manager.__aenter__()
        try:
            _, self._quic_server = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: _QuicServer(
                    configuration=quic_config, create_protocol=self._create_protocol
                ),
                local_addr=(bind_host, bind_port),
                reuse_port=reuse_port or None,
            )
        except (OSError, ValueError) as exc:
            close_secrets_log(quic_config)
            raise ServerError(
                f"cannot bind {bind_host}:{bind_port}: {getattr(exc, 'strerror', None) or exc}",
                bind_address=(bind_host, bind_port),
            ) from exc
        transport = self._quic_server._transport
        if transport is not None:
            tune_udp_socket(transport)
        sockname = transport.get_extra_info("sockname") if transport is not None else None
        if sockname:
            self._local_addresses = [(str(sockname[0]), int(sockname[1]))]
        logger.info("listening on %s", self._local_addresses)

    def _create_protocol(self, quic: QuicConnection, **kwargs: Any) -> _Pump:
        adopt_quic_connection(quic, self._config)
        pump = _Pump(quic, **kwargs)
        conn = WebTransportConnection(
            config=self._config,
            quic=quic,
            pump=pump,
            max_sessions=self._config.max_sessions_per_connection,
        )
        conn.on_session_request = self._on_session_request
        conn.on_session_closed = self._on_session_closed
        conn.on_closed = self._on_connection_closed
        if self._closing or not self._connection_manager.try_add(conn):
            # Refuse once the handshake is done: aioquic cannot close before it starts.
            quic.close(error_code=ErrorCodes.QUIC_CONNECTION_REFUSED, reason_phrase="server busy")
        else:
            loop = asyncio.get_running_loop()
            timer = loop.call_later(self._config.handshake_timeout, self._check_handshake, conn)
            self._handshake_timers[conn] = timer
            # Settled by the handshake (or its failure): the timer, its handle and
            # this dict entry need not outlive it by `handshake_timeout`.
            conn._connected.add_done_callback(partial(self._handshake_settled, conn))
        return pump

    def _check_handshake(self, conn: WebTransportConnection) -> None:
        self._handshake_timers.pop(conn, None)
        if not conn._connected.done() and not conn.is_closed:
            logger.debug("handshake timeout for connection %d", conn.handle)
            conn.abort()

    def _handshake_settled(self, conn: WebTransportConnection, _: object = None) -> None:
        timer = self._handshake_timers.pop(conn, None)
        if timer is not None:
            timer.cancel()

    def _on_connection_closed(self, conn: WebTransportConnection) -> None:
        # A pending handshake timer would keep the closed connection alive until it fires.
        self._handshake_settled(conn)
        self._connection_manager.discard(conn)

    def _on_session_closed(self, session: WebTransportSession) -> None:
        self._session_manager.discard(session)

    def _on_session_request(self, session: WebTransportSession) -> None:
        conn = session.connection
        if self._closing:
            self._reject_now(session, 503)
            return
        if len(
            conn._sessions
        ) > self._config.max_sessions_per_connection or not self._session_manager.try_add(session):
            self._reject_now(session, 429)
            return
        supported = self._config.wt_supported_protocols
        if supported and session.wt_available_protocols:
            # The client's first offered protocol that the server speaks wins.
            session.wt_protocol = next(
                (p for p in session.wt_available_protocols if p in supported), None
            )
        task = asyncio.get_running_loop().create_task(self._run_session(session))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _reject_now(self, session: WebTransportSession, status: int) -> None:
        session.connection._reject_session(session, status)

    async def _run_session(self, session: WebTransportSession) -> None:
        try:
            if self.has_listeners(EventType.SESSION_REQUEST):
                await self.emit(
                    event_type=EventType.SESSION_REQUEST,
                    data={
                        "session": session,
                        "connection": session.connection,
                        "session_id": session.session_id,
                        "path": session.path,
                        "headers": session.headers,
                    },
                    source=self,
                )
            if session.state.value == "connecting":
                if self._handler is None:
                    await session.reject(status_code=404)
                    return
                await session.accept()
            if not session.is_ready or self._handler is None:
                return
            await self._handler(session)
        except asyncio.CancelledError:
            await session.close(error_code=GOING_AWAY_CODE, reason="server shutting down")
            raise
        except Exception:
            logger.exception("session handler for %r failed", session.path)
            await session.close(
                error_code=ErrorCodes.APP_INTERNAL_ERROR, reason="internal server error"
            )
        else:
            await session.close()

    async def serve_forever(self) -> None:
        """Serve until `close()` is called (listens first if needed)."""
        if self._quic_server is None:
            await self.listen()
        await self._shutdown_done.wait()

    async def close(self, timeout: float | None = None) -> None:
        """Shut down gracefully within `timeout` (default `close_timeout`).

        Stops accepting sessions (new CONNECTs get 503), sends
        DRAIN_WEBTRANSPORT_SESSION to every session, waits for half the
        deadline for them to end, closes the rest with the going-away code
        `ErrorCodes.APP_SERVICE_UNAVAILABLE`, closes every connection, then
        the socket.

        Args:
            timeout: Seconds the whole shutdown may take.
        """
        if self._closing:
            await self._shutdown_done.wait()
            return
        self._closing = True
        deadline = self._config.close_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        sessions = self._session_manager.sessions()
        for session in sessions:
            if session.is_ready:
                await session.drain()
        if sessions:
            await _wait_until(
                lambda: not self._session_manager.sessions(), end - deadline / 2, loop
            )
        for session in self._session_manager.sessions():
            await session.close(error_code=GOING_AWAY_CODE, reason="server shutting down")
        for task in list(self._tasks):
            task.cancel()
        connections = self._connection_manager.connections()
        # Close capsules must leave before CONNECTION_CLOSE (aioquic drops unsent data).
        await asyncio.gather(*(c._flush(max(0.0, (end - loop.time()) / 2)) for c in connections))
        for conn in connections:
            conn._pump.close(
                error_code=ErrorCodes.H3_NO_ERROR, reason_phrase="server shutting down"
            )
        await _wait_until(lambda: all(c.is_closed for c in connections), end, loop)
        for conn in connections:
            conn._on_terminated(ErrorCodes.H3_NO_ERROR, "server shutting down")
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=max(0.1, end - loop.time()))
        if self._quic_server is not None:
            self._quic_server.close()
            close_secrets_log(self._quic_server._configuration)
        await self._connection_manager.shutdown()
        await self._session_manager.shutdown()
        self._shutdown_done.set()
        logger.info("server closed")

    async def diagnostics(self) -> dict[str, Any]:
        """Return a snapshot of the server: addresses, connections, sessions.

        Returns:
            The snapshot.
        """
        return {
            "is_serving": self.is_serving,
            "local_addresses": self.local_addresses,
            "connections": await self._connection_manager.get_stats(),
            "sessions": await self._session_manager.get_stats(),
        }

    async def __aenter__(self) -> WebTransportServer:
        if self._quic_server is None:
            await self.listen()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _wait_until(
    condition: Callable[[], bool], end: float, loop: asyncio.AbstractEventLoop
) -> None:
    while not condition():
        remaining = end - loop.time()
        if remaining <= 0:
            return
        await asyncio.sleep(min(0.02, remaining))


_ = (socket, builtins)
