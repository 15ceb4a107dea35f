"""Every Python block of the README and the docs runs, against real servers on 127.0.0.1.

Each page with Python blocks has one test here (`@runs(page)`). It runs the page's
blocks in order in one namespace, the way a reader follows the page (a later block uses
what an earlier one defined), and hands the fragments the objects they stand inside (a
handler's `session`, a client script's `client` and `url`, ...: `CONTEXT` in
`tests/unit/test_docs_snippets.py`) as real ones: servers and clients on 127.0.0.1 with
the test certificate, over real UDP and aioquic. No network object is faked. The test
then checks what the page claims for the block: what it prints (the `# b'hello'`
comments), what reached the peer, the status or close code the peer saw.

What a block names that a test machine cannot provide (a fixed port, a certificate file,
the host `example.com`) is rewritten by the page's entry in `SUBSTITUTIONS`, each with
its reason; every entry must match its page, so the table cannot go stale. A block that
cannot run is marked in its page with `<!-- snippet: not-run (reason) -->` and counted
(`NOT_RUN`), so a new unrun block fails here. Relative paths (`certs/`, `big.bin`)
resolve in a fresh temporary directory.

Each block runs within `BLOCK_TIMEOUT`. A block that serves forever runs as a task that
the test stops by cancelling it, as Ctrl-C stops `asyncio.run()`; everything a block
starts is closed at the end (`Page.close`). Blocks execute in the test's process and
loop (`exec`/`eval` of code compiled with top-level `await`), except the one script
whose point is the blocking `app.run()`: it also runs as the script it is, in a child
process stopped with SIGINT.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import contextlib
import inspect
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn

from docs_blocks import PAGES, ROOT, Block, blocks
from pywebtransport import (
    CertificateError,
    ClientConfig,
    ErrorCodes,
    HandshakeError,
    ServerApp,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
    WebTransportStream,
    certificate_sha256,
)
from pywebtransport import ConnectionError as WebTransportConnectionError
from pywebtransport.cli import main as cli_main
from pywebtransport.shared.utils import CertificateInfo

from .conftest import Capture, ServerFactory, echo_handler, url_of, wait_until
from .conftest_redis import RedisServer, redis_server
from .h3_client import h3_connect
from .processes import OUTPUTS, spawn

__all__ = ["redis_server"]  # the fixture, imported for the deployment guide's test

# Slow: it is about the docs, not about aioquic's versions or the fence's features, so
# `make test` runs it once (with the slow tests) rather than in each of its three passes.
pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]

BLOCK_TIMEOUT = 10.0
"""Seconds one block (or one wait of the test on a block) may take."""

NOT_RUN = 0
"""Blocks marked `<!-- snippet: not-run (reason) -->` in all pages: none so far. Raise it
only with a reason in the page that a reviewer accepts."""


# ------------------------------------------------------------------ substitutions


@dataclass(frozen=True)
class Sub:
    """Text of a page's blocks rewritten before they run.

    Attributes:
        old: The text in the page.
        new: What runs instead: a `str.format` template over the page's values
            (`port`, `base`, `certfile`, `keyfile`, `redis`).
        why: Why the page's text cannot run as it stands.
    """

    old: str
    new: str
    why: str


# asyncio.run() raises inside a running event loop, and the test's loop runs the page.
# `await main()` runs the same coroutine to its end in that loop; a main() that serves
# forever is a task the test cancels, as Ctrl-C cancels it under asyncio.run().
RUN_MAIN = Sub("asyncio.run(main())", "await main()", "the test's event loop runs the page")
# 4433 may be in use on a test machine, or by a test running alongside: a port that was
# free a moment before stands in, the same one for every block of the page.
FIXED_PORT = Sub("4433", "{port}", "port 4433 may be taken")
# example.com is not ours: the test's server (`DocServer`) on 127.0.0.1 serves the
# paths the client guide uses (/echo, /chat, /notifications; /admin is not routed).
EXAMPLE_HOST = Sub("https://example.com:4433", "{base}", "example.com is not the test's")
# The guide's certificate and key files: the test certificate for 127.0.0.1.
CERT_PEM = Sub('"cert.pem"', '"{certfile}"', "no cert.pem in the test directory")
KEY_PEM = Sub('"key.pem"', '"{keyfile}"', "no key.pem in the test directory")
# The guide's CA file: the test certificate, which is self-signed and so its own CA.
CA_PEM = Sub('"ca.pem"', '"{certfile}"', "no ca.pem in the test directory")
# Port 443 needs privileges, and 0.0.0.0 would open the test to every interface: the
# loopback address, on the port number the test's uvicorn listens on over TCP (the
# guide's point: one number, TCP for HTTPS and UDP for WebTransport).
PUBLIC_BIND = Sub(
    'bind_host="0.0.0.0", bind_port=443',
    'bind_host="127.0.0.1", bind_port={port}',
    "a privileged port on every interface",
)
# The deployment's Redis host: a real redis-server the test starts on 127.0.0.1.
REDIS_URL = Sub('"redis://redis:6379/0"', '"{redis}"', "no host named redis")

SUBSTITUTIONS: dict[str, tuple[Sub, ...]] = {
    "README.md": (FIXED_PORT, RUN_MAIN),
    "docs/getting-started.md": (FIXED_PORT, RUN_MAIN),
    "docs/guides/client.md": (EXAMPLE_HOST, CA_PEM, RUN_MAIN),
    "docs/guides/server.md": (FIXED_PORT, CERT_PEM, KEY_PEM, RUN_MAIN),
    "docs/guides/browser.md": (FIXED_PORT, RUN_MAIN),
    "docs/guides/networks.md": (CERT_PEM, KEY_PEM),
    "docs/framework.md": (FIXED_PORT,),
    "docs/guides/frameworks.md": (CERT_PEM, KEY_PEM, PUBLIC_BIND),
    "docs/guides/deployment.md": (REDIS_URL,),
}
"""Per page (relative to the repository), in the order they apply."""


# ------------------------------------------------------------------ running a page


T = TypeVar("T")
TESTED: set[str] = set()
"""Pages that have a test below (filled by `@runs`)."""


def runs(page: str) -> Callable[[T], T]:
    """Register the decorated test as the one that runs `page`'s blocks.

    Args:
        page: The page, relative to the repository.

    Returns:
        The decorator (it returns the test unchanged).
    """

    def register(test: T) -> T:
        TESTED.add(page)
        return test

    return register


class Page:
    """A page's blocks, run one by one in one namespace.

    Args:
        relpath: The page, relative to the repository.
        values: What the page's substitutions are formatted with.
        capsys: pytest's capture of stdout, where blocks print.
    """

    def __init__(
        self, relpath: str, values: dict[str, Any], capsys: pytest.CaptureFixture[str]
    ) -> None:
        self.relpath = relpath
        self.blocks = blocks(ROOT / relpath)
        self.subs = SUBSTITUTIONS.get(relpath, ())
        self.values = values
        # Not "__main__": a block's `if __name__ == "__main__":` is the script's own
        # entry point, which `script()` runs for real in a child process.
        self.namespace: dict[str, Any] = {"__name__": "docs_page", "__builtins__": builtins}
        self.ran: set[int] = set()
        self.tasks: list[asyncio.Task[None]] = []
        self.capsys = capsys
        self.printed = ""

    def __getitem__(self, name: str) -> Any:
        """Return what the blocks so far bound to `name`."""
        return self.namespace[name]

    def block(self, number: int) -> Block:
        """Return block `number` (from 1); not-run blocks may not be run."""
        block = self.blocks[number - 1]
        assert block.not_run is None, f"{block.name} is marked not-run: {block.not_run}"
        return block

    def source(self, number: int) -> str:
        """Return block `number` with the page's substitutions applied."""
        source = self.block(number).source
        for sub in self.subs:
            source = source.replace(sub.old, sub.new.format(**self.values))
        return source

    def output(self) -> str:
        """Return everything the page's blocks printed so far."""
        self.printed += self.capsys.readouterr().out
        return self.printed

    async def _execute(self, number: int) -> None:
        block = self.block(number)
        self.ran.add(number)
        code = compile(
            block.padded(self.source(number)),
            str(block.page),  # tracebacks name the page and its line
            "exec",
            flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        )
        if code.co_flags & inspect.CO_COROUTINE:
            await eval(code, self.namespace)
        else:
            exec(code, self.namespace)

    async def run(self, number: int, *, prints: Iterable[str] = (), **context: Any) -> str:
        """Run block `number` to its end (within `BLOCK_TIMEOUT`) and return what it printed.

        Args:
            number: The block, from 1.
            prints: Text the block must print (each in its output).
            **context: Names the block stands inside, bound before it runs.

        Returns:
            The block's output.
        """
        self.namespace.update(context)
        before = len(self.output())
        await asyncio.wait_for(self._execute(number), BLOCK_TIMEOUT)
        printed = self.output()[before:]
        for text in prints:
            assert text in printed, f"{self.blocks[number - 1].name} printed {printed!r}"
        return printed

    def start(self, number: int, **context: Any) -> asyncio.Task[None]:
        """Run block `number` as a task, for a block that serves until it is stopped.

        Args:
            number: The block, from 1.
            **context: Names the block stands inside, bound before it runs.

        Returns:
            The task (`stop()` or `finish()` it; `close()` cancels it otherwise).
        """
        self.namespace.update(context)
        task = asyncio.create_task(self._execute(number))
        self.tasks.append(task)
        return task

    async def stop(self, task: asyncio.Task[None]) -> None:
        """Cancel a block's task, as Ctrl-C does, and wait for its cleanup (bounded).

        Args:
            task: From `start()`.
        """
        if task.done():
            task.result()  # the block failed (or ended) before it was stopped: show why
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, BLOCK_TIMEOUT)

    async def finish(self, task: asyncio.Task[None]) -> None:
        """Wait for a block's task to end by itself (bounded); raise what it raised.

        Args:
            task: From `start()`.
        """
        await asyncio.wait_for(asyncio.shield(task), BLOCK_TIMEOUT)

    async def until_printed(self, text: str) -> None:
        """Wait until the page printed `text` (bounded), e.g. from a block's callback.

        Args:
            text: What the output must contain.
        """
        assert await wait_until(lambda: text in self.output(), BLOCK_TIMEOUT), self.output()

    def script(self, number: int, path: Path) -> Path:
        """Write block `number`, substituted, to `path`: a script to run, a module to import.

        Args:
            number: The block.
            path: The file.

        Returns:
            `path`.
        """
        path.write_text(self.source(number))
        return path

    def done(self) -> None:
        """Check that every block ran (or is marked not-run)."""
        left = [
            block.name
            for block in self.blocks
            if block.number not in self.ran and block.not_run is None
        ]
        assert not left, f"blocks never run: {left}"

    async def close(self) -> None:
        """Stop the page's tasks and close what its blocks left open in the namespace."""
        for task in self.tasks:
            task.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 10)
        for value in list(self.namespace.values()):
            with contextlib.suppress(Exception):
                if isinstance(value, ServerApp):
                    await asyncio.wait_for(value.shutdown(), 10)
                elif isinstance(value, WebTransportServer):
                    await asyncio.wait_for(value.close(timeout=1), 10)
                elif isinstance(value, WebTransportClient):
                    await asyncio.wait_for(value.close(), 10)
                elif isinstance(value, WebTransportSession):
                    value.abort()


