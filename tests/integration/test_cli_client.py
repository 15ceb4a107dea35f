"""`python -m pywebtransport client` and `--version`: a real subprocess over real UDP.

The server runs in the test's event loop on 127.0.0.1; the client is the command line,
fed through a pipe on stdin.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator

import pytest

import pywebtransport
from pywebtransport import WebTransportServer, WebTransportSession
from pywebtransport.shared.utils import CertificateInfo

from .conftest import ServerFactory, url_of


async def echo(session: WebTransportSession) -> None:
    """Echo each bidirectional stream and each datagram; push a greeting first."""

    async def datagrams() -> None:
        async for data in session.incoming_datagrams():
            await session.send_datagram(b"re: " + data)

    task = asyncio.create_task(datagrams())
    try:
        async for stream in session.incoming_bidirectional_streams():
            await stream.write(b"re: " + await stream.read_all(), end_stream=True)
    finally:
        task.cancel()


class Cli:
    """The command line as a subprocess; killed by the test's teardown if still running."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, *args: str) -> asyncio.subprocess.Process:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pywebtransport",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return self.process

    async def run(self, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
        process = await self.start(*args)
        out, err = await asyncio.wait_for(process.communicate(stdin), 30)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def cli() -> AsyncIterator[Cli]:
    runner = Cli()
    yield runner
    process = runner.process
    if process is not None and process.returncode is None:
        process.send_signal(signal.SIGKILL)
        await process.wait()


@pytest.mark.timeout(30)
async def test_version(cli: Cli) -> None:
    code, out, _ = await cli.run("--version")
    assert code == 0
    assert out.strip() == f"pywebtransport {pywebtransport.__version__}"


@pytest.mark.timeout(40)
async def test_lines_on_streams_until_end_of_input(
    cli: Cli, start_server: ServerFactory, certificate: CertificateInfo
) -> None:
    server: WebTransportServer = await start_server(echo)
    code, out, err = await cli.run(
        "client",
        url_of(server, "/echo"),
        "--cert-hash",
        certificate.fingerprint,
        stdin=b"hello\nwebtransport\n\xc3\xa9t\xc3\xa9\n",
    )
    assert code == 0, err
    # One stream per line, replies printed in the order the lines were sent.
    assert out == "re: hello\nre: webtransport\nre: été\n"
    assert "connected to" in err and "code 0" in err


@pytest.mark.timeout(40)
async def test_lines_as_datagrams(
    cli: Cli, start_server: ServerFactory, certificate: CertificateInfo
) -> None:
    server = await start_server(echo)
    lines = [f"datagram {i}" for i in range(5)]
    code, out, err = await cli.run(
        "client",
        url_of(server, "/echo"),
        "--datagram",
        "--ca",
        certificate.certfile,
        stdin="".join(f"{line}\n" for line in lines).encode(),
    )
    assert code == 0, err
    # Loopback rarely loses a datagram, but may reorder: compare as sets.
    assert set(out.splitlines()) == {f"re: {line}" for line in lines}


@pytest.mark.timeout(40)
async def test_exits_with_the_close_code_of_the_server(
    cli: Cli, start_server: ServerFactory, certificate: CertificateInfo
) -> None:
    close_now = asyncio.Event()

    async def one_reply_then_close(session: WebTransportSession) -> None:
        stream = await session.accept_bidirectional_stream()
        await stream.write(await stream.read_all(), end_stream=True)
        # Closing a session resets its streams: close once the reply was printed.
        await close_now.wait()
        await session.close(42, "enough")

    server = await start_server(one_reply_then_close)
    process = await cli.start("client", url_of(server, "/"), "--insecure")
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(b"only line\n")
    await process.stdin.drain()
    assert await asyncio.wait_for(process.stdout.readline(), 20) == b"only line\n"
    close_now.set()
    # stdin stays open: the server's close alone ends the client.
    assert await asyncio.wait_for(process.wait(), 20) == 42
    assert process.stderr is not None
    err = (await process.stderr.read()).decode()
    assert "closed by the server: code 42" in err and "enough" in err


@pytest.mark.timeout(40)
async def test_certificates_are_verified_by_default(cli: Cli, start_server: ServerFactory) -> None:
    server = await start_server(echo)
    code, out, err = await cli.run("client", url_of(server, "/echo"), stdin=b"x\n")
    assert code == 1 and out == ""
    assert "certificate" in err and "Traceback" not in err
    code, _, err = await cli.run("client", url_of(server, "/echo"), "--cert-hash", "abc")
    assert code == 2 and "--cert-hash" in err


@pytest.mark.timeout(40)
async def test_refused_session_names_the_status(cli: Cli, start_server: ServerFactory) -> None:
    server = await start_server(None)  # no handler: every request is answered 404
    code, _, err = await cli.run("client", url_of(server, "/nowhere"), "--insecure", stdin=b"")
    assert code == 1 and "404" in err
