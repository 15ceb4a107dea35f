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
import errno
import logging
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from cryptography.hazmat.primitives import serialization

from .shared.config import ServerConfig
from .shared.constants import ErrorCodes
from .shared.events import EventEmitter, EventType
from .shared.exceptions import CertificateError, ServerError
from .shared.types import Address, SessionState
from .shared.utils import format_address
from .transport import _aioquic
from .transport._admission import HandshakeAdmission, HandshakeGate, RetryTokens
from .transport._admission.addresses import AddressCounter
from .transport._core.records import ExchangeRecord, SessionRecord
from .transport._dispatch import FACADES
from .transport._endpoint import ServerEndpoint
from .transport._engine import ConnectionEngine
from .transport._routing import CidScheme, derive_key
from .transport._setup import (
    apply_log_level,
    build_quic_configuration,
    close_secrets_log,
    tune_udp_socket,
)
from .transport.connection import WebTransportConnection
from .transport.http import HttpRequest
from .transport.manager import ConnectionManager, SessionManager
from .transport.session import WebTransportSession, ended_by_peer

__all__ = ["SessionHandler", "WebTransportServer"]

logger = logging.getLogger("pywebtransport.server")

SessionHandler = Callable[[WebTransportSession], Awaitable[Any]]
"""An async callable that serves one accepted session."""

HttpHandler = Callable[[HttpRequest], Awaitable[Any]]
"""An async callable that answers one plain HTTP/3 request (`set_http_handler`)."""

GOING_AWAY_CODE = ErrorCodes.APP_SERVICE_UNAVAILABLE
"""Session close code a server sends when it shuts down."""