OpenPage = Callable[..., Page]


@pytest.fixture
async def open_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> AsyncIterator[OpenPage]:
    """Open pages to run in a fresh directory; all they started is closed afterwards.

    The library's logging is restored too (getting-started calls `init_tracing()`).
    """
    monkeypatch.chdir(tmp_path)
    library = logging.getLogger("pywebtransport")
    level, handlers = library.level, list(library.handlers)
    pages: list[Page] = []

    def open_(relpath: str, **values: Any) -> Page:
        page = Page(relpath, values, capsys)
        pages.append(page)
        return page

    yield open_
    for page in pages:
        await page.close()
    library.setLevel(level)
    library.handlers[:] = handlers


# ------------------------------------------------------------------ helpers


def free_port() -> int:
    """Return a port number free right now for UDP (IPv4 and IPv6) and TCP on loopback."""
    while True:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as udp:
            udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            udp.bind(("::", 0))
            port = int(udp.getsockname()[1])
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


async def until_serving(url: str) -> None:
    """Wait until a WebTransport server answers a CONNECT at `url` (any status).

    A readiness probe over the real network: a port nobody listens on yet stays silent
    (no error arrives over UDP), so each try waits 0.5 s at most. The probe checks no
    certificate; the blocks' own clients do.

    Args:
        url: Where to connect.
    """
    probe = ClientConfig(verify_mode=ssl.CERT_NONE, connect_timeout=0.5)
    async with asyncio.timeout(BLOCK_TIMEOUT):
        while True:
            async with WebTransportClient(probe) as client:
                try:
                    session = await client.connect(url)
                except HandshakeError:
                    return  # refused, so listening
                except (TimeoutError, WebTransportConnectionError):
                    continue
                await session.close()
                return


