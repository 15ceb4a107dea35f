"""Third-party peer for interop tests: pywebtransport 0.21 (Rust core), run in its own venv.

Not imported by the test suite (it needs the other library, installed under the same
import name); the tests run it as a subprocess:

    PEER_PYTHON peer021.py server PORT CERT KEY
    PEER_PYTHON peer021.py client URL CA_CERT [PROTOCOL ...]

Both roles print one JSON object per line on stdout; the tests read them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import sys
from typing import Any

from pywebtransport import ClientConfig, ServerConfig, WebTransportClient, WebTransportServer
from pywebtransport.types import EventType

SUPPORTED_PROTOCOLS = ["proto-b", "proto-a"]
TASKS: set[asyncio.Task[None]] = set()


def emit(**record: Any) -> None:
    """Print one JSON line for the test."""
    print(json.dumps(record), flush=True)


async def wait_session_closed(session: Any, timeout: float = 10.0) -> dict[str, Any]:
    """Return the close code and reason the peer sent."""
    event = await session.events.wait_for(event_type=EventType.SESSION_CLOSED, timeout=timeout)
    data = event.data or {}
    return {"code": data.get("error_code"), "reason": data.get("reason")}


# --------------------------------------------------------------------------- server


async def serve_session(session: Any) -> None:
    """Echo streams and datagrams; on /close, close with code 42 after a moment."""

    async def bidi() -> None:
        async for stream in session.incoming_bidirectional_streams():
            try:
                data = await stream.read_all()
                await stream.write_all(data=data, end_stream=True)
            except Exception as exc:
                emit(event="error", where="bidi", error=repr(exc))

    async def uni() -> None:
        async for stream in session.incoming_unidirectional_streams():
            data = await stream.read_all()
            reply = await session.create_unidirectional_stream()
            await reply.write(data=b"uni:" + data, end_stream=True)

    async def datagrams() -> None:
        while True:
            data = await session.read_datagram()
            await session.send_datagram(data=b"dg:" + data)

    tasks = [asyncio.create_task(job()) for job in (bidi, uni, datagrams)]
    try:
        if session.path == "/close":
            await asyncio.sleep(0.3)
            await session.close(error_code=42, reason="peer bye")
            emit(event="server_closed_session")
        else:
            info = await wait_session_closed(session, timeout=60)
            emit(event="session_closed", path=session.path, **info)
    except Exception as exc:
        emit(event="error", error=repr(exc))
    finally:
        for task in tasks:
            task.cancel()


async def serve_connection(connection: Any) -> None:
    async for session in connection.incoming_sessions():
        offered = session.wt_available_protocols or []
        emit(event="session_request", path=session.path, offered=offered)
        if session.path == "/reject":
            await session.reject(status_code=404)
            continue
        chosen = next((p for p in offered if p in SUPPORTED_PROTOCOLS), None)
        await session.accept(wt_protocol=chosen)
        TASKS.add(asyncio.create_task(serve_session(session)))


async def run_server(port: int, cert: str, key: str) -> None:
    config = ServerConfig(certfile=cert, keyfile=key, bind_host="127.0.0.1", bind_port=port)
    async with WebTransportServer(config=config) as server:
        await server.listen()
        emit(event="listening", port=port)
        async for connection in server.incoming_connections():
            TASKS.add(asyncio.create_task(serve_connection(connection)))


# --------------------------------------------------------------------------- client


async def run_client(url: str, ca_cert: str, protocols: list[str]) -> None:
    config = ClientConfig(ca_certs=ca_cert, verify_mode=ssl.CERT_REQUIRED, connect_timeout=10)
    async with WebTransportClient(config=config) as client:
        session = await client.connect(url=url + "/echo", wt_available_protocols=protocols or None)
        emit(event="connected", protocol=session.wt_protocol)

        payload = bytes(i % 251 for i in range(300_000))
        stream = await session.create_bidirectional_stream()
        await stream.write_all(data=payload, end_stream=True)
        echoed = await stream.read_all()
        emit(
            event="bidi",
            ok=hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest(),
            size=len(echoed),
        )

        uni = await session.create_unidirectional_stream()
        await uni.write(data=b"hello uni", end_stream=True)
        async for incoming in session.incoming_unidirectional_streams():
            emit(event="uni", data=(await incoming.read_all()).decode())
            break

        got = 0
        for i in range(20):
            await session.send_datagram(data=f"d{i}".encode())
        try:
            while got < 20:
                await asyncio.wait_for(session.read_datagram(), 1.0)
                got += 1
        except TimeoutError:
            pass
        emit(event="datagrams", sent=20, received=got)

        await session.close(error_code=7, reason="client bye")
        emit(event="closed_by_client")

        try:
            await client.connect(url=url + "/missing")
            emit(event="rejected", rejected=False)
        except Exception as exc:
            emit(event="rejected", rejected=True, error=type(exc).__name__, detail=str(exc)[:200])

        closing = await client.connect(url=url + "/close")
        info = await wait_session_closed(closing, timeout=10)
        emit(event="server_close_seen", **info)


def main() -> None:
    role = sys.argv[1]
    if role == "server":
        asyncio.run(run_server(int(sys.argv[2]), sys.argv[3], sys.argv[4]))
    elif role == "client":
        asyncio.run(run_client(sys.argv[2], sys.argv[3], sys.argv[4:]))
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main()
