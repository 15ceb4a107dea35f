"""ASGI apps serving WebTransport sessions, over real UDP loopback with our client.

The apps here are plain ASGI callables written the way aioquic's HTTP/3 server
example writes its WebTransport demo (receive connect, send accept, loop on
receive), so they would run unchanged on any server with that message format.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import pytest

from pywebtransport import (
    ClientConfig,
    ErrorCodes,
    EventType,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportStream,
)
from pywebtransport.framework import ASGIAdapter, ServerApp
from pywebtransport.shared.exceptions import (
    HandshakeError,
    ServerError,
    SessionClosedError,
    StreamError,
)

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class EchoApp:
    """Echo datagrams and streams; record what the server told the app.

    - `/reject/<status>` refuses with that status; `/silent` returns without
      deciding; `/crash` raises before deciding.
    - A bidirectional stream is echoed on itself (FIN passed through); a
      unidirectional one on a new server unidirectional stream.
    - The datagram `b"open-bidi"` opens server stream 1 and writes `b"hello"`;
      the datagram `b"close"` closes the session with code 9, reason "done".
    """

    def __init__(self, *, delay: float = 0.0, subprotocol: str | None = None) -> None:
        self.delay = delay
        self.subprotocol = subprotocol
        self.scopes: list[Message] = []
        self.received: list[Message] = []
        self.disconnects: list[Message] = []
        self.finished = asyncio.Event()
        self._changed = asyncio.Condition()

    async def record(self, message: Message) -> None:
        async with self._changed:
            self.received.append(message)
            self._changed.notify_all()

    async def wait_received(self, predicate: Callable[[list[Message]], bool]) -> None:
        async with asyncio.timeout(5), self._changed:
            await self._changed.wait_for(lambda: predicate(self.received))

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return  # nothing to set up (the server then serves without lifespan)
        try:
            await self.serve(scope, receive, send)
        finally:
            self.finished.set()

    async def serve(self, scope: Message, receive: Receive, send: Send) -> None:
        assert scope["type"] == "webtransport"
        self.scopes.append(scope)
        message = await receive()
        assert message["type"] == "webtransport.connect"
        path = scope["path"]
        if path.startswith("/reject/"):
            await send({"type": "webtransport.close", "status": int(path.rsplit("/", 1)[1])})
            return
        if path == "/silent":
            return
        if path == "/crash":
            raise RuntimeError("crash before accepting")
        accept: Message = {"type": "webtransport.accept"}
        if self.subprotocol is not None:
            accept["subprotocol"] = self.subprotocol
        await send(accept)

        next_uni = 3
        uni_echo: dict[int, int] = {}
        while True:
            message = await receive()
            if self.delay:
                await asyncio.sleep(self.delay)
            if message["type"] == "webtransport.datagram.receive":
                data = message["data"]
                if data == b"open-bidi":
                    await send({"type": "webtransport.stream.send", "stream": 1, "data": b"hello"})
                elif data == b"close":
                    await send({"type": "webtransport.close", "code": 9, "reason": "done"})
                else:
                    await send({"type": "webtransport.datagram.send", "data": data})
            elif message["type"] == "webtransport.stream.receive":
                stream = message["stream"]
                if stream & 0x1:  # a server stream this app opened: just record it
                    await self.record(message)
                    continue
                if stream & 0x2:  # the client's unidirectional stream: answer on one of ours
                    if stream not in uni_echo:
                        uni_echo[stream] = next_uni
                        next_uni += 4
                    stream = uni_echo[stream]
                await send(
                    {
                        "type": "webtransport.stream.send",
                        "stream": stream,
                        "data": message["data"],
                        "end_stream": message["end_stream"],
                    }
                )
            elif message["type"] == "webtransport.disconnect":
                self.disconnects.append(message)
                return
            else:
                await self.record(message)


def app_url(app: ServerApp, path: str) -> str:
    address = app.local_address
    assert address is not None
    return f"https://127.0.0.1:{address[1]}{path}"


async def wait_finished(app: EchoApp) -> None:
    async with asyncio.timeout(10):
        await app.finished.wait()


@pytest.mark.timeout(30)
async def test_echo_datagrams_and_streams(
    serve_asgi: Callable[..., Awaitable[ServerApp]], client_config: ClientConfig
) -> None:
    echo = EchoApp()
    app = await serve_asgi(echo)
    async with WebTransportClient(client_config) as client:
        session = await client.connect(app_url(app, "/echo?x=1"))
        await session.send_datagram(b"ping")
        assert await session.receive_datagram(timeout=5) == b"ping"

        stream = await session.create_bidirectional_stream()
        await stream.write(b"one ")
        await stream.write(b"two", end_stream=True)
        assert await asyncio.wait_for(stream.read_all(), 5) == b"one two"

        uni = await session.create_unidirectional_stream()
        await uni.write(b"uni data", end_stream=True)
        answer = await session.accept_unidirectional_stream(timeout=5)
        assert await asyncio.wait_for(answer.read_all(), 5) == b"uni data"
        assert answer.stream_id & 0x3 == 0x3  # server-initiated, unidirectional
        await session.close()
    await wait_finished(echo)
    scope = echo.scopes[0]
    assert scope["path"] == "/echo"
    assert scope["query_string"] == b"x=1"
    assert scope["root_path"] == ""
    assert scope["scheme"] == "https" and scope["http_version"] == "3"
    port = app_url(app, "").rsplit(":", 1)[1]
    assert (b"host", f"127.0.0.1:{port}".encode()) in scope["headers"]
    assert not any(name.startswith(b":") for name, _ in scope["headers"])
    assert scope["client"][0] == "127.0.0.1"


@pytest.mark.timeout(30)
async def test_server_initiated_bidi_stream_keeps_the_app_id(
    serve_asgi: Callable[..., Awaitable[ServerApp]], client_config: ClientConfig
) -> None:
    echo = EchoApp()
    app = await serve_asgi(echo)
    async with WebTransportClient(client_config) as client:
        # A client session first, so that the app's id 1 cannot be the real QUIC id.
        other = await client.connect(app_url(app, "/other"))
        occupied = await other.create_bidirectional_stream()  # held: kept open
        session = await client.connect(app_url(app, "/echo"))
        await session.send_datagram(b"open-bidi")
        stream = await session.accept_bidirectional_stream(timeout=5)
        assert await stream.readexactly(5) == b"hello"
        await stream.write(b"reply", end_stream=True)
        await echo.wait_received(lambda got: bool(got) and got[-1]["end_stream"])
        assert b"".join(m["data"] for m in echo.received) == b"reply"
        assert {m["stream"] for m in echo.received} == {1}
        assert not occupied.is_closed
        await session.close()
        await other.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("path", "status"), [("/reject/404", 404), ("/reject/429", 429), ("/silent", 403)]
)
async def test_refusal_status_reaches_the_client(
    serve_asgi: Callable[..., Awaitable[ServerApp]],
    client_config: ClientConfig,
    path: str,
    status: int,
) -> None:
    echo = EchoApp()
    app = await serve_asgi(echo)
    async with WebTransportClient(client_config) as client:
        with pytest.raises(HandshakeError) as caught:
            await client.connect(app_url(app, path))
    assert caught.value.status_code == status
    await wait_finished(echo)


@pytest.mark.timeout(30)
async def test_app_raising_before_accepting_is_a_500(
    serve_asgi: Callable[..., Awaitable[ServerApp]],
    client_config: ClientConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = await serve_asgi(EchoApp())
    async with WebTransportClient(client_config) as client:
        with pytest.raises(HandshakeError) as caught:
            await client.connect(app_url(app, "/crash"))
    assert caught.value.status_code == 500
    assert any("crash before accepting" in str(r.exc_info) for r in caplog.records if r.exc_info)


@pytest.mark.timeout(30)
async def test_client_close_code_and_reason_reach_the_app(
    serve_asgi: Callable[..., Awaitable[ServerApp]], client_config: ClientConfig
) -> None:
    echo = EchoApp()
    app = await serve_asgi(echo)
    async with WebTransportClient(client_config) as client:
        session = await client.connect(app_url(app, "/echo"))
        await session.close(error_code=7, reason="bye")
        await wait_finished(echo)
    assert echo.disconnects == [{"type": "webtransport.disconnect", "code": 7, "reason": "bye"}]


@pytest.mark.timeout(30)
async def test_app_close_code_and_reason_reach_the_client(
    serve_asgi: Callable[..., Awaitable[ServerApp]], client_config: ClientConfig
) -> None:
    echo = EchoApp()
    app = await serve_asgi(echo)
    async with WebTransportClient(client_config) as client:
        session = await client.connect(app_url(app, "/echo"))
        await session.send_datagram(b"close")
        info = await asyncio.wait_for(session.wait_closed(), 5)
    assert (info.error_code, info.reason, info.remote) == (9, "done", True)
    await wait_finished(echo)
    assert echo.disconnects[0]["code"] == 9


@pytest.mark.timeout(30)
async def test_subprotocol_offer_and_choice(
    serve_asgi: Callable[..., Awaitable[ServerApp]], client_config: ClientConfig
) -> None:
    echo = EchoApp(subprotocol="v2")
    app = await serve_asgi(echo)
    async with WebTransportClient(client_config) as client:
        session = await client.connect(app_url(app, "/echo"), wt_available_protocols=["v1", "v2"])
        assert session.protocol == "v2"
        await session.close()
    await wait_finished(echo)
    assert echo.scopes[0]["subprotocols"] == ["v1", "v2"]


@pytest.mark.timeout(30)
async def test_stream_reset_and_stop_sending_reach_the_app(
    serve_asgi: Callable[..., Awaitable[ServerApp]], client_config: ClientConfig
) -> None:
    echo = EchoApp()
    app = await serve_asgi(echo)
    async with WebTransportClient(client_config) as client:
        session = await client.connect(app_url(app, "/echo"))
        reset = await session.create_unidirectional_stream()
        await reset.write(b"partial")
        # Reset only once the app has the stream (its echo came back): a stream
        # reset before it reached the server's session is never surfaced at all.
        echoed = await session.accept_unidirectional_stream(timeout=5)
        assert await asyncio.wait_for(echoed.readexactly(7), 5) == b"partial"
        await reset.reset(5)

        stopped = await session.create_bidirectional_stream()
        await stopped.write(b"first")
        assert await asyncio.wait_for(stopped.readexactly(5), 5) == b"first"
        await stopped.stop_receiving(6)
        await stopped.write(b"second")  # the app's echo then meets the STOP_SENDING
        await echo.wait_received(lambda got: len(got) == 2)
        await session.close()
    by_type = {m["type"]: m for m in echo.received}
    assert by_type["webtransport.stream.reset"]["stream"] == reset.stream_id
    assert by_type["webtransport.stream.reset"]["code"] == 5
    assert by_type["webtransport.stream.stop_sending"]["stream"] == stopped.stream_id
    assert by_type["webtransport.stream.stop_sending"]["code"] == 6


@pytest.mark.timeout(30)
async def test_mount_prefix_and_root_path(
    serve_asgi: Callable[..., Awaitable[ServerApp]], client_config: ClientConfig
) -> None:
    echo = EchoApp()
    app = await serve_asgi(echo, "/wt")
    async with WebTransportClient(client_config) as client:
        session = await client.connect(app_url(app, "/wt/room%201"))
        await session.close()
        with pytest.raises(HandshakeError) as caught:
            await client.connect(app_url(app, "/wtx"))
        assert caught.value.status_code == 404
    await wait_finished(echo)
    assert echo.scopes[0]["path"] == "/wt/room 1"
    assert echo.scopes[0]["raw_path"] == b"/wt/room%201"
    assert echo.scopes[0]["root_path"] == "/wt"


@pytest.mark.timeout(30)
async def test_shutdown_disconnects_the_app(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    echo = EchoApp()
    app = ServerApp(server_config)
    app.mount_asgi("/", echo)
    await app.listen("127.0.0.1", 0)
    try:
        async with WebTransportClient(client_config) as client:
            session = await client.connect(app_url(app, "/echo"))
            await app.shutdown()
            info = await asyncio.wait_for(session.wait_closed(), 5)
    finally:
        await app.shutdown()
    assert echo.finished.is_set()
    assert echo.disconnects[0]["code"] == ErrorCodes.APP_SERVICE_UNAVAILABLE
    assert info.error_code == ErrorCodes.APP_SERVICE_UNAVAILABLE


@pytest.mark.timeout(30)
async def test_receive_after_disconnect_ends_an_app_that_ignores_it(
    serve_asgi: Callable[..., Awaitable[ServerApp]], client_config: ClientConfig
) -> None:
    """The aioquic demo's echo app loops on receive() forever; it must still end."""
    ended: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    async def demo_style(scope: Message, receive: Receive, send: Send) -> None:
        try:
            await receive()
            await send({"type": "webtransport.accept"})
            while True:
                message = await receive()
                if message["type"] == "webtransport.datagram.receive":
                    await send({"type": "webtransport.datagram.send", "data": message["data"]})
        except BaseException as exc:
            # It takes the lifespan scope for a session too: its accept is refused there,
            # and the server serves on without lifespan.
            if scope["type"] == "webtransport":
                ended.set_result(exc)
            raise

    app = await serve_asgi(demo_style)
    async with WebTransportClient(client_config) as client:
        session = await client.connect(app_url(app, "/"))
        await session.close()
    assert isinstance(await asyncio.wait_for(ended, 5), SessionClosedError)


