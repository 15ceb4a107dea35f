"""ServerApp over real UDP loopback with our client: routing, middleware, hooks, lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from pywebtransport import (
    ClientConfig,
    ErrorCodes,
    ServerConfig,
    WebTransportClient,
    WebTransportSession,
)
from pywebtransport.framework import (
    MiddlewareRejected,
    ServerApp,
    create_auth_middleware,
    create_cors_middleware,
    create_rate_limit_middleware,
    create_token_auth_middleware,
)
from pywebtransport.shared.exceptions import AuthenticationError, HandshakeError

AppFactory = Callable[[], ServerApp]


def app_url(app: ServerApp, path: str) -> str:
    address = app.local_address
    assert address is not None
    return f"https://127.0.0.1:{address[1]}{path}"


@pytest.fixture
async def apps(server_config: ServerConfig) -> AsyncIterator[list[ServerApp]]:
    """Apps a test starts; each one is shut down after the test."""
    started: list[ServerApp] = []
    yield started
    for app in started:
        await app.shutdown()


async def start(app: ServerApp, apps: list[ServerApp]) -> ServerApp:
    apps.append(app)
    await app.listen("127.0.0.1", 0)
    return app


async def echo_once(session: WebTransportSession, payload: bytes = b"ping") -> bytes:
    stream = await session.create_bidirectional_stream()
    await stream.write(payload, end_stream=True)
    return await stream.read_all()


async def echo_handler(session: WebTransportSession, **params: str) -> None:
    async for stream in session.incoming_bidirectional_streams():
        data = await stream.read_all()
        suffix = "".join(f"|{k}={v}" for k, v in sorted(params.items())).encode()
        await stream.write(data + suffix, end_stream=True)


@pytest.mark.timeout(20)
async def test_routes_and_params(
    server_config: ServerConfig, client_config: ClientConfig, apps: list[ServerApp]
) -> None:
    app = ServerApp(server_config)
    app.route("/echo")(echo_handler)
    app.pattern_route("/chat/{room}")(echo_handler)
    await start(app, apps)
    async with WebTransportClient(client_config) as client:
        session = await client.connect(app_url(app, "/echo?x=1"))
        assert await echo_once(session) == b"ping"
        session = await client.connect(app_url(app, "/chat/lobby"))
        assert await echo_once(session) == b"ping|room=lobby"


@pytest.mark.timeout(20)
async def test_unknown_path_is_404(
    server_config: ServerConfig, client_config: ClientConfig, apps: list[ServerApp]
) -> None:
    app = ServerApp(server_config)
    app.route("/echo")(echo_handler)
    await start(app, apps)
    async with WebTransportClient(client_config) as client:
        with pytest.raises(HandshakeError) as info:
            await client.connect(app_url(app, "/nope"))
        assert info.value.status_code == 404


@pytest.mark.timeout(20)
async def test_authentication_error_rejects_the_session_with_401(
    server_config: ServerConfig, client_config: ClientConfig, apps: list[ServerApp]
) -> None:
    app = ServerApp(server_config)
    app.route("/echo")(echo_handler)

    async def check_key(*, headers: dict[str, str]) -> bool:
        if headers.get("x-key") == "expired":
            raise AuthenticationError("key expired", auth_scheme="x-key")
        return True

    @app.middleware
    async def users_only(*, session: WebTransportSession) -> None:
        if session.query_params.get("user") != ["ada"]:
            raise AuthenticationError("unknown user")

    app.add_middleware(create_auth_middleware(check_key))
    await start(app, apps)
    async with WebTransportClient(client_config) as client:
        with pytest.raises(HandshakeError) as info:
            await client.connect(app_url(app, "/echo?user=bob"))
        assert info.value.status_code == 401
        with pytest.raises(HandshakeError) as info:
            await client.connect(app_url(app, "/echo?user=ada"), headers={"x-key": "expired"})
        assert info.value.status_code == 401
        session = await client.connect(app_url(app, "/echo?user=ada"), headers={"x-key": "ok"})
        assert await echo_once(session) == b"ping"


@pytest.mark.timeout(20)
async def test_middleware_rejections(
    server_config: ServerConfig, client_config: ClientConfig, apps: list[ServerApp]
) -> None:
    app = ServerApp(server_config)
    app.route("/echo")(echo_handler)
    app.add_middleware(create_rate_limit_middleware(max_requests=3, window_seconds=60))
    app.add_middleware(create_token_auth_middleware(["s3cret"]))

    @app.middleware
    async def teapot(*, session: WebTransportSession) -> None:
        if session.query_params.get("teapot"):
            raise MiddlewareRejected(status_code=418)

    await start(app, apps)
    async with WebTransportClient(client_config) as client:
        with pytest.raises(HandshakeError) as info:
            await client.connect(app_url(app, "/echo"))
        assert info.value.status_code == 401
        with pytest.raises(HandshakeError) as info:
            await client.connect(app_url(app, "/echo?token=s3cret&teapot=1"))
        assert info.value.status_code == 418
        session = await client.connect(app_url(app, "/echo?token=s3cret"))
        assert await echo_once(session) == b"ping"
        with pytest.raises(HandshakeError) as info:
            await client.connect(app_url(app, "/echo?token=s3cret"))
        assert info.value.status_code == 429


@pytest.mark.timeout(20)
async def test_cors_missing_origin_is_403(
    server_config: ServerConfig, client_config: ClientConfig, apps: list[ServerApp]
) -> None:
    app = ServerApp(server_config)
    app.route("/echo")(echo_handler)
    app.add_middleware(create_cors_middleware(["https://example.com"]))
    await start(app, apps)
    async with WebTransportClient(client_config) as client:
        with pytest.raises(HandshakeError) as info:
            await client.connect(app_url(app, "/echo"))
        assert info.value.status_code == 403
        session = await client.connect(
            app_url(app, "/echo"), headers={"origin": "https://example.com"}
        )
        assert await echo_once(session) == b"ping"


@pytest.mark.timeout(20)
async def test_hooks_run_in_order(server_config: ServerConfig) -> None:
    order: list[str] = []
    app = ServerApp(server_config)

    @app.on_startup
    def first() -> None:
        order.append("startup-1")

    @app.on_startup
    async def second() -> None:
        order.append("startup-2")

    @app.on_shutdown
    async def third() -> None:
        order.append("shutdown-1")

    @app.on_shutdown
    def fourth() -> None:
        order.append("shutdown-2")

    async with app:
        assert order == ["startup-1", "startup-2"]
        await app.listen("127.0.0.1", 0)
        task = asyncio.create_task(app.serve())
        await asyncio.sleep(0.05)
        assert not task.done()
        await app.shutdown()
        await asyncio.wait_for(task, 5)
    assert order == ["startup-1", "startup-2", "shutdown-1", "shutdown-2"]


@pytest.mark.timeout(20)
async def test_failing_startup_aborts_serve(server_config: ServerConfig) -> None:
    app = ServerApp(server_config)
    ran: list[str] = []

    @app.on_startup
    def boom() -> None:
        raise RuntimeError("no database")

    @app.on_shutdown
    def never() -> None:
        ran.append("shutdown")

    with pytest.raises(RuntimeError, match="no database"):
        await asyncio.wait_for(app.serve("127.0.0.1", 0), 5)
    assert app.local_address is None
    assert ran == []


@pytest.mark.timeout(30)
async def test_raising_handler_closes_only_its_session(
    server_config: ServerConfig,
    client_config: ClientConfig,
    apps: list[ServerApp],
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = ServerApp(server_config)
    app.route("/echo")(echo_handler)

    @app.route("/boom")
    async def boom(session: WebTransportSession) -> None:
        await session.receive_datagram()
        raise RuntimeError("handler bug")

    await start(app, apps)
    async with WebTransportClient(client_config) as client:
        good = await client.connect(app_url(app, "/echo"))
        bad = await client.connect(app_url(app, "/boom"))
        await bad.send_datagram(b"go")
        info = await asyncio.wait_for(bad.closed, 5)
        assert info.error_code == ErrorCodes.APP_INTERNAL_ERROR
        assert await echo_once(good, b"still") == b"still"
        again = await client.connect(app_url(app, "/echo"))
        assert await echo_once(again) == b"ping"
    failures = [r for r in caplog.records if "handler bug" in (r.exc_text or "")]
    assert len(failures) == 1


@pytest.mark.timeout(30)
async def test_shutdown_closes_sessions_with_going_away_code(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    app = ServerApp(server_config.update(close_timeout=2.0))

    @app.route("/hold")
    async def hold(session: WebTransportSession) -> None:
        await asyncio.Event().wait()  # ignores DRAIN

    await app.listen("127.0.0.1", 0)
    try:
        async with WebTransportClient(client_config) as client:
            sessions = [await client.connect(app_url(app, "/hold")) for _ in range(2)]
            # (tests/deterministic/test_timing.py checks that shutdown keeps close_timeout)
            await app.shutdown()
            for session in sessions:
                info = await asyncio.wait_for(session.closed, 3)
                assert info.error_code == ErrorCodes.APP_SERVICE_UNAVAILABLE
    finally:
        await app.shutdown()
