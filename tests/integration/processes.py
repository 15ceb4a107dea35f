"""Server processes for tests: started, watched through their output, always stopped."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from pywebtransport import WebTransportClient, WebTransportSession

ROOT = Path(__file__).resolve().parents[2]


class Output:
    """The lines a process prints (stdout and stderr), read as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read(process))

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            async with self._changed:
                self.lines.append(line.decode(errors="replace").rstrip())
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    async def until(self, text: str, count: int = 1) -> None:
        """Wait until `count` lines contain `text` (fails when the process ends first).

        Args:
            text: What the lines must contain.
            count: How many such lines.
        """
        async with self._changed:
            while sum(text in line for line in self.lines) < count:
                assert not self._reader.done(), f"process ended before {text!r}: {self.lines}"
                await self._changed.wait()


OUTPUTS: dict[asyncio.subprocess.Process, Output] = {}


async def spawn(
    processes: list[asyncio.subprocess.Process],
    *args: str,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
) -> asyncio.subprocess.Process:
    """Start `python *args` with the library on its path; its output is watched.

    Args:
        processes: The `processes` fixture (conftest.py; it stops the process).
        *args: Arguments to the interpreter.
        cwd: Working directory.
        env: Variables added to this process's environment.

    Returns:
        The process.
    """
    variables = dict(os.environ, **(env or {}))
    variables.update(PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT / "src"))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=cwd,
        env=variables,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    processes.append(process)
    OUTPUTS[process] = Output(process)
    return process


async def until_logged(process: asyncio.subprocess.Process, text: str, count: int = 1) -> None:
    """Wait (at most 20 s) until a spawned process printed `count` lines with `text`.

    Args:
        process: A process from `spawn`.
        text: What the lines must contain.
        count: How many such lines.
    """
    await asyncio.wait_for(OUTPUTS[process].until(text, count), 20)


async def connect_when_ready(
    client: WebTransportClient,
    url: str,
    process: asyncio.subprocess.Process,
    *,
    workers: int = 1,
    **kw: object,
) -> WebTransportSession:
    """Connect once the server logged that it listens (every worker, when there are several).

    Args:
        client: The client.
        url: Where to connect.
        process: The server process from `spawn`.
        workers: Worker processes that each log "listening on".
        **kw: Passed to `client.connect`.

    Returns:
        The session.
    """
    await until_logged(process, "listening on", workers)
    return await client.connect(url, **kw)  # type: ignore[arg-type]


async def stop(process: asyncio.subprocess.Process) -> int:
    """Stop a process with SIGTERM and return its exit status.

    Args:
        process: The process.

    Returns:
        Its return code.
    """
    process.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(process.wait(), 10)