@contextlib.asynccontextmanager
async def on_loopback(config: ServerConfig) -> AsyncIterator[WebTransportServer]:
    """Serve a block's config, moved to a free port on 127.0.0.1, with the echo handler.

    Args:
        config: The config, its certificate a real one.

    Yields:
        The listening server (closed on exit).
    """
    loopback = config.update(bind_host="127.0.0.1", bind_port=0, close_timeout=2.0)
    async with WebTransportServer(loopback, handler=echo_handler) as server:
        yield server


async def echo_once(session: WebTransportSession, data: bytes = b"ping") -> bytes:
    """Send `data` on a new bidirectional stream and return the answer."""
    stream = await session.create_bidirectional_stream()
    await stream.write(data, end_stream=True)
    return await asyncio.wait_for(stream.read_all(), BLOCK_TIMEOUT)


@dataclass
class DocServer:
    """The server behind the guides' URLs: a `ServerApp` on 127.0.0.1 with their paths.

    Attributes:
        base: `https://127.0.0.1:<port>`.
        headers: The request headers of each session on /chat, in order.
        collected: What each unidirectional stream sent to /collect held.
    """

    base: str = ""
    headers: list[dict[str, str]] = field(default_factory=list)
    collected: list[bytes] = field(default_factory=list)

    def url(self, path: str) -> str:
        """Return the URL of `path` on the server."""
        return self.base + path