@pytest.mark.timeout(30)
async def test_bare_server_with_adapter(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    echo = EchoApp()
    adapter = ASGIAdapter(echo)
    server = WebTransportServer(server_config, handler=adapter)
    server.on(EventType.SESSION_REQUEST, adapter.on_session_request)
    async with server:
        address = server.local_address
        assert address is not None
        async with WebTransportClient(client_config) as client:
            session = await client.connect(f"https://127.0.0.1:{address[1]}/echo")
            await session.send_datagram(b"bare")
            assert await session.receive_datagram(timeout=5) == b"bare"
            with pytest.raises(HandshakeError) as caught:
                await client.connect(f"https://127.0.0.1:{address[1]}/reject/451")
            assert caught.value.status_code == 451
            await session.close()


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.timeout(120)
async def test_slow_app_backpressure_bounds_memory(
    serve_asgi: Callable[..., Awaitable[ServerApp]], client_config: ClientConfig
) -> None:
    """32 MiB through a slow echo app: server memory stays bounded, the data intact.

    Without the adapter's bound the client would push its data into the
    server's queue as fast as loopback allows while the app takes at least
    512 x 5 ms to consume it: with `queue_size=1_000_000` RSS grows by about
    32 MiB here, with the default 16 by about 5 MiB.
    """
    total = 32 * 1024 * 1024
    chunk = 256 * 1024
    echo = EchoApp(delay=0.005)
    app = await serve_asgi(echo)
    rng = random.Random(1)
    sent_hash = hashlib.sha256()
    received_hash = hashlib.sha256()
    peak = 0
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _rss())
            await asyncio.sleep(0.02)

    async def write(stream: WebTransportStream) -> None:
        for offset in range(0, total, chunk):
            data = rng.randbytes(min(chunk, total - offset))
            sent_hash.update(data)
            await stream.write(data)
        await stream.write(b"", end_stream=True)

    async def read(stream: WebTransportStream) -> int:
        size = 0
        while data := await stream.read(65536):
            received_hash.update(data)
            size += len(data)
        return size

    async with WebTransportClient(client_config) as client:
        session = await client.connect(app_url(app, "/echo"))
        stream = await session.create_bidirectional_stream()
        baseline = _rss()
        sampler = asyncio.create_task(sample())
        try:
            _, size = await asyncio.gather(write(stream), read(stream))
        finally:
            stop.set()
            await sampler
        await session.close()
    assert size == total
    assert received_hash.hexdigest() == sent_hash.hexdigest()
    growth = peak - baseline
    assert growth < 16 * 1024 * 1024, f"RSS grew by {growth / 2**20:.1f} MiB"


