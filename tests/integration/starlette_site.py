"""A Starlette site and its WebTransport endpoint as one ASGI app, served on one HTTP/3 port.

What a user writes to serve a page and the WebTransport endpoint it talks to
from `python -m pywebtransport serve site:app --asgi`: Starlette answers the
`http` scope (its page, a body echo, a streamed download), a plain ASGI
function in aioquic's message format answers the `webtransport` scope, and
Starlette's lifespan sets up state that both see.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PAGE = """<!doctype html>
<title>one port</title>
<p id="greeting">{greeting}</p>
<script>
window.result = null;
(async () => {{
  try {{
    const wt = new WebTransport(location.origin + "/wt");
    await wt.ready;
    const stream = await wt.createBidirectionalStream();
    const writer = stream.writable.getWriter();
    await writer.write(new TextEncoder().encode("ping over webtransport"));
    await writer.close();
    const reader = stream.readable.getReader();
    let text = "";
    for (;;) {{
      const {{ value, done }} = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }}
    const posted = await fetch("/echo", {{ method: "POST", body: "posted over h3" }});
    window.result = {{ echo: text, posted: await posted.text(), greeting: {greeting!r} }};
    wt.close();
  }} catch (error) {{
    window.result = {{ error: String(error) }};
  }}
}})();
</script>
"""


@asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[dict[str, Any]]:
    yield {"greeting": "hello from lifespan", "started": True}


async def page(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE.format(greeting=request.state.greeting))


async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/octet-stream")


async def digest(request: Request) -> JSONResponse:
    sha = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        sha.update(chunk)
        size += len(chunk)
    return JSONResponse({"size": size, "sha256": sha.hexdigest()})


async def download(request: Request) -> StreamingResponse:
    size = int(request.query_params.get("size", "0"))

    async def chunks() -> AsyncIterator[bytes]:
        sent = 0
        while sent < size:
            step = min(65536, size - sent)
            yield bytes((sent + i) % 251 for i in range(step))
            sent += step

    return StreamingResponse(chunks(), media_type="application/octet-stream")


async def fail(request: Request) -> Response:
    raise RuntimeError("handler failed on purpose")


def pattern(size: int) -> bytes:
    """The bytes `/download?size=N` sends."""
    return bytes(i % 251 for i in range(size))


async def webtransport_echo(scope: Message, receive: Receive, send: Send) -> None:
    """aioquic's example echo: accept, then echo every bidi stream and datagram."""
    message = await receive()
    assert message["type"] == "webtransport.connect"
    await send({"type": "webtransport.accept"})
    while True:
        message = await receive()
        if message["type"] == "webtransport.datagram.receive":
            await send({"type": "webtransport.datagram.send", "data": message["data"]})
        elif message["type"] == "webtransport.stream.receive":
            await send(
                {
                    "type": "webtransport.stream.send",
                    "stream": message["stream"],
                    "data": message["data"],
                    "end_stream": message.get("end_stream", False),
                }
            )
        elif message["type"] == "webtransport.disconnect":
            return


def build_site() -> Callable[[Message, Receive, Send], Awaitable[None]]:
    """Return the ASGI app: Starlette for `http` and `lifespan`, the echo for `webtransport`."""
    site = Starlette(
        routes=[
            Route("/", page),
            Route("/echo", echo, methods=["POST"]),
            Route("/digest", digest, methods=["POST"]),
            Route("/download", download),
            Route("/fail", fail),
        ],
        lifespan=lifespan,
    )

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "webtransport":
            await webtransport_echo(scope, receive, send)
        else:
            await site(scope, receive, send)

    return app


app = build_site()
