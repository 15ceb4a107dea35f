"""Real-browser WebTransport tests against the library's own server.

Every test runs once in headless Chromium and once in Firefox ESR (the ``browser``
fixture).  The JavaScript side is a scenario body (see ``harness.py``); what the server
sees is collected through asyncio futures in the test and asserted after the scenario.

Synchronisation rule: the page never closes its session while the server may still be
reading.  It either reads an answer that proves the server got everything, or it waits
for the server to close the session (``wt.closed``) once the server has its result.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pywebtransport import WebTransportServer, WebTransportSession
from pywebtransport.shared.events import Event, EventType
from pywebtransport.shared.exceptions import StreamError
from pywebtransport.shared.utils import CertificateInfo

from .harness import Browser, run_scenario

StartServer = Callable[..., Awaitable[WebTransportServer]]

SCENARIO_TIMEOUT = 30.0
"""Seconds one scenario may take in the browser."""

SERVER_WAIT = 10.0
"""Seconds a test waits for a server-side future after its scenario finished."""

# Helpers prepended to every scenario body.
JS_PRELUDE = r"""
const connect = async (url) => {
  const wt = new WebTransport(url || ctx.url, {
    serverCertificateHashes: [{algorithm: "sha-256", value: ctx.hash}],
  });
  wt.closed.catch(() => {});
  await wt.ready;
  return wt;
};
const enc = new TextEncoder();
const dec = new TextDecoder();
const concat = (chunks) => {
  const total = chunks.reduce((n, c) => n + c.byteLength, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const c of chunks) { out.set(c, offset); offset += c.byteLength; }
  return out;
};
const readAll = async (readable) => {
  const reader = readable.getReader();
  const chunks = [];
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    chunks.push(value);
  }
  return concat(chunks);
};
const readText = async (readable) => dec.decode(await readAll(readable));
const writeAll = async (writable, data, close = true) => {
  const writer = writable.getWriter();
  await writer.write(data);
  if (close) await writer.close(); else writer.releaseLock();
};
const closedInfo = async (wt) => {
  try {
    const info = await wt.closed;
    return {closeCode: info.closeCode, reason: info.reason, rejected: false};
  } catch (e) {
    return {rejected: true, error: String(e)};
  }
};
const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0"))
  .join("");
