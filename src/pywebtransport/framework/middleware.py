"""Session middleware: checks that run before a session is accepted.

A middleware is `async def mw(*, session) -> None`, called with the
requested (not yet accepted) `WebTransportSession`. It lets the session
through by returning and refuses it by raising
`MiddlewareRejected(status_code=...)`; the client then sees that HTTP status
(`HandshakeError.status_code` with our client; browsers only see a failure).
Raising `AuthenticationError` refuses it with 401; any other exception is a
bug in the middleware: it is logged and the session refused with 500.

Ready-made middleware:

- `create_auth_middleware(auth_handler)`: your `async auth_handler(*, headers) -> bool`.
- `create_token_auth_middleware(tokens)`: a bearer token from the
  `Authorization` header or, for browsers (which cannot set headers on a
  WebTransport request), from the `?token=` query parameter.
- `create_cors_middleware(allowed_origins)`: an `Origin` check.
- `create_rate_limit_middleware()`: per-client-IP request limits (429).
- `create_logging_middleware()`: one access-log line per session.
"""

from __future__ import annotations

import fnmatch
import hmac
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from ..shared.exceptions import AuthenticationError, WebTransportError
from ..transport.session import SessionCloseInfo, WebTransportSession

__all__ = [
    "AuthHandlerProtocol",
    "MiddlewareManager",
    "MiddlewareProtocol",
    "MiddlewareRejected",
    "RateLimiter",
    "StatefulMiddlewareProtocol",
    "create_auth_middleware",
    "create_cors_middleware",
    "create_logging_middleware",
    "create_rate_limit_middleware",
    "create_token_auth_middleware",
]

logger = logging.getLogger("pywebtransport.framework")
access_logger = logging.getLogger("pywebtransport.access")


class MiddlewareRejected(WebTransportError):
    """Raised by a middleware to refuse a session with an HTTP status.

    Args:
        message: Why the session was refused (logged, not sent).
        status_code: The HTTP status the client receives (4xx or 5xx).
        headers: Extra response headers a middleware would like to send
            (kept for logging and introspection; e.g. `retry-after`).

    Attributes:
        status_code: The HTTP status.
        headers: The extra headers.
    """

    def __init__(
        self,
        message: str = "",
        *,
        status_code: int = 403,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message or f"session rejected with status {status_code}", **kwargs)
        self.status_code = status_code
        self.headers: dict[str, str] = dict(headers or {})


@runtime_checkable
class MiddlewareProtocol(Protocol):
    """The shape of a middleware: `async def mw(*, session) -> None`."""

    async def __call__(self, *, session: WebTransportSession) -> None:
        """Check a requested session; raise `MiddlewareRejected` to refuse it.

        Args:
            session: The requested, not yet accepted, session.
        """


@runtime_checkable
class StatefulMiddlewareProtocol(MiddlewareProtocol, Protocol):
    """A middleware with state to set up and tear down (`async with`)."""

    async def __aenter__(self) -> Any:
        """Set up state."""

    async def __aexit__(self, *exc: object) -> None:
        """Release state."""


@runtime_checkable
class AuthHandlerProtocol(Protocol):
    """The callback of `create_auth_middleware`: `async def auth(*, headers) -> bool`."""

    async def __call__(self, *, headers: dict[str, str]) -> bool:
        """Decide whether a request may open a session.

        Args:
            headers: Request headers, names lowercased, first value of each.

        Returns:
            True to let the session through, False to refuse it with 401.
        """
        ...


Middleware = Callable[..., Awaitable[None]]


class MiddlewareManager:
    """An ordered chain of middleware run for every requested session."""

    def __init__(self) -> None:
        self._middleware: list[Middleware] = []

    def add_middleware(self, middleware: Middleware) -> None:
        """Append a middleware to the chain.

        Args:
            middleware: `async def mw(*, session) -> None`.
        """
        self._middleware.append(middleware)

    def remove_middleware(self, middleware: Middleware) -> None:
        """Remove a middleware; unknown ones are ignored.

        Args:
            middleware: A middleware given to `add_middleware`.
        """
        if middleware in self._middleware:
            self._middleware.remove(middleware)

    def get_middleware_count(self) -> int:
        """Return the number of middleware in the chain.

        Returns:
            The count.
        """
        return len(self._middleware)

    @property
    def middleware(self) -> list[Middleware]:
        """The chain, in call order (a copy)."""
        return list(self._middleware)

    async def process_request(self, session: WebTransportSession) -> None:
        """Run every middleware in order on a requested session.

        Args:
            session: The requested session.

        Raises:
            MiddlewareRejected: A middleware refused the session. An
                `AuthenticationError` from a middleware becomes
                `MiddlewareRejected(status_code=401)`; any other exception is
                logged and becomes `MiddlewareRejected(status_code=500)`.
        """
        for middleware in self._middleware:
            try:
                await middleware(session=session)
            except MiddlewareRejected:
                raise
            except AuthenticationError as exc:
                raise _unauthorized(exc) from exc
            except Exception as exc:
                logger.exception("middleware %r failed for %r", middleware, session.path)
                raise MiddlewareRejected(f"middleware failed: {exc!r}", status_code=500) from exc


