"""`ServerApp`: routes, middleware and lifecycle hooks over `WebTransportServer`.

Example:
    ```python
    from pywebtransport import ServerApp, ServerConfig

    app = ServerApp(ServerConfig(certfile="cert.pem", keyfile="key.pem"))

    @app.route("/echo")
    async def echo(session):
        async for stream in session.incoming_bidirectional_streams():
            await stream.write(await stream.read_all(), end_stream=True)

    @app.pattern_route("/chat/{room}")
    async def chat(session, room):
        ...

    app.run(port=4433)
    ```

Per requested session the app routes the path (query string ignored; no
route → 404), runs the middleware chain (`MiddlewareRejected` → its status),
accepts, then awaits `handler(session, **params)`. When the handler returns
the session closes cleanly; when it raises, the error is logged once with its
traceback and only that session closes, with `ErrorCodes.APP_GENERIC_ERROR`
(0x1001; `APP_INTERNAL_ERROR` is an alias).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import socket
import weakref
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any, TypeVar

from ..server import WebTransportServer
from ..shared.config import ServerConfig
from ..shared.events import Event, EventType
from ..shared.exceptions import CertificateError, ServerError
from ..shared.types import Address
from ..shared.utils import format_address
from ..transport import _aioquic
from ..transport._routing import MAX_WORKERS, attach_reuseport_program
from ..transport.http import HttpRequest
from ..transport.session import WebTransportSession
from .asgi import ASGIAdapter, ASGIApp
from .groups import GroupManager
from .middleware import Middleware, MiddlewareManager, MiddlewareRejected
from .router import RequestRouter, RouteHandler, check_path

__all__ = ["LifecycleHook", "ServerApp"]

logger = logging.getLogger("pywebtransport.framework")

LifecycleHook = Callable[[], Awaitable[Any] | Any]
"""A sync or async callable without arguments, run on startup or shutdown."""

_H = TypeVar("_H", bound=Callable[..., Any])


class ServerApp:
    """A WebTransport application: routes, middleware, startup/shutdown hooks.

    `async with app:` runs the startup hooks on entry and shuts down on exit.

    Args:
        config: Server configuration. May be set later (`app.config = ...`,
            as the CLI does) but is needed before serving.
        use_uvloop: Let `run()` use uvloop when it is installed.
        groups: The `GroupManager` behind `app.groups` (default: one with the
            in-process backend); started on startup, stopped on shutdown.
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        use_uvloop: bool = True,
        groups: GroupManager | None = None,
    ) -> None:
        self._config = config
        self._groups = groups if groups is not None else GroupManager()
        self.use_uvloop = use_uvloop
        self._router = RequestRouter()
        self._middleware = MiddlewareManager()
        self._startup_hooks: list[LifecycleHook] = []
        self._shutdown_hooks: list[LifecycleHook] = []
        self._server: WebTransportServer | None = None
        self._http_mounts: list[tuple[str, ASGIAdapter]] = []
        self._worker_socket: tuple[socket.socket, tuple[int, int]] | None = None
        """In a worker of `run(workers=N)`: its socket of the port's group, and (index, N)."""
        """Mounts that answer plain HTTP/3 requests under their prefix, in order."""
        self._routed: weakref.WeakKeyDictionary[
            WebTransportSession, tuple[RouteHandler, dict[str, str]]
        ] = weakref.WeakKeyDictionary()
        self._entered: list[Any] = []
        self._started = False
        self._shutdown_started = False
        self._shutdown_done: asyncio.Event | None = None

    # ------------------------------------------------------------------ properties

    @property
    def config(self) -> ServerConfig | None:
        """The server configuration (settable until the server is created)."""
        return self._config

    @config.setter
    def config(self, config: ServerConfig) -> None:
        if self._server is not None:
            raise ServerError("the server already exists; set the config before serving")
        self._config = config

    @property
    def groups(self) -> GroupManager:
        """The app's `GroupManager` (settable before startup)."""
        return self._groups

    @groups.setter
    def groups(self, groups: GroupManager) -> None:
        if self._started:
            raise ServerError("the app is started; set app.groups before startup")
        self._groups = groups

    @property
    def router(self) -> RequestRouter:
        """The app's `RequestRouter`."""
        return self._router

    @property
    def middleware_manager(self) -> MiddlewareManager:
        """The app's `MiddlewareManager`."""
        return self._middleware

    @property
    def server(self) -> WebTransportServer:
        """The `WebTransportServer` (created on first use).

        Raises:
            ServerError: The app has no config yet.
        """
        if self._server is None:
            if self._config is None:
                raise ServerError(
                    "ServerApp has no ServerConfig: pass one (with certfile and keyfile) "
                    "or set app.config"
                )
            self._server = WebTransportServer(self._config, handler=self._dispatch)
            self._server.on(EventType.SESSION_REQUEST, self._on_session_request)
            if self._http_mounts:
                self._server.set_http_handler(self._serve_http)
        return self._server

    @property
    def local_address(self) -> Address | None:
        """The bound address once serving (with the real port when 0 was asked)."""
        return self._server.local_address if self._server is not None else None

    # ------------------------------------------------------------------ registration

    def route(self, path: str) -> Callable[[_H], _H]:
        """Decorator registering a handler for an exact path.

        Args:
            path: The request path, e.g. `"/echo"` (the query string is ignored).

        Returns:
            A decorator returning the handler unchanged.

        Raises:
            ValueError: The path is already routed, or does not start with `/`.
            TypeError: The decorator was used without a path (`@app.route`
                instead of `@app.route("/path")`), or the handler is not an
                async function taking the session.
        """
        check_path(path)

        def decorator(handler: _H) -> _H:
            self._router.add_route(path, handler)
            return handler

        return decorator

    def pattern_route(self, pattern: str) -> Callable[[_H], _H]:
        """Decorator registering a handler for a path pattern.

        `{name}` segments match one path segment; the rest is a regular
        expression matched against the whole path. Named groups are passed
        to the handler as keyword arguments.

        Args:
            pattern: E.g. `"/chat/{room}"` or `r"/files/(?P<id>\\d+)"`.

        Returns:
            A decorator returning the handler unchanged.

        Raises:
            ValueError: The pattern is invalid or already registered, or does
                not start with `/`.
            TypeError: The decorator was used without a pattern, or the
                handler is not an async function taking the session and the
                pattern's named groups as keyword arguments.
        """
        check_path(pattern, pattern=True)

        def decorator(handler: _H) -> _H:
            self._router.add_pattern_route(pattern, handler)
            return handler

        return decorator

    def mount_asgi(
        self,
        path: str,
        app: ASGIApp,
        *,
        queue_size: int = 16,
        read_size: int = 65536,
        lifespan: bool = True,
        http: bool = True,
    ) -> ASGIAdapter:
        """Serve the sessions under a path prefix with an ASGI application.

        The app gets the `webtransport` scope and decides on each session
        itself (`webtransport.accept` or `webtransport.close`), after the
        middleware chain accepted it; see `ASGIAdapter` and the frameworks
        guide for the message format. The app's `lifespan` scope runs with
        the app's own: `lifespan.startup` before the server listens (a
        `lifespan.startup.failed` stops the start with the app's message),
        `lifespan.shutdown` after the last session closed. Plain HTTP/3
        requests (not WebTransport) under the prefix go to the app's `http`
        scope, as an HTTP/3 ASGI server would hand them (`ASGIAdapter.serve_http`),
        so one port serves a page and its WebTransport endpoint; the session
        middleware does not see them. A mount is a pattern route: exact
        routes win over it, and patterns (mounts included) are tried in the
        order they were added; for HTTP requests, the first mount whose prefix
        matches answers, and a path no mount covers gets 404.

        Args:
            path: The prefix, e.g. `"/"` (every path) or `"/wt"` (`/wt` and
                everything under `/wt/`); passed to the app as `root_path`.
            app: The ASGI application.
            queue_size: Received messages queued per session while the app is
                busy; then the adapter stops reading (backpressure).
            read_size: Largest `data` of one `webtransport.stream.receive`.
            lifespan: Run the app's `lifespan` scope (False: never call the app
                with it, for an app that mistakes it for a session).
            http: Hand plain HTTP/3 requests under the prefix to the app's
                `http` scope (False: they are answered 404, as without a mount).

        Returns:
            The adapter serving the mount.

        Raises:
            ValueError: The path does not start with `/`, or is already mounted.
        """
        if not path.startswith("/"):
            raise ValueError(f"mount path must start with '/', got {path!r}")
        prefix = path.rstrip("/")
        adapter = ASGIAdapter(app, root_path=prefix, queue_size=queue_size, read_size=read_size)
        self._router.add_pattern_route(f"{re.escape(prefix)}(?:/.*)?", adapter)
        # The app's lifespan frames the server's: startup before it listens, shutdown
        # after its last session closed.
        if lifespan:
            self.on_startup(adapter.startup)
            self.on_shutdown(adapter.shutdown)
        if http:
            self._http_mounts.append((prefix, adapter))
            if self._server is not None:
                self._server.set_http_handler(self._serve_http)
        return adapter

    async def _serve_http(self, request: HttpRequest) -> None:
        path = request.path.partition("?")[0]
        for prefix, adapter in self._http_mounts:
            if not prefix or path == prefix or path.startswith(prefix + "/"):
                await adapter.serve_http(request)
                return
        request.respond(404, [(b"content-length", b"0")], end=True)

    def add_middleware(self, middleware: Middleware) -> None:
        """Append a middleware (`async def mw(*, session) -> None`) to the chain.

        Stateful middleware (with `__aenter__`/`__aexit__`) are entered on
        startup and exited on shutdown.

        Args:
            middleware: The middleware.
        """
        self._middleware.add_middleware(middleware)

    def middleware(self, func: _H) -> _H:
        """Decorator form of `add_middleware`.

        Args:
            func: `async def mw(*, session) -> None`.

        Returns:
            `func` unchanged.
        """
        self._middleware.add_middleware(func)
        return func

    def on_startup(self, func: _H) -> _H:
        """Decorator registering a startup hook (sync or async, run in order).

        A hook that raises aborts `startup()` and so `serve()`.

        Args:
            func: A callable without arguments.

        Returns:
            `func` unchanged.
        """
        self._startup_hooks.append(func)
        return func

    def on_shutdown(self, func: _H) -> _H:
        """Decorator registering a shutdown hook (sync or async, run in order).

        A hook that raises is logged; the other hooks still run.

        Args:
            func: A callable without arguments.

        Returns:
            `func` unchanged.
        """
        self._shutdown_hooks.append(func)
        return func

    # ------------------------------------------------------------------ session flow

    async def _on_session_request(self, event: Event) -> None:
        session: WebTransportSession = event.data["session"]
        try:
            match = self._router.route_request(session)
            if match is None:
                await session.reject(status_code=404)
                return
            try:
                await self._middleware.process_request(session)
            except MiddlewareRejected as exc:
                logger.debug("session %r rejected: %s", session.path, exc)
                await session.reject(status_code=exc.status_code)
                return
            handler = match[0]
            if isinstance(handler, ASGIAdapter):
                # The ASGI app accepts or refuses the session itself.
                if await handler.open_session(session):
                    self._routed[session] = match
                return
            self._routed[session] = match
            await session.accept()
        except Exception:
            logger.exception("routing the session request for %r failed", session.path)
            await session.reject(status_code=500)

    async def _dispatch(self, session: WebTransportSession) -> None:
        # Called by the server for every accepted session; a raise is logged
        # (once, with traceback) and closes the session with APP_INTERNAL_ERROR.
        match = self._routed.pop(session, None)
        if match is None:  # accepted by someone else's listener: not ours to serve
            return
        handler, params = match
        await handler(session, **params)

    # ------------------------------------------------------------------ lifecycle

    async def startup(self) -> None:
        """Enter stateful middleware and run the startup hooks in order.

        Idempotent. `serve()` and `async with app:` call it.

        Raises:
            Exception: Whatever a startup hook raised. Startup is aborted:
                shutdown hooks do not run.
        """
        if self._started:
            return
        self._started = True
        self._shutdown_started = False
        self._shutdown_done = asyncio.Event()
        try:
            await self._groups.start()
            for middleware in self._middleware.middleware:
                if hasattr(middleware, "__aenter__") and hasattr(middleware, "__aexit__"):
                    await middleware.__aenter__()
                    self._entered.append(middleware)
            for hook in self._startup_hooks:
                result = hook()
                if inspect.isawaitable(result):
                    await result
        except BaseException:
            # A failed startup aborts: no shutdown hooks, entered middleware exited.
            while self._entered:
                await self._entered.pop().__aexit__(None, None, None)
            await self._groups.stop()
            self._started = False
            raise

    async def listen(
        self, host: str | None = None, port: int | None = None, *, reuse_port: bool = False
    ) -> None:
        """Run startup, then bind the server; return once it accepts connections.

        Args:
            host: Overrides `config.bind_host`.
            port: Overrides `config.bind_port` (0 picks a free port).
            reuse_port: Bind with `SO_REUSEPORT` (used by workers).

        Raises:
            ServerError: No config, or the address cannot be bound.
            CertificateError: The certificate or key cannot be loaded.
        """
        await self.startup()
        server = self.server
        if not server.is_serving:
            if self._worker_socket is not None:
                sock, worker = self._worker_socket
                await server.listen(host, port, sock=sock, worker=worker)
            else:
                await server.listen(host, port, reuse_port=reuse_port)

    async def serve(
        self, host: str | None = None, port: int | None = None, *, reuse_port: bool = False
    ) -> None:
        """Start up, serve until `shutdown()` (or cancellation), then shut down.

        Args:
            host: Overrides `config.bind_host`.
            port: Overrides `config.bind_port` (0 picks a free port).
            reuse_port: Bind with `SO_REUSEPORT` (used by workers).

        Raises:
            ServerError: No config, or the address cannot be bound.
            CertificateError: The certificate or key cannot be loaded.
            Exception: Whatever a startup hook raised.
        """
        try:
            await self.listen(host, port, reuse_port=reuse_port)
            await self.server.serve_forever()
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        """Close the server gracefully, then run the shutdown hooks in order.

        Sessions get DRAIN, then are closed with the going-away code
        (`ErrorCodes.APP_SERVICE_UNAVAILABLE`), all within
        `config.close_timeout`. Idempotent; does nothing before startup.
        """
        if not self._started or self._shutdown_done is None:
            return
        if self._shutdown_started:
            await self._shutdown_done.wait()
            return
        self._shutdown_started = True
        try:
            if self._server is not None and self._server.is_serving:
                await self._server.close()
            for hook in self._shutdown_hooks:
                try:
                    result = hook()
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    logger.exception("shutdown hook %r failed", hook)
            await self._groups.stop()
            while self._entered:
                middleware = self._entered.pop()
                try:
                    await middleware.__aexit__(None, None, None)
                except Exception:
                    logger.exception("closing middleware %r failed", middleware)
        finally:
            self._started = False
            self._server = None
            self._shutdown_done.set()

    async def __aenter__(self) -> ServerApp:
        await self.startup()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    # ------------------------------------------------------------------ blocking entry points

    def run(self, host: str | None = None, port: int | None = None, *, workers: int = 1) -> None:
        """Serve until SIGINT/SIGTERM, then shut down gracefully (blocking).

        Uses uvloop when installed and `use_uvloop` is true.

        With `workers > 1` (at most 32), binds that many UDP sockets to the
        port with `SO_REUSEPORT` and forks one process per socket (POSIX
        only). On Linux a BPF program attached to the sockets' group routes
        each datagram by its connection id, which names the worker that
        issued it: a connection stays on its worker when the client's address
        changes (NAT rebinding, a phone changing networks, connection
        migration). Elsewhere, or when the kernel refuses the program, the
        kernel spreads datagrams by a hash of addresses and ports, and such a
        client may reach another worker and lose its connection; which
        routing is in force is logged at startup. The workers share one
        `server_secret` (made here when the config has none): a Retry token
        from one is valid at all. Each worker runs the startup and shutdown
        hooks and has its own state (sessions, rate limits, chat rooms):
        nothing else is shared unless it lives outside the process (e.g.
        `app.groups` on a `RedisBackend`). The parent forwards SIGINT/SIGTERM
        to the workers and waits for them.

        Args:
            host: Overrides `config.bind_host`.
            port: Overrides `config.bind_port`.
            workers: Number of processes.

        Raises:
            ValueError: `workers` is not 1 to 32.
            SystemExit: Serving could not start (port in use, unreadable or
                mismatched certificate) or a worker failed: exit status 1 and
                one line on stderr, `error: <why>`, as a script's entry point
                should end (`uvicorn.run` does the same). Code that must catch
                the failure itself calls `await app.serve()`, which raises
                `ServerError` / `CertificateError`.
        """
        if not 1 <= workers <= MAX_WORKERS:
            raise ValueError(f"workers must be 1 to {MAX_WORKERS}, got {workers!r}")
        try:
            if workers == 1:
                self._run_loop(host, port, reuse_port=False)
            else:
                self._run_workers(host, port, workers)
        except (ServerError, CertificateError) as exc:
            raise SystemExit(f"error: {exc}") from exc

    def _run_loop(self, host: str | None, port: int | None, *, reuse_port: bool) -> None:
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
        if self.use_uvloop:
            try:
                import uvloop
            except ImportError:
                pass
            else:
                loop_factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(self._serve_until_signal(host, port, reuse_port=reuse_port))

    async def _serve_until_signal(
        self, host: str | None, port: int | None, *, reuse_port: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        signals = (signal.SIGINT, signal.SIGTERM)
        for signum in signals:
            loop.add_signal_handler(signum, stop.set)
        try:
            serve_task = asyncio.create_task(self.serve(host, port, reuse_port=reuse_port))
            stop_task = asyncio.create_task(stop.wait())
            await asyncio.wait({serve_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set() and not serve_task.done():
                logger.info("signal received: shutting down")
                await self.shutdown()
            stop_task.cancel()
            await serve_task
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)

    def _run_workers(self, host: str | None, port: int | None, workers: int) -> None:
        config = self._config
        if config is None:
            raise ServerError("ServerApp has no ServerConfig")
        self._server = None  # each worker builds its own server after the fork
        bind_host = config.bind_host if host is None else host
        bind_port = config.bind_port if port is None else port
        sockets = _bind_group(bind_host, bind_port, workers)
        bind_port = sockets[0].getsockname()[1]
        where = format_address(bind_host, bind_port)
        why = None
        if not _aioquic.enabled("cid_routing"):
            why = "connection ids do not name their worker: cid_routing is off"
        else:
            try:
                attach_reuseport_program(sockets[0], workers)
            except OSError as exc:
                why = f"the kernel refused the routing program: {exc.strerror or exc}"
        if why is None:
            logger.info("%d workers on %s: datagrams routed by connection id", workers, where)
        else:
            logger.warning(
                "%d workers on %s: the kernel routes by address hash (%s); a client whose "
                "address changes may reach another worker and lose its connection",
                workers,
                where,
                why,
            )
        if config.server_secret is None:
            # One secret for every worker: a Retry token or stateless reset from one is
            # valid at all.
            self._config = config.update(server_secret=os.urandom(32))
        context = multiprocessing.get_context("fork")
        processes = [
            context.Process(
                target=self._worker_main,
                args=(bind_host, bind_port, sockets, index),
                name=f"pywebtransport-worker-{index}",
            )
            for index in range(workers)
        ]

        def forward(signum: int, frame: FrameType | None) -> None:
            for process in processes:
                if process.is_alive():
                    process.terminate()

        previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for process in processes:
                process.start()
            for sock in sockets:
                sock.close()  # the workers hold them now
            running = list(processes)
            failed = False
            while running:
                multiprocessing.connection.wait([p.sentinel for p in running])
                for process in [p for p in running if not p.is_alive()]:
                    running.remove(process)
                    if process.exitcode not in (0, -signal.SIGTERM, -signal.SIGINT):
                        failed = True
                        logger.error("%s exited with %s", process.name, process.exitcode)
                        forward(signal.SIGTERM, None)
            for process in processes:
                process.join()
            if failed:
                raise ServerError("a worker process failed; see its log output")
        finally:
            for sock in sockets:
                sock.close()
            self._config = config
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _worker_main(self, host: str, port: int, sockets: list[socket.socket], index: int) -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        # Only this worker's socket stays open here: a sibling's socket held open in
        # this process would keep receiving its share of the port after it exits.
        for other, sock in enumerate(sockets):
            if other != index:
                sock.close()
        self._worker_socket = (sockets[index], (index, len(sockets)))
        try:
            self._run_loop(host, port, reuse_port=True)
        except Exception as exc:
            logger.error("worker failed: %s", exc)
            raise SystemExit(1) from exc


def _bind_group(host: str, port: int, count: int) -> list[socket.socket]:
    """Bind `count` UDP sockets to one port with SO_REUSEPORT, in worker order."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]  # 0 asked: the others join the port the first got
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise ServerError(
            f"cannot bind {format_address(host, port)}: {exc.strerror or exc}",
            bind_address=(host, port),
        ) from exc
    return sockets
