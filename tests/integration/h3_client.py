"""A plain HTTP/3 client on aioquic's own `H3Connection`, for requests that are not WebTransport.

It is aioquic's HTTP/3 client as its example writes one (`QuicConnectionProtocol`
plus `H3Connection`), with the few knobs the tests need: a streamed request
body, a reader that stops reading (to see flow control hold the server), and
resetting a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3 import events as h3e
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection


@dataclass
class Response:
    """What came back on one request stream."""

    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    reset_code: int | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    data: asyncio.Event = field(default_factory=asyncio.Event)

    def header(self, name: bytes) -> bytes | None:
        return next((value for key, value in self.headers if key == name), None)


class H3Client(QuicConnectionProtocol):
    """An HTTP/3 client connection (create with `h3_connect`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self.responses: dict[int, Response] = {}
        self.reading = True
        """False: received data stays unread by QUIC's reader (tests flow control)."""

    def quic_event_received(self, event: qe.QuicEvent) -> None:
        if isinstance(event, qe.StreamReset) and event.stream_id in self.responses:
            response = self.responses[event.stream_id]
            response.reset_code = event.error_code
            response.ended.set()
            response.data.set()
        for h3_event in self.http.handle_event(event):
            response = self.responses.get(getattr(h3_event, "stream_id", -1))
            if response is None:
                continue
            if isinstance(h3_event, h3e.HeadersReceived):
                if not response.status:
                    response.headers = list(h3_event.headers)
                    response.status = int(dict(h3_event.headers).get(b":status", b"0"))
            elif isinstance(h3_event, h3e.DataReceived):
                response.body += h3_event.data
            if getattr(h3_event, "stream_ended", False):
                response.ended.set()
            response.data.set()

    def start(
        self,
        method: str,
        path: str,
        *,
        headers: Iterable[tuple[bytes, bytes]] = (),
        body: bytes | None = None,
        end: bool = True,
        authority: str = "127.0.0.1",
    ) -> int:
        """Send a request's HEADERS (and body); return its stream id."""
        stream_id = self._quic.get_next_available_stream_id()
        self.responses[stream_id] = Response()
        self.http.send_headers(
            stream_id,
            [
                (b":method", method.encode()),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", path.encode()),
                *headers,
            ],
            end_stream=end and body is None,
        )
        if body is not None:
            self.http.send_data(stream_id, body, end_stream=end)
        self.transmit()
        return stream_id

    def send_body(self, stream_id: int, data: bytes, *, end: bool = False) -> None:
        self.http.send_data(stream_id, data, end_stream=end)
        self.transmit()

    def reset(self, stream_id: int, code: int = 0x10C) -> None:
        """Cancel a request: RESET_STREAM and STOP_SENDING (H3_REQUEST_CANCELLED)."""
        self._quic.reset_stream(stream_id, code)
        with contextlib.suppress(Exception):
            self._quic.stop_stream(stream_id, code)
        self.transmit()

    def send_allowed(self, stream_id: int) -> int:
        """The peer's MAX_STREAM_DATA on a stream minus what we sent: credit left."""
        stream = self._quic._streams[stream_id]
        return int(stream.max_stream_data_remote - stream.sender.highest_offset)

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Iterable[tuple[bytes, bytes]] = (),
        body: bytes | None = None,
        timeout: float = 10.0,
    ) -> Response:
        """Send a whole request and wait for the whole response."""
        stream_id = self.start(method, path, headers=headers, body=body)
        response = self.responses[stream_id]
        async with asyncio.timeout(timeout):
            await response.ended.wait()
        return response


@contextlib.asynccontextmanager
async def h3_connect(
    port: int, *, cafile: str | None = None, host: str = "127.0.0.1", source: str | None = None
) -> AsyncIterator[H3Client]:
    """Connect an `H3Client` to host:port (verifying against `cafile` when given).

    `source` binds the client to that local address (a crowd from 127.0.0.2 and up);
    aioquic's `connect()` binds every client to the same wildcard address.
    """
    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=host)
    if cafile is not None:
        configuration.load_verify_locations(cafile)
    else:
        configuration.verify_mode = ssl.CERT_NONE
    if source is None:
        async with connect(
            host, port, configuration=configuration, create_protocol=H3Client
        ) as client:
            assert isinstance(client, H3Client)
            yield client
        return
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: H3Client(QuicConnection(configuration=configuration)), local_addr=(source, 0)
    )
    assert isinstance(protocol, H3Client)
    try:
        protocol.connect((host, port))
        await protocol.wait_connected()
        yield protocol
    finally:
        protocol.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(protocol.wait_closed(), 2.0)
        transport.close()