def _unauthorized(exc: AuthenticationError) -> MiddlewareRejected:
    return MiddlewareRejected(
        f"authentication failed: {exc.message}" if exc.message else "authentication failed",
        status_code=401,
    )


def _header_dict(session: WebTransportSession) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in session.headers:
        key = name.decode("latin-1").lower()
        if key not in headers:
            headers[key] = value.decode("utf-8", "replace")
    return headers


def create_auth_middleware(
    auth_handler: Callable[..., Awaitable[bool]],
) -> Middleware:
    """Build a middleware that asks `auth_handler` about each request.

    Browsers cannot set headers on a WebTransport request: for them use
    `create_token_auth_middleware` (query token) or read
    `session.query_params` in your own middleware.

    Args:
        auth_handler: `async def auth(*, headers: dict[str, str]) -> bool`;
            headers have lowercased names (pseudo-headers such as `:path`
            included). Returning False or raising `AuthenticationError`
            refuses the session with 401; `MiddlewareRejected` refuses it with
            its own status; any other exception is logged and counts as a
            refusal (401).

    Returns:
        The middleware (refuses with 401).
    """

    async def auth_middleware(*, session: WebTransportSession) -> None:
        try:
            allowed = await auth_handler(headers=_header_dict(session))
        except MiddlewareRejected:
            raise
        except AuthenticationError as exc:
            raise _unauthorized(exc) from exc
        except Exception as exc:
            logger.warning("auth handler failed for %r: %r", session.path, exc)
            raise MiddlewareRejected("authentication error", status_code=401) from exc
        if not allowed:
            raise MiddlewareRejected("authentication failed", status_code=401)

    return auth_middleware


def create_token_auth_middleware(
    tokens: Iterable[str],
    *,
    header: str = "authorization",
    query_param: str | None = "token",
) -> Middleware:
    """Build a middleware accepting a known bearer token from a header or the query.

    A request passes when its `header` is `Bearer <token>` (the scheme is
    case-insensitive; a bare `<token>` is accepted too) or, because browsers
    cannot set headers on WebTransport requests, when the query string has
    `?<query_param>=<token>`. Tokens are compared in constant time.

    Args:
        tokens: The accepted tokens.
        header: Header to read (case-insensitive).
        query_param: Query parameter to read, or None to accept headers only.

    Returns:
        The middleware (refuses with 401).

    Raises:
        ValueError: `tokens` is empty.
    """
    accepted = [token.encode() for token in tokens if token]
    if not accepted:
        raise ValueError("create_token_auth_middleware needs at least one token")

    def known(candidate: str) -> bool:
        encoded = candidate.encode()
        found = False
        for token in accepted:
            found |= hmac.compare_digest(encoded, token)
        return found

    async def token_auth_middleware(*, session: WebTransportSession) -> None:
        value = session.header(header)
        if value is not None:
            scheme, _, rest = value.strip().partition(" ")
            candidate = rest.strip() if scheme.lower() == "bearer" and rest else value.strip()
            if known(candidate):
                return
        if query_param is not None:
            for candidate in session.query_params.get(query_param, []):
                if known(candidate):
                    return
        raise MiddlewareRejected("missing or invalid token", status_code=401)

    return token_auth_middleware


def create_cors_middleware(
    allowed_origins: Iterable[str], *, allow_missing_origin: bool = False
) -> Middleware:
    """Build a middleware that checks the `Origin` header (browser requests).

    Args:
        allowed_origins: `fnmatch` patterns, e.g. `"https://example.com"`,
            `"https://*.example.com"` or `"*"`.
        allow_missing_origin: Let requests without `Origin` through. Browsers
            always send one; native clients (like our `WebTransportClient`)
            do not. Off by default, so a missing origin gets 403.

    Returns:
        The middleware (refuses with 403).
    """
    patterns = [origin.lower() for origin in allowed_origins]

    async def cors_middleware(*, session: WebTransportSession) -> None:
        origin = session.header("origin")
        if origin is None:
            if allow_missing_origin:
                return
            raise MiddlewareRejected("missing Origin header", status_code=403)
        lowered = origin.lower()
        if not any(fnmatch.fnmatchcase(lowered, pattern) for pattern in patterns):
            raise MiddlewareRejected(f"origin {origin!r} not allowed", status_code=403)

    return cors_middleware


