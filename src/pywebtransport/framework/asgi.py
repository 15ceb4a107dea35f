"""Run an ASGI application for WebTransport sessions (the `webtransport` scope).

The message format is that of aioquic's HTTP/3 server example (which the
WebTransport support proposed for hypercorn follows), plus the additions
marked *(ext)* below. Per requested session the app is called once
with a scope, a `receive` and a `send`:

Scope: `type` (`"webtransport"`), `asgi`, `http_version` (`"3"`), `scheme`
(`"https"`), `method` (`"CONNECT"`), `path` (percent-decoded, no query),
`raw_path`, `query_string`, `root_path`, `headers` (lower-case byte pairs,
`:authority` as `host`, no other pseudo-headers), `client`, `server`, and
*(ext)* `subprotocols` (the `wt-available-protocols` the client offered).

`receive()` returns, in order:

- `{"type": "webtransport.connect"}` first;
- after the app accepted: `{"type": "webtransport.datagram.receive", "data"}`,
  `{"type": "webtransport.stream.receive", "stream", "data", "end_stream"}`
  (*ext*: `end_stream`) and *(ext)* `{"type": "webtransport.stream.reset", "stream", "code"}` (the
  client reset a stream it was sending on) and
  `{"type": "webtransport.stream.stop_sending", "stream", "code"}` (the
  client asked us to stop sending; found on the next send to that stream);
- *(ext)* once the session ended and everything queued was delivered,
  `{"type": "webtransport.disconnect", "code", "reason"}` (the code and
  reason of the close; after a refusal, the HTTP status and `"rejected"`).
  A `receive()` after that raises `SessionClosedError`, which ends an app
  that ignores the disconnect (as the aioquic example's echo app does).

`send()` takes:

- `{"type": "webtransport.accept"}`, *(ext)* with `"subprotocol"` (one the
  client offered);
- `{"type": "webtransport.close"}`: before accepting, refuse with *(ext)*
  `"status"` (default 403); after, close the session with *(ext)* `"code"`
  (default 0) and `"reason"`;
- `{"type": "webtransport.datagram.send", "data"}`;
- `{"type": "webtransport.stream.send", "stream", "data", "end_stream"}`
  (*ext*: `end_stream`, and that a
  stream id the app has not used yet opens a new server stream, bidirectional
  or unidirectional as bit 0x2 of the id says (QUIC's numbering: server ids
  are odd, 1, 5, 9, ... bidirectional and 3, 7, 11, ... unidirectional, used
  in increasing order). Replies to that stream come back under the app's id);
- *(ext)* `{"type": "webtransport.stream.reset", "stream", "code"}` and
  `{"type": "webtransport.stream.stop_sending", "stream", "code"}`.

Plain HTTP/3 requests on the same port (not WebTransport) get the `http`
scope, as from any HTTP/3 ASGI server (`ASGIAdapter.serve_http`): `type`
`"http"`, `http_version` `"3"`, `method`, `scheme`, `path`, `raw_path`,
`query_string`, `root_path`, `headers` (`:authority` as `host`), `client`,
`server`, `state`; `http.request` messages carry the body as it streams in
(flow-controlled), `http.response.start` / `http.response.body` stream the
response out, and `http.disconnect` follows the response or a client that
gave up. Response trailers are not sent.

The app's `lifespan` scope runs as ASGI servers run it (`Lifespan`):
`ServerApp.mount_asgi()` starts it before the server listens and ends it
after the last session closed; `scope["state"]` is copied into every
session's scope.

Backpressure holds across the adapter: each session has a bounded queue of
received messages (`queue_size`), and while it is full the adapter stops
reading streams, so QUIC flow control stops the client, not this process's
memory. Datagrams wait in the session's own bounded queue
(`max_pending_datagrams`, oldest dropped). `send()` of stream data returns
once the stream's `write()` does, which waits on flow control.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from collections.abc import Awaitable
from typing import Any
from urllib.parse import unquote

from ..shared.constants import ErrorCodes
from ..shared.events import Event
from ..shared.exceptions import (
    ServerError,
    SessionClosedError,
    StreamError,
    TimeoutError,
)
from ..shared.types import SessionState
from ..transport.http import HttpRequest
from ..transport.session import WebTransportSession, ended_by_peer
from ..transport.stream import (
    WebTransportReceiveStream,
    WebTransportSendStream,
    WebTransportStream,
)
from ._asgi_base import ASGI_VERSION as _ASGI_VERSION
from ._asgi_base import ASGIApp, Lifespan
from ._asgi_base import Message as _Message
from ._asgi_base import message_field as _field

__all__ = ["ASGIAdapter", "ASGIApp", "Lifespan"]

logger = logging.getLogger("pywebtransport.framework.asgi")

_MAX_CODE = 2**32 - 1
_REFUSED_BY_DEFAULT = 403
# Seconds an app gets to handle webtransport.disconnect when the server shuts down.
_DISCONNECT_GRACE = 1.0


# --------------------------------------------------------------------------- pure helpers


def build_scope(session: WebTransportSession, *, root_path: str = "") -> dict[str, Any]:
    """Build the `webtransport` ASGI scope of a requested session.

    Args:
        session: The requested session (server side).
        root_path: The mount point, passed to the app as `root_path`.

    Returns:
        The scope.
    """
    connection = session.connection
    return scope_from_request(
        session.headers,
        client=session.remote_address,
        server=connection.local_address,
        subprotocols=session.wt_available_protocols or [],
        root_path=root_path,
    )


def scope_from_request(
    request_headers: list[tuple[bytes, bytes]],
    *,
    client: tuple[str, int] | None,
    server: tuple[str, int] | None,
    subprotocols: list[str],
    root_path: str = "",
) -> dict[str, Any]:
    """Build a `webtransport` scope from a CONNECT request's header list.

    Args:
        request_headers: The request's headers, pseudo-headers included.
        client: The client's address.
        server: The local address the request came to.
        subprotocols: The subprotocols the client offered.
        root_path: The mount point.

    Returns:
        The scope.
    """
    target = b"/"
    headers: list[tuple[bytes, bytes]] = []
    for name, value in request_headers:
        if name == b":path":
            target = value
        elif name == b":authority":
            headers.append((b"host", value))
        elif not name.startswith(b":"):
            headers.append((name, value))
    scope = _request_scope(
        "webtransport",
        method="CONNECT",
        scheme="https",
        target=target,
        headers=headers,
        client=client,
        server=server,
        root_path=root_path,
    )
    scope["subprotocols"] = list(subprotocols)
    return scope


def http_scope(request: HttpRequest, *, root_path: str = "") -> dict[str, Any]:
    """Build the `http` ASGI scope of a plain HTTP/3 request.

    Args:
        request: The request.
        root_path: The mount point.

    Returns:
        The scope (`:authority` becomes a `host` header when the request has none).
    """
    headers = list(request.headers)
    if request.authority and not any(name == b"host" for name, _ in headers):
        headers.insert(0, (b"host", request.authority.encode()))
    return _request_scope(
        "http",
        method=request.method,
        scheme=request.scheme,
        target=request.path.encode(),
        headers=headers,
        client=request.remote_address,
        server=request.local_address,
        root_path=root_path,
    )


def _request_scope(
    kind: str,
    *,
    method: str,
    scheme: str,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    client: tuple[str, int] | None,
    server: tuple[str, int] | None,
    root_path: str,
) -> dict[str, Any]:
    raw_path, _, query_string = target.partition(b"?")
    return {
        "type": kind,
        "asgi": dict(_ASGI_VERSION),
        "http_version": "3",
        "scheme": scheme,
        "method": method,
        "path": unquote(raw_path.decode("utf-8", "replace")),
        "raw_path": raw_path,
        "query_string": query_string,
        "root_path": root_path,
        "headers": headers,
        "client": client,
        "server": server,
    }


def _data(message: _Message, *, required: bool) -> bytes:
    value = _field(message, "data", (bytes, bytearray, memoryview, str), ... if required else b"")
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _code(message: _Message, key: str = "code") -> int:
    code: int = _field(message, key, int, 0)
    if not 0 <= code <= _MAX_CODE:
        raise ValueError(f"ASGI message {message.get('type')!r}: {key!r} must be in 0..2**32-1")
    return code


def _stream_id(message: _Message) -> int:
    stream_id: int = _field(message, "stream", int)
    if stream_id < 0:
        raise ValueError(f"ASGI message {message.get('type')!r}: 'stream' must be >= 0")
    return stream_id


def _status(message: _Message) -> int:
    status: int = _field(message, "status", int, _REFUSED_BY_DEFAULT)
    if not 400 <= status <= 599:
        raise ValueError(f"webtransport.close: 'status' must be a 4xx or 5xx code, got {status}")
    return status


# --------------------------------------------------------------------------- per-session state


class _Inbox:
    """The bounded queue of messages for one session's app.

    `put` waits while `limit` messages are queued, which is what stops the
    stream readers (and so QUIC credit) while the app is slow. `push` ignores
    the bound: it is for messages the app's own sends cause (at most one per
    stream), which must not wait on the app.
    """

    def __init__(self, limit: int) -> None:
        self._items: deque[_Message] = deque()
        self._limit = limit
        self._getter: asyncio.Future[None] | None = None
        self._putters: deque[asyncio.Future[None]] = deque()
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    def push(self, message: _Message) -> None:
        if not self.closed:
            self._items.append(message)
            self._wake_getter()

    async def put(self, message: _Message) -> None:
        while len(self._items) >= self._limit and not self.closed:
            waiter = asyncio.get_running_loop().create_future()
            self._putters.append(waiter)  # once cancelled (done), get() skips it
            await waiter
        if not self.closed:  # nobody will read it once the session is over
            self._items.append(message)
            self._wake_getter()

    async def get(self) -> _Message | None:
        """Return the next message, or None once closed and empty."""
        while not self._items:
            if self.closed:
                return None
            if self._getter is not None:
                raise RuntimeError("receive() is already being awaited for this session")
            waiter = asyncio.get_running_loop().create_future()
            self._getter = waiter
            try:
                await waiter
            finally:
                self._getter = None
        message = self._items.popleft()
        while self._putters:
            putter = self._putters.popleft()
            if not putter.done():
                putter.set_result(None)
                break
        return message

    def close(self) -> None:
        self.closed = True
        self._wake_getter()
        while self._putters:
            putter = self._putters.popleft()
            if not putter.done():
                putter.set_result(None)

    def _wake_getter(self) -> None:
        if self._getter is not None and not self._getter.done():
            self._getter.set_result(None)


class _StreamEntry:
    """One stream the app knows, under the id the app uses for it."""

    __slots__ = ("reader", "receive", "send", "stop_reported")

    def __init__(
        self,
        receive: WebTransportReceiveStream | None,
        send: WebTransportSendStream | None,
    ) -> None:
        self.receive = receive
        self.send = send
        self.reader: asyncio.Task[None] | None = None
        self.stop_reported = False


class _SessionRunner:
    """Runs the ASGI app of one session and translates between the two sides."""

    def __init__(self, adapter: ASGIAdapter, session: WebTransportSession) -> None:
        self.adapter = adapter
        self.session = session
        self.inbox = _Inbox(adapter.queue_size)
        self.decided: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None
        self.connect_delivered = False
        self.disconnect_delivered = False
        self.streams: dict[int, _StreamEntry] = {}
        # Highest server stream id the app opened, per kind (bidi, uni): ids are used in order.
        self.last_server_id = {False: -1, True: -1}
        self.open_lock = asyncio.Lock()
        self.helpers: set[asyncio.Task[None]] = set()
        # True while open_session() or serve_session() awaits the app's task.
        self.awaited = True
        session.closed.add_done_callback(self._on_session_closed)

    def _on_session_closed(self, _: object) -> None:
        self.inbox.close()
        if not self.decided.done():
            self.decided.set_result(False)

    # -- the app's side ------------------------------------------------------------

    async def run_app(self) -> None:
        scope = build_scope(self.session, root_path=self.adapter.root_path)
        scope["state"] = dict(self.adapter.lifespan.state)
        await self.adapter.app(scope, self.receive, self.send)

    async def receive(self) -> _Message:
        if not self.connect_delivered:
            self.connect_delivered = True
            return {"type": "webtransport.connect"}
        message = await self.inbox.get()
        if message is not None:
            return message
        if self.disconnect_delivered:
            raise SessionClosedError(
                f"session {self.session.session_id} is closed: receive() after "
                "webtransport.disconnect",
                session_id=self.session.session_id,
            )
        self.disconnect_delivered = True
        info = self.session.close_info
        return {
            "type": "webtransport.disconnect",
            "code": info.error_code if info is not None else 0,
            "reason": info.reason if info is not None else "",
        }

    async def send(self, message: _Message) -> None:
        kind = message.get("type")
        if kind == "webtransport.close":
            await self._close(message)
            return
        if self.session.is_closed:
            info = self.session.close_info
            raise SessionClosedError(
                f"session {self.session.session_id} is closed; cannot send {kind!r}",
                session_id=self.session.session_id,
                error_code=info.error_code if info else None,
                reason=info.reason if info else "",
            )
        if kind == "webtransport.accept":
            await self._accept(message)
            return
        if kind not in _AFTER_ACCEPT:
            raise ValueError(f"unknown ASGI message type {kind!r} for a webtransport scope")
        if not self.decided.done() or not self.decided.result():
            raise RuntimeError(f"{kind!r} before 'webtransport.accept'")
        if kind == "webtransport.datagram.send":
            await self.session.send_datagram(_data(message, required=True))
        elif kind == "webtransport.stream.send":
            await self._stream_send(message)
        elif kind == "webtransport.stream.reset":
            entry = self._known(_stream_id(message), sending=True)
            assert entry.send is not None
            await entry.send.reset(_code(message))
        else:  # webtransport.stream.stop_sending
            entry = self._known(_stream_id(message), sending=False)
            assert entry.receive is not None
            await entry.receive.stop_receiving(_code(message))

    async def _accept(self, message: _Message) -> None:
        if self.decided.done():
            raise RuntimeError("'webtransport.accept' after the session was accepted or refused")
        subprotocol = _field(message, "subprotocol", (str, type(None)), None)
        headers = _field(message, "headers", (list, tuple, type(None)), None)
        session = self.session
        if subprotocol is not None:
            try:
                session.wt_protocol = subprotocol  # the core refuses one the client did not offer
            except ValueError as exc:
                raise ValueError(f"webtransport.accept: {exc}") from exc
        try:
            await session.accept(headers=[(bytes(n), bytes(v)) for n, v in headers or ()])
        except ValueError as exc:
            raise ValueError(f"webtransport.accept: {exc}") from exc
        self.decided.set_result(True)
        self._spawn(self._accept_streams())
        self._spawn(self._read_datagrams())

    async def _close(self, message: _Message) -> None:
        if not self.decided.done():
            status = _status(message)
            self.decided.set_result(False)
            await self.session.reject(status_code=status)
            return
        reason = _field(message, "reason", (str, type(None)), "") or ""
        await self.session.close(error_code=_code(message), reason=reason)

    def _known(self, stream_id: int, *, sending: bool) -> _StreamEntry:
        entry = self.streams.get(stream_id)
        if entry is None:
            raise ValueError(f"stream {stream_id} is unknown or already closed")
        if (entry.send if sending else entry.receive) is None:
            raise ValueError(
                f"stream {stream_id} is {'receive' if sending else 'send'}-only "
                "(a unidirectional stream)"
            )
        return entry

    async def _stream_send(self, message: _Message) -> None:
        stream_id = _stream_id(message)
        data = _data(message, required=False)
        end_stream = _field(message, "end_stream", bool, False)
        entry = self.streams.get(stream_id)
        if entry is None:
            entry = await self._open_stream(stream_id)
        if entry.send is None:
            raise ValueError(
                f"stream {stream_id} is receive-only (a unidirectional stream the client opened)"
            )
        stream = entry.send
        try:
            await stream.write(data, end_stream=end_stream)
        except StreamError as exc:
            if self.session.is_closed:
                raise SessionClosedError(
                    f"session {self.session.session_id} closed while writing stream {stream_id}",
                    session_id=self.session.session_id,
                ) from exc
            if exc.remote is not True:
                raise
            # The client sent STOP_SENDING: its data is discarded, the app told once.
            if not entry.stop_reported:
                entry.stop_reported = True
                self.inbox.push(
                    {
                        "type": "webtransport.stream.stop_sending",
                        "stream": stream_id,
                        "code": exc.error_code or 0,
                    }
                )
        self._maybe_forget(stream_id, entry)

    async def _open_stream(self, stream_id: int) -> _StreamEntry:
        if not stream_id & 0x1:
            raise ValueError(
                f"stream {stream_id} is unknown: ids the client did not open must be "
                "server-initiated (odd: 1, 5, 9, ... bidirectional, 3, 7, 11, ... "
                "unidirectional)"
            )
        unidirectional = bool(stream_id & 0x2)
        async with self.open_lock:
            entry = self.streams.get(stream_id)
            if entry is not None:
                return entry
            if stream_id <= self.last_server_id[unidirectional]:
                raise ValueError(
                    f"stream {stream_id} is already closed (new server stream ids must "
                    f"increase; the last one was {self.last_server_id[unidirectional]})"
                )
            if unidirectional:
                entry = _StreamEntry(None, await self.session.create_unidirectional_stream())
            else:
                stream = await self.session.create_bidirectional_stream()
                entry = _StreamEntry(stream, stream)
                entry.reader = self._spawn(self._read_stream(stream_id, entry))
            # Only once opened: after a TimeoutError (no stream credit) the app may retry the id.
            self.last_server_id[unidirectional] = stream_id
            self.streams[stream_id] = entry
            return entry

    def _maybe_forget(self, stream_id: int, entry: _StreamEntry) -> None:
        receive_done = entry.receive is None or not entry.receive.can_read
        send_done = entry.send is None or not entry.send.can_write
        if receive_done and send_done and (entry.reader is None or entry.reader.done()):
            self.streams.pop(stream_id, None)

    # -- the session's side ------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.helpers.add(task)
        task.add_done_callback(self._helper_done)
        return task

    def _helper_done(self, task: asyncio.Task[None]) -> None:
        self.helpers.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("ASGI session reader for %r failed", self.session.path, exc_info=exc)

    async def _accept_streams(self) -> None:
        async for stream in self.session.incoming_streams():
            send = stream if isinstance(stream, WebTransportStream) else None
            entry = _StreamEntry(stream, send)
            self.streams[stream.stream_id] = entry
            entry.reader = self._spawn(self._read_stream(stream.stream_id, entry))

    async def _read_stream(self, stream_id: int, entry: _StreamEntry) -> None:
        stream = entry.receive
        assert stream is not None
        size = self.adapter.read_size
        inbox = self.inbox
        try:
            while True:
                try:
                    data = await stream.read(size)
                except TimeoutError:
                    continue  # `read_timeout` is for handlers; idling is the app's business
                except StreamError as exc:
                    if exc.remote is True and not self.session.is_closed:
                        await inbox.put(
                            {
                                "type": "webtransport.stream.reset",
                                "stream": stream_id,
                                "code": exc.error_code or 0,
                            }
                        )
                    return
                end_stream = not stream.can_read
                await inbox.put(
                    {
                        "type": "webtransport.stream.receive",
                        "stream": stream_id,
                        "data": data,
                        "end_stream": end_stream,
                    }
                )
                if end_stream:
                    return
        finally:
            entry.reader = None
            self._maybe_forget(stream_id, entry)

    async def _read_datagrams(self) -> None:
        async for data in self.session.incoming_datagrams():
            await self.inbox.put({"type": "webtransport.datagram.receive", "data": data})

    async def stop(self) -> None:
        """Cancel the readers (the session is over or the app returned)."""
        helpers = list(self.helpers)
        for task in helpers:
            task.cancel()
        if helpers:
            await asyncio.gather(*helpers, return_exceptions=True)
        self.inbox.close()

    def stop_nowait(self) -> None:
        """Cancel the readers without waiting for them."""
        for task in list(self.helpers):
            task.cancel()
        self.inbox.close()

    async def cancel_app(self) -> None:
        task = self.task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.stop()


_AFTER_ACCEPT = frozenset(
    {
        "webtransport.datagram.send",
        "webtransport.stream.send",
        "webtransport.stream.reset",
        "webtransport.stream.stop_sending",
    }
)


# --------------------------------------------------------------------------- the adapter


class _HttpRunner:
    """Translates between one plain HTTP/3 request and the app's `http` messages."""

    def __init__(self, request: HttpRequest) -> None:
        self.request = request
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.trailers = False
        self.body_delivered = False
        """The last `http.request` (`more_body` False) was received."""

    async def receive(self) -> _Message:
        request = self.request
        if not self.body_delivered and request.error is None:
            try:
                body = await request.read()
            except StreamError:
                return {"type": "http.disconnect"}
            self.body_delivered = request.body_complete
            return {"type": "http.request", "body": body, "more_body": not self.body_delivered}
        await request.wait_closed()
        return {"type": "http.disconnect"}

    async def send(self, message: _Message) -> None:
        request = self.request
        kind = message.get("type")
        if request.error is not None:
            return  # the client left: sends are dropped, as ASGI servers do
        if request.response_complete:
            raise RuntimeError(f"ASGI message {kind!r} after the response completed")
        if kind == "http.response.start":
            if self.status:
                raise RuntimeError("ASGI message 'http.response.start' sent twice")
            status = _field(message, "status", int)
            self.headers = [
                (bytes(name), bytes(value)) for name, value in message.get("headers", ())
            ]
            self.trailers = bool(message.get("trailers", False))
            self.status = status
            if not 200 <= status <= 599:
                raise ValueError(f"ASGI http.response.start: status {status} is not 200-599")
        elif kind == "http.response.body":
            if not self.status:
                raise RuntimeError("ASGI message 'http.response.body' before 'http.response.start'")
            body = bytes(_field(message, "body", (bytes, bytearray, memoryview), b""))
            end = not message.get("more_body", False) and not self.trailers
            if not request.response_started:
                request.respond(self.status, self.headers, end=end and not body)
                if end and not body:
                    return
            await request.write(body, end=end)
        elif kind == "http.response.trailers":
            # Trailers are not sent (no HTTP/3 trailers support here); the last ends the body.
            if not message.get("more_trailers", False):
                if not request.response_started:
                    request.respond(self.status, self.headers, end=True)
                else:
                    await request.write(b"", end=True)
        else:
            raise ValueError(f"unknown ASGI message type {kind!r} in an http scope")