@pytest.mark.timeout(30)
async def test_app_misuse_raises_clear_errors(
    serve_asgi: Callable[..., Awaitable[ServerApp]], client_config: ClientConfig
) -> None:
    errors: list[BaseException] = []
    done = asyncio.Event()

    async def misuse(scope: Message, receive: Receive, send: Send) -> None:
        await receive()
        for bad in (
            {"type": "webtransport.datagram.send", "data": b"x"},  # before accepting
            {"type": "webtransport.accept", "subprotocol": "never-offered"},
            {"type": "webtransport.accept", "headers": [(b"x-bad", b" padded")]},
            {"type": "webtransport.close", "status": 200},
        ):
            try:
                await send(bad)
            except (RuntimeError, ValueError) as exc:
                errors.append(exc)
        await send({"type": "webtransport.accept"})
        for bad in (
            {"type": "webtransport.stream.send", "stream": 0, "data": b"x"},  # not opened
            {"type": "webtransport.stream.send", "stream": 1, "data": 3},
            {"type": "webtransport.bogus"},
            {"type": "webtransport.accept"},  # twice
        ):
            try:
                await send(bad)
            except (RuntimeError, ValueError) as exc:
                errors.append(exc)
        await send({"type": "webtransport.stream.send", "stream": 5, "data": b"ok"})
        try:
            await send({"type": "webtransport.stream.send", "stream": 1, "data": b"late"})
        except ValueError as exc:
            errors.append(exc)
        done.set()
        await receive()

    app = await serve_asgi(misuse)
    async with WebTransportClient(client_config) as client:
        session = await client.connect(app_url(app, "/"))
        async with asyncio.timeout(5):
            await done.wait()
        await session.close()
    messages = [str(e) for e in errors]
    assert len(messages) == 9, messages
    assert "before 'webtransport.accept'" in messages[0]
    assert "never-offered" in messages[1]
    assert "invalid response header" in messages[2]
    assert "4xx or 5xx" in messages[3]
    assert "server-initiated" in messages[4]
    assert "'data' must be" in messages[5]
    assert "unknown ASGI message type" in messages[6]
    assert "after the session was accepted" in messages[7]
    assert "must increase" in messages[8]


