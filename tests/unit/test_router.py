"""RequestRouter in-process: exact, patterns, regex, default, misses, duplicates."""

from __future__ import annotations

from typing import Any, cast

import pytest

from pywebtransport import WebTransportSession
from pywebtransport.framework import RequestRouter, compile_pattern


class FakeSession:
    def __init__(self, path: str) -> None:
        self.path = path


def session(path: str) -> WebTransportSession:
    return cast(WebTransportSession, FakeSession(path))


async def handler_a(session: WebTransportSession, **params: Any) -> None:
    pass


async def handler_b(session: WebTransportSession, **params: Any) -> None:
    pass


@pytest.mark.timeout(5)
def test_exact_route_and_query_ignored() -> None:
    router = RequestRouter()
    router.add_route("/echo", handler_a)
    assert router.route_request(session("/echo")) == (handler_a, {})
    assert router.route_request(session=session("/echo?x=1&y=2")) == (handler_a, {})
    assert router.get_route_handler("/echo") is handler_a
    assert router.get_route_handler(path="/other") is None


@pytest.mark.timeout(5)
def test_pattern_route_params() -> None:
    router = RequestRouter()
    router.add_pattern_route(pattern="/chat/{room}", handler=handler_a)
    assert router.route_request(session("/chat/lobby?token=t")) == (handler_a, {"room": "lobby"})
    assert router.route_request(session("/chat/a/b")) is None
    assert router.route_request(session("/chat/")) is None


@pytest.mark.timeout(5)
def test_regex_pattern_fullmatch_and_mixed_templates() -> None:
    router = RequestRouter()
    router.add_pattern_route(r"/files/(?P<id>\d+)", handler_a)
    router.add_pattern_route(r"/u/{user}/(?P<n>\d{1,3})", handler_b)
    assert router.route_request(session("/files/42")) == (handler_a, {"id": "42"})
    assert router.route_request(session("/files/42x")) is None
    assert router.route_request(session("/prefix/files/42")) is None
    assert router.route_request(session("/u/ann/7")) == (handler_b, {"user": "ann", "n": "7"})


@pytest.mark.timeout(5)
def test_exact_wins_over_pattern_and_first_pattern_wins() -> None:
    router = RequestRouter()
    router.add_pattern_route("/chat/{room}", handler_a)
    router.add_pattern_route("/chat/.*", handler_b)
    router.add_route("/chat/admin", handler_b)
    assert router.route_request(session("/chat/admin")) == (handler_b, {})
    assert router.route_request(session("/chat/x")) == (handler_a, {"room": "x"})


@pytest.mark.timeout(5)
def test_default_handler_and_miss() -> None:
    router = RequestRouter()
    assert router.route_request(session("/anything")) is None
    router.set_default_handler(handler_b)
    assert router.route_request(session("/anything")) == (handler_b, {})
    router.set_default_handler(handler=None)
    assert router.route_request(session("/anything")) is None


@pytest.mark.timeout(5)
def test_duplicates_and_override() -> None:
    router = RequestRouter()
    router.add_route("/a", handler_a)
    with pytest.raises(ValueError, match="already exists"):
        router.add_route("/a", handler_b)
    router.add_route("/a", handler_b, override=True)
    assert router.get_route_handler("/a") is handler_b
    router.add_pattern_route("/p/{x}", handler_a)
    with pytest.raises(ValueError):
        router.add_pattern_route("/p/{x}", handler_b)


@pytest.mark.timeout(5)
def test_bad_patterns() -> None:
    router = RequestRouter()
    with pytest.raises(ValueError, match="invalid route pattern"):
        router.add_pattern_route("/bad/(unclosed", handler_a)
    with pytest.raises(ValueError, match="repeats"):
        compile_pattern("/{a}/{a}")


@pytest.mark.timeout(5)
def test_remove_and_stats() -> None:
    router = RequestRouter()
    router.add_route("/a", handler_a)
    router.add_pattern_route("/p/{x}", handler_b)
    # As in the reference: exact routes only; patterns have their own accessor.
    assert router.get_all_routes() == {"/a": handler_a}
    assert router.get_all_pattern_routes() == {"/p/{x}": handler_b}
    assert router.get_route_stats() == {
        "exact_routes": 1,
        "pattern_routes": 1,
        "has_default_handler": False,
    }
    router.remove_route(path="/a")
    router.remove_pattern_route(pattern="/p/{x}")
    router.remove_route("/missing")
    assert router.get_all_routes() == {}
    assert router.get_all_pattern_routes() == {}
    assert router.route_request(session("/p/1")) is None


@pytest.mark.timeout(5)
def test_plain_function_handler_refused_at_registration() -> None:
    def plain(session: WebTransportSession) -> None:
        pass

    with pytest.raises(TypeError, match=r"plain function.*async def plain"):
        RequestRouter().add_route("/echo", plain)


@pytest.mark.timeout(5)
def test_pattern_parameters_must_fit_the_handler() -> None:
    async def room(session: WebTransportSession, room: str) -> None:
        pass

    with pytest.raises(
        TypeError,
        match=r"'/room/\{name\}': handler room\(\) cannot be called as handler\(session, name=",
    ):
        RequestRouter().add_pattern_route("/room/{name}", room)
    # Matching names, keyword catch-alls and regex groups are accepted.
    router = RequestRouter()
    router.add_pattern_route("/room/{room}", room)
    router.add_pattern_route(r"/files/(?P<id>\d+)", handler_a)


@pytest.mark.timeout(5)
@pytest.mark.parametrize("path", ["noslash", "{room}/x"])
def test_path_without_leading_slash_refused(path: str) -> None:
    with pytest.raises(ValueError, match="must start with '/'"):
        if "{" in path:
            RequestRouter().add_pattern_route(path, handler_a)
        else:
            RequestRouter().add_route(path, handler_a)
    # A pattern may start with a regular expression.
    RequestRouter().add_pattern_route(r"(?:/.*)?", handler_a)


@pytest.mark.timeout(5)
def test_route_decorator_without_parentheses_refused() -> None:
    from pywebtransport.framework import ServerApp

    app = ServerApp()

    with pytest.raises(TypeError, match=r"needs a path string.*@app.route\(\"/echo\"\)"):

        @app.route  # type: ignore[arg-type]
        async def echo(session: WebTransportSession) -> None:
            pass

    with pytest.raises(TypeError, match="needs a path string"):
        app.pattern_route(handler_a)  # type: ignore[arg-type]
    assert app.router.get_all_routes() == {}
