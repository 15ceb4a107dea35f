"""The application framework: `ServerApp`, routing and middleware.

Built on `WebTransportServer`: routes map request paths to handlers,
middleware accept or refuse requested sessions, and startup/shutdown hooks
frame the server's life; `ASGIAdapter` (`ServerApp.mount_asgi`) runs ASGI
applications for WebTransport sessions. See the framework guide in the docs.

`SessionHandler` (the type of a handler serving one session) is defined in
`pywebtransport.server` and re-exported here, where the reference library has it.
"""

from __future__ import annotations

from ..server import SessionHandler
from .app import LifecycleHook, ServerApp
from .asgi import ASGIAdapter, ASGIApp
from .groups import (
    DeliverCallback,
    GroupBackend,
    GroupError,
    GroupManager,
    HealthCallback,
    InProcessBackend,
    RedisBackend,
)
from .middleware import (
    AuthHandlerProtocol,
    MiddlewareManager,
    MiddlewareProtocol,
    MiddlewareRejected,
    RateLimiter,
    StatefulMiddlewareProtocol,
    create_auth_middleware,
    create_cors_middleware,
    create_logging_middleware,
    create_rate_limit_middleware,
    create_token_auth_middleware,
)
from .router import RequestRouter, RouteHandler, compile_pattern

__all__ = [
    "ASGIAdapter",
    "ASGIApp",
    "AuthHandlerProtocol",
    "DeliverCallback",
    "GroupBackend",
    "GroupError",
    "GroupManager",
    "HealthCallback",
    "InProcessBackend",
    "LifecycleHook",
    "MiddlewareManager",
    "MiddlewareProtocol",
    "MiddlewareRejected",
    "RateLimiter",
    "RedisBackend",
    "RequestRouter",
    "RouteHandler",
    "ServerApp",
    "SessionHandler",
    "StatefulMiddlewareProtocol",
    "compile_pattern",
    "create_auth_middleware",
    "create_cors_middleware",
    "create_logging_middleware",
    "create_rate_limit_middleware",
    "create_token_auth_middleware",
]