@pytest.mark.timeout(30)
async def test_stop_sending_before_first_data_reaches_the_writer(
    start_server: Callable[..., Awaitable[WebTransportServer]], client_config: ClientConfig
) -> None:
    """Native API only: what the adapter would need to report this case as stop_sending."""
    outcome: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    async def handler(session: Any) -> None:
        stream = await session.accept_bidirectional_stream(timeout=5)
        await stream.readexactly(2)
        try:
            await stream.write(b"reply")
        except BaseException as exc:
            outcome.set_result(exc)
        else:
            outcome.set_result(None)

    server = await start_server(handler)
    address = server.local_address
    assert address is not None
    async with WebTransportClient(client_config) as client:
        session = await client.connect(f"https://127.0.0.1:{address[1]}/")
        stream = await session.create_bidirectional_stream()
        await stream.stop_receiving(6)  # before any data: STOP_SENDING leads the stream
        await stream.write(b"go")
        error = await asyncio.wait_for(outcome, 5)
    assert isinstance(error, StreamError)
    assert (error.error_code, error.remote) == (6, True)


@pytest.mark.timeout(30)
async def test_app_raising_after_accepting_closes_with_internal_error(
    serve_asgi: Callable[..., Awaitable[ServerApp]],
    client_config: ClientConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def failing(scope: Message, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "webtransport.accept"})
        await receive()  # the first datagram
        raise RuntimeError("crash after accepting")

    app = await serve_asgi(failing)
    async with WebTransportClient(client_config) as client:
        session = await client.connect(app_url(app, "/"))
        await session.send_datagram(b"boom")
        info = await asyncio.wait_for(session.wait_closed(), 5)
    assert info.error_code == ErrorCodes.APP_INTERNAL_ERROR
    assert any("crash after accepting" in str(r.exc_info) for r in caplog.records if r.exc_info)