class ASGIAdapter:
    """Serves WebTransport sessions with an ASGI application.

    The app decides on each requested session itself (`webtransport.accept`
    or `webtransport.close`), so the adapter works in two steps:
    `open_session()` runs the app until it decided, and `serve_session()`
    (or calling the adapter) waits for the rest. `ServerApp.mount_asgi()`
    wires both; on a bare `WebTransportServer`:

    ```python
    adapter = ASGIAdapter(asgi_app)
    server = WebTransportServer(config, handler=adapter)
    server.on(EventType.SESSION_REQUEST, adapter.on_session_request)
    ```

    When the app returns before deciding the session is refused with 403;
    when it raises before deciding, the error is logged and the session is
    refused with 500. After accepting, the app's return closes the session
    cleanly and an exception propagates from `serve_session()` (the server
    logs it and closes the session with `APP_INTERNAL_ERROR`), except the
    `SessionClosedError` that `receive()`/`send()` raise once the session is
    over, which ends the app quietly.

    Args:
        app: The ASGI application.
        root_path: Passed to the app as `scope["root_path"]` (the mount point).
        queue_size: Received messages queued per session before the adapter
            stops reading streams (and so the client's flow control stops
            it) until the app catches up.
        read_size: Largest `data` of one `webtransport.stream.receive`.

    Raises:
        ValueError: `queue_size` or `read_size` is not positive.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        root_path: str = "",
        queue_size: int = 16,
        read_size: int = 65536,
    ) -> None:
        if not callable(app):
            raise TypeError(f"the ASGI app must be callable, got {type(app).__name__}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size!r}")
        if read_size < 1:
            raise ValueError(f"read_size must be >= 1, got {read_size!r}")
        self.app = app
        self.root_path = root_path
        self.queue_size = queue_size
        self.read_size = read_size
        self.lifespan = Lifespan(app)
        self._runners: dict[WebTransportSession, _SessionRunner] = {}
        # Accepted sessions whose app ended before serve_session() was called:
        # whether it failed.
        self._ended: weakref.WeakKeyDictionary[WebTransportSession, bool] = (
            weakref.WeakKeyDictionary()
        )

    async def startup(self) -> None:
        """Run the app's lifespan startup (`ServerApp.mount_asgi` does it on app startup).

        Raises:
            ServerError: The app reported `lifespan.startup.failed`.
        """
        await self.lifespan.startup()

    async def shutdown(self) -> None:
        """Run the app's lifespan shutdown (`ServerApp.mount_asgi` does it on app shutdown)."""
        await self.lifespan.shutdown()

    async def open_session(self, session: WebTransportSession) -> bool:
        """Start the app for a requested session and wait until it accepted or refused.

        Args:
            session: A session in the `connecting` state (server side).

        Returns:
            True when the app accepted the session (then call
            `serve_session()`); False when it refused, ended before deciding,
            or the client went away first (then the app has returned).

        Raises:
            ServerError: The session is not a requested one, or is already open.
        """
        if session.state is not SessionState.CONNECTING:
            raise ServerError(
                f"session {session.session_id} is {session.state.value}: an ASGI app "
                "decides on requested sessions only (call open_session() from a "
                "SESSION_REQUEST listener)"
            )
        if session in self._runners:
            raise ServerError(f"session {session.session_id} is already open")
        runner = _SessionRunner(self, session)
        self._runners[session] = runner
        task = runner.task = asyncio.get_running_loop().create_task(
            runner.run_app(), name=f"asgi-webtransport-{session.session_id}"
        )
        task.add_done_callback(lambda _: self._app_done(runner))
        try:
            either: set[asyncio.Future[Any]] = {runner.decided, task}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if runner.decided.done() and runner.decided.result():
                runner.awaited = False
                if task.done():
                    self._app_done(runner)
                return True
            await self._finish_refused(runner)
            return False
        except BaseException:
            await runner.cancel_app()
            self._runners.pop(session, None)
            raise

    def _app_done(self, runner: _SessionRunner) -> None:
        # An accepted session whose app ended while nobody awaited it (the
        # session closed before the server called serve_session(), or it has
        # not called it yet): clean up here and tell serve_session() how it went.
        if runner.awaited or self._runners.get(runner.session) is not runner:
            return
        session = runner.session
        del self._runners[session]
        runner.stop_nowait()
        task = runner.task
        assert task is not None
        exc = None if task.cancelled() else task.exception()
        failed = exc is not None and not (
            ended_by_peer(session, exc)
            or (isinstance(exc, SessionClosedError) and session.is_closed)
        )
        if failed:
            logger.error("ASGI app for %r failed", session.path, exc_info=exc)
        self._ended[session] = failed

    async def on_session_request(self, event: Event) -> None:
        """A `SESSION_REQUEST` listener: `open_session()` for the event's session.

        Sessions another listener already accepted or refused are left alone.

        Args:
            event: The server's `SESSION_REQUEST` event.
        """
        session: WebTransportSession = event.data["session"]
        if session.state is SessionState.CONNECTING:
            await self.open_session(session)

    async def _finish_refused(self, runner: _SessionRunner) -> None:
        session = runner.session
        task = runner.task
        assert task is not None
        try:
            await asyncio.shield(task)
        except Exception as exc:
            if not (
                ended_by_peer(session, exc)
                or (isinstance(exc, SessionClosedError) and session.is_closed)
            ):
                logger.exception("ASGI app for %r failed", session.path)
            await session.reject(status_code=500)  # a no-op once decided or closed
        await session.reject(status_code=_REFUSED_BY_DEFAULT)  # returned without deciding
        await runner.stop()
        self._runners.pop(session, None)

    async def serve_session(self, session: WebTransportSession) -> None:
        """Wait until the app of an accepted session returns, then close the session.

        Args:
            session: A session `open_session()` returned True for.

        Raises:
            ServerError: `open_session()` did not accept this session.
            Exception: Whatever the app raised (not `SessionClosedError`
                once the session is over).
        """
        runner = self._runners.get(session)
        if runner is None or runner.task is None:
            failed = self._ended.pop(session, None)
            if failed is None:
                raise ServerError(
                    f"session {session.session_id} was not opened by this adapter: "
                    "call open_session() first (ServerApp.mount_asgi() does)"
                )
            if failed:
                await session.close(ErrorCodes.APP_INTERNAL_ERROR, "internal server error")
            else:
                await session.close()
            return
        runner.awaited = True
        try:
            await asyncio.shield(runner.task)
        except SessionClosedError:
            if not session.is_closed:
                raise
        except asyncio.CancelledError:
            # Server shutdown: it closed the session first, so the app has its
            # webtransport.disconnect queued; let it see that before cancelling.
            if session.is_closed:
                await asyncio.wait({runner.task}, timeout=_DISCONNECT_GRACE)
            await runner.cancel_app()
            raise
        finally:
            await runner.stop()
            self._runners.pop(session, None)
        await session.close()

    async def serve_http(self, request: HttpRequest) -> None:
        """Run the app's `http` scope for a plain HTTP/3 request (not WebTransport).

        As an HTTP/3 ASGI server does: the request body arrives as
        `http.request` messages (`more_body` until the last), the response
        leaves as `http.response.start` and `http.response.body` messages,
        streamed, each `send` of body waiting while the client is slow. After
        the response, `receive()` returns `http.disconnect`. Response trailers
        are not sent. A bare server wires it with
        `server.set_http_handler(adapter.serve_http)`.

        Args:
            request: The request.
        """
        scope = http_scope(request, root_path=self.root_path)
        scope["state"] = dict(self.lifespan.state)
        runner = _HttpRunner(request)
        await self.app(scope, runner.receive, runner.send)

    async def __call__(self, session: WebTransportSession) -> None:
        """Same as `serve_session()`, so the adapter is a session handler.

        Args:
            session: A session `open_session()` accepted.
        """
        await self.serve_session(session)
