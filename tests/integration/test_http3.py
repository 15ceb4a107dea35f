"""Plain HTTP/3 requests on the WebTransport port: an ASGI app's `http` scope, over real UDP.

The client is aioquic's own `H3Connection` (`h3_client`); the app is a Starlette
site with its WebTransport endpoint on the same port (`starlette_site`), served
by `ServerApp.mount_asgi`, or an `HttpRequest` handler on a bare server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pywebtransport import (
    ClientConfig,
    ErrorCodes,
    HttpRequest,
    WebTransportClient,
    WebTransportServer,
)
from pywebtransport.framework import ServerApp
from pywebtransport.shared.utils import CertificateInfo

from .conftest import echo_handler, url_of
from .crowd import crowd_hosts
from .h3_client import h3_connect
from .starlette_site import build_site, pattern

pytestmark = pytest.mark.timeout(60)

ServeAsgi = Callable[..., Awaitable[ServerApp]]


def port_of(app: ServerApp | WebTransportServer) -> int:
    address = app.local_address
    assert address is not None
    return address[1]


async def test_page_and_webtransport_on_one_port(
    serve_asgi: ServeAsgi, certificate: CertificateInfo, client_config: ClientConfig
) -> None:
    app = await serve_asgi(build_site())
    port = port_of(app)
    async with h3_connect(port, cafile=certificate.certfile) as h3:
        page = await h3.request("GET", "/")
        assert page.status == 200
        assert page.header(b"content-type") == b"text/html; charset=utf-8"
        # Starlette's lifespan ran before the server listened; its state reached the request.
        assert b"hello from lifespan" in page.body
        posted = await h3.request("POST", "/echo", body=b"over http/3")
        assert (posted.status, bytes(posted.body)) == (200, b"over http/3")
        missing = await h3.request("GET", "/nope")
        assert missing.status == 404
    async with WebTransportClient(client_config) as client:
        session = await client.connect(f"https://127.0.0.1:{port}/wt")
        stream = await session.create_bidirectional_stream()
        await stream.write(b"ping", end_stream=True)
        assert await stream.read_all() == b"ping"
        await session.close()


async def test_bodies_stream_both_ways_byte_exact(
    serve_asgi: ServeAsgi, certificate: CertificateInfo
) -> None:
    app = await serve_asgi(build_site())
    size = 3 * 1024 * 1024 + 17  # several stream windows: the credit must come back
    upload = bytes((i * 7) % 256 for i in range(size))
    async with h3_connect(port_of(app), cafile=certificate.certfile) as h3:
        digest = await h3.request("POST", "/digest", body=upload, timeout=30)
        assert digest.status == 200
        assert json.loads(digest.body) == {
            "size": size,
            "sha256": hashlib.sha256(upload).hexdigest(),
        }
        download = await h3.request("GET", f"/download?size={size}", timeout=30)
        assert download.status == 200
        assert bytes(download.body) == pattern(size)


@pytest.mark.aioquic_patch("stream_window")  # without it aioquic grants credit regardless
async def test_a_handler_that_does_not_read_stops_the_client_by_flow_control(
    start_server: Callable[..., Awaitable[WebTransportServer]], certificate: CertificateInfo
) -> None:
    release = asyncio.Event()
    received: list[int] = []

    async def slow(request: HttpRequest) -> None:
        await release.wait()
        total = 0
        while chunk := await request.read():
            total += len(chunk)
        received.append(total)
        request.respond(200, [(b"content-length", b"2")])
        await request.write(b"ok", end=True)

    server = await start_server()
    server.set_http_handler(slow)
    window = server.config.quic_stream_receive_window
    size = 4 * window
    async with h3_connect(port_of(server), cafile=certificate.certfile) as h3:
        stream_id = h3.start("POST", "/upload", body=b"x" * size)
        # The server grants nothing while the handler does not read: the client
        # is held at the stream's window, far short of the body.
        await asyncio.sleep(0.5)
        assert h3.send_allowed(stream_id) == 0
        release.set()
        response = h3.responses[stream_id]
        async with asyncio.timeout(20):
            await response.ended.wait()
        assert (response.status, bytes(response.body)) == (200, b"ok")
    assert received == [size]


async def test_a_client_reset_reaches_the_app_as_disconnect_and_the_port_keeps_serving(
    serve_asgi: ServeAsgi, certificate: CertificateInfo
) -> None:
    seen: list[str] = []
    started = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/hang":
            started.set()
            while True:
                message = await receive()
                seen.append(message["type"])
                if message["type"] == "http.disconnect":
                    return
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    site = await serve_asgi(app)
    async with h3_connect(port_of(site), cafile=certificate.certfile) as h3:
        hung = h3.start("POST", "/hang", body=b"partial", end=False)
        await asyncio.wait_for(started.wait(), 5)
        h3.reset(hung)
        for _ in range(100):
            if "http.disconnect" in seen:
                break
            await asyncio.sleep(0.02)
        assert seen[0] == "http.request" and seen[-1] == "http.disconnect"
        again = await h3.request("GET", "/after")
        assert again.status == 204


async def test_failures_answer_500_before_the_response_and_reset_after(
    start_server: Callable[..., Awaitable[WebTransportServer]],
    certificate: CertificateInfo,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(request: HttpRequest) -> None:
        if request.path == "/late":
            request.respond(200)
            await request.write(b"half of it")
            raise RuntimeError("failed mid-response")
        if request.path == "/silent":
            return  # never answers
        raise RuntimeError("failed before answering")

    server = await start_server()
    server.set_http_handler(handler)
    with caplog.at_level(logging.ERROR, logger="pywebtransport.server"):
        async with h3_connect(port_of(server), cafile=certificate.certfile) as h3:
            early = await h3.request("GET", "/early")
            assert early.status == 500
            silent = await h3.request("GET", "/silent")
            assert silent.status == 500
            late = await h3.request("GET", "/late")
            assert late.status == 200
            assert late.reset_code == ErrorCodes.H3_INTERNAL_ERROR
    assert sum("failed" in record.getMessage() for record in caplog.records) == 2


async def test_requests_over_the_per_connection_cap_get_429(
    start_server: Callable[..., Awaitable[WebTransportServer]], certificate: CertificateInfo
) -> None:
    release = asyncio.Event()

    async def handler(request: HttpRequest) -> None:
        await release.wait()
        request.respond(200, end=True)

    server = await start_server(max_http_requests_per_connection=2)
    server.set_http_handler(handler)
    async with h3_connect(port_of(server), cafile=certificate.certfile) as h3:
        first = [h3.start("GET", f"/{i}") for i in range(2)]
        await asyncio.sleep(0.2)
        over = await h3.request("GET", "/third")
        assert over.status == 429
        release.set()
        for stream_id in first:
            async with asyncio.timeout(5):
                await h3.responses[stream_id].ended.wait()
            assert h3.responses[stream_id].status == 200


async def test_without_a_handler_plain_requests_get_404_and_405(
    start_server: Callable[..., Awaitable[WebTransportServer]], certificate: CertificateInfo
) -> None:
    server = await start_server()
    async with h3_connect(port_of(server), cafile=certificate.certfile) as h3:
        assert (await h3.request("GET", "/")).status == 404
        assert (await h3.request("POST", "/", body=b"x")).status == 405


async def test_malformed_plain_requests_get_400(
    start_server: Callable[..., Awaitable[WebTransportServer]], certificate: CertificateInfo
) -> None:
    called: list[str] = []

    async def handler(request: HttpRequest) -> None:
        called.append(request.path)
        request.respond(200, end=True)

    server = await start_server()
    server.set_http_handler(handler)
    async with h3_connect(port_of(server), cafile=certificate.certfile) as h3:
        assert (await h3.request("GET", "no-slash")).status == 400
        assert (await h3.request("GET", "/fine")).status == 200
    assert called == ["/fine"]


async def test_shutdown_lets_a_request_under_way_finish(
    start_server: Callable[..., Awaitable[WebTransportServer]], certificate: CertificateInfo
) -> None:
    started = asyncio.Event()

    async def handler(request: HttpRequest) -> None:
        started.set()
        await asyncio.sleep(0.3)
        request.respond(200)
        await request.write(b"finished", end=True)

    server = await start_server()
    server.set_http_handler(handler)
    async with h3_connect(port_of(server), cafile=certificate.certfile) as h3:
        stream_id = h3.start("GET", "/slow")
        await asyncio.wait_for(started.wait(), 5)
        await server.close(timeout=3)
        response = h3.responses[stream_id]
        async with asyncio.timeout(5):
            await response.ended.wait()
        assert (response.status, bytes(response.body)) == (200, b"finished")


async def test_a_receive_pending_beside_the_response_returns_disconnect_once_it_completes(
    serve_asgi: ServeAsgi, certificate: CertificateInfo
) -> None:
    # Starlette's StreamingResponse listens for http.disconnect in one task while
    # another sends the body: the listener must end when the response does.
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()  # the (empty) request body
        listener = asyncio.create_task(receive())
        await asyncio.sleep(0.05)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})
        got.append(await asyncio.wait_for(listener, 5))

    site = await serve_asgi(app)
    async with h3_connect(port_of(site), cafile=certificate.certfile) as h3:
        response = await h3.request("GET", "/")
        assert bytes(response.body) == b"done"
    for _ in range(100):
        if got:
            break
        await asyncio.sleep(0.02)
    assert got == [{"type": "http.disconnect"}]


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_a_crowd_holding_every_request_slot_leaves_the_server_to_real_users(
    start_server: Callable[..., Awaitable[WebTransportServer]],
    certificate: CertificateInfo,
    client_config: ClientConfig,
) -> None:
    # 8 addresses x 2 connections, each holding the default 16 requests whose bodies never
    # end (256 held requests), and each turned away when it asks for a 17th. Meanwhile a
    # real user gets a page and a WebTransport echo as if the crowd were not there.
    hosts, per_host, cap = crowd_hosts(8), 2, 16

    async def handler(request: HttpRequest) -> None:
        received = 0
        while chunk := await request.read():
            received += len(chunk)
        request.respond(200)
        await request.write(str(received).encode(), end=True)

    server = await start_server(echo_handler)
    server.set_http_handler(handler)
    port = port_of(server)
    async with contextlib.AsyncExitStack() as stack:
        crowd = [
            await stack.enter_async_context(
                h3_connect(port, cafile=certificate.certfile, source=host)
            )
            for host in hosts
            for _ in range(per_host)
        ]
        held = [
            (h3, h3.start("POST", "/upload", body=b"x" * 1024, end=False))
            for h3 in crowd
            for _ in range(cap)
        ]
        over = [await h3.request("GET", "/one-more") for h3 in crowd]
        assert [response.status for response in over] == [429] * len(crowd)

        loop = asyncio.get_running_loop()
        began = loop.time()
        async with h3_connect(port, cafile=certificate.certfile) as user:
            page = await user.request("GET", "/", timeout=3.0)
        assert page.status == 200
        async with WebTransportClient(client_config) as client:
            session = await client.connect(url_of(server, "/echo"))
            stream = await session.create_bidirectional_stream()
            await stream.write(b"hello", end_stream=True)
            assert await asyncio.wait_for(stream.read_all(), 3.0) == b"hello"
            await session.close()
        assert loop.time() - began < 3.0

        # The held requests were waiting, not dropped: each finishes when its body does.
        assert not any(h3.responses[stream_id].ended.is_set() for h3, stream_id in held)
        for h3, stream_id in held:
            h3.send_body(stream_id, b"", end=True)
        for h3, stream_id in held:
            response = h3.responses[stream_id]
            async with asyncio.timeout(10):
                await response.ended.wait()
            assert (response.status, bytes(response.body)) == (200, b"1024")
