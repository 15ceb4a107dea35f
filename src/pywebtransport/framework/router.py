"""`RequestRouter`: map a session's request path to its handler.

Exact paths are looked up in a dict; pattern routes are regular expressions
matched whole (`re.fullmatch`) in the order they were added, where each
`{name}` template becomes the named group `(?P<name>[^/]+)`. An exact route
always wins over patterns; the query string never takes part in routing.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from ..transport.session import WebTransportSession

__all__ = ["RequestRouter", "RouteHandler", "check_handler", "check_path", "compile_pattern"]

RouteHandler = Callable[..., Awaitable[Any]]
"""An async callable `handler(session, **params)` that serves one session."""

_TEMPLATE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a route pattern once.

    `{name}` templates become named groups matching one path segment
    (`(?P<name>[^/]+)`); everything else is a regular expression.

    Args:
        pattern: The route pattern, e.g. `"/chat/{room}"` or `r"/files/(?P<id>\\d+)"`.

    Returns:
        The compiled expression (use it with `fullmatch`).

    Raises:
        ValueError: The pattern is not a valid regular expression, or a
            template name repeats.
    """
    names = _TEMPLATE.findall(pattern)
    if len(names) != len(set(names)):
        raise ValueError(f"route pattern {pattern!r} repeats a parameter name")
    source = _TEMPLATE.sub(lambda match: f"(?P<{match.group(1)}>[^/]+)", pattern)
    try:
        return re.compile(source)
    except re.error as exc:
        raise ValueError(f"invalid route pattern {pattern!r}: {exc}") from exc


def _route_path(path: str) -> str:
    return urlsplit(path).path or "/"


def _name(handler: Any) -> str:
    return str(getattr(handler, "__name__", None) or type(handler).__name__)


def check_path(path: Any, *, pattern: bool = False) -> str:
    """Refuse a route path that can never match a request.

    Args:
        path: What was passed as the path.
        pattern: It is a pattern (a regular expression may come first).

    Returns:
        The path.

    Raises:
        TypeError: `path` is not a string (e.g. `@app.route` used without
            parentheses, which passes the function itself).
        ValueError: The path does not start with `/`: request paths always do
            (a pattern may start with a regular expression instead).
    """
    what = "pattern route" if pattern else "route"
    if not isinstance(path, str):
        hint = f" ({_name(path)} was passed as the path)" if callable(path) else ""
        raise TypeError(f'a {what} needs a path string, e.g. @app.route("/echo"){hint}')
    # A pattern may start with a regular expression ("(?:...)", ".*"); a literal first
    # character other than "/" can never match a request path.
    literal = not pattern or path[:1].isalnum() or path[:1] in "{_-~"
    if literal and not path.startswith("/"):
        raise ValueError(f"{what} {path!r} must start with '/' (request paths do): {'/' + path!r}")
    return path


def check_handler(handler: Any, where: str, params: Iterable[str] = ()) -> None:
    """Refuse a handler that would fail on every session, when it is registered.

    Args:
        handler: The handler being registered.
        where: The route, for the message.
        params: The names a pattern route passes as keyword arguments.

    Raises:
        TypeError: `handler` is not callable, is a plain (not `async`)
            function, or cannot take `params` as keyword arguments.
    """
    if not callable(handler):
        raise TypeError(f"{where}: the handler must be an async function, not {handler!r}")
    target = handler.func if isinstance(handler, functools.partial) else handler
    if inspect.isfunction(target) and not inspect.iscoroutinefunction(target):
        raise TypeError(
            f"{where}: handler {_name(handler)}() is a plain function; route handlers are "
            f"awaited: write `async def {getattr(target, '__name__', 'handler')}(session, ...)`"
        )
    names = list(params)
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):  # builtins and some callables have none
        return
    try:
        signature.bind(object(), **dict.fromkeys(names, ""))
    except TypeError as exc:
        accepted = ", ".join(signature.parameters) or "none"
        wanted = ", ".join(names) or "none"
        raise TypeError(
            f"{where}: handler {_name(handler)}() cannot be called as "
            f"handler(session{''.join(', ' + n + '=...' for n in names)}): {exc} "
            f"(the route passes: session, {wanted}; the handler takes: {accepted})"
        ) from None