"""


def url_of(server: WebTransportServer, path: str = "/") -> str:
    """The https URL of ``path`` on ``server`` (as ``tests/conftest.py``'s helper)."""
    address = server.local_address
    assert address is not None
    return f"https://127.0.0.1:{address[1]}{path}"


async def run_js(
    browser: Browser,
    certificate: CertificateInfo,
    server: WebTransportServer,
    body: str,
    *,
    path: str = "/",
    params: dict[str, Any] | None = None,
    timeout: float = SCENARIO_TIMEOUT,
) -> Any:
    """Run ``body`` (with :data:`JS_PRELUDE`) in ``browser`` against ``server``."""
    return await run_scenario(
        browser,
        JS_PRELUDE + body,
        url=url_of(server, path),
        cert_hash=certificate.sha256,
        params=params,
        timeout=timeout,
    )


async def result_of(future: asyncio.Future[Any], timeout: float = SERVER_WAIT) -> Any:
    """Await a server-side result future with a bound."""
    return await asyncio.wait_for(asyncio.shield(future), timeout)


def settle(future: asyncio.Future[Any], value: Any) -> None:
    """Resolve ``future`` once (later values are ignored)."""
    if not future.done():
        future.set_result(value)


async def wait_closed_quietly(session: WebTransportSession, timeout: float = 20.0) -> None:
    """Keep a handler alive until the browser closes the session (bounded)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(session.wait_closed(), timeout)


# --------------------------------------------------------------------------- connect


@pytest.mark.timeout(90)
async def test_connect(
    browser: Browser, certificate: CertificateInfo, start_server: StartServer
) -> None:
    loop = asyncio.get_running_loop()
    seen: asyncio.Future[dict[str, Any]] = loop.create_future()
    closed: asyncio.Future[Any] = loop.create_future()

    async def handler(session: WebTransportSession) -> None:
        settle(
            seen,
            {"path": session.path, "query": session.query_params, "ready": session.is_ready},
        )
        await wait_closed_quietly(session)
        settle(closed, session.close_info)

    server = await start_server(handler)
    result = await run_js(
        browser,
        certificate,
        server,
        """
        const wt = await connect();
        const size = wt.datagrams.maxDatagramSize;
        wt.close();
        const info = await closedInfo(wt);
        return {size, info};
        """,
        path="/connect?x=1",
    )
    assert await result_of(seen) == {"path": "/connect?x=1", "query": {"x": ["1"]}, "ready": True}
    assert result["info"] == {"closeCode": 0, "reason": "", "rejected": False}
    assert isinstance(result["size"], int) and 1000 <= result["size"] <= 1500, result
    info = await result_of(closed)
    assert info is not None and info.remote is True and info.error_code == 0, info


# --------------------------------------------------------------------------- streams


@pytest.mark.timeout(90)
async def test_bidi_echo_with_fin(
    browser: Browser, certificate: CertificateInfo, start_server: StartServer
) -> None:
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handler(session: WebTransportSession) -> None:
        stream = await session.accept_bidirectional_stream(timeout=SCENARIO_TIMEOUT)
        data = await stream.read_all()
        settle(received, data)
        await stream.write(data, end_stream=True)
        await wait_closed_quietly(session)

    server = await start_server(handler)
    payload = "héllo WebTransport " * 20
    result = await run_js(
        browser,
        certificate,
        server,
        """
        const wt = await connect();
        const stream = await wt.createBidirectionalStream();
        await writeAll(stream.writable, enc.encode(ctx.params.payload));
        const echoed = await readText(stream.readable);
        wt.close();
        return echoed;
        """,
        params={"payload": payload},
    )
    assert await result_of(received) == payload.encode()
    assert result == payload


@pytest.mark.timeout(120)
async def test_fifty_concurrent_bidi_streams(
    browser: Browser, certificate: CertificateInfo, start_server: StartServer
) -> None:
    count = 50
    loop = asyncio.get_running_loop()
    all_seen: asyncio.Future[list[bytes]] = loop.create_future()
    seen: list[bytes] = []

    async def echo(stream: Any) -> None:
        data = await stream.read_all()
        seen.append(data)
        if len(seen) == count:
            settle(all_seen, sorted(seen))
        await stream.write(data, end_stream=True)

    async def handler(session: WebTransportSession) -> None:
        async with asyncio.TaskGroup() as group:
            async for stream in session.incoming_bidirectional_streams():
                group.create_task(echo(stream))

    server = await start_server(handler)
    result = await run_js(
        browser,
        certificate,
        server,
        """
        const wt = await connect();
        const one = async (i) => {
          const stream = await wt.createBidirectionalStream();
          const text = `stream-${i}:` + "x".repeat(i * 37);
          const [, echoed] = await Promise.all([
            writeAll(stream.writable, enc.encode(text)), readText(stream.readable)]);
          return echoed === text ? "ok" : `mismatch ${i}: ${echoed.length}`;
        };
        const results = await Promise.all(
          Array.from({length: ctx.params.count}, (_, i) => one(i)));
        wt.close();
        return results;
        """,
        params={"count": count},
        timeout=60,
    )
    assert result == ["ok"] * count
    expected = sorted(f"stream-{i}:{'x' * (i * 37)}".encode() for i in range(count))
    assert await result_of(all_seen) == expected


@pytest.mark.timeout(90)
async def test_unidirectional_browser_to_server(
    browser: Browser, certificate: CertificateInfo, start_server: StartServer
) -> None:
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handler(session: WebTransportSession) -> None:
        stream = await session.accept_unidirectional_stream(timeout=SCENARIO_TIMEOUT)
        data = await stream.read_all()
        settle(received, data)
        # Report what arrived on a bidirectional stream the page opens.
        report = await session.accept_bidirectional_stream(timeout=SCENARIO_TIMEOUT)
        await report.read_all()
        await report.write(f"{len(data)}:{hashlib.sha256(data).hexdigest()}", end_stream=True)
        await wait_closed_quietly(session)

    server = await start_server(handler)
    payload = "uni from the browser " * 100
    result = await run_js(
        browser,
        certificate,
        server,
        """
        const wt = await connect();
        const uni = await wt.createUnidirectionalStream();
        const data = enc.encode(ctx.params.payload);
        await writeAll(uni, data);
        const ask = await wt.createBidirectionalStream();
        await writeAll(ask.writable, enc.encode("report?"));
        const report = await readText(ask.readable);
        const digest = hex(await crypto.subtle.digest("SHA-256", data));
        wt.close();
        return {report, mine: `${data.byteLength}:${digest}`};
        """,
        params={"payload": payload},
    )
    data = payload.encode()
    assert await result_of(received) == data
    expected = f"{len(data)}:{hashlib.sha256(data).hexdigest()}"
    assert result == {"report": expected, "mine": expected}


@pytest.mark.timeout(90)
async def test_unidirectional_server_to_browser(
    browser: Browser, certificate: CertificateInfo, start_server: StartServer
) -> None:
    payload = b"uni from the server " * 100

    async def handler(session: WebTransportSession) -> None:
        stream = await session.create_unidirectional_stream()
        await stream.write(payload, end_stream=True)
        await wait_closed_quietly(session)

    server = await start_server(handler)
    result = await run_js(
        browser,
        certificate,
        server,
        """
        const wt = await connect();
        const reader = wt.incomingUnidirectionalStreams.getReader();
        const {value: stream, done} = await reader.read();
        if (done) throw new Error("no incoming unidirectional stream");
        const text = await readText(stream);
        wt.close();
        return text;
        """,
    )
    assert result == payload.decode()


@pytest.mark.timeout(90)
async def test_server_initiated_bidi_stream(
    browser: Browser, certificate: CertificateInfo, start_server: StartServer
) -> None:
    reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handler(session: WebTransportSession) -> None:
        stream = await session.create_bidirectional_stream()
        await stream.write(b"ping from server", end_stream=True)
        data = await stream.read_all()
        settle(reply, data)
        await session.close(0, f"got {len(data)}")

    server = await start_server(handler)
    result = await run_js(
        browser,
        certificate,
        server,
        """
        const wt = await connect();
        const reader = wt.incomingBidirectionalStreams.getReader();
        const {value: stream, done} = await reader.read();
        if (done) throw new Error("no incoming bidirectional stream");
        const text = await readText(stream.readable);
        const writer = stream.writable.getWriter();
        await writer.write(enc.encode("pong: " + text));
        // Not awaited: the server closes the session as soon as it has the FIN, which
        // can beat the acknowledgement close() waits for ("The session is closed").
        writer.close().catch(() => {});
        const info = await closedInfo(wt);
        return {text, info};
        """,
    )
    assert await result_of(reply) == b"pong: ping from server"
    assert result == {
        "text": "ping from server",
        "info": {"closeCode": 0, "reason": "got 22", "rejected": False},
    }


# --------------------------------------------------------------------------- datagrams


@pytest.mark.timeout(90)
async def test_datagram_echo(
    browser: Browser, certificate: CertificateInfo, start_server: StartServer
) -> None:
    first: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handler(session: WebTransportSession) -> None:
        async def echo() -> None:
            while True:
                data = await session.receive_datagram()
                settle(first, data)
                await session.send_datagram(b"echo:" + data)

        task = asyncio.create_task(echo())
        try:
            await wait_closed_quietly(session)
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    server = await start_server(handler)
    result = await run_js(
        browser,
        certificate,
        server,
        """
        const wt = await connect();
        const writer = wt.datagrams.writable.getWriter();
        const reader = wt.datagrams.readable.getReader();
        let got = null;
        const receive = reader.read().then(({value}) => { got = dec.decode(value); });
        // Datagrams may be dropped: resend until the echo arrives (bounded).
        for (let i = 0; i < 50 && got === null; i++) {
          await writer.write(enc.encode(`dgram-${i}`));
          await Promise.race([receive, new Promise((r) => setTimeout(r, 200))]);
        }
        wt.close();
        return got;
        """,
    )
    sent = await result_of(first)
    assert sent.startswith(b"dgram-"), sent
    assert isinstance(result, str) and result.startswith("echo:dgram-"), result


# --------------------------------------------------------------------------- closing


@pytest.mark.timeout(90)
async def test_browser_close_code_and_reason(
    browser: Browser, certificate: CertificateInfo, start_server: StartServer
) -> None:
    closed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def handler(session: WebTransportSession) -> None:
        settle(closed, await asyncio.wait_for(session.wait_closed(), SCENARIO_TIMEOUT))

    server = await start_server(handler)
    result = await run_js(
        browser,
        certificate,
        server,
        """
        const wt = await connect();
        wt.close({closeCode: 42, reason: "bye"});
        return await closedInfo(wt);
        """,
    )
    assert result == {"closeCode": 42, "reason": "bye", "rejected": False}
    info = await result_of(closed)
    assert (info.error_code, info.reason, info.remote) == (42, "bye", True), info


@pytest.mark.timeout(90)
async def test_server_close_code_and_reason(
    browser: Browser, certificate: CertificateInfo, start_server: StartServer
) -> None:
    closed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def handler(session: WebTransportSession) -> None:
        await session.close(42, "server bye")
        settle(closed, session.close_info)

    server = await start_server(handler)
    result = await run_js(
        browser,
        certificate,
        server,
        """
        const wt = await connect();
        return await closedInfo(wt);
        """,
    )
    assert result == {"closeCode": 42, "reason": "server bye", "rejected": False}
    info = await result_of(closed)
    assert (info.error_code, info.reason, info.remote) == (42, "server bye", False), info


# --------------------------------------------------------------------------- rejection


_TRY_CONNECT_JS = """
const attempt = async (url) => {
  const wt = new WebTransport(url, {
    serverCertificateHashes: [{algorithm: "sha-256", value: ctx.hash}],
  });
  wt.closed.catch(() => {});
  try {
    await wt.ready;
  } catch (e) {
    return {ready: false, name: e.name || ""};
  }
  wt.close();
  return {ready: true};
};
"""


@pytest.mark.timeout(90)
async def test_server_without_handler_rejects(
    browser: Browser, certificate: CertificateInfo, start_server: StartServer
) -> None:
    server = await start_server(None)
    result = await run_js(
        browser, certificate, server, _TRY_CONNECT_JS + "return await attempt(ctx.url);"
    )
    assert result["ready"] is False, result
    assert result["name"] == "WebTransportError", result


@pytest.mark.timeout(90)
async def test_unknown_path_rejected(
    browser: Browser, certificate: CertificateInfo, start_server: StartServer
) -> None:
    loop = asyncio.get_running_loop()
    served: asyncio.Future[str] = loop.create_future()
    requested: list[str] = []

    async def handler(session: WebTransportSession) -> None:
        settle(served, session.path)
        await wait_closed_quietly(session)

    async def on_request(event: Event) -> None:
        session = event.data["session"]
        requested.append(event.data["path"])
        if event.data["path"] != "/known":
            await session.reject(status_code=404)

    server = await start_server(handler)
    server.on(EventType.SESSION_REQUEST, on_request)
    result = await run_js(
        browser,
        certificate,
        server,
        _TRY_CONNECT_JS
        + """
        const base = ctx.url.replace(/\\/[^/]*$/, "");
        const unknown = await attempt(base + "/unknown");
        const known = await attempt(base + "/known");
        return {unknown, known};
        """,
        path="/",
    )
    assert result["unknown"]["ready"] is False, result
    assert result["unknown"]["name"] == "WebTransportError", result
    assert result["known"] == {"ready": True}, result
    assert await result_of(served) == "/known"
    assert requested[:2] == ["/unknown", "/known"]


# --------------------------------------------------------------------------- reset


@pytest.mark.timeout(90)
async def test_stream_reset_code_seen_by_server(
    browser: Browser, certificate: CertificateInfo, start_server: StartServer
) -> None:
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[tuple[bytes, int | None]] = loop.create_future()

    async def handler(session: WebTransportSession) -> None:
        stream = await session.accept_bidirectional_stream(timeout=SCENARIO_TIMEOUT)
        first = await stream.read()
        # Tell the page its first bytes arrived, so the reset cannot overtake them.
        await stream.write(b"got it")
        try:
            rest = await asyncio.wait_for(stream.read_all(), SCENARIO_TIMEOUT)
        except StreamError as exc:
            settle(outcome, (first, exc.error_code))
        else:
            settle(outcome, (first + rest, None))
        await session.close(0, "reset seen")

    server = await start_server(handler)
    result = await run_js(
        browser,
        certificate,
        server,
        """
        const wt = await connect();
        const stream = await wt.createBidirectionalStream();
        const writer = stream.writable.getWriter();
        await writer.write(enc.encode("before reset"));
        const reader = stream.readable.getReader();
        const {value} = await reader.read();
        const ack = dec.decode(value);
        // The server closes the session once it saw the reset; that may beat abort().
        await writer.abort(new WebTransportError({streamErrorCode: 7})).catch(() => {});
        const info = await closedInfo(wt);
        return {ack, info};
        """,
    )
    assert result["ack"] == "got it", result
    assert await result_of(outcome) == (b"before reset", 7)
    assert result["info"] == {"closeCode": 0, "reason": "reset seen", "rejected": False}


# --------------------------------------------------------------------------- bulk


def _deterministic_bytes(size: int) -> bytes:
    """The same bytes the page generates: ``(i * 31 + (i >> 10)) & 0xff``."""
    return bytes((i * 31 + (i >> 10)) & 0xFF for i in range(size))


@pytest.mark.timeout(120)
async def test_one_mib_upload_integrity(
    browser: Browser, certificate: CertificateInfo, start_server: StartServer
) -> None:
    size = 1024 * 1024
    received: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()

    async def handler(session: WebTransportSession) -> None:
        stream = await session.accept_bidirectional_stream(timeout=SCENARIO_TIMEOUT)
        data = await stream.read_all()
        digest = hashlib.sha256(data).hexdigest()
        settle(received, (len(data), digest))
        await stream.write(f"{len(data)}:{digest}", end_stream=True)
        await wait_closed_quietly(session)

    server = await start_server(handler)
    result = await run_js(
        browser,
        certificate,
        server,
        """
        const size = ctx.params.size;
        const data = new Uint8Array(size);
        for (let i = 0; i < size; i++) data[i] = (i * 31 + (i >>> 10)) & 0xff;
        const digest = hex(await crypto.subtle.digest("SHA-256", data));
        const wt = await connect();
        const stream = await wt.createBidirectionalStream();
        const writer = stream.writable.getWriter();
        const chunk = 64 * 1024;
        for (let off = 0; off < size; off += chunk) {
          await writer.write(data.slice(off, off + chunk));
        }
        await writer.close();
        const report = await readText(stream.readable);
        wt.close();
        return {digest, report};
        """,
        params={"size": size},
        timeout=60,
    )
    expected = hashlib.sha256(_deterministic_bytes(size)).hexdigest()
    assert result == {"digest": expected, "report": f"{size}:{expected}"}
    assert await result_of(received) == (size, expected)
