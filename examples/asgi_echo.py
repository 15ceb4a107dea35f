"""A plain ASGI application that echoes WebTransport datagrams and streams.

Written against the `webtransport` ASGI scope only (no pywebtransport import),
the way aioquic's HTTP/3 server example writes its apps, so any server that
speaks that message format can run it. With pywebtransport, from the repository
root:

    python -m pywebtransport gen-cert --out certs
    python -m pywebtransport serve examples.asgi_echo:app --asgi \\
        --cert certs/127.0.0.1.crt --key certs/127.0.0.1.key --host 127.0.0.1 --port 4433

Then connect to https://127.0.0.1:4433/echo with `WebTransportClient`, or from
a browser page with `new WebTransport(url, {serverCertificateHashes})` and the
hash `gen-cert` printed.

- `/echo`: datagrams come back as datagrams; a bidirectional stream comes back
  on itself; a unidirectional stream comes back on a new unidirectional stream
  the app opens (server stream ids 3, 7, 11, ...).
- any other path is refused with 404.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]


async def app(
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """Serve one WebTransport session."""
    if scope["type"] != "webtransport":
        return  # e.g. `lifespan`: nothing to set up
    message = await receive()
    assert message["type"] == "webtransport.connect"
    if scope["path"] != "/echo":
        await send({"type": "webtransport.close", "status": 404})
        return
    await send({"type": "webtransport.accept"})

    next_server_uni = 3
    echo_stream_of: dict[int, int] = {}
    while True:
        message = await receive()
        if message["type"] == "webtransport.datagram.receive":
            await send({"type": "webtransport.datagram.send", "data": message["data"]})
        elif message["type"] == "webtransport.stream.receive":
            stream = message["stream"]
            if stream & 0x2:  # unidirectional: the client cannot read it, answer on ours
                if stream not in echo_stream_of:
                    echo_stream_of[stream] = next_server_uni
                    next_server_uni += 4
                stream = echo_stream_of[stream]
            await send(
                {
                    "type": "webtransport.stream.send",
                    "stream": stream,
                    "data": message["data"],
                    "end_stream": message["end_stream"],
                }
            )
        elif message["type"] == "webtransport.disconnect":
            return