@pytest.fixture
async def doc_server(server_config: ServerConfig) -> AsyncIterator[DocServer]:
    """A real server for the guides' fragments, shut down after the test."""
    docs = DocServer()
    app = ServerApp(server_config.update(wt_supported_protocols=("chat.v2", "chat.v1")))
    app.route("/echo")(echo_handler)

    @app.route("/chat")
    async def chat(session: WebTransportSession) -> None:
        docs.headers.append({name.decode(): value.decode() for name, value in session.headers})
        await session.wait_closed()

    @app.route("/notifications")
    async def notifications(session: WebTransportSession) -> None:
        await session.wait_closed()

    @app.route("/bye")
    async def bye(session: WebTransportSession) -> None:
        await session.close(error_code=42, reason="bye")

    @app.route("/push")
    async def push(session: WebTransportSession) -> None:
        """One stream of each kind, then a graceful close."""
        bidi = await session.create_bidirectional_stream()
        await bidi.write(b"bidirectional", end_stream=True)
        uni = await session.create_unidirectional_stream()
        await uni.write(b"unidirectional", end_stream=True)
        await session.close()

    @app.route("/reset")
    async def reset(session: WebTransportSession) -> None:
        """Reset each bidirectional stream the client opens, with code 7."""
        streams = []  # held, so they are not closed for us with code 0
        async for stream in session.incoming_bidirectional_streams():
            streams.append(stream)
            await stream.reset(7)

    @app.route("/collect")
    async def collect(session: WebTransportSession) -> None:
        async for stream in session.incoming_unidirectional_streams():
            docs.collected.append(await stream.read_all())

    await app.listen()
    address = app.local_address
    assert address is not None
    docs.base = f"https://127.0.0.1:{address[1]}"
    yield docs
    await app.shutdown()


# ------------------------------------------------------------------ the pages


def test_every_page_with_blocks_has_a_test() -> None:
    with_blocks = {str(page.relative_to(ROOT)) for page in PAGES if blocks(page)}
    assert with_blocks == TESTED


def test_every_substitution_matches_its_page() -> None:
    for relpath, subs in SUBSTITUTIONS.items():
        found = blocks(ROOT / relpath)
        for sub in subs:
            assert any(sub.old in block.source for block in found), (
                f"{relpath} no longer has {sub.old!r} ({sub.why}): drop it from SUBSTITUTIONS"
            )


def test_not_run_blocks_are_counted() -> None:
    marked = [
        f"{block.name}: {block.not_run}"
        for page in PAGES
        for block in blocks(page)
        if block.not_run is not None
    ]
    assert len(marked) == NOT_RUN, marked


@runs("README.md")
async def test_readme(open_page: OpenPage) -> None:
    page = open_page("README.md", port=free_port())
    # The quick start: a server and a client in one script, with a certificate in certs/.
    await page.run(1, prints=["b'hello'"])
    page.done()


@runs("docs/getting-started.md")
async def test_getting_started(open_page: OpenPage) -> None:
    port = free_port()
    page = open_page("docs/getting-started.md", port=port)
    await page.run(1, prints=["certs/127.0.0.1.crt certs/127.0.0.1.key"])
    assert page["cert"].fingerprint in page.output()
    # server.py serves until stopped; client.py, run "while the server runs", talks to it.
    server = page.start(2)
    await until_serving(f"https://127.0.0.1:{port}/echo")
    assert "listening on ('127.0.0.1'," in page.output()
    await page.run(3, prints=["b'hello'"])
    await page.stop(server)
    await page.run(4)
    assert logging.getLogger("pywebtransport").isEnabledFor(logging.DEBUG)
    await page.run(5)
    assert (page["test_config"].bind_port, page["test_config"].max_sessions) == (0, 2)
    page.done()


