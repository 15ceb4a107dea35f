"""WebTransport interop endpoint for the QUIC interop runner, built on pywebtransport.

One program for both roles, driven by the runner's environment (see
https://github.com/quic-interop/quic-interop-runner/blob/master/webtransport.md):

- ``ROLE``: ``server`` or ``client``.
- ``TESTCASE``: the test case as the runner hands it to this role. Server:
  ``handshake``, ``transfer``, ``transfer-{unidirectional,bidirectional,datagram}-send``.
  Client: ``handshake``, ``transfer``,
  ``transfer-{unidirectional,bidirectional,datagram}-receive``. Anything else exits 127.
- ``REQUESTS``: client: space-separated ``https://HOST:PORT/<endpoint>[/<file>]``;
  server (``-send`` cases): space-separated ``<endpoint>/<file>`` to request from the client.
- ``PROTOCOLS``: space-separated WebTransport subprotocols, in preference order.
- ``SSLKEYLOGFILE``, ``QLOGDIR``: TLS key log and qlog output.
- Local overrides (defaults are the runner's mounts): ``WWW`` (/www), ``DOWNLOADS``
  (/downloads), ``CERTS`` (/certs: ca.pem, cert.pem, priv.key), ``PORT`` (443),
  ``HOST`` (server bind address, 0.0.0.0).

Protocol: ``GET <file>`` on a unidirectional stream is answered with a new
unidirectional stream ``PUSH <file>\\n<bytes>``; ``GET <file>`` + FIN on a
bidirectional stream is answered with the bytes + FIN on the same stream; a
``GET <file>`` datagram is answered with a ``PUSH <file>\\n<bytes>`` datagram.
Both roles answer every kind of request; the requesting side is chosen by the
test case. Files are served from ``WWW/<endpoint>/`` and saved to
``DOWNLOADS/<endpoint>/``; ``DOWNLOADS/negotiated_protocol.txt`` holds the
negotiated subprotocol (empty when none).

Only pywebtransport's public API is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pywebtransport import (
    ClientConfig,
    ServerConfig,
    WebTransportClient,
    WebTransportError,
    WebTransportReceiveStream,
    WebTransportServer,
    WebTransportSession,
    WebTransportStream,
)

log = logging.getLogger("interop")

EXIT_UNSUPPORTED = 127
SERVER_CASES = {
    "handshake": None,
    "transfer": None,
    "transfer-unidirectional-send": "unidirectional",
    "transfer-bidirectional-send": "bidirectional",
    "transfer-datagram-send": "datagram",
}
CLIENT_CASES = {
    "handshake": None,
    "transfer": None,
    "transfer-unidirectional-receive": "unidirectional",
    "transfer-bidirectional-receive": "bidirectional",
    "transfer-datagram-receive": "datagram",
}
# Datagram requests are re-sent for files still missing after this long.
DATAGRAM_RETRY = 1.0
DATAGRAM_PACING = 0.002


class Settings:
    """The endpoint's environment, read once."""

    def __init__(self, env: dict[str, str]) -> None:
        self.role = env.get("ROLE", "")
        self.testcase = env.get("TESTCASE", "")
        self.requests = env.get("REQUESTS", "").split()
        self.protocols = env.get("PROTOCOLS", "").split()
        self.keylog = env.get("SSLKEYLOGFILE") or None
        self.qlog_dir = env.get("QLOGDIR") or None
        self.www = Path(env.get("WWW", "/www"))
        self.downloads = Path(env.get("DOWNLOADS", "/downloads"))
        self.certs = Path(env.get("CERTS", "/certs"))
        self.port = int(env.get("PORT", "443"))
        self.host = env.get("HOST", "0.0.0.0")

    @property
    def mode(self) -> str | None:
        """What this role requests itself: a transfer type, or None (serve only)."""
        cases = SERVER_CASES if self.role == "server" else CLIENT_CASES
        return cases[self.testcase]

    def supported(self) -> bool:
        cases = {"server": SERVER_CASES, "client": CLIENT_CASES}.get(self.role)
        return cases is not None and self.testcase in cases