# Between the peer's acknowledgement of the close capsules and CONNECTION_CLOSE:
# browsers report a session's end to the page asynchronously (see
# WebTransportConnection.close).
_CLOSE_LINGER = 0.05


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
        super().__init__(
            max_listeners=config.max_event_listeners,
            max_history=config.event_history_capacity,
            max_queue_size=config.event_queue_capacity,
        )
        self._config = config
        self._handler = handler
        apply_log_level(config)
        self._endpoint: ServerEndpoint | None = None
        self._connection_manager = ConnectionManager(
            max_connections=config.max_connections,
            cleanup_interval=config.resource_cleanup_interval,
        )
        self._session_manager = SessionManager(
            max_sessions=config.max_sessions, cleanup_interval=config.resource_cleanup_interval
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._http_handler: HttpHandler | None = None
        self._http_tasks: set[asyncio.Task[None]] = set()
        self._handshake_timers: dict[ConnectionEngine, asyncio.TimerHandle] = {}
        self._connections_per_address = AddressCounter(
            total=config.max_connections, per_address=config.max_connections_per_address
        )
        self._sessions_per_address = AddressCounter(
            total=config.max_sessions, per_address=config.max_sessions_per_address
        )
        self._counted: dict[ConnectionEngine, Any] = {}
        """Established connections, with the address they are counted for."""
        self._session_addresses: dict[SessionRecord, Any] = {}
        self._closing = False
        self._shutdown_done = asyncio.Event()
        self._local_addresses: list[Address] = []
        self._bound: tuple[str, int] | None = None

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
        return self._endpoint is not None and not self._closing

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

    def _load_certificates(self) -> QuicConfiguration:
        config = self._config
        quic_config = build_quic_configuration(config, is_client=False)
        try:
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
                    f"cannot load certificate {config.certfile!r} with key "
                    f"{config.keyfile!r}: {exc}",
                    path=config.certfile,
                ) from exc
            _check_key_matches(quic_config, config.certfile, config.keyfile)
            if config.ca_certs:
                try:
                    quic_config.load_verify_locations(cafile=config.ca_certs)
                except (OSError, ssl.SSLError) as exc:
                    raise CertificateError(
                        f"cannot load CA file {config.ca_certs!r}: {exc}", path=config.ca_certs
                    ) from exc
        except CertificateError:
            close_secrets_log(quic_config)
            raise
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
        if self._endpoint is not None:
            live = self._endpoint.configuration
            live.certificate = fresh.certificate
            live.certificate_chain = fresh.certificate_chain
            live.private_key = fresh.private_key
        logger.info("certificate reloaded from %s", config.certfile)

    async def listen(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        reuse_port: bool = False,
        sock: socket.socket | None = None,
        worker: tuple[int, int] = (0, 1),
    ) -> None:
        """Bind the UDP socket and start accepting connections.

        Calling it again while the server listens on the same address does
        nothing (`async with server:` already listens).

        Args:
            host: Overrides `config.bind_host`.
            port: Overrides `config.bind_port` (0 picks a free port).
            reuse_port: Set `SO_REUSEPORT` so several processes can bind the
                same port and the kernel spreads clients over them (Linux,
                BSD). A QUIC connection whose client address changes may then
                reach another process and fail, unless the port's reuseport
                group routes by connection id (`ServerApp.run(workers=N)` does).
            sock: A UDP socket already bound (`host`/`port` then only name it
                in logs); `ServerApp.run(workers=N)` binds one per worker, in
                worker order, before forking.
            worker: (index, count) of this process among the workers sharing
                the port: its connection ids carry the index, for the routing.

        Raises:
            CertificateError: The certificate or key cannot be read or loaded.
            ServerError: The address cannot be bound (e.g. port in use), or the
                server already listens on another address.
        """
        bind_host = self._config.bind_host if host is None else host
        bind_port = self._config.bind_port if port is None else port
        if self._endpoint is not None:
            bound = self._bound
            if bound is not None and bound[0] == bind_host and bind_port in (0, bound[1]):
                return
            raise ServerError(
                f"server already listens on {self._local_addresses}; "
                f"cannot also listen on {format_address(bind_host, bind_port)}",
                bind_address=(bind_host, bind_port),
            )
        quic_config = self._load_certificates()
        await self._connection_manager.__aenter__()
        await self._session_manager.__aenter__()
        config = self._config
        secret = config.server_secret or os.urandom(32)
        scheme = CidScheme(
            worker=worker[0],
            workers=worker[1],
            server_id=bytes.fromhex(config.quic_lb_server_id),
            reset_key=derive_key(secret, "stateless reset"),
        )
        try:
            scheme.check_length(quic_config.connection_id_length)
        except ValueError as exc:
            raise ServerError(f"quic_lb_server_id: {exc}") from exc
        tuning = _aioquic.ConnectionTuning(
            max_streams_bidi=config.quic_max_concurrent_bidi_streams,
            max_streams_uni=config.quic_max_concurrent_uni_streams,
            cids=scheme,
        )
        gate = HandshakeGate(
            tokens=RetryTokens(derive_key(secret, "retry", 16)),
            admission=HandshakeAdmission(
                max_handshakes=config.max_handshakes,
                max_handshakes_per_address=config.max_handshakes_per_address,
                retry=config.retry,
                retry_threshold=config.retry_threshold,
            ),
            supported_versions=quic_config.supported_versions,
            connection_id_length=quic_config.connection_id_length,
        )
        try:
            transport, endpoint = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: ServerEndpoint(
                    configuration=quic_config,
                    tuning=tuning,
                    gate=gate,
                    new_connection=self._new_connection,
                    admit=self._admit,
                ),
                **(
                    {"sock": sock}
                    if sock is not None
                    else {"local_addr": (bind_host, bind_port), "reuse_port": reuse_port or None}
                ),
            )
        except (OSError, ValueError) as exc:
            close_secrets_log(quic_config)
            # uvloop wraps the OSError that says why (its cause) in one that does not.
            reason = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
            why = getattr(reason, "strerror", None)
            if getattr(reason, "errno", None) == errno.EADDRINUSE:
                why = f"{why} (another server listens there; pick another port)"
            raise ServerError(
                f"cannot bind {format_address(bind_host, bind_port)}: {why or exc}",
                bind_address=(bind_host, bind_port),
            ) from exc
        self._endpoint = endpoint
        tune_udp_socket(transport)
        sockname = transport.get_extra_info("sockname")
        if sockname:
            self._local_addresses = [(str(sockname[0]), int(sockname[1]))]
            self._bound = (bind_host, int(sockname[1]))
        logger.info("listening on %s", ", ".join(format_address(*a) for a in self._local_addresses))

    def _admit(self, addr: Any) -> str | None:
        # Checked at the client's first Initial, before any TLS work: a client that
        # would be refused anyway costs one packet. Handshakes in flight are counted
        # by the gate and never here.
        if self._closing:
            return "server shutting down"
        if self._connection_manager.is_full:
            return "connection limit reached"
        if not self._connections_per_address.can_acquire(addr):
            return "connection limit of this address reached"
        return None

    def _new_connection(self, quic: QuicConnection, addr: Any) -> ConnectionEngine:
        config = self._config
        engine = ConnectionEngine(
            quic, config, max_sessions=config.max_sessions_per_connection, dispatch=FACADES
        )
        engine.owns_transport = False
        WebTransportConnection(engine)
        engine.on_session_request = self._on_session_request
        engine.core.serve_http = self._http_handler is not None
        engine.on_http_request = lambda exchange: self._on_http_request(engine, exchange)
        engine.on_session_closed = self._on_session_closed
        engine.on_closed = self._on_connection_closed
        engine.on_established = self._on_connection_established
        timer = engine.loop.call_later(config.handshake_timeout, self._check_handshake, engine)
        self._handshake_timers[engine] = timer
        # Settled by the handshake (or its failure): the timer, its handle and this
        # dict entry need not outlive it by `handshake_timeout`.
        engine.handshake.add_done_callback(lambda _: self._handshake_settled(engine))
        return engine

    def _check_handshake(self, engine: ConnectionEngine) -> None:
        self._handshake_timers.pop(engine, None)
        if not engine.handshake.done():
            logger.debug("handshake timeout for connection %d", engine.handle)
            engine.abort(ErrorCodes.QUIC_NO_ERROR, "handshake timeout")

    def _handshake_settled(self, engine: ConnectionEngine) -> None:
        timer = self._handshake_timers.pop(engine, None)
        if timer is not None:
            timer.cancel()

    def _on_connection_established(self, engine: ConnectionEngine) -> None:
        # Only established connections count against max_connections and the
        # per-address limit; the Initial was checked, so a refusal here is a race.
        conn = engine.connection
        addr = _aioquic.peer_address(engine.quic)
        assert conn is not None
        if self._closing or not self._connections_per_address.try_acquire(addr):
            engine.abort(ErrorCodes.QUIC_CONNECTION_REFUSED, "server busy")
            return
        if not self._connection_manager.try_add(conn):
            self._connections_per_address.release(addr)
            engine.abort(ErrorCodes.QUIC_CONNECTION_REFUSED, "server busy")
            return
        self._counted[engine] = addr
        if self.has_listeners(EventType.CONNECTION_ESTABLISHED):
            data = engine.established_event_data()
            self.emit_nowait(EventType.CONNECTION_ESTABLISHED, data, self)

    def _on_connection_closed(self, engine: ConnectionEngine) -> None:
        # A pending handshake timer would keep the closed connection alive until it fires.
        self._handshake_settled(engine)
        if self._endpoint is not None:
            self._endpoint.forget(engine)
        addr = self._counted.pop(engine, None)
        if addr is not None:
            self._connections_per_address.release(addr)
            if engine.connection is not None:
                self._connection_manager.discard(engine.connection)
        if self.has_listeners(EventType.CONNECTION_CLOSED):
            self.emit_nowait(EventType.CONNECTION_CLOSED, engine.closed_event_data(), self)

    def _on_session_closed(self, record: SessionRecord) -> None:
        if record.owner is not None:
            self._session_manager.discard(record.owner)
        addr = self._session_addresses.pop(record, None)
        if addr is not None:
            self._sessions_per_address.release(addr)

    def _on_session_request(self, record: SessionRecord) -> int | None:
        session: WebTransportSession = record.owner
        if self._closing:
            return 503
        addr = session.remote_address
        if addr is None or not self._sessions_per_address.can_acquire(addr):
            return 429
        if not self._session_manager.try_add(session):
            return 429
        self._sessions_per_address.try_acquire(addr)
        self._session_addresses[record] = addr
        task = asyncio.get_running_loop().create_task(self._run_session(session))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return None

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
            if session.state is SessionState.CONNECTING:
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
        except Exception as exc:
            if not ended_by_peer(session, exc):
                logger.exception("session handler for %r failed", session.path)
                await session.close(
                    error_code=ErrorCodes.APP_INTERNAL_ERROR, reason="internal server error"
                )
                return
            # A closed tab or a vanished client, not a bug of the handler.
            logger.info("session handler for %r ended: the peer left (%s)", session.path, exc)
            await session.close()
        else:
            await session.close()

    # ------------------------------------------------------------------ plain HTTP/3

    def set_http_handler(self, handler: HttpHandler | None) -> None:
        """Answer plain HTTP/3 requests (not WebTransport) on this port with `handler`.

        Without a handler they are answered 404 (405 for methods other than
        GET and HEAD). With one, each request that is well formed runs
        `handler(request)` in its own task, at most
        `max_http_requests_per_connection` per connection at once (more are
        answered 429). A handler that returns without starting a response
        gets a 500 sent for it; one that raises, or returns mid-response,
        has the request stream reset (`H3_INTERNAL_ERROR`). Applies to
        connections made after the call.

        Args:
            handler: Coroutine function taking an `HttpRequest`, or None.
        """
        self._http_handler = handler

    def _on_http_request(self, engine: ConnectionEngine, exchange: ExchangeRecord) -> bool:
        request = HttpRequest(engine, exchange)
        if self._closing:
            request.respond(503, [(b"retry-after", b"1")], end=True)
            return True
        if self._http_handler is None:
            return False
        task = asyncio.get_running_loop().create_task(self._run_http(self._http_handler, request))
        self._http_tasks.add(task)
        task.add_done_callback(self._http_tasks.discard)
        return True

    async def _run_http(self, handler: HttpHandler, request: HttpRequest) -> None:
        try:
            await handler(request)
        except asyncio.CancelledError:
            request.abort()
            raise
        except Exception as exc:
            if request.error is None:
                logger.exception("HTTP handler for %s %r failed", request.method, request.path)
            else:  # the client left: not a bug of the handler
                logger.info("HTTP handler for %r ended: %s", request.path, exc)
        if request.response_complete or request.error is not None:
            return
        if request.response_started:
            request.abort()
        else:
            request.respond(500, [(b"content-length", b"0")], end=True)

    async def serve_forever(self) -> None:
        """Serve until `close()` is called (listens first if needed)."""
        if self._endpoint is None:
            await self.listen()
        await self._shutdown_done.wait()

    async def close(self, timeout: float | None = None) -> None:
        """Shut down gracefully within `timeout` (default `close_timeout`).

        Stops accepting sessions (new CONNECTs get 503), sends
        DRAIN_WEBTRANSPORT_SESSION to every session, waits for half the
        deadline for them to end, closes the rest gracefully with the
        going-away code `ErrorCodes.APP_SERVICE_UNAVAILABLE` (what their
        streams finished is delivered first, within the deadline), closes
        every connection, then the socket.

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
        if sessions or self._http_tasks:
            # HTTP requests under way get the same first half of the deadline to finish.
            await _wait_until(
                lambda: not self._session_manager.sessions() and not self._http_tasks,
                end - deadline / 2,
                loop,
            )
        # Concurrently, within what is left of the deadline: each close waits for
        # the session's finished streams to be acknowledged.
        remaining = max(0.0, end - loop.time())
        await asyncio.gather(
            *(
                session.close(
                    error_code=GOING_AWAY_CODE, reason="server shutting down", timeout=remaining
                )
                for session in self._session_manager.sessions()
            ),
            return_exceptions=True,
        )
        for task in [*self._tasks, *self._http_tasks]:
            task.cancel()
        connections = self._connection_manager.connections()
        # Close capsules leave before CONNECTION_CLOSE (aioquic drops unsent data).
        await asyncio.gather(
            *(
                asyncio.wait_for(
                    c.close(ErrorCodes.H3_NO_ERROR, "server shutting down", linger=_CLOSE_LINGER),
                    max(0.0, end - loop.time()),
                )
                for c in connections
            ),
            return_exceptions=True,
        )
        for conn in connections:
            conn.abort()
        if self._tasks or self._http_tasks:
            await asyncio.wait(
                [*self._tasks, *self._http_tasks], timeout=max(0.1, end - loop.time())
            )
        if self._endpoint is not None:
            for engine in self._endpoint.engines:
                engine.abort()
            self._endpoint.close()
            close_secrets_log(self._endpoint.configuration)
        await self._connection_manager.shutdown()
        await self._session_manager.shutdown()
        self._shutdown_done.set()
        logger.info("server closed")

    async def diagnostics(self) -> dict[str, Any]:
        """Return a snapshot of the server: addresses, connections, sessions, handshakes.

        Returns:
            The snapshot. `handshakes` holds `in_flight` (QUIC handshakes not
            finished yet, not counted as connections) and what the server did
            with client Initials: `handshakes_admitted`, `retries_sent`,
            `refused`, `version_negotiations`, `dropped`.
        """
        endpoint = self._endpoint
        handshakes: dict[str, int] = {"in_flight": 0}
        if endpoint is not None:
            handshakes = {"in_flight": endpoint.gate.admission.in_flight, **endpoint.stats}
        return {
            "is_serving": self.is_serving,
            "local_addresses": self.local_addresses,
            "connections": await self._connection_manager.get_stats(),
            "sessions": await self._session_manager.get_stats(),
            "handshakes": handshakes,
        }

    async def __aenter__(self) -> WebTransportServer:
        if self._endpoint is None:
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


def _check_key_matches(quic_config: QuicConfiguration, certfile: str, keyfile: str) -> None:
    """Refuse a key that is not the certificate's: the TLS handshake would fail for every
    client with a bare error code, and nothing would name either file."""
    certificate, key = quic_config.certificate, quic_config.private_key
    if certificate is None or key is None:
        return
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if certificate.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise CertificateError(
            f"certificate {certfile!r} and key {keyfile!r} do not belong together (the key "
            "is not the certificate's private key): pass the key made with this certificate "
            "(`python -m pywebtransport gen-cert` writes both)",
            path=keyfile,
        )
