"""Middleware in-process: the manager and every ready-made middleware."""

from __future__ import annotations

import asyncio
import logging
from typing import cast
from urllib.parse import parse_qs, urlsplit

import pytest

from pywebtransport import WebTransportSession
from pywebtransport.framework import (
    MiddlewareManager,
    MiddlewareRejected,
    RateLimiter,
    create_auth_middleware,
    create_cors_middleware,
    create_logging_middleware,
    create_rate_limit_middleware,
    create_token_auth_middleware,
)
from pywebtransport.shared.exceptions import AuthenticationError, WebTransportError
from pywebtransport.transport.session import SessionCloseInfo


class FakeSession:
    def __init__(
        self,
        path: str = "/",
        headers: dict[str, str] | None = None,
        ip: str = "192.0.2.1",
    ) -> None:
        self.path = path
        self.headers = [(b":path", path.encode())] + [
            (k.lower().encode(), v.encode()) for k, v in (headers or {}).items()
        ]
        self.remote_address = (ip, 50000)
        self.closed: asyncio.Future[SessionCloseInfo] = asyncio.get_running_loop().create_future()

    @property
    def query_params(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)

    def header(self, name: str, default: str | None = None) -> str | None:
        for key, value in self.headers:
            if key == name.lower().encode():
                return value.decode()
        return default


def fake(
    path: str = "/", headers: dict[str, str] | None = None, ip: str = "192.0.2.1"
) -> WebTransportSession:
    return cast(WebTransportSession, FakeSession(path, headers, ip))


async def rejected_status(middleware: object, session: WebTransportSession) -> int | None:
    try:
        await middleware(session=session)  # type: ignore[operator]
    except MiddlewareRejected as exc:
        return exc.status_code
    return None


@pytest.mark.timeout(5)
async def test_manager_order_rejection_and_errors() -> None:
    calls: list[str] = []

    async def first(*, session: WebTransportSession) -> None:
        calls.append("first")

    async def deny(*, session: WebTransportSession) -> None:
        calls.append("deny")
        raise MiddlewareRejected(status_code=451)

    async def broken(*, session: WebTransportSession) -> None:
        raise KeyError("bug")

    manager = MiddlewareManager()
    manager.add_middleware(first)
    manager.add_middleware(middleware=deny)
    assert manager.get_middleware_count() == 2
    with pytest.raises(MiddlewareRejected) as info:
        await manager.process_request(session=fake())
    assert info.value.status_code == 451
    assert calls == ["first", "deny"]
    manager.remove_middleware(deny)
    manager.remove_middleware(middleware=deny)
    manager.add_middleware(broken)
    with pytest.raises(MiddlewareRejected) as info:
        await manager.process_request(fake())
    assert info.value.status_code == 500
    assert isinstance(info.value.__cause__, KeyError)
    manager.remove_middleware(broken)
    await manager.process_request(fake())


@pytest.mark.timeout(5)
def test_rejected_is_a_webtransport_error() -> None:
    exc = MiddlewareRejected(status_code=429, headers={"retry-after": "3"})
    assert isinstance(exc, WebTransportError)
    assert exc.headers == {"retry-after": "3"}
    assert MiddlewareRejected().status_code == 403


@pytest.mark.timeout(5)
async def test_auth_middleware() -> None:
    seen: list[dict[str, str]] = []

    async def auth(*, headers: dict[str, str]) -> bool:
        seen.append(headers)
        return headers.get("x-key") == "ok"

    middleware = create_auth_middleware(auth)
    assert await rejected_status(middleware, fake(headers={"X-Key": "ok"})) is None
    assert await rejected_status(middleware, fake(headers={"X-Key": "no"})) == 401
    assert seen[0][":path"] == "/"

    async def broken(*, headers: dict[str, str]) -> bool:
        raise RuntimeError

    assert await rejected_status(create_auth_middleware(broken), fake()) == 401


@pytest.mark.timeout(5)
async def test_authentication_error_rejects_with_401(caplog: pytest.LogCaptureFixture) -> None:
    async def expired(*, headers: dict[str, str]) -> bool:
        raise AuthenticationError("token expired", auth_scheme="bearer")

    async def forbidden(*, headers: dict[str, str]) -> bool:
        raise MiddlewareRejected(status_code=403)

    assert await rejected_status(create_auth_middleware(expired), fake()) == 401
    assert await rejected_status(create_auth_middleware(forbidden), fake()) == 403

    async def plain(*, session: WebTransportSession) -> None:
        raise AuthenticationError("no such user")

    manager = MiddlewareManager()
    manager.add_middleware(plain)
    with (
        caplog.at_level(logging.ERROR, logger="pywebtransport.framework"),
        pytest.raises(MiddlewareRejected) as info,
    ):
        await manager.process_request(fake())
    assert info.value.status_code == 401
    assert "no such user" in info.value.message
    assert isinstance(info.value.__cause__, AuthenticationError)
    # A refusal, not a bug: no traceback in the error log.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.timeout(5)
