"""`make demo`: a WebTransport server and client exchanging streams and datagrams.

Runs both ends in one process over real UDP on 127.0.0.1 and prints what
happens. For the browser version of the same exchange, see
`examples/echo_browser_server.py` and `examples/browser/index.html`.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import time

from pywebtransport import (
    ClientConfig,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
    WebTransportStream,
    generate_self_signed_cert,
)

START = time.monotonic()


def log(side: str, message: str) -> None:
    """Print one line of the demo's log."""
    print(f"[{time.monotonic() - START:6.3f}s] {side:<6} {message}", flush=True)


async def serve_session(session: WebTransportSession) -> None:
    """Server side: echo bidi streams and datagrams, push one uni stream."""
    log("server", f"session {session.session_id} opened at {session.path!r} ({session.dialect})")

    async def echo_streams() -> None:
        async for stream in session.incoming_bidirectional_streams():
            data = await stream.read_all()
            log("server", f"stream {stream.stream_id}: got {len(data)} bytes, echoing")
            await stream.write(data, end_stream=True)

    async def echo_datagrams() -> None:
        async for datagram in session.incoming_datagrams():
            await session.send_datagram(b"echo: " + datagram)

    async def read_uni() -> None:
        async for stream in session.incoming_unidirectional_streams():
            text = (await stream.read_all()).decode()
            log("server", f"uni stream {stream.stream_id} says {text!r}")
            push = await session.create_unidirectional_stream()
            await push.write(f"server saw: {text}".encode(), end_stream=True)

    tasks = [asyncio.create_task(job()) for job in (echo_streams, echo_datagrams, read_uni)]
    info = await session.wait_closed()
    log("server", f"session closed by client: code={info.error_code} reason={info.reason!r}")
    for task in tasks:
        task.cancel()


async def main() -> None:
    """Run the demo."""
    with tempfile.TemporaryDirectory() as directory:
        cert = generate_self_signed_cert("127.0.0.1", output_dir=directory)
        log("setup", f"certificate {cert.certfile} sha-256 {cert.fingerprint}")
        server_config = ServerConfig(
            certfile=cert.certfile, keyfile=cert.keyfile, bind_host="127.0.0.1", bind_port=0
        )
        async with WebTransportServer(server_config, handler=serve_session) as server:
            assert server.local_address is not None
            url = f"https://127.0.0.1:{server.local_address[1]}/demo"
            log("server", f"listening on {url}")
            # The demo trusts its own certificate by pinning its hash, as browsers do.
            client_config = ClientConfig(server_certificate_hashes=(cert.sha256,))
            async with WebTransportClient(client_config) as client:
                session = await client.connect(url)
                log("client", f"connected: session {session.session_id}")
                await exchange(session)
                await session.close(error_code=0, reason="demo done")
                log("client", "session closed")
            await asyncio.sleep(0.05)
    log("done", "server stopped; all streams and datagrams exchanged")


async def exchange(session: WebTransportSession) -> None:
    """Client side: three streams of different sizes, a uni stream, datagrams."""
    for size in (5, 64 * 1024, 1024 * 1024):
        payload = bytes(i % 251 for i in range(size))
        stream: WebTransportStream = await session.create_bidirectional_stream()
        await stream.write(payload, end_stream=True)
        echoed = await stream.read_all()
        same = hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
        log("client", f"stream {stream.stream_id}: sent {size} bytes, echo intact: {same}")

    uni = await session.create_unidirectional_stream()
    await uni.write(b"hello over a unidirectional stream", end_stream=True)
    reply_stream = await session.accept_unidirectional_stream(timeout=5)
    log("client", f"server's uni stream says {(await reply_stream.read_all()).decode()!r}")

    sent = 10
    for i in range(sent):
        await session.send_datagram(f"datagram {i}".encode())
    received = 0
    try:
        while received < sent:
            await session.receive_datagram(timeout=1.0)
            received += 1
    except TimeoutError:
        pass
    log("client", f"datagrams: sent {sent}, echoes received {received} (unreliable by design)")


if __name__ == "__main__":
    asyncio.run(main())
