"""Features users expect beyond the core: dual-stack, TLS key log, qlog, certificate reload."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from pywebtransport import (
    CertificateError,
    ClientConfig,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.shared.utils import CertificateInfo, generate_self_signed_cert

from .conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]


async def _echo(session: WebTransportSession) -> None:
    async for stream in session.incoming_bidirectional_streams():
        await stream.write(await stream.read_all(), end_stream=True)


async def _roundtrip(client: WebTransportClient, url: str) -> bytes:
    session = await client.connect(url, timeout=5)
    stream = await session.create_bidirectional_stream()
    await stream.write(b"ping", end_stream=True)
    data = await asyncio.wait_for(stream.read_all(), 5)
    await session.close()
    return data


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.timeout(30)
@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_dual_stack_server_serves_ipv4_and_ipv6(
    certificate: CertificateInfo, tmp_path: Path
) -> None:
    cert = generate_self_signed_cert("localhost", output_dir=tmp_path)
    config = ServerConfig(certfile=cert.certfile, keyfile=cert.keyfile, bind_host="::", bind_port=0)
    async with WebTransportServer(config, handler=_echo) as server:
        assert server.local_address is not None
        port = server.local_address[1]
        pinned = ClientConfig(server_certificate_hashes=(cert.sha256,))
        async with WebTransportClient(pinned) as client:
            assert await _roundtrip(client, f"https://127.0.0.1:{port}/v4") == b"ping"
            assert await _roundtrip(client, f"https://[::1]:{port}/v6") == b"ping"


@pytest.mark.timeout(30)
async def test_tls_key_log_and_qlog(
    start_server: Any, certificate: CertificateInfo, tmp_path: Path
) -> None:
    keylog = tmp_path / "keys.log"
    qlog_dir = tmp_path / "qlog"
    qlog_dir.mkdir()
    server: WebTransportServer = await start_server(_echo)
    assert server.local_address is not None
    config = ClientConfig(
        ca_certs=certificate.certfile,
        secrets_log_file=str(keylog),
        qlog_dir=str(qlog_dir),
    )
    async with WebTransportClient(config) as client:
        url = f"https://127.0.0.1:{server.local_address[1]}/log"
        assert await _roundtrip(client, url) == b"ping"
    lines = keylog.read_text().splitlines()
    assert any(line.startswith("CLIENT_TRAFFIC_SECRET_0 ") for line in lines), lines[:3]
    assert list(qlog_dir.iterdir()), "no qlog file written"


@pytest.mark.timeout(30)
async def test_certificate_reload_without_restart(tmp_path: Path) -> None:
    first = generate_self_signed_cert("127.0.0.1", output_dir=tmp_path / "a")
    second = generate_self_signed_cert("127.0.0.1", output_dir=tmp_path / "b")
    assert first.sha256 != second.sha256
    config = ServerConfig(
        certfile=first.certfile, keyfile=first.keyfile, bind_host="127.0.0.1", bind_port=0
    )
    async with WebTransportServer(config, handler=_echo) as server:
        assert server.local_address is not None
        url = f"https://127.0.0.1:{server.local_address[1]}/rotate"
        # During a rotation clients pin both hashes.
        both = ClientConfig(server_certificate_hashes=(first.sha256, second.sha256))
        only_second = ClientConfig(server_certificate_hashes=(second.sha256,))
        async with WebTransportClient(both) as client:
            assert await _roundtrip(client, url) == b"ping"
        async with WebTransportClient(only_second) as client:
            with pytest.raises(CertificateError):
                await client.connect(url, timeout=5)
        server.reload_certificates(second.certfile, second.keyfile)
        assert server.config.certfile == second.certfile
        async with WebTransportClient(only_second) as client:
            assert await _roundtrip(client, url) == b"ping"
        with pytest.raises(CertificateError):
            server.reload_certificates(str(tmp_path / "missing.crt"), second.keyfile)
        async with WebTransportClient(only_second) as client:
            assert await _roundtrip(client, url) == b"ping"  # still the second one


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_wheel_builds_with_typed_package(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("pywebtransport-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(n for n in names if n.endswith("METADATA"))
        requires = archive.read(metadata).decode()
    for module in (
        "pywebtransport/__init__.py",
        "pywebtransport/py.typed",
        "pywebtransport/transport/_core/protocol.py",
        "pywebtransport/transport/_aioquic/__init__.py",
        "pywebtransport/transport/_aioquic/scheduling.py",
        "pywebtransport/framework/app.py",
        "pywebtransport/shared/config.py",
    ):
        assert module in names, module
    for dependency in ("aioquic", "cryptography", "pylsqpack"):
        assert f"Requires-Dist: {dependency}" in requires
    assert not any(name.startswith("tests/") for name in names)


def test_version_matches_metadata() -> None:
    import importlib.metadata

    import pywebtransport

    assert pywebtransport.__version__ == importlib.metadata.version("pywebtransport")


@pytest.mark.timeout(30)
async def test_sessions_on_one_connection_are_all_tracked(
    start_server: Any, client: WebTransportClient
) -> None:
    server: WebTransportServer = await start_server(_echo)
    assert server.local_address is not None
    first = await client.connect(f"https://127.0.0.1:{server.local_address[1]}/one")
    second = await first.connection.create_session("/two")
    assert second.connection is first.connection
    assert {s.key for s in client.session_manager.sessions()} == {first.key, second.key}
    await second.close()
    assert [s.key for s in client.session_manager.sessions()] == [first.key]
    await first.close()


@pytest.mark.timeout(30)
async def test_keep_alive_outlives_the_idle_timeout(
    start_server: Any, client_config: ClientConfig
) -> None:
    """With sessions open, PINGs every keep_alive_interval keep an idle connection up."""
    server: WebTransportServer = await start_server(
        _echo, connection_idle_timeout=1.5, keep_alive_interval=None
    )
    assert server.local_address is not None
    config = client_config.update(connection_idle_timeout=1.5, keep_alive_interval=0.4)
    async with WebTransportClient(config) as client:
        session = await client.connect(f"https://127.0.0.1:{server.local_address[1]}/idle")
        await asyncio.sleep(4)  # well past the idle timeout, nothing sent by the app
        assert session.is_ready
        stream = await session.create_bidirectional_stream()
        await stream.write(b"still here", end_stream=True)
        assert await asyncio.wait_for(stream.read_all(), 5) == b"still here"


@pytest.mark.timeout(30)
async def test_idle_connection_without_keep_alive_times_out(
    start_server: Any, client_config: ClientConfig
) -> None:
    server: WebTransportServer = await start_server(
        _echo, connection_idle_timeout=1.0, keep_alive_interval=None
    )
    assert server.local_address is not None
    config = client_config.update(connection_idle_timeout=1.0, keep_alive_interval=None)
    async with WebTransportClient(config) as client:
        session = await client.connect(f"https://127.0.0.1:{server.local_address[1]}/idle")
        info = await asyncio.wait_for(session.wait_closed(), 10)
        assert info.clean is False
        # The server's own idle timer runs out within the same second.
        assert await wait_until(lambda: len(server.connection_manager) == 0, 3)