class RateLimiter:
    """Per-client-IP rate limit middleware (a sliding window of timestamps).

    Memory is bounded: at most `max_tracked_ips` addresses are tracked (the
    least recently seen one is forgotten first) and each keeps at most
    `max_requests` timestamps. Idle addresses are swept every
    `cleanup_interval` seconds, lazily while requests arrive.

    Usually built with `create_rate_limit_middleware()`. It may be used as
    `async with` (the app does this on startup/shutdown); that only resets
    its state.

    Args:
        max_requests: Sessions allowed per address within the window.
        window_seconds: The window length.
        cleanup_interval: Seconds between sweeps of idle addresses.
        max_tracked_ips: Most addresses remembered at once.
        clock: Monotonic time source (for tests).

    Raises:
        ValueError: A limit is not positive.
    """

    def __init__(
        self,
        *,
        max_requests: int = 100,
        window_seconds: float = 60,
        cleanup_interval: float = 300,
        max_tracked_ips: int = 10000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (
            ("max_requests", max_requests),
            ("window_seconds", window_seconds),
            ("cleanup_interval", cleanup_interval),
            ("max_tracked_ips", max_tracked_ips),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        self.max_requests = max_requests
        self.window_seconds = window_seconds
        self.cleanup_interval = cleanup_interval
        self.max_tracked_ips = max_tracked_ips
        self._clock = clock
        self._requests: OrderedDict[str, deque[float]] = OrderedDict()
        self._last_cleanup = clock()

    @property
    def tracked_ips(self) -> int:
        """Number of addresses currently remembered."""
        return len(self._requests)

    def cleanup(self) -> None:
        """Forget addresses with no request inside the window."""
        now = self._clock()
        self._last_cleanup = now
        horizon = now - self.window_seconds
        for ip in [
            ip for ip, stamps in self._requests.items() if not stamps or stamps[-1] <= horizon
        ]:
            del self._requests[ip]

    async def __call__(self, *, session: WebTransportSession) -> None:
        """Count a request from the session's address; refuse with 429 when over.

        Args:
            session: The requested session.

        Raises:
            MiddlewareRejected: 429, with a `retry-after` header value.
        """
        now = self._clock()
        if now - self._last_cleanup >= self.cleanup_interval:
            self.cleanup()
        address = session.remote_address
        ip = address[0] if address else "unknown"
        stamps = self._requests.get(ip)
        if stamps is None:
            stamps = self._requests[ip] = deque(maxlen=self.max_requests)
            while len(self._requests) > self.max_tracked_ips:
                self._requests.popitem(last=False)
        else:
            self._requests.move_to_end(ip)
        horizon = now - self.window_seconds
        while stamps and stamps[0] <= horizon:
            stamps.popleft()
        if len(stamps) >= self.max_requests:
            retry_after = max(1, math.ceil(stamps[0] + self.window_seconds - now))
            raise MiddlewareRejected(
                f"rate limit exceeded for {ip}",
                status_code=429,
                headers={"retry-after": str(retry_after)},
            )
        stamps.append(now)

    async def __aenter__(self) -> RateLimiter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._requests.clear()


def create_rate_limit_middleware(
    *,
    max_requests: int = 100,
    window_seconds: float = 60,
    cleanup_interval: float = 300,
    max_tracked_ips: int = 10000,
) -> RateLimiter:
    """Build a per-client-IP rate limit (429 when over).

    Args:
        max_requests: Sessions allowed per address within the window.
        window_seconds: The window length in seconds.
        cleanup_interval: Seconds between sweeps of idle addresses.
        max_tracked_ips: Most addresses remembered (oldest forgotten first).

    Returns:
        A stateful `RateLimiter` middleware.
    """
    return RateLimiter(
        max_requests=max_requests,
        window_seconds=window_seconds,
        cleanup_interval=cleanup_interval,
        max_tracked_ips=max_tracked_ips,
    )


def create_logging_middleware(logger_name: str = "pywebtransport.access") -> Middleware:
    """Build a middleware that writes one access-log line per session.

    The line is written at INFO when the session ends: client address,
    path, user agent, close code and duration.

    Args:
        logger_name: The logger to write to.

    Returns:
        The middleware (never refuses).
    """
    log = logging.getLogger(logger_name)

    async def logging_middleware(*, session: WebTransportSession) -> None:
        started = time.monotonic()
        address = session.remote_address
        client = f"{address[0]}:{address[1]}" if address else "-"
        agent = session.header("user-agent", "-")
        path = session.path

        def done(future: Any) -> None:
            info: SessionCloseInfo | None = None
            if not future.cancelled() and future.exception() is None:
                info = future.result()
            code = info.error_code if info is not None else "-"
            log.info(
                '%s "%s" %r code=%s %.3fs', client, path, agent, code, time.monotonic() - started
            )

        session.closed.add_done_callback(done)

    return logging_middleware
