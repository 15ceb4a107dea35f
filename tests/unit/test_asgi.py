"""The ASGI adapter's pure parts: scope building, message checks, the bounded inbox, mounts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pywebtransport import ServerConfig
from pywebtransport.framework import ASGIAdapter, ServerApp
from pywebtransport.framework.asgi import (
    _code,
    _data,
    _field,
    _Inbox,
    _status,
    _stream_id,
    scope_from_request,
)


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app that is never called here."""


REQUEST = [
    (b":method", b"CONNECT"),
    (b":protocol", b"webtransport"),
    (b":scheme", b"https"),
    (b":authority", b"example.com:4433"),
    (b":path", b"/chat/caf%C3%A9%20room?token=a%20b&x=1"),
    (b"origin", b"https://example.com"),
    (b"wt-available-protocols", b'"v1", "v2"'),
]


def test_scope_from_request() -> None:
    scope = scope_from_request(
        REQUEST,
        client=("192.0.2.1", 50000),
        server=("198.51.100.2", 4433),
        subprotocols=["v1", "v2"],
        root_path="/chat",
    )
    assert scope == {
        "type": "webtransport",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "3",
        "scheme": "https",
        "method": "CONNECT",
        "path": "/chat/café room",
        "raw_path": b"/chat/caf%C3%A9%20room",
        "query_string": b"token=a%20b&x=1",
        "root_path": "/chat",
        "headers": [
            (b"host", b"example.com:4433"),
            (b"origin", b"https://example.com"),
            (b"wt-available-protocols", b'"v1", "v2"'),
        ],
        "client": ("192.0.2.1", 50000),
        "server": ("198.51.100.2", 4433),
        "subprotocols": ["v1", "v2"],
    }


@given(
    st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=40)), max_size=8),
    st.binary(max_size=60),
)
def test_scope_from_any_headers(headers: list[tuple[bytes, bytes]], target: bytes) -> None:
    scope = scope_from_request(
        [(b":path", target), *headers], client=None, server=None, subprotocols=[]
    )
    assert not any(name.startswith(b":") for name, _ in scope["headers"] if name != b"host")
    assert b"?" not in scope["raw_path"]
    assert isinstance(scope["path"], str)
    last_path = [v for n, v in [(b":path", target), *headers] if n == b":path"][-1]
    assert scope["raw_path"] + (b"?" + scope["query_string"] if b"?" in last_path else b"") == (
        last_path
    )


def test_message_fields() -> None:
    message = {"type": "webtransport.stream.send", "stream": 5, "data": "héllo", "flag": True}
    assert _stream_id(message) == 5
    assert _data(message, required=True) == "héllo".encode()
    assert _data({"type": "t"}, required=False) == b""
    assert _data({"type": "t", "data": memoryview(b"ab")}, required=True) == b"ab"
    with pytest.raises(ValueError, match="needs a 'data' field"):
        _data({"type": "t"}, required=True)
    with pytest.raises(ValueError, match="'flag' must be int"):
        _field(message, "flag", int)  # a bool is not a stream id or a code
    with pytest.raises(ValueError, match="'stream' must be >= 0"):
        _stream_id({"type": "t", "stream": -1})
    assert _code({"type": "t"}) == 0
    assert _code({"type": "t", "code": 2**32 - 1}) == 2**32 - 1
    for bad in (-1, 2**32):
        with pytest.raises(ValueError, match=r"0\.\.2\*\*32-1"):
            _code({"type": "t", "code": bad})
    assert _status({"type": "webtransport.close"}) == 403
    assert _status({"type": "webtransport.close", "status": 599}) == 599
    for bad in (200, 399, 600):
        with pytest.raises(ValueError, match="4xx or 5xx"):
            _status({"type": "webtransport.close", "status": bad})


async def test_inbox_put_waits_at_the_limit() -> None:
    inbox = _Inbox(2)
    await inbox.put({"n": 1})
    await inbox.put({"n": 2})
    third = asyncio.create_task(inbox.put({"n": 3}))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not third.done() and len(inbox) == 2
    assert await inbox.get() == {"n": 1}
    await asyncio.wait_for(third, 1)  # the get() made room for the waiting put()
    inbox.push({"n": "control"})  # the bound does not apply to push()
    assert len(inbox) == 3
    assert [await inbox.get() for _ in range(3)] == [{"n": 2}, {"n": 3}, {"n": "control"}]


async def test_inbox_close_wakes_everyone_and_drops_later_puts() -> None:
    inbox = _Inbox(1)
    getter = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    inbox.close()
    assert await asyncio.wait_for(getter, 1) is None

    inbox = _Inbox(1)
    await inbox.put({"n": 1})
    blocked = asyncio.create_task(inbox.put({"n": 2}))
    await asyncio.sleep(0)
    inbox.close()
    await asyncio.wait_for(blocked, 1)
    inbox.push({"n": 3})
    assert await inbox.get() == {"n": 1}  # queued before the close: still delivered
    assert await inbox.get() is None


async def test_inbox_has_one_reader() -> None:
    inbox = _Inbox(1)
    first = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="already being awaited"):
        await inbox.get()
    first.cancel()


def test_adapter_arguments() -> None:
    with pytest.raises(ValueError, match="queue_size"):
        ASGIAdapter(asgi_app, queue_size=0)
    with pytest.raises(ValueError, match="read_size"):
        ASGIAdapter(asgi_app, read_size=0)
    with pytest.raises(TypeError, match="callable"):
        ASGIAdapter("not an app")  # type: ignore[arg-type]


def test_mount_routes_a_prefix() -> None:
    app = ServerApp(ServerConfig(certfile="c.pem", keyfile="k.pem"))
    wt = app.mount_asgi("/wt/", asgi_app)
    everything = app.mount_asgi("/", asgi_app)
    assert wt.root_path == "/wt" and everything.root_path == ""

    def handler_of(path: str) -> Any:
        match = app.router.match(path)
        return match[0] if match else None

    assert handler_of("/wt") is wt
    assert handler_of("/wt/room?x=1") is wt
    assert handler_of("/wtx") is everything  # not under /wt: the later "/" mount takes it
    assert handler_of("/") is everything
    with pytest.raises(ValueError, match="start with '/'"):
        app.mount_asgi("wt", asgi_app)
    with pytest.raises(ValueError, match="already exists"):
        app.mount_asgi("/wt", asgi_app)
