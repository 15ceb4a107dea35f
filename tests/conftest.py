"""Fixtures shared by every test: certificates, servers and clients on 127.0.0.1."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from pywebtransport import (
    ClientConfig,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.shared.utils import CertificateInfo, generate_self_signed_cert


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> CertificateInfo:
    """One ECDSA P-256 certificate for 127.0.0.1, valid 10 days (browser-hash compatible)."""
    directory: Path = tmp_path_factory.mktemp("cert")
    return generate_self_signed_cert("127.0.0.1", output_dir=directory)


@pytest.fixture
def server_config(certificate: CertificateInfo) -> ServerConfig:
    """A server config bound to a free port on 127.0.0.1."""
    return ServerConfig(
        certfile=certificate.certfile,
        keyfile=certificate.keyfile,
        bind_host="127.0.0.1",
        bind_port=0,
        close_timeout=2.0,
    )


@pytest.fixture
def client_config(certificate: CertificateInfo) -> ClientConfig:
    """A client config that trusts the test certificate (through its CA file)."""
    return ClientConfig(
        ca_certs=certificate.certfile, verify_mode=ssl.CERT_REQUIRED, connect_timeout=5.0
    )


ServerFactory = Callable[..., Awaitable[WebTransportServer]]


@pytest.fixture
async def start_server(server_config: ServerConfig) -> AsyncIterator[ServerFactory]:
    """Start servers with a handler; every server started is closed after the test."""
    servers: list[WebTransportServer] = []

    async def start(
        handler: Callable[[WebTransportSession], Awaitable[Any]] | None = None,
        **overrides: Any,
    ) -> WebTransportServer:
        config = server_config.update(**overrides) if overrides else server_config
        server = WebTransportServer(config, handler=handler)
        await server.listen()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def client(client_config: ClientConfig) -> AsyncIterator[WebTransportClient]:
    """A client that is closed after the test."""
    async with WebTransportClient(client_config) as instance:
        yield instance


def url_of(server: WebTransportServer, path: str = "/") -> str:
    """Return the https URL of a path on a test server."""
    address = server.local_address
    assert address is not None
    return f"https://127.0.0.1:{address[1]}{path}"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip tests of an aioquic patch that is switched off (PYWEBTRANSPORT_AIOQUIC_PATCHES)."""
    from pywebtransport.transport import _aioquic

    for mark in item.iter_markers("aioquic_patch"):
        missing = [name for name in mark.args if not _aioquic.enabled(name)]
        if missing:
            pytest.skip(f"tests aioquic patches that are off: {', '.join(missing)}")


# Session-scoped fixtures (browsers, the page server, the interop peer) are torn down in
# the teardown of the session's last test, and pytest-timeout counts that teardown against
# the test's own timeout: a 5-second unit test that happens to run last would fail when
# closing three browsers on a loaded machine takes longer. Each of those closes is bounded
# on its own (20 s at most), so the last test gets room for all of them.
SESSION_TEARDOWN_TIMEOUT = 180.0


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give the session's last test the time the session-scoped teardown needs."""
    if not items:
        return
    last = items[-1]
    marker = last.get_closest_marker("timeout")
    own = float(marker.args[0]) if marker is not None and marker.args else 0.0
    configured = float(config.getini("timeout") or 0)
    # Prepended, so that it is the closest timeout marker, ahead of the test's own.
    room = max(own, configured) + SESSION_TEARDOWN_TIMEOUT
    last.add_marker(pytest.mark.timeout(room), append=False)