@pytest.mark.timeout(30)
async def test_app_returning_right_after_accepting_closes_cleanly(
    serve_asgi: Callable[..., Awaitable[ServerApp]], client_config: ClientConfig
) -> None:
    async def brief(scope: Message, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "webtransport.accept"})

    app = await serve_asgi(brief)
    async with WebTransportClient(client_config) as client:
        session = await client.connect(app_url(app, "/"))
        info = await asyncio.wait_for(session.wait_closed(), 5)
    assert (info.error_code, info.remote) == (0, True)


@pytest.mark.timeout(30)
async def test_accepted_session_nobody_serves_is_cleaned_up(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    """A listener without handler: the server never calls serve_session()."""
    echo = EchoApp()
    adapter = ASGIAdapter(echo)
    server = WebTransportServer(server_config)
    server.on(EventType.SESSION_REQUEST, adapter.on_session_request)
    async with server:
        address = server.local_address
        assert address is not None
        async with WebTransportClient(client_config) as client:
            session = await client.connect(f"https://127.0.0.1:{address[1]}/echo")
            await session.send_datagram(b"still served")
            assert await session.receive_datagram(timeout=5) == b"still served"
            await session.close(error_code=3)
            await wait_finished(echo)
    assert echo.disconnects[0]["code"] == 3
    assert not adapter._runners


@pytest.mark.timeout(30)
async def test_accept_with_response_headers(
    serve_asgi: Callable[..., Awaitable[ServerApp]], client_config: ClientConfig
) -> None:
    async def app(scope: Message, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "webtransport.accept", "headers": [(b"x-served-by", b"asgi")]})
        while (await receive())["type"] != "webtransport.disconnect":
            pass

    served = await serve_asgi(app)
    async with WebTransportClient(client_config) as client:
        session = await client.connect(app_url(served, "/"))
        assert session.header("x-served-by") == "asgi"
        await session.close()


