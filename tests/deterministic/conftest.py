"""Fixtures of the deterministic tests: configs for a server and a client on the virtual network."""

from __future__ import annotations

import pytest

from pywebtransport import ClientConfig, ServerConfig
from pywebtransport.shared.utils import CertificateInfo


@pytest.fixture
def server_config(certificate: CertificateInfo) -> ServerConfig:
    """A server on 127.0.0.1:4433 of the virtual network."""
    return ServerConfig(
        certfile=certificate.certfile,
        keyfile=certificate.keyfile,
        bind_host="127.0.0.1",
        bind_port=4433,
    )


@pytest.fixture
def client_config(certificate: CertificateInfo) -> ClientConfig:
    """A client that pins the test certificate."""
    return ClientConfig(server_certificate_hashes=[certificate.sha256])