@runs("docs/guides/client.md")
async def test_client_guide(
    open_page: OpenPage,
    doc_server: DocServer,
    client: WebTransportClient,
    certificate: CertificateInfo,
) -> None:
    page = open_page("docs/guides/client.md", base=doc_server.base, certfile=certificate.certfile)
    await page.run(1, prints=["b'hello'"])
    await page.run(2, client=client)
    assert doc_server.headers[-1]["authorization"] == "Bearer 3f2a..."
    await page.run(3, prints=["chat.v2"])
    await page.run(4, url=doc_server.url("/echo"))
    assert page["session"].path == "/echo"
    await page.run(5)  # a config only: no file is read before a connect
    await page.run(6)
    # Every form of the digest is the same 32 bytes; the openssl line is an example.
    assert page["config"].server_certificate_hashes == (page["cert"].sha256,)
    await page.run(7)
    await page.run(8, prints=["refused with HTTP status 404"])  # /admin is not routed
    # /bye closes each session at once, with code 42 and reason "bye".
    await page.run(9, session=await client.connect(doc_server.url("/bye")), prints=["42 bye"])
    assert "42 bye by the peer" in page.output()
    await page.run(10, prints=["2"])
    assert page["second"].path == "/notifications"
    page.done()


@runs("docs/guides/server.md")
async def test_server_guide(
    open_page: OpenPage,
    certificate: CertificateInfo,
    server_config: ServerConfig,
    client_config: ClientConfig,
    start_server: ServerFactory,
    capture: Capture,
    client: WebTransportClient,
) -> None:
    port = free_port()
    page = open_page(
        "docs/guides/server.md",
        port=port,
        certfile=certificate.certfile,
        keyfile=certificate.keyfile,
    )
    # The echo server binds "::" (dual-stack): reached over IPv4 and IPv6.
    task = page.start(1)
    await until_serving(f"https://127.0.0.1:{port}/")
    for host in ("127.0.0.1", "[::1]"):
        session = await client.connect(f"https://{host}:{port}/")
        assert await echo_once(session) == b"ping"
        await session.close()
    await page.stop(task)
    assert "listening on [(" in page.output()

    # The SESSION_REQUEST listener: a token in the query or 403.
    await page.run(2, config=server_config)
    async with page["server"] as server:
        with pytest.raises(HandshakeError) as refused:
            await client.connect(url_of(server, "/?token=wrong"))
        assert refused.value.status_code == 403
        session = await client.connect(url_of(server, "/?token=s3cret"))
        assert await echo_once(session) == b"ping"
        await session.close()

    # The server picks the client's first offer that it speaks.
    await page.run(3)
    async with on_loopback(page["config"]) as choosing:
        offer = ["chat.v3", "chat.v1", "chat.v2"]
        session = await client.connect(url_of(choosing), wt_available_protocols=offer)
        assert session.wt_protocol == "chat.v1"
        await session.close()

    await page.run(4)
    async with on_loopback(page["config"]) as limited:
        session = await client.connect(url_of(limited))
        assert await echo_once(session) == b"ping"
        await session.close()

    # What a client of a server that shuts down sees, and the drain it hears first.
    going = await start_server(capture)
    session = await client.connect(url_of(going))
    waiting = page.start(5, session=session)
    await page.run(6)
    await going.close(timeout=0.5)
    await page.finish(waiting)
    assert page["info"].error_code == ErrorCodes.APP_SERVICE_UNAVAILABLE
    assert "server is draining" in page.output()

    # The generated certificate serves; a client pins it, or trusts it as its own CA.
    await page.run(7)
    async with on_loopback(page["config"]) as generated:
        for trusting in (
            ClientConfig(server_certificate_hashes=(page["cert"].sha256,)),
            ClientConfig(ca_certs=page["cert"].certfile),
        ):
            async with WebTransportClient(trusting) as other:
                session = await other.connect(url_of(generated))
                assert await echo_once(session) == b"ping"

    # Rotation: new connections get the new certificate, whose hash a client pins.
    rotating = await start_server(echo_handler)
    await page.run(8, server=rotating)
    pinned = ClientConfig(server_certificate_hashes=(page["next_cert"].sha256,))
    async with WebTransportClient(pinned) as rotated:
        session = await rotated.connect(url_of(rotating))
        assert await echo_once(session) == b"ping"
    with pytest.raises(CertificateError):  # the old one is gone
        await client.connect(url_of(rotating))
    page.done()