class RequestRouter:
    """Routes sessions to handlers by request path.

    Example:
        ```python
        router = RequestRouter()
        router.add_route("/echo", echo)
        router.add_pattern_route("/chat/{room}", chat)
        handler, params = router.route_request(session) or (None, {})
        ```
    """

    def __init__(self) -> None:
        self._routes: dict[str, RouteHandler] = {}
        self._patterns: list[tuple[str, re.Pattern[str], RouteHandler]] = []
        self._default_handler: RouteHandler | None = None

    def add_route(self, path: str, handler: RouteHandler, override: bool = False) -> None:
        """Register a handler for an exact path.

        Args:
            path: The request path (without query string), e.g. `"/echo"`.
            handler: `async def handler(session)`.
            override: Replace an existing route instead of raising.

        Raises:
            ValueError: The path is already routed and `override` is False,
                or does not start with `/`.
            TypeError: The path is not a string, or the handler is not an
                async function taking the session.
        """
        check_path(path)
        check_handler(handler, f"route {path!r}")
        if path in self._routes and not override:
            raise ValueError(f"route {path!r} already exists (pass override=True to replace it)")
        self._routes[path] = handler

    def add_pattern_route(self, pattern: str, handler: RouteHandler) -> None:
        """Register a handler for a path pattern.

        Args:
            pattern: `{name}` templates and/or a regular expression matched
                against the whole path; named groups become keyword
                arguments of the handler.
            handler: `async def handler(session, **params)`.

        Raises:
            ValueError: The pattern is invalid or already registered, or does
                not start with `/`.
            TypeError: The handler is not an async function, or cannot take
                the pattern's named groups as keyword arguments.
        """
        check_path(pattern, pattern=True)
        if any(existing == pattern for existing, _, _ in self._patterns):
            raise ValueError(f"pattern route {pattern!r} already exists")
        regex = compile_pattern(pattern)
        check_handler(handler, f"pattern route {pattern!r}", regex.groupindex)
        self._patterns.append((pattern, regex, handler))

    def remove_route(self, path: str) -> None:
        """Remove an exact route; unknown paths are ignored.

        Args:
            path: The path given to `add_route`.
        """
        self._routes.pop(path, None)

    def remove_pattern_route(self, pattern: str) -> None:
        """Remove a pattern route; unknown patterns are ignored.

        Args:
            pattern: The pattern given to `add_pattern_route`.
        """
        self._patterns = [entry for entry in self._patterns if entry[0] != pattern]

    def set_default_handler(self, handler: RouteHandler | None) -> None:
        """Set the handler for paths no route matches (None: answer 404).

        Args:
            handler: `async def handler(session)`, or None.
        """
        self._default_handler = handler

    def get_route_handler(self, path: str) -> RouteHandler | None:
        """Return the handler of an exact route.

        Args:
            path: The exact path.

        Returns:
            The handler, or None.
        """
        return self._routes.get(path)

    def get_all_routes(self) -> dict[str, RouteHandler]:
        """Return the exact routes, as the reference library does.

        Pattern routes are listed by `get_all_pattern_routes()`.

        Returns:
            A new dict from path to handler.
        """
        return dict(self._routes)

    def get_all_pattern_routes(self) -> dict[str, RouteHandler]:
        """Return the pattern routes in match order.

        Returns:
            A new dict from pattern (as given to `add_pattern_route`) to handler.
        """
        return {pattern: handler for pattern, _, handler in self._patterns}

    def get_route_stats(self) -> dict[str, Any]:
        """Return route counts.

        Returns:
            `{"exact_routes", "pattern_routes", "has_default_handler"}`.
        """
        return {
            "exact_routes": len(self._routes),
            "pattern_routes": len(self._patterns),
            "has_default_handler": self._default_handler is not None,
        }

    def match(self, path: str) -> tuple[RouteHandler, dict[str, str]] | None:
        """Find the handler for a request path.

        Args:
            path: The request path; a query string is ignored.

        Returns:
            `(handler, params)`, or None when nothing (not even a default
            handler) matches.
        """
        path = _route_path(path)
        handler = self._routes.get(path)
        if handler is not None:
            return handler, {}
        for _, regex, pattern_handler in self._patterns:
            found = regex.fullmatch(path)
            if found is not None:
                params = {k: v for k, v in found.groupdict().items() if v is not None}
                return pattern_handler, params
        if self._default_handler is not None:
            return self._default_handler, {}
        return None

    def route_request(
        self, session: WebTransportSession
    ) -> tuple[RouteHandler, dict[str, str]] | None:
        """Find the handler for a session's request.

        Args:
            session: The requested session.

        Returns:
            `(handler, params)`, or None when nothing matches (answer 404).
        """
        return self.match(session.path)
