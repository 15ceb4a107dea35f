"""Connect-time failures over loopback: URLs, timeouts, certificates, limits."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pywebtransport import ClientConfig, EventType, WebTransportClient, WebTransportServer
from pywebtransport.shared.exceptions import (
    CertificateError,
    ClientError,
    ConnectionError,
    HandshakeError,
    TimeoutError,
)
from pywebtransport.shared.utils import CertificateInfo, generate_self_signed_cert

from .conftest import Capture, ServerFactory, url_of, wait_until


@pytest.fixture
def silent_udp_port() -> Iterator[int]:
    """A UDP port with a socket bound that never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture
def closed_udp_port() -> int:
    """A UDP port nothing listens on (bound once, then released)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.mark.timeout(10)
async def test_connect_timeout_silent_port(
    client: WebTransportClient, silent_udp_port: int
) -> None:
    with pytest.raises(TimeoutError):
        await client.connect(f"https://127.0.0.1:{silent_udp_port}/", timeout=0.5)
    assert len(client.connection_manager) == 0


@pytest.mark.timeout(10)
async def test_nothing_listening_is_reported_at_once(
    client: WebTransportClient, closed_udp_port: int
) -> None:
    # Linux reports the ICMP port unreachable to the connected socket: the connect fails
    # long before its (deliberately long) timeout, naming the address.
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ConnectionError) as info:
        await client.connect(f"https://127.0.0.1:{closed_udp_port}/", timeout=8.0)
    assert loop.time() - started < 4.0
    assert f"nothing answered at 127.0.0.1:{closed_udp_port}" in str(info.value)
    assert len(client.connection_manager) == 0


@pytest.mark.timeout(10)
async def test_mismatched_certificate_and_key_refused_at_startup(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    first = generate_self_signed_cert("localhost", output_dir=str(tmp_path / "a"))
    second = generate_self_signed_cert("localhost", output_dir=str(tmp_path / "b"))
    with pytest.raises(CertificateError) as info:
        await start_server(None, certfile=first.certfile, keyfile=second.keyfile)
    message = str(info.value)
    assert first.certfile in message and second.keyfile in message
    assert "do not belong together" in message


@pytest.mark.timeout(10)
async def test_self_signed_rejection_says_how_to_trust_it(
    echo_server: WebTransportServer,
) -> None:
    async with WebTransportClient(ClientConfig(connect_timeout=5.0)) as strict:
        with pytest.raises(CertificateError) as info:
            await strict.connect(url_of(echo_server))
    message = str(info.value)
    assert "self-signed" in message
    assert "server_certificate_hashes" in message and "--cert-hash" in message


@pytest.mark.timeout(5)
@pytest.mark.parametrize("url", ["http://x", "https://", "wss://127.0.0.1/", "not a url"])
async def test_bad_url(client: WebTransportClient, url: str) -> None:
    with pytest.raises(ClientError) as info:
        await client.connect(url)
    assert isinstance(info.value, ValueError)


@pytest.mark.timeout(10)
async def test_verification_on_by_default(echo_server: WebTransportServer) -> None:
    async with WebTransportClient(ClientConfig(connect_timeout=5.0)) as strict:
        with pytest.raises(CertificateError):
            await strict.connect(url_of(echo_server))
        assert len(strict.connection_manager) == 0


@pytest.mark.timeout(10)
async def test_pinned_hash_accepted(
    echo_server: WebTransportServer, certificate: CertificateInfo
) -> None:
    config = ClientConfig(server_certificate_hashes=(certificate.sha256,), connect_timeout=5.0)
    async with WebTransportClient(config) as pinned:
        session = await pinned.connect(url_of(echo_server))
        stream = await session.create_bidirectional_stream()
        await stream.write(b"pinned", end_stream=True)
        assert await stream.read_all() == b"pinned"
        await session.close()


@pytest.mark.timeout(10)
async def test_wrong_pinned_hash_rejected(
    echo_server: WebTransportServer, certificate: CertificateInfo
) -> None:
    wrong = bytes(b ^ 0xFF for b in certificate.sha256)
    config = ClientConfig(server_certificate_hashes=(wrong,), connect_timeout=5.0)
    async with WebTransportClient(config) as pinned:
        with pytest.raises(CertificateError):
            await pinned.connect(url_of(echo_server))
        assert len(pinned.connection_manager) == 0


@pytest.mark.timeout(10)
@pytest.mark.parametrize("field", ["certfile", "keyfile"])
async def test_missing_cert_file(start_server: ServerFactory, tmp_path: object, field: str) -> None:
    missing = f"{tmp_path}/missing-{field}.pem"
    with pytest.raises(CertificateError) as info:
        await start_server(None, **{field: missing})
    assert missing in str(info.value)


@pytest.mark.timeout(10)
async def test_max_sessions_per_connection_429(
    start_server: ServerFactory, capture: Capture, client: WebTransportClient
) -> None:
    server = await start_server(capture, max_sessions_per_connection=1)
    session = await client.connect(url_of(server))
    await capture.next()
    with pytest.raises(HandshakeError) as info:
        await session.connection.create_session("/second")
    assert info.value.status_code == 429
    # The first session is unaffected.
    stream = await session.create_bidirectional_stream()
    await stream.write(b"ok", end_stream=True)
    assert session.is_ready
    await session.close()


@pytest.mark.timeout(10)
async def test_max_sessions_429(
    start_server: ServerFactory, capture: Capture, client_config: ClientConfig
) -> None:
    server = await start_server(capture, max_sessions=1)
    async with WebTransportClient(client_config) as one, WebTransportClient(client_config) as two:
        first = await one.connect(url_of(server))
        await capture.next()
        with pytest.raises(HandshakeError) as info:
            await two.connect(url_of(server))
        assert info.value.status_code == 429
        await first.close()
        # Once the first session is gone, a new one fits again.
        assert await wait_until(lambda: len(server.session_manager) == 0, 3)
        again = await two.connect(url_of(server))
        assert again.is_ready
        await again.close()


@pytest.mark.timeout(10)
async def test_normal_client_exit_is_not_reported_as_aborted(
    echo_server: WebTransportServer, certificate: CertificateInfo
) -> None:
    closed: list[Any] = []
    echo_server.on(EventType.CONNECTION_CLOSED, closed.append)
    config = ClientConfig(server_certificate_hashes=(certificate.sha256,), connect_timeout=5.0)
    async with WebTransportClient(config) as user:
        session = await user.connect(url_of(echo_server))
        stream = await session.create_bidirectional_stream()
        await stream.write(b"bye", end_stream=True)
        assert await stream.read_all() == b"bye"
    assert await wait_until(lambda: bool(closed), 5)
    assert (closed[0].data["error_code"], closed[0].data["reason"]) == (0, "")