@runs("docs/guides/streams.md")
async def test_streams_guide(
    open_page: OpenPage, doc_server: DocServer, client: WebTransportClient, tmp_path: Path
) -> None:
    page = open_page("docs/guides/streams.md")
    session = await client.connect(doc_server.url("/echo"))
    await page.run(1, session=session)
    assert isinstance(page["stream"], WebTransportStream)
    # The iterators end when the session closes: /push opens one stream of each kind
    # and closes.
    await page.run(2, session=await client.connect(doc_server.url("/push")))

    body = bytes(range(256)) * 40
    stream = await session.create_bidirectional_stream()
    await stream.write(len(body).to_bytes(4, "big") + body + b"tail", end_stream=True)
    printed = await page.run(3, stream=stream)
    assert page["body"] == body
    assert sum(int(line) for line in printed.split()) == len(b"tail")

    payload = os.urandom(300_000)
    await page.run(4, session=session, payload=payload)
    assert page["reply"] == b"GET /file\n" + payload

    reset = await client.connect(doc_server.url("/reset"))
    stream = await reset.create_bidirectional_stream()
    await stream.write(b"a request")
    await page.run(5, stream=stream, prints=[f"peer reset stream {stream.stream_id} with code 7"])

    big = os.urandom(3 * 1024 * 1024 + 5)  # a few write buffers and receive windows
    (tmp_path / "big.bin").write_bytes(big)
    stream = await session.create_bidirectional_stream()
    await page.run(6, stream=stream)
    assert await asyncio.wait_for(stream.read_all(), BLOCK_TIMEOUT) == big
    page.done()


@runs("docs/guides/datagrams.md")
async def test_datagrams_guide(
    open_page: OpenPage, doc_server: DocServer, client: WebTransportClient
) -> None:
    page = open_page("docs/guides/datagrams.md")
    session = await client.connect(doc_server.url("/echo"))  # echoes every datagram
    await page.run(1, session=session)
    await page.run(2, payload=bytes(2000), prints=["2000 bytes is over the limit of"])
    # The two echoes: one taken by receive_datagram(), one printed by the loop, which
    # ends when the session closes.
    reading = page.start(3)
    assert await wait_until(lambda: "b'" in page.output(), BLOCK_TIMEOUT)
    await session.close()
    await page.finish(reading)
    assert page["data"] in (b"position 12,40", b"also fine")  # the loop's, printed
    await page.run(4, prints=["2 0"])  # both received, none dropped

    session = await client.connect(doc_server.url("/echo"))
    await page.run(5, session=session)
    session.send_datagram_nowait(b"to the listener")
    await page.until_printed("datagram: b'to the listener'")
    page.done()


@runs("docs/guides/closing.md")
async def test_closing_guide(
    open_page: OpenPage,
    doc_server: DocServer,
    client: WebTransportClient,
    start_server: ServerFactory,
    capture: Capture,
) -> None:
    page = open_page("docs/guides/closing.md")
    payload = os.urandom(2 * 1024 * 1024)
    await page.run(1, session=await client.connect(doc_server.url("/collect")), payload=payload)
    # The peer's reader gets every byte, though the session closed.
    assert await wait_until(lambda: bool(doc_server.collected), BLOCK_TIMEOUT)
    assert doc_server.collected == [payload]

    # The server-side pattern: write, then let the peer (a page; here our client) close.
    server = await start_server(capture)
    peer = await client.connect(url_of(server))
    session = await capture.next()
    stream = await session.create_unidirectional_stream()
    waiting = page.start(2, session=session, stream=stream, payload=payload)
    incoming = await asyncio.wait_for(peer.accept_unidirectional_stream(), BLOCK_TIMEOUT)
    assert await asyncio.wait_for(incoming.read_all(), BLOCK_TIMEOUT) == payload
    await peer.close(error_code=0, reason="done")
    await page.finish(waiting)
    info = session.close_info
    assert info is not None and (info.remote, info.reason) == (True, "done")
    page.done()