def _endpoint_of(path: str) -> str:
    """``/webtransport1/x`` → ``webtransport1``."""
    return path.split("?", 1)[0].strip("/").split("/", 1)[0]


def _safe_name(name: str) -> str | None:
    """A file name without directory parts, or None if it tries to escape."""
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        return None
    return name


class Peer:
    """The request/response protocol on one session, for either role.

    Answers the peer's GET requests (uni, bidi, datagram) from ``www`` and
    stores the peer's PUSH responses in ``downloads``; ``request()`` asks the
    peer for files with one transfer type and waits until they are all saved.
    """

    def __init__(self, session: WebTransportSession, settings: Settings) -> None:
        self.session = session
        self.endpoint = _endpoint_of(session.path)
        self.www = settings.www / self.endpoint
        self.downloads = settings.downloads / self.endpoint
        self._expected: dict[str, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---------------------------------------------------------------- plumbing

    def _spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, what))

    def _done(self, task: asyncio.Task[Any], what: str) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not self.session.is_closed:
            log.warning("%s on /%s failed: %r", what, self.endpoint, exc)

    def start(self) -> None:
        """Start answering requests and collecting pushes."""
        self._spawn(self._accept_uni(), "accepting unidirectional streams")
        self._spawn(self._accept_bidi(), "accepting bidirectional streams")
        self._spawn(self._accept_datagrams(), "receiving datagrams")

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _file(self, name: str) -> bytes | None:
        safe = _safe_name(name)
        if safe is None:
            return None
        try:
            return (self.www / safe).read_bytes()
        except OSError:
            log.warning("GET %s on /%s: no such file", name, self.endpoint)
            return None

    def _saved(self, name: str) -> None:
        log.info("saved /%s/%s", self.endpoint, name)
        future = self._expected.get(name)
        if future is not None and not future.done():
            future.set_result(None)

    async def _save_stream(self, name: str, stream: WebTransportReceiveStream) -> None:
        safe = _safe_name(name)
        if safe is None:
            log.warning("refusing to save %r", name)
            return
        self.downloads.mkdir(parents=True, exist_ok=True)
        partial = self.downloads / (safe + ".part")
        with partial.open("wb") as out:
            async for chunk in stream:
                out.write(chunk)
        partial.replace(self.downloads / safe)
        self._saved(safe)

    def _save_bytes(self, name: str, data: bytes) -> None:
        safe = _safe_name(name)
        if safe is None:
            return
        if safe in self._expected and self._expected[safe].done():
            return  # a duplicate answer to a re-sent datagram request
        self.downloads.mkdir(parents=True, exist_ok=True)
        (self.downloads / safe).write_bytes(data)
        self._saved(safe)

    # ---------------------------------------------------------------- answering

    async def _accept_uni(self) -> None:
        async for stream in self.session.incoming_unidirectional_streams():
            self._spawn(self._on_uni(stream), "unidirectional stream")

    async def _on_uni(self, stream: WebTransportReceiveStream) -> None:
        head = await stream.readexactly(4)
        if head == b"GET ":
            name = (await stream.read_all(max_size=4096)).decode().strip()
            data = self._file(name)
            if data is None:
                return
            push = await self.session.create_unidirectional_stream()
            await push.write_all(b"PUSH " + name.encode() + b"\n" + data)
        elif head == b"PUSH":
            line = await stream.readuntil(b"\n", limit=4096)
            await self._save_stream(line.decode().strip(), stream)
        else:
            log.warning("unidirectional stream starts with %r", head)
            await stream.stop_receiving(1)

    async def _accept_bidi(self) -> None:
        async for stream in self.session.incoming_bidirectional_streams():
            self._spawn(self._on_bidi(stream), "bidirectional stream")

    async def _on_bidi(self, stream: WebTransportStream) -> None:
        request = (await stream.read_all(max_size=4096)).decode().strip()
        if not request.startswith("GET "):
            log.warning("bidirectional request %r", request[:80])
            await stream.reset(1)
            return
        data = self._file(request[4:].strip())
        if data is None:
            await stream.reset(1)
            return
        await stream.write_all(data)

    async def _accept_datagrams(self) -> None:
        async for datagram in self.session.incoming_datagrams():
            if datagram.startswith(b"GET "):
                name = datagram[4:].decode(errors="replace").strip()
                data = self._file(name)
                if data is not None:
                    try:
                        await self.session.send_datagram(b"PUSH " + name.encode() + b"\n" + data)
                    except WebTransportError as exc:
                        log.warning("datagram PUSH %s: %r", name, exc)
            elif datagram.startswith(b"PUSH "):
                header, sep, body = datagram.partition(b"\n")
                if sep:
                    self._save_bytes(header[5:].decode(errors="replace").strip(), body)
            else:
                log.warning("datagram starts with %r", datagram[:16])

    # ---------------------------------------------------------------- requesting

    async def request(self, mode: str, names: list[str]) -> None:
        """Fetch `names` from the peer with `mode` transfers, all in parallel."""
        loop = asyncio.get_running_loop()
        for name in names:
            self._expected.setdefault(name, loop.create_future())
        if mode == "unidirectional":
            await asyncio.gather(*(self._get_uni(name) for name in names))
            await asyncio.gather(*(self._expected[name] for name in names))
        elif mode == "bidirectional":
            await asyncio.gather(*(self._get_bidi(name) for name in names))
        else:
            await self._get_datagrams(names)

    async def _get_uni(self, name: str) -> None:
        stream = await self.session.create_unidirectional_stream()
        await stream.write_all(b"GET " + name.encode())

    async def _get_bidi(self, name: str) -> None:
        stream = await self.session.create_bidirectional_stream()
        await stream.write_all(b"GET " + name.encode())
        await self._save_stream(name, stream)

    async def _get_datagrams(self, names: list[str]) -> None:
        while True:
            missing = [name for name in names if not self._expected[name].done()]
            if not missing:
                return
            if len(missing) < len(names):
                log.info("re-requesting %d of %d datagram files", len(missing), len(names))
            for name in missing:
                await self.session.send_datagram(b"GET " + name.encode())
                # Paced like the runner's browser client: a peer whose datagram
                # receive queue is short (Firefox keeps one) drops a burst.
                await asyncio.sleep(DATAGRAM_PACING)
            pending = [self._expected[name] for name in missing]
            await asyncio.wait(pending, timeout=DATAGRAM_RETRY)