async def test_token_auth_header_and_query() -> None:
    middleware = mw = create_token_auth_middleware(["alpha", "beta"])
    assert await rejected_status(middleware, fake(headers={"authorization": "Bearer beta"})) is None
    assert await rejected_status(mw, fake(headers={"authorization": "bearer alpha"})) is None
    assert await rejected_status(middleware, fake("/x?token=alpha")) is None
    assert await rejected_status(middleware, fake("/x?token=gamma")) == 401
    assert await rejected_status(middleware, fake(headers={"authorization": "Bearer x"})) == 401
    assert await rejected_status(middleware, fake()) == 401
    header_only = create_token_auth_middleware(["alpha"], header="x-token", query_param=None)
    assert await rejected_status(header_only, fake("/x?token=alpha")) == 401
    assert await rejected_status(header_only, fake(headers={"x-token": "alpha"})) is None
    with pytest.raises(ValueError):
        create_token_auth_middleware([])


@pytest.mark.timeout(5)
async def test_cors_middleware() -> None:
    mw = create_cors_middleware(["https://example.com", "https://*.example.org"])
    middleware = mw
    assert await rejected_status(mw, fake(headers={"origin": "https://example.com"})) is None
    assert await rejected_status(mw, fake(headers={"origin": "https://a.example.org"})) is None
    assert await rejected_status(middleware, fake(headers={"origin": "https://evil.com"})) == 403
    assert await rejected_status(middleware, fake()) == 403
    lenient = create_cors_middleware(["https://example.com"], allow_missing_origin=True)
    assert await rejected_status(lenient, fake()) is None
    assert await rejected_status(lenient, fake(headers={"origin": "https://evil.com"})) == 403


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.timeout(5)
async def test_rate_limit_window_and_retry_after() -> None:
    clock = Clock()
    limiter = RateLimiter(max_requests=2, window_seconds=10, clock=clock)
    async with limiter:
        assert await rejected_status(limiter, fake(ip="10.0.0.1")) is None
        assert await rejected_status(limiter, fake(ip="10.0.0.1")) is None
        with pytest.raises(MiddlewareRejected) as info:
            await limiter(session=fake(ip="10.0.0.1"))
        assert info.value.status_code == 429
        assert info.value.headers["retry-after"] == "10"
        assert await rejected_status(limiter, fake(ip="10.0.0.2")) is None
        clock.now += 10.5
        assert await rejected_status(limiter, fake(ip="10.0.0.1")) is None
    assert limiter.tracked_ips == 0


@pytest.mark.timeout(5)
async def test_rate_limit_memory_is_bounded() -> None:
    clock = Clock()
    limiter = RateLimiter(max_requests=1, window_seconds=60, max_tracked_ips=3, clock=clock)
    for index in range(10):
        assert await rejected_status(limiter, fake(ip=f"10.0.0.{index}")) is None
        assert limiter.tracked_ips <= 3
    assert limiter.tracked_ips == 3
    # the oldest addresses were forgotten: they may come back, the newest may not
    assert await rejected_status(limiter, fake(ip="10.0.0.0")) is None
    assert await rejected_status(limiter, fake(ip="10.0.0.9")) == 429


@pytest.mark.timeout(5)
async def test_rate_limit_cleanup_sweeps_idle() -> None:
    clock = Clock()
    limiter = RateLimiter(max_requests=5, window_seconds=10, cleanup_interval=30, clock=clock)
    for index in range(4):
        await limiter(session=fake(ip=f"10.0.1.{index}"))
    clock.now += 31
    await limiter(session=fake(ip="10.0.2.1"))
    assert limiter.tracked_ips == 1


@pytest.mark.timeout(5)
def test_rate_limit_factory_validates() -> None:
    limiter = create_rate_limit_middleware(max_requests=7, window_seconds=3)
    assert isinstance(limiter, RateLimiter)
    assert (limiter.max_requests, limiter.window_seconds, limiter.max_tracked_ips) == (7, 3, 10000)
    with pytest.raises(ValueError):
        create_rate_limit_middleware(max_requests=0)


@pytest.mark.timeout(5)
async def test_logging_middleware_one_line(caplog: pytest.LogCaptureFixture) -> None:
    middleware = create_logging_middleware()
    session = fake("/chat/x", headers={"user-agent": "tester"})
    with caplog.at_level(logging.INFO, logger="pywebtransport.access"):
        assert await rejected_status(middleware, session) is None
        assert not caplog.records
        session.closed.set_result(
            SessionCloseInfo(error_code=0, reason="", remote=True, clean=True)
        )
        await asyncio.sleep(0)
    lines = [r.getMessage() for r in caplog.records if r.name == "pywebtransport.access"]
    assert len(lines) == 1
    assert "192.0.2.1:50000" in lines[0] and "/chat/x" in lines[0] and "code=0" in lines[0]
