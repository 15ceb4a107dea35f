"""The public surface: every seed name importable from the top level and from its module."""

from __future__ import annotations

import importlib

import pytest

import pywebtransport

SEED_NAMES = {
    "pywebtransport.client": ["WebTransportClient"],
    "pywebtransport.server": ["WebTransportServer"],
    "pywebtransport.transport.connection": ["WebTransportConnection"],
    "pywebtransport.transport.session": ["WebTransportSession"],
    "pywebtransport.transport.stream": [
        "WebTransportStream",
        "WebTransportSendStream",
        "WebTransportReceiveStream",
    ],
    "pywebtransport.transport.manager": ["ConnectionManager", "SessionManager"],
    "pywebtransport.shared.config": ["ClientConfig", "ServerConfig"],
    "pywebtransport.shared.events": ["EventEmitter", "Event", "EventHandler", "EventType"],
    "pywebtransport.shared.types": [
        "StreamId",
        "SessionId",
        "StreamState",
        "SessionState",
        "StreamDirection",
        "ConnectionState",
        "EventType",
    ],
    "pywebtransport.shared.exceptions": [
        "WebTransportError",
        "ConnectionError",
        "SessionError",
        "SessionClosedError",
        "StreamError",
        "DatagramError",
        "ProtocolError",
        "TimeoutError",
        "ConfigurationError",
        "ClientError",
        "ServerError",
        "HandshakeError",
        "CertificateError",
        "FlowControlError",
        "AuthenticationError",
    ],
    "pywebtransport.shared.constants": ["ErrorCodes"],
    "pywebtransport.shared.utils": ["generate_self_signed_cert", "init_tracing"],
    "pywebtransport.framework": ["SessionHandler", "ServerApp", "RequestRouter"],
}


@pytest.mark.parametrize("module_name", sorted(SEED_NAMES))
def test_seed_names_importable_from_module_and_top_level(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in SEED_NAMES[module_name]:
        assert getattr(module, name) is getattr(pywebtransport, name), name
        assert name in pywebtransport.__all__, name
        assert name in module.__all__, name


def test_top_level_all_is_union_of_subpackages() -> None:
    expected = {"__version__"}
    for package in ("shared", "transport", "client", "server", "framework"):
        try:
            module = importlib.import_module(f"pywebtransport.{package}")
        except ImportError:  # pragma: no cover - framework not built yet
            continue
        expected.update(module.__all__)
    assert set(pywebtransport.__all__) == expected
    assert len(pywebtransport.__all__) == len(expected), "a name is listed twice"
    for name in pywebtransport.__all__:
        assert hasattr(pywebtransport, name), name


def test_version_is_a_string() -> None:
    assert isinstance(pywebtransport.__version__, str)
    assert pywebtransport.__version__.count(".") >= 2