def write_protocol(settings: Settings, protocol: str | None) -> None:
    settings.downloads.mkdir(parents=True, exist_ok=True)
    (settings.downloads / "negotiated_protocol.txt").write_text(protocol or "")


# -------------------------------------------------------------------- server


async def run_server(settings: Settings) -> int:
    """Serve until SIGTERM or, in the ``-send`` cases, until every requested file is saved.

    In the ``-send`` cases the server is the requester, and the requester ends the
    test (as our client does in the ``-receive`` cases): once every endpoint's files
    are saved it closes the sessions and exits 0, whatever the client does then (a
    browser may keep its page open).
    """
    mode = settings.mode
    wanted: dict[str, list[str]] = {}
    for item in settings.requests:
        endpoint, _, name = item.strip("/").partition("/")
        names = wanted.setdefault(endpoint, [])
        if name:
            names.append(name)
    # Endpoints whose files this server still has to fetch (none outside `-send`).
    outstanding = {endpoint for endpoint, names in wanted.items() if names} if mode else set()
    config = ServerConfig(
        certfile=str(settings.certs / "cert.pem"),
        keyfile=str(settings.certs / "priv.key"),
        bind_host=settings.host,
        bind_port=settings.port,
        wt_supported_protocols=tuple(settings.protocols),
        secrets_log_file=settings.keylog,
        qlog_dir=settings.qlog_dir,
        max_pending_datagrams=1000,
        initial_max_streams_bidi=100,
        initial_max_streams_uni=100,
        max_sessions=100,
        max_sessions_per_connection=100,
    )

    stop = asyncio.Event()

    async def handler(session: WebTransportSession) -> None:
        peer = Peer(session, settings)
        write_protocol(settings, session.wt_protocol)
        log.info(
            "session /%s (%s, protocol %r)", peer.endpoint, session.dialect, session.wt_protocol
        )
        peer.start()
        try:
            names = wanted.get(peer.endpoint)
            if mode is not None and names:
                await peer.request(mode, names)
                log.info("all %d files of /%s received", len(names), peer.endpoint)
                await session.close(0, "done")
                outstanding.discard(peer.endpoint)
                if not outstanding:
                    log.info("every requested file is saved: exiting")
                    stop.set()
            else:
                await session.wait_closed()
        finally:
            await peer.stop()

    loop = asyncio.get_running_loop()

    def on_signal(signum: int, frame: object) -> None:
        # RuntimeError: the loop is already closed, we are exiting anyway.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(stop.set)

    # Python-level handlers rather than loop.add_signal_handler(): asyncio resets
    # those to the default action when the loop closes, and a SIGTERM then (the
    # runner stopping a server that is exiting by itself) would kill us with -15.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    server = WebTransportServer(config, handler=handler)
    await server.listen()
    log.info("listening on %s (testcase %s)", server.local_addresses, settings.testcase)
    try:
        await stop.wait()
    finally:
        await server.close()
    return 0


