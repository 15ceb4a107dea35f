"""Several workers on one port keep a connection when the client's address changes.

`python -m pywebtransport serve --workers N` runs N processes on one UDP port; a
BPF program on the port routes each datagram by its connection id, which names the
worker that issued it. Between client and server, the relay (`udp_relay.py`) gives
each client flow a new source port every quarter second, as a NAT rebinding an idle
flow does: with the routing, every transfer finishes byte-exact on its worker; with
it switched off (`PYWEBTRANSPORT_AIOQUIC_PATCHES=cid_routing`, the kernel then
hashes addresses), the connection is lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from pywebtransport import ClientConfig, WebTransportClient, WebTransportSession
from pywebtransport.shared.exceptions import WebTransportError
from pywebtransport.shared.utils import CertificateInfo

from .processes import spawn, stop, until_logged
from .test_cli import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="SO_ATTACH_REUSEPORT_CBPF is Linux only"),
]

HERE = Path(__file__).resolve().parent

APP_MODULE = """
import asyncio, hashlib, os
from pywebtransport import ServerConfig
from pywebtransport.framework import ServerApp

app = ServerApp(ServerConfig(
    certfile=os.environ["TEST_CERT"], keyfile=os.environ["TEST_KEY"],
    retry=os.environ.get("TEST_RETRY", "auto"),
    connection_idle_timeout=3.0, keep_alive_interval=1.0,
))

@app.route("/work")
async def work(session):
    pid = str(os.getpid()).encode()

    async def datagrams():
        async for datagram in session.incoming_datagrams():
            await session.send_datagram(pid + b" " + datagram)

    async def digest(stream):
        sha, size = hashlib.sha256(), 0
        async for chunk in stream:
            sha.update(chunk)
            size += len(chunk)
        await stream.write(f"{pid.decode()} {size} {sha.hexdigest()}".encode(), end_stream=True)

    task = asyncio.create_task(datagrams())
    streams = set()
    try:
        async for stream in session.incoming_bidirectional_streams():
            streams.add(asyncio.create_task(digest(stream)))
    finally:
        task.cancel()
