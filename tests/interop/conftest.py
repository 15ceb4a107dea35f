"""Interop fixtures: the third-party peer (pywebtransport 0.21 in its own venv) as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PEER_PYTHON = Path(os.environ.get("PWT_PEER_PYTHON", ROOT / ".venv-peer" / "bin" / "python"))
PEER_SCRIPT = Path(__file__).with_name("peer021.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test in this directory `interop`."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.interop)


@pytest.fixture(scope="session")
def peer_python() -> Path:
    """The interpreter of the peer's venv (`make peer-venv` creates it)."""
    if not PEER_PYTHON.exists():
        pytest.skip(f"{PEER_PYTHON} missing: run `make peer-venv` (pywebtransport 0.21 venv)")
    return PEER_PYTHON


def free_udp_port() -> int:
    """Return a UDP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Peer:
    """A running peer process whose stdout lines are JSON records."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.records: list[dict[str, Any]] = []
        self.stderr = b""

    async def next_record(self, event: str, timeout: float = 20.0) -> dict[str, Any]:
        """Wait for the next record whose `event` matches (earlier ones are kept)."""
        for record in self.records:
            if record.get("event") == event and not record.get("_seen"):
                record["_seen"] = True
                return record
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.process.stdout.readline()
                if not line:
                    raise AssertionError(
                        f"peer exited before {event!r}; records={self.records} "
                        f"stderr={await self._stderr()!r}"
                    )
                record = json.loads(line)
                self.records.append(record)
                if record.get("event") == event:
                    record["_seen"] = True
                    return record

    async def _stderr(self) -> bytes:
        if self.process.stderr is None:
            return b""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                self.stderr += await self.process.stderr.read()
        return self.stderr[-2000:]

    async def stop(self) -> None:
        """Terminate the peer's process group and reap it."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(5):
                    await self.process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                await self.process.wait()


@pytest.fixture
async def run_peer(peer_python: Path) -> AsyncIterator[Any]:
    """Start peer processes (`server PORT CERT KEY`, `client URL CA ...`); all stopped after."""
    peers: list[Peer] = []

    async def start(*args: str) -> Peer:
        process = await asyncio.create_subprocess_exec(
            str(peer_python),
            str(PEER_SCRIPT),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        peer = Peer(process)
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        await peer.stop()