class LifespanApp:
    """Sets up state on startup (read by sessions from `scope["state"]`), records the order."""

    def __init__(self, *, fail: str | None = None) -> None:
        self.fail = fail
        self.events: list[str] = []

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    if self.fail is not None:
                        await send({"type": "lifespan.startup.failed", "message": self.fail})
                        return
                    scope["state"]["greeting"] = b"hello from startup"
                    self.events.append("startup")
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.events.append("shutdown")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert scope["type"] == "webtransport"
        self.events.append("session")
        await receive()
        await send({"type": "webtransport.accept"})
        await send({"type": "webtransport.datagram.send", "data": scope["state"]["greeting"]})
        while (await receive())["type"] != "webtransport.disconnect":
            pass
        self.events.append("session ended")


@pytest.mark.timeout(30)
async def test_lifespan_frames_the_server_and_its_state_reaches_sessions(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    asgi_app = LifespanApp()
    app = ServerApp(server_config)
    app.mount_asgi("/", asgi_app)
    await app.listen("127.0.0.1", 0)
    try:
        assert asgi_app.events == ["startup"]  # before the server listened
        async with WebTransportClient(client_config) as client:
            session = await client.connect(app_url(app, "/x"))
            assert await asyncio.wait_for(session.receive_datagram(), 5) == b"hello from startup"
            await app.shutdown()
            await asyncio.wait_for(session.wait_closed(), 5)
    finally:
        await app.shutdown()
    assert asgi_app.events == ["startup", "session", "session ended", "shutdown"]


@pytest.mark.timeout(30)
async def test_failed_lifespan_startup_stops_the_server_with_the_apps_message(
    server_config: ServerConfig,
) -> None:
    app = ServerApp(server_config)
    app.mount_asgi("/", LifespanApp(fail="database unreachable"))
    with pytest.raises(ServerError, match="startup failed: database unreachable"):
        await app.listen("127.0.0.1", 0)
    assert not app.server.is_serving