"""

PAYLOAD = bytes((i * 31) % 256 for i in range(2 * 1024 * 1024))


async def start_workers(
    processes: list[asyncio.subprocess.Process],
    tmp_path: Path,
    certificate: CertificateInfo,
    workers: int,
    *,
    patches: str | None = None,
    retry: str = "auto",
) -> tuple[asyncio.subprocess.Process, int]:
    (tmp_path / "work_app.py").write_text(APP_MODULE)
    port = free_port()
    env = {"TEST_CERT": certificate.certfile, "TEST_KEY": certificate.keyfile, "TEST_RETRY": retry}
    if patches is not None:
        env["PYWEBTRANSPORT_AIOQUIC_PATCHES"] = patches
    server = await spawn(
        processes, "-m", "pywebtransport", "serve", "work_app:app", "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(workers), cwd=tmp_path, env=env,
    )  # fmt: skip
    await until_logged(server, "listening on", workers)
    return server, port


async def start_relay(
    processes: list[asyncio.subprocess.Process], target: int, *args: str
) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    relay = await spawn(
        processes, str(HERE / "udp_relay.py"), "--listen", str(port), "--target", str(target),
        *args,
    )  # fmt: skip
    await until_logged(relay, "READY")
    return relay, port


async def transfer(
    session: WebTransportSession, *, migrate: bool = False, payload: bytes = PAYLOAD
) -> set[str]:
    """Upload `payload` (checked byte-exact by digest) while datagrams go back and forth.

    Returns:
        The worker pids that answered.
    """
    pids: set[str] = set()
    echoed: list[bytes] = []

    async def datagrams() -> None:
        for number in range(1000):
            await session.send_datagram(b"d%d" % number)
            await asyncio.sleep(0.01)

    async def replies() -> None:
        async for datagram in session.incoming_datagrams():
            pid, _, body = datagram.partition(b" ")
            pids.add(pid.decode())
            echoed.append(body)

    sender = asyncio.create_task(datagrams())
    receiver = asyncio.create_task(replies())
    try:
        stream = await session.create_bidirectional_stream()
        for start in range(0, len(payload), 65536):
            await stream.write(payload[start : start + 65536])
            if migrate and start == len(payload) // 2:
                # QUIC connection migration: the client moves to another connection
                # id the server issued (and the relay moves its port meanwhile).
                session.connection._engine.quic.change_connection_id()
        await stream.write(b"", end_stream=True)
        answer = (await stream.read_all()).decode().split()
        assert answer[1:] == [str(len(payload)), hashlib.sha256(payload).hexdigest()]
        pids.add(answer[0])
        count = len(echoed)
        for _ in range(100):  # datagrams still come back after the last move
            if len(echoed) > count + 5:
                break
            await asyncio.sleep(0.02)
        assert len(echoed) > count + 5
    finally:
        sender.cancel()
        receiver.cancel()
    return pids


async def moving_clients(
    port: int,
    client_config: ClientConfig,
    count: int,
    *,
    migrate: bool = False,
    payload: bytes = PAYLOAD,
) -> list[set[str]]:
    async def one() -> set[str]:
        async with WebTransportClient(client_config) as client:
            session = await client.connect(f"https://127.0.0.1:{port}/work")
            try:
                return await transfer(session, migrate=migrate, payload=payload)
            finally:
                await session.close()

    return list(await asyncio.gather(*(one() for _ in range(count))))


RELAY_ARGS: Sequence[str] = ("--rebind-every", "0.25", "--rate", "20", "--queue", "256")
"""20 Mbit/s: two 2 MiB uploads take over a second and a half, so each flow moves several
times."""


@pytest.mark.parametrize("workers", [2, 4])
@pytest.mark.timeout(90)
async def test_clients_that_change_address_stay_on_their_worker(
    workers: int,
    tmp_path: Path,
    certificate: CertificateInfo,
    client_config: ClientConfig,
    processes: list[asyncio.subprocess.Process],
) -> None:
    server, port = await start_workers(processes, tmp_path, certificate, workers)
    relay, relay_port = await start_relay(processes, port, *RELAY_ARGS)
    answered = await moving_clients(relay_port, client_config, count=2)
    # Each connection was served by one worker from start to end, moves included.
    assert all(len(pids) == 1 for pids in answered), answered
    assert await stop(relay) in (0, -15)
    assert await stop(server) == 0


@pytest.mark.timeout(90)
async def test_a_client_that_migrates_to_a_new_connection_id_stays_on_its_worker(
    tmp_path: Path,
    certificate: CertificateInfo,
    client_config: ClientConfig,
    processes: list[asyncio.subprocess.Process],
) -> None:
    server, port = await start_workers(processes, tmp_path, certificate, 4)
    relay, relay_port = await start_relay(processes, port, *RELAY_ARGS)
    answered = await moving_clients(relay_port, client_config, count=2, migrate=True)
    assert all(len(pids) == 1 for pids in answered), answered
    await stop(relay)
    assert await stop(server) == 0


@pytest.mark.timeout(90)
async def test_without_the_routing_a_moving_client_loses_its_connection(
    tmp_path: Path,
    certificate: CertificateInfo,
    client_config: ClientConfig,
    processes: list[asyncio.subprocess.Process],
) -> None:
    server, port = await start_workers(processes, tmp_path, certificate, 4, patches="cid_routing")
    await until_logged(server, "routes by address hash")
    relay, relay_port = await start_relay(processes, port, *RELAY_ARGS)
    config = client_config.update(connection_idle_timeout=3.0, keep_alive_interval=1.0)
    # With the kernel hashing addresses, each move lands on a worker chosen at random
    # (1 in 4 the same one): a transfer across a dozen moves (8 MiB at 20 Mbit/s, over
    # 3 s) survives with odds of 4**-12; it ends at the first move instead, at the
    # idle timeout.
    with pytest.raises((WebTransportError, TimeoutError)):
        await asyncio.wait_for(moving_clients(relay_port, config, count=1, payload=PAYLOAD * 4), 30)
    await stop(relay)
    await stop(server)


@pytest.mark.timeout(60)
async def test_retry_tokens_from_one_worker_are_accepted_by_all(
    tmp_path: Path,
    certificate: CertificateInfo,
    client_config: ClientConfig,
    processes: list[asyncio.subprocess.Process],
) -> None:
    server, port = await start_workers(processes, tmp_path, certificate, 4, retry="always")
    pids: set[str] = set()

    async def one() -> None:
        async with WebTransportClient(client_config) as client:
            session = await client.connect(f"https://127.0.0.1:{port}/work")
            stream = await session.create_bidirectional_stream()
            await stream.write(b"x", end_stream=True)
            pids.add((await stream.read_all()).decode().split()[0])
            await session.close()

    # The retried Initial carries a connection id the Retry chose, routed to any
    # worker: every connection succeeds only if every worker accepts every token.
    await asyncio.gather(*(one() for _ in range(12)))
    assert len(pids) > 1
    assert await stop(server) == 0