@runs("docs/framework.md")
async def test_framework(
    open_page: OpenPage,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    processes: list[asyncio.subprocess.Process],
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()
    page = open_page("docs/framework.md", port=port)
    # The certificate the first block names, made as its comment says.
    assert cli_main(["gen-cert", "--out", "certs"]) == 0
    capsys.readouterr()
    pinned = ClientConfig(server_certificate_hashes=(certificate_sha256("certs/127.0.0.1.crt"),))

    # The first block as the script it is: app.run() serves until SIGINT, then exits 0.
    process = await spawn(processes, str(page.script(1, tmp_path / "app.py")), cwd=tmp_path)
    await until_serving(f"https://127.0.0.1:{port}/echo")
    async with WebTransportClient(pinned) as client:
        session = await client.connect(f"https://127.0.0.1:{port}/echo")
        assert await echo_once(session) == b"ping"
    process.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(process.wait(), BLOCK_TIMEOUT) == 0, OUTPUTS[process].lines

    # The page's blocks in one module, imported (not __main__), as `serve module:app` does.
    monkeypatch.setenv("WT_TOKEN", "t0ken")  # what the token middleware reads
    for number in range(1, 6):
        await page.run(number)
    serving = page.start(6)
    base = f"https://127.0.0.1:{port}"
    await until_serving(f"{base}/echo")
    good = {"x-api-version": "2", "authorization": "Bearer t0ken"}
    async with WebTransportClient(pinned) as client:
        session = await client.connect(f"{base}/echo?user=ada", headers=good)
        assert await echo_once(session) == b"ping"
        for path in ("/status", "/chat/lobby", "/files/12"):  # handlers that just return
            session = await client.connect(f"{base}{path}?user=grace", headers=good)
            await asyncio.wait_for(session.wait_closed(), BLOCK_TIMEOUT)
        refusals = {
            ("/files/abc?user=ada", "2", "Bearer t0ken"): 404,  # the pattern needs digits
            ("/echo?user=ada", "1", "Bearer t0ken"): 400,  # only_v2
            ("/echo?user=bob", "2", "Bearer t0ken"): 401,  # known_users
            ("/echo?user=ada", "2", "Bearer wrong"): 401,  # the token
        }
        for (path, version, token), status in refusals.items():
            with pytest.raises(HandshakeError) as refused:
                await client.connect(
                    f"{base}{path}", headers={"x-api-version": version, "authorization": token}
                )
            assert refused.value.status_code == status, path
    await page["app"].shutdown()
    await page.finish(serving)  # serve() returns after app.shutdown()
    page.done()


@runs("docs/guides/frameworks.md")
async def test_frameworks_guide(
    open_page: OpenPage,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    certificate: CertificateInfo,
    server_config: ServerConfig,
    client: WebTransportClient,
) -> None:
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", free_port()))
    port = tcp.getsockname()[1]
    page = open_page(
        "docs/guides/frameworks.md",
        port=port,
        certfile=certificate.certfile,
        keyfile=certificate.keyfile,
    )
    # Co-hosting: uvicorn serves the Starlette app over HTTPS on TCP; its lifespan runs
    # the ServerApp on UDP, same number.
    await page.run(1)
    web = uvicorn.Server(
        uvicorn.Config(
            page["web"],
            ssl_certfile=certificate.certfile,
            ssl_keyfile=certificate.keyfile,
            lifespan="on",
            log_level="warning",
        )
    )
    uvicorn_task = asyncio.create_task(web.serve(sockets=[tcp]))
    try:
        assert await wait_until(lambda: web.started or uvicorn_task.done(), BLOCK_TIMEOUT)
        assert web.started
        feed = await client.connect(f"https://127.0.0.1:{port}/feed")
        assert await wait_until(lambda: bool(page["wt"].groups.members("feed")), BLOCK_TIMEOUT)
        tls = ssl.create_default_context(cafile=certificate.certfile)
        async with httpx.AsyncClient(verify=tls, timeout=BLOCK_TIMEOUT) as http:
            answer = await http.post(f"https://127.0.0.1:{port}/publish", content=b"hello")
        assert answer.json() == {"listeners": 1}
        message = await asyncio.wait_for(feed.accept_unidirectional_stream(), BLOCK_TIMEOUT)
        assert await asyncio.wait_for(message.read_all(), BLOCK_TIMEOUT) == b"hello"
        web.should_exit = True  # uvicorn stops, and its lifespan stops the ServerApp
        await asyncio.wait_for(uvicorn_task, BLOCK_TIMEOUT)
        info = await asyncio.wait_for(feed.wait_closed(), BLOCK_TIMEOUT)
        assert info.error_code == ErrorCodes.APP_SERVICE_UNAVAILABLE
    finally:
        web.should_exit = True
        await asyncio.wait_for(asyncio.gather(uvicorn_task, return_exceptions=True), 10)
        tcp.close()

    # The ASGI echo app, on a bare server through ASGIAdapter. It has no lifespan (it
    # fails on the scope), so the adapter serves it without one.
    await page.run(2)
    await page.run(3, config=server_config)
    adapter, server = page["adapter"], page["server"]
    await adapter.startup()  # before listen(), as the guide says
    await server.listen()
    try:
        session = await client.connect(url_of(server, "/echo"))
        assert await echo_once(session, b"over a stream") == b"over a stream"
        await session.send_datagram(b"as a datagram")
        assert await session.receive_datagram(timeout=BLOCK_TIMEOUT) == b"as a datagram"
        await session.close()
        with pytest.raises(HandshakeError) as refused:
            await client.connect(url_of(server, "/other"))
        assert refused.value.status_code == 404
    finally:
        await server.close()
        await adapter.shutdown()

    # The site: the echo app saved as echo.py (the site imports it from there), and the
    # dispatcher served as `serve site:app --asgi` serves it (mount_asgi at "/"): the
    # page over HTTP/3 with the lifespan's state, WebTransport to the echo.
    page.script(2, tmp_path / "echo.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        await page.run(4)
    finally:
        sys.modules.pop("echo", None)
    site = ServerApp(server_config)
    site.mount_asgi("/", page["app"])
    await site.listen()
    try:
        address = site.local_address
        assert address is not None
        async with h3_connect(address[1], cafile=certificate.certfile) as h3:
            response = await h3.request("GET", "/")
        assert (response.status, bytes(response.body)) == (200, b"<p>hello</p>")
        session = await client.connect(f"https://127.0.0.1:{address[1]}/echo")
        assert await echo_once(session) == b"ping"
        await session.close()
    finally:
        await site.shutdown()
    page.done()


@runs("docs/guides/browser.md")
async def test_browser_guide(
    open_page: OpenPage, start_server: ServerFactory, client: WebTransportClient
) -> None:
    port = free_port()
    page = open_page("docs/guides/browser.md", port=port)
    await page.run(1)
    assert page["cert"].js_hash() in page.output()
    # The page's part, from Python: pinned by hash, a stream and a datagram echoed.
    task = page.start(2)
    await until_serving(f"https://127.0.0.1:{port}/echo")
    pinned = ClientConfig(server_certificate_hashes=(certificate_sha256("certs/127.0.0.1.crt"),))
    async with WebTransportClient(pinned) as browser_like:
        session = await browser_like.connect(f"https://127.0.0.1:{port}/echo?token=s3cret")
        assert await echo_once(session, b"hello over a stream") == b"hello over a stream"
        await session.send_datagram(b"hello as a datagram")
        assert await session.receive_datagram(timeout=BLOCK_TIMEOUT) == b"hello as a datagram"
        await session.close(error_code=0, reason="done")
    await page.stop(task)

    await page.run(3)
    server = await start_server(page["echo"])
    refused = await client.connect(url_of(server, "/echo?token=guess"))
    info = await asyncio.wait_for(refused.wait_closed(), BLOCK_TIMEOUT)
    assert (info.error_code, info.reason) == (ErrorCodes.APP_AUTHENTICATION_FAILED, "bad token")
    admitted = await client.connect(url_of(server, "/echo?token=s3cret"))
    info = await asyncio.wait_for(admitted.wait_closed(), BLOCK_TIMEOUT)
    assert info.error_code == 0  # past the check, the handler's `...` returns
    page.done()


@runs("docs/guides/networks.md")
async def test_networks_guide(open_page: OpenPage, certificate: CertificateInfo) -> None:
    page = open_page(
        "docs/guides/networks.md", certfile=certificate.certfile, keyfile=certificate.keyfile
    )
    # Both ends on BBR move a stream both ways (the client trusts the test certificate).
    await page.run(1)
    trusting = page["client_config"].update(ca_certs=certificate.certfile)
    async with (
        on_loopback(page["server_config"]) as server,
        WebTransportClient(trusting) as client,
    ):
        session = await client.connect(url_of(server))
        payload = os.urandom(1024 * 1024)
        assert await echo_once(session, payload) == payload
    page.done()


@runs("docs/guides/deployment.md")
async def test_deployment_guide(
    open_page: OpenPage,
    redis_server: RedisServer,
    server_config: ServerConfig,
    client_config: ClientConfig,
) -> None:
    page = open_page("docs/guides/deployment.md", redis=redis_server.url)
    await page.run(1, config=server_config)
    app = page["app"]
    await app.listen()
    try:
        address = app.local_address
        assert address is not None
        url = f"https://127.0.0.1:{address[1]}/chat/lobby"
        async with WebTransportClient(client_config) as client:
            sender, listener = await client.connect(url), await client.connect(url)
            assert await wait_until(lambda: len(app.groups.members("lobby")) == 2, BLOCK_TIMEOUT)
            stream = await sender.create_unidirectional_stream()
            await stream.write(b"hello, room", end_stream=True)
            for member in (listener, sender):  # through Redis, to every member
                message = await asyncio.wait_for(
                    member.accept_unidirectional_stream(), BLOCK_TIMEOUT
                )
                assert await asyncio.wait_for(message.read_all(), BLOCK_TIMEOUT) == b"hello, room"
    finally:
        await app.shutdown()
    page.done()


@runs("docs/reliability.md")
async def test_reliability(
    open_page: OpenPage, echo_server: WebTransportServer, client: WebTransportClient
) -> None:
    page = open_page("docs/reliability.md")
    session = await client.connect(url_of(echo_server))
    assert await echo_once(session) == b"ping"
    await page.run(1, server=echo_server, prints=["0 0 0"])  # in flight, retries, refused
    page.done()