# -------------------------------------------------------------------- client


def parse_requests(urls: list[str]) -> tuple[str, dict[str, list[str]]]:
    """Base URL (scheme://authority) and endpoint → files, in request order."""
    base = ""
    sessions: dict[str, list[str]] = {}
    for url in urls:
        parts = urlsplit(url)
        base = base or f"{parts.scheme}://{parts.netloc}"
        endpoint, _, name = parts.path.strip("/").partition("/")
        names = sessions.setdefault(endpoint, [])
        if name:
            names.append(name)
    return base, sessions


async def run_client(settings: Settings) -> int:
    mode = settings.mode
    base, wanted = parse_requests(settings.requests)
    if not wanted:
        log.error("REQUESTS names no URL")
        return 1
    ca = settings.certs / "ca.pem"
    config = ClientConfig(
        ca_certs=str(ca) if ca.exists() else None,
        wt_available_protocols=tuple(settings.protocols) or None,
        secrets_log_file=settings.keylog,
        qlog_dir=settings.qlog_dir,
        max_pending_datagrams=1000,
        initial_max_streams_bidi=100,
        initial_max_streams_uni=100,
        max_sessions=100,
    )
    endpoints = list(wanted)
    async with WebTransportClient(config) as client:
        first = await client.connect(f"{base}/{endpoints[0]}")
        others = await asyncio.gather(
            *(first.connection.create_session(f"/{endpoint}") for endpoint in endpoints[1:])
        )
        sessions = [first, *others]
        write_protocol(settings, first.wt_protocol)
        log.info("%d session(s) up, protocol %r", len(sessions), first.wt_protocol)
        peers = [Peer(session, settings) for session in sessions]
        for peer in peers:
            peer.start()
        try:
            if settings.testcase == "handshake":
                pass
            elif mode is None:
                # transfer: answer the server's requests until it closes the sessions.
                await asyncio.gather(*(session.wait_closed() for session in sessions))
            else:
                await asyncio.gather(
                    *(
                        peer.request(mode, wanted[peer.endpoint])
                        for peer in peers
                        if wanted[peer.endpoint]
                    )
                )
        finally:
            for peer in peers:
                await peer.stop()
            for session in sessions:
                if not session.is_closed:
                    await session.close(0, "done")
    return 0


def main(env: dict[str, str] | None = None) -> int:
    settings = Settings(dict(os.environ) if env is None else env)
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"),
        format=f"%(asctime)s {settings.role or '?'} %(levelname)s %(name)s: %(message)s",
    )
    if not settings.supported():
        print(f"unsupported ROLE={settings.role!r} TESTCASE={settings.testcase!r}", file=sys.stderr)
        return EXIT_UNSUPPORTED
    runner: Callable[[Settings], Coroutine[Any, Any, int]] = (
        run_server if settings.role == "server" else run_client
    )
    code = asyncio.run(runner(settings))
    # Exiting anyway: a SIGTERM during interpreter shutdown (when Python restores the
    # default handlers, except ignored ones) must not turn our status into -15.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return code


if __name__ == "__main__":
    sys.exit(main())
