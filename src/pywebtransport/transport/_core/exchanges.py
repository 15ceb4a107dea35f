"""Plain HTTP/3 requests on the same connection (server side): request in, response out.

A server that answers requests other than WebTransport CONNECTs (an ASGI
app's `http` scope) sets `serve_http`. A request that `parse_plain_request`
accepts then becomes an `ExchangeRecord`, announced by `HttpRequestReceived`;
its body collects in the record, and `ExchangeUpdated` says when more arrived,
when it ended, or when the exchange failed. The response goes out with
`respond` and `send_body`.

The request body is bounded like a WebTransport stream's data: the request
stream's receive window follows the reader (`read_body`), so a handler that
does not read stops the client through QUIC flow control. Without that
window management (an aioquic release or a switch that lacks it) aioquic
keeps granting credit, as it does for every stream then.
"""

from __future__ import annotations

from ...shared.constants import ErrorCodes
from ...shared.exceptions import StreamError
from .events import ExchangeUpdated, HttpRequestReceived
from .headers import PlainRequest
from .records import ExchangeRecord, fresh
from .sessions import SessionLayer

__all__ = ["ExchangeLayer"]


class ExchangeLayer(SessionLayer):
    """Plain HTTP/3 exchanges (see `base` for how the layers fit)."""

    __slots__ = ()

    # ------------------------------------------------------------------ input

    def _new_exchange(self, stream_id: int, request: PlainRequest, ended: bool) -> None:
        if len(self.exchanges) >= self.max_http_requests:
            self._answer(stream_id, 429)
            return
        exchange = ExchangeRecord(stream_id, request)
        exchange.body_ended = ended
        if not ended and self.quic.manage_stream_window(stream_id):
            exchange.window_sent = self._stream_window
        self.exchanges[stream_id] = exchange
        self._events.append(HttpRequestReceived(exchange))

    def _exchange_data(self, exchange: ExchangeRecord, data: bytes, ended: bool) -> None:
        if data:
            exchange.chunks.append(data)
            exchange.buffered += len(data)
        if ended:
            exchange.body_ended = True
            self.quic.forget_stream_window(exchange.stream_id)
            if exchange.response_ended:
                self._forget_exchange(exchange)
        self._events.append(ExchangeUpdated(exchange))

    def _fail_exchange(self, exchange: ExchangeRecord, message: str, code: int = 0) -> None:
        if exchange.error is None:
            exchange.error = StreamError(message, stream_id=exchange.stream_id, error_code=code)
        exchange.chunks.clear()
        exchange.buffered = 0
        self._forget_exchange(exchange)
        self._events.append(ExchangeUpdated(exchange))

    def _forget_exchange(self, exchange: ExchangeRecord) -> None:
        if self.exchanges.pop(exchange.stream_id, None) is not None:
            self.quic.forget_stream_window(exchange.stream_id)

    def _end_all_sessions(self, error_code: int, reason: str) -> None:
        super()._end_all_sessions(error_code, reason)
        for exchange in list(self.exchanges.values()):
            self._fail_exchange(exchange, f"connection closed: {reason or 'no reason'}", error_code)

    # ------------------------------------------------------------------ commands

    def read_body(self, exchange: ExchangeRecord) -> bytes:
        """Take the request body received so far, granting the client credit for more.

        Args:
            exchange: The exchange.

        Returns:
            The bytes (empty when none arrived yet, or the body ended: see `body_ended`).

        Raises:
            StreamError: The exchange failed (`exchange.error`).
        """
        if exchange.error is not None and not exchange.chunks:
            raise fresh(exchange.error)
        chunks = exchange.chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        exchange.buffered = 0
        if exchange.window_sent >= 0 and not exchange.body_ended:
            limit = exchange.received + self._stream_window
            if limit - exchange.window_sent >= self._half_window:
                exchange.window_sent = limit
                self.quic.set_stream_window(exchange.stream_id, limit)
                self.want_transmit = True
        return data

    def respond(
        self,
        exchange: ExchangeRecord,
        status: int,
        headers: list[tuple[bytes, bytes]],
        *,
        end: bool,
    ) -> None:
        """Send the response's HEADERS.

        Args:
            exchange: The exchange.
            status: The HTTP status (100-599; informational ones are refused).
            headers: Lower-case header names and values, no pseudo-headers.
            end: True when the response has no body.

        Raises:
            StreamError: The exchange failed, or its response was already started.
        """
        self._check_sendable(exchange)
        if exchange.response_started:
            raise StreamError("the response was already started", stream_id=exchange.stream_id)
        exchange.response_started = True
        self._send(exchange, None, [(b":status", str(status).encode()), *headers], end)

    def send_body(self, exchange: ExchangeRecord, data: bytes, *, end: bool) -> None:
        """Send part of the response body.

        Args:
            exchange: The exchange (its response started).
            data: The bytes (may be empty, to end the body alone).
            end: True for the last part.

        Raises:
            StreamError: The exchange failed, or its response is not started or is complete.
        """
        self._check_sendable(exchange)
        if not exchange.response_started:
            raise StreamError("the response is not started", stream_id=exchange.stream_id)
        self._send(exchange, data, None, end)

    def abort_exchange(self, exchange: ExchangeRecord, code: int) -> None:
        """Reset the exchange's stream both ways (a handler failed mid-response).

        Args:
            exchange: The exchange.
            code: The HTTP/3 error code.
        """
        if exchange.stream_id not in self.exchanges:
            return
        exchange.response_ended = True
        self._safe_reset(exchange.stream_id, code)
        if not exchange.body_ended:
            self._safe_stop(exchange.stream_id, code)
        self._fail_exchange(exchange, "the exchange was aborted", code)

    def _check_sendable(self, exchange: ExchangeRecord) -> None:
        if exchange.error is not None:
            raise fresh(exchange.error)
        if exchange.response_ended:
            raise StreamError("the response is complete", stream_id=exchange.stream_id)

    def _send(
        self,
        exchange: ExchangeRecord,
        data: bytes | None,
        headers: list[tuple[bytes, bytes]] | None,
        end: bool,
    ) -> None:
        stream_id = exchange.stream_id
        try:
            if headers is not None:
                self.quic.send_headers(stream_id, headers, end)
            else:
                self.quic.send_data(stream_id, data or b"", end)
        except self.quic.refusals as exc:  # the stream was reset meanwhile
            self._fail_exchange(exchange, f"the request stream is gone: {exc}")
            raise StreamError(str(exc), stream_id=stream_id) from exc
        self.want_transmit = True
        if end:
            exchange.response_ended = True
            self._events.append(ExchangeUpdated(exchange))  # wakes a `wait_closed`
            if exchange.body_ended:
                self._forget_exchange(exchange)
            else:
                # RFC 9114 section 4.1: a complete response may stop the rest of the request.
                self._safe_stop(stream_id, ErrorCodes.H3_NO_ERROR)
                self._forget_exchange(exchange)
