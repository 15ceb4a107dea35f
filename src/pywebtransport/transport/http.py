"""`HttpRequest`: a plain HTTP/3 request on a WebTransport server's port, and its response.

A server normally answers every HTTP/3 request that is not a WebTransport
CONNECT with 404. Given a handler (`WebTransportServer.set_http_handler`, or
an ASGI app through `ServerApp.mount_asgi`), it hands each such request to
it instead, so one port serves a page and its WebTransport endpoint, as an
HTTP/3 ASGI server does.

The request body streams in (`read`), bounded by the stream's receive
window: a handler that does not read stops the client through QUIC flow
control. The response streams out (`respond`, then `write`), each `write`
waiting while more than `max_stream_write_buffer_size` bytes are
unacknowledged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..shared.constants import ErrorCodes
from ..shared.exceptions import StreamError
from ..shared.types import Address, Buffer
from . import _aioquic
from ._core.records import ExchangeRecord
from .stream import wait_acknowledged

if TYPE_CHECKING:
    from ._engine import ConnectionEngine

__all__ = ["HttpRequest"]


class HttpRequest:
    """A plain HTTP/3 request (not WebTransport) and its response.

    Attributes:
        method: The request method (`GET`, `POST`, ...).
        scheme: `:scheme` (`https`).
        authority: `:authority`, or the `host` header; may be empty.
        path: The request target, query included (`/page?x=1`).
        headers: The regular headers as sent (lower-case names, no pseudo-headers).
        remote_address: The client's address when the request arrived.
        local_address: The server socket's address.
    """

    __slots__ = (
        "_engine",
        "_exchange",
        "authority",
        "headers",
        "local_address",
        "method",
        "path",
        "remote_address",
        "scheme",
    )

    def __init__(self, engine: ConnectionEngine, exchange: ExchangeRecord) -> None:
        self._engine = engine
        self._exchange = exchange
        request = exchange.request
        self.method = request.method
        self.scheme = request.scheme
        self.authority = request.authority
        self.path = request.path
        self.headers = list(request.headers)
        addr = _aioquic.peer_address(engine.quic)
        self.remote_address: Address | None = (str(addr[0]), int(addr[1])) if addr else None
        sockname = engine.transport.get_extra_info("sockname") if engine.transport else None
        self.local_address: Address | None = (
            (str(sockname[0]), int(sockname[1])) if sockname else None
        )

    def __repr__(self) -> str:
        return f"<HttpRequest {self.method} {self.path!r} stream={self._exchange.stream_id}>"

    @property
    def stream_id(self) -> int:
        """The QUIC stream the request came on."""
        return self._exchange.stream_id

    @property
    def body_complete(self) -> bool:
        """Whether the client finished the request body and `read` returned all of it."""
        exchange = self._exchange
        return exchange.body_ended and not exchange.chunks

    @property
    def response_started(self) -> bool:
        """Whether `respond` was called."""
        return self._exchange.response_started

    @property
    def response_complete(self) -> bool:
        """Whether the response ended (or was aborted)."""
        return self._exchange.response_ended

    @property
    def error(self) -> StreamError | None:
        """Why the exchange ended early (client reset or stop, connection closed), or None."""
        return self._exchange.error

    async def read(self) -> bytes:
        """Return the next part of the request body, waiting for it to arrive.

        Returns:
            The bytes that arrived since the last call; b"" once the body is complete.

        Raises:
            StreamError: The client reset the request, or the connection closed.
        """
        exchange = self._exchange
        engine = self._engine
        while not exchange.chunks and not exchange.body_ended and exchange.error is None:
            exchange.reader = waiter = engine.loop.create_future()
            await waiter
        data = engine.core.read_body(exchange)
        engine.after_command(defer=True)
        return data

    async def wait_closed(self) -> None:
        """Wait until the exchange is over: the response complete, or the exchange failed."""
        exchange = self._exchange
        engine = self._engine
        while not exchange.response_ended and exchange.error is None:
            exchange.reader = waiter = engine.loop.create_future()
            await waiter

    def respond(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]] | None = None,
        *,
        end: bool = False,
    ) -> None:
        """Send the response's status and headers.

        Args:
            status: The HTTP status, 200-599.
            headers: Header names and values; names are sent in lower case.
            end: True when the response has no body.

        Raises:
            ValueError: The status is not 200-599 or a header is not valid in HTTP/3.
            StreamError: The response was already started, or the exchange failed.
        """
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
            raise ValueError(f"HTTP status must be an integer 200-599, not {status!r}")
        fields: list[tuple[bytes, bytes]] = []
        for name, value in headers or ():
            name = bytes(name).lower()
            if not name or name.startswith(b":") or any(c in name for c in b" \r\n\0:"):
                raise ValueError(f"invalid header name {name!r}")
            if any(c in bytes(value) for c in b"\r\n\0"):
                raise ValueError(f"header {name!r} value has forbidden characters")
            if name in _CONNECTION_SPECIFIC:
                continue  # RFC 9114 section 4.2: not allowed in HTTP/3; ASGI apps send them
            fields.append((name, bytes(value)))
        self._engine.core.respond(self._exchange, status, fields, end=end)
        self._engine.after_command(defer=not end)

    async def write(self, data: Buffer, *, end: bool = False) -> None:
        """Send part of the response body, waiting while the send buffer is full.

        Args:
            data: The bytes.
            end: True for the last part (ends the response).

        Raises:
            StreamError: The response is not started or is complete, or the
                client reset or stopped the stream.
            TimeoutError: The client accepted no data within `write_timeout`.
        """
        engine = self._engine
        exchange = self._exchange
        config = engine.config
        engine.core.send_body(exchange, bytes(data), end=end)
        engine.after_command()
        if not end and engine.send_buffered(exchange) > config.max_stream_write_buffer_size:
            await wait_acknowledged(
                engine,
                exchange,
                config.max_stream_write_buffer_size // 2,
                config.write_timeout,
            )

    def abort(self, error_code: int = ErrorCodes.H3_INTERNAL_ERROR) -> None:
        """Reset the exchange (a handler failed after starting its response).

        Args:
            error_code: The HTTP/3 error code sent in RESET_STREAM and STOP_SENDING.
        """
        self._engine.core.abort_exchange(self._exchange, error_code)
        self._engine.after_command()


_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
