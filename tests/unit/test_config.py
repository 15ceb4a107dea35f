"""Tests for pywebtransport.shared.config."""

from __future__ import annotations

import dataclasses
import math
import ssl
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pywebtransport.shared.config import BaseConfig, ClientConfig, ServerConfig
from pywebtransport.shared.exceptions import ConfigurationError

MIB = 1024 * 1024
SERVER_FILES = {"certfile": "cert.pem", "keyfile": "key.pem"}

# Integer limits and the smallest value each accepts.
INT_LIMITS = {
    "event_history_capacity": 0,
    "event_queue_capacity": 1,
    "flow_control_window": 1,
    "initial_max_data": 1,
    "initial_max_streams_bidi": 0,
    "initial_max_streams_uni": 0,
    "max_capsule_size": 1,
    "max_connections": 1,
    "max_event_listeners": 1,
    "max_field_section_size": 1,
    "max_pending_datagrams": 1,
    "max_pending_streams": 1,
    "max_sessions": 1,
    "max_stream_read_buffer_size": 1,
    "max_stream_write_buffer_size": 1,
    "max_total_pending_events": 1,
    "outgoing_datagram_high_water_mark": 1,
    "quic_max_concurrent_bidi_streams": 1,
    "quic_max_concurrent_uni_streams": 1,
    "quic_receive_window": 1,
    "quic_stream_receive_window": 1,
}
OPTIONAL_TIMEOUTS = (
    "keep_alive_interval",
    "read_timeout",
    "write_timeout",
    "outgoing_datagram_max_age",
)
REQUIRED_TIMEOUTS = (
    "close_timeout",
    "connection_idle_timeout",
    "pending_event_ttl",
    "resource_cleanup_interval",
    "stream_creation_timeout",
)


def raises_for(key: str) -> Any:
    return pytest.raises(ConfigurationError, match=key)


def test_base_defaults_follow_reference_except_where_documented() -> None:
    config = BaseConfig()
    assert config.alpn_protocols == ("h3",)
    assert config.close_timeout == 5.0
    assert config.congestion_control_algorithm == "cubic"
    assert config.connection_idle_timeout == 60.0
    assert config.event_history_capacity == 0
    assert config.event_queue_capacity == 100
    assert config.flow_control_window == 4 * MIB
    assert config.initial_max_data == 4 * MIB
    assert config.initial_max_streams_bidi == 10
    assert config.initial_max_streams_uni == 10
    assert config.keep_alive_interval == 30.0
    assert config.log_level is None  # leaves logging alone (the reference sets INFO)
    assert config.max_capsule_size == 65536
    assert config.max_connections == 100
    assert config.max_datagram_size == 1350
    assert config.max_event_listeners == 10
    assert config.max_field_section_size == 65536
    assert config.max_pending_datagrams == 100
    assert config.max_pending_streams == 10
    assert config.max_sessions == 10
    assert config.max_stream_read_buffer_size == MIB
    assert config.max_stream_write_buffer_size == MIB
    assert config.max_total_pending_events == 100  # held streams of 64 KiB each
    assert config.outgoing_datagram_high_water_mark == 32
    assert config.outgoing_datagram_max_age == 0.5
    assert config.pending_event_ttl == 5.0
    assert config.quic_max_concurrent_bidi_streams == 100
    assert config.quic_max_concurrent_uni_streams == 100
    assert config.quic_receive_window == 16 * MIB
    assert config.quic_stream_receive_window == MIB
    assert config.read_timeout == 60.0
    assert config.resource_cleanup_interval == 15.0
    assert config.stream_creation_timeout == 10.0
    assert config.write_timeout == 30.0
    assert config.secrets_log_file is None
    assert config.qlog_dir is None


def test_client_defaults() -> None:
    config = ClientConfig()
    assert config.ca_certs is None
    assert config.certfile is None
    assert config.keyfile is None
    # 10 s like websockets' open timeout (the reference has 30 s): a typo'd port fails soon.
    assert config.connect_timeout == 10.0
    assert config.connection_attempt_delay == 0.25
    assert config.headers == {}
    assert config.user_agent is None
    assert config.verify_mode is ssl.CERT_REQUIRED
    assert config.wt_available_protocols is None
    assert config.server_certificate_hashes == ()


def test_server_defaults() -> None:
    config = ServerConfig(**SERVER_FILES)
    assert config.certfile == "cert.pem"
    assert config.keyfile == "key.pem"
    assert config.bind_host == "::"
    assert config.bind_port == 4433
    assert config.ca_certs is None
    assert config.verify_mode is ssl.CERT_NONE
    assert config.handshake_timeout == 10.0
    assert config.max_sessions_per_connection == 10


def test_configs_are_frozen_and_keyword_only() -> None:
    config = ClientConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_sessions = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        ClientConfig(("h3",))  # type: ignore[misc]


def test_configs_are_hashable_and_comparable() -> None:
    a = ClientConfig(headers={"x": "1"})
    b = ClientConfig(headers={"x": "1"})
    assert a == b
    assert hash(a) == hash(b)
    assert a != ClientConfig(headers={"x": "2"})


@pytest.mark.parametrize("missing", ["certfile", "keyfile"])
def test_server_requires_cert_and_key(missing: str) -> None:
    values = {k: v for k, v in SERVER_FILES.items() if k != missing}
    with pytest.raises(ConfigurationError) as info:
        ServerConfig(**values)
    assert info.value.config_key == missing
    assert missing in str(info.value)


def test_server_does_not_check_files_exist() -> None:
    config = ServerConfig(certfile="/nonexistent/c.pem", keyfile="/nonexistent/k.pem")
    assert config.certfile == "/nonexistent/c.pem"


@pytest.mark.parametrize(
    ("certfile", "keyfile", "key"), [("c.pem", None, "keyfile"), (None, "k.pem", "certfile")]
)
def test_client_cert_and_key_go_together(
    certfile: str | None, keyfile: str | None, key: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        ClientConfig(certfile=certfile, keyfile=keyfile)
    assert info.value.config_key == key
    assert ClientConfig(certfile="c.pem", keyfile="k.pem").keyfile == "k.pem"


@pytest.mark.parametrize("port", [0, 1, 4433, 65535])
def test_bind_port_accepts_range(port: int) -> None:
    assert ServerConfig(**SERVER_FILES, bind_port=port).bind_port == port


@pytest.mark.parametrize("port", [-1, 65536, True, 443.0, "443"])
def test_bind_port_rejects(port: Any) -> None:
    with raises_for("bind_port") as info:
        ServerConfig(**SERVER_FILES, bind_port=port)
    assert info.value.config_value == port
    assert "65535" in str(info.value) or "integer" in str(info.value)


@pytest.mark.parametrize("size", [1200, 1350, 16383])
def test_max_datagram_size_accepts_range(size: int) -> None:
    assert ClientConfig(max_datagram_size=size).max_datagram_size == size


@pytest.mark.parametrize("size", [0, 1199, 16384, 65535, True])
def test_max_datagram_size_rejects(size: Any) -> None:
    with raises_for("max_datagram_size") as info:
        ClientConfig(max_datagram_size=size)
    assert "1200" in str(info.value)
    assert "16383" in str(info.value) or size is True


def test_congestion_control_algorithms() -> None:
    for name in ("cubic", "reno", "bbr"):
        assert ClientConfig(congestion_control_algorithm=name).congestion_control_algorithm == name
        server = ServerConfig(congestion_control_algorithm=name, **SERVER_FILES)
        assert server.congestion_control_algorithm == name
    with raises_for("congestion_control_algorithm") as info:
        ClientConfig(congestion_control_algorithm="vegas")
    assert "'bbr'" in str(info.value)
    assert info.value.config_value == "vegas"


def test_log_level() -> None:
    assert ClientConfig(log_level="debug").log_level == "DEBUG"
    with raises_for("log_level"):
        ClientConfig(log_level="LOUD")
    with raises_for("log_level"):
        ClientConfig(log_level=10)  # type: ignore[arg-type]


def test_alpn_protocols() -> None:
    config = ClientConfig(alpn_protocols=["h3", "h3-29"])  # type: ignore[arg-type]
    assert config.alpn_protocols == ("h3", "h3-29")
    for bad in ([], "h3", [""], [b"h3"]):
        with raises_for("alpn_protocols"):
            ClientConfig(alpn_protocols=bad)


def test_headers_stored_as_dict_copy() -> None:
    source = {"authorization": "Bearer x"}
    config = ClientConfig(headers=source)
    source["authorization"] = "changed"
    assert config.headers == {"authorization": "Bearer x"}
    pairs = ClientConfig(headers=[("a", "1"), (b"b", b"2")])
    assert pairs.headers == {"a": "1", b"b": b"2"}
    for bad in ([("a",)], {"a": 1}, 5):
        with raises_for("headers"):
            ClientConfig(headers=bad)


def test_server_certificate_hashes() -> None:
    digest = bytes(range(32))
    config = ClientConfig(server_certificate_hashes=[digest, digest.hex(), bytearray(digest)])  # type: ignore[list-item]
    assert config.server_certificate_hashes == (digest, digest, digest)
    colon_hex = ":".join(f"{b:02X}" for b in digest)
    assert ClientConfig(server_certificate_hashes=[colon_hex]).server_certificate_hashes == (
        digest,
    )  # type: ignore[list-item]
    for bad in ([b"short"], ["zz" * 32], [digest + b"x"], digest):
        with raises_for("server_certificate_hashes"):
            ClientConfig(server_certificate_hashes=bad)


def test_verify_mode() -> None:
    assert ClientConfig(verify_mode=0).verify_mode is ssl.CERT_NONE  # type: ignore[arg-type]
    for bad in (5, "CERT_NONE", True, None):
        with raises_for("verify_mode"):
            ClientConfig(verify_mode=bad)
        with raises_for("verify_mode"):
            ServerConfig(**SERVER_FILES, verify_mode=bad)


def test_wt_available_protocols() -> None:
    config = ClientConfig(wt_available_protocols=["chat", "echo"])  # type: ignore[arg-type]
    assert config.wt_available_protocols == ("chat", "echo")
    with raises_for("wt_available_protocols"):
        ClientConfig(wt_available_protocols="chat")  # type: ignore[arg-type]


def test_keep_alive_must_be_below_idle_timeout() -> None:
    with raises_for("keep_alive_interval") as info:
        ClientConfig(keep_alive_interval=60.0, connection_idle_timeout=60.0)
    assert "connection_idle_timeout" in str(info.value)
    assert ClientConfig(keep_alive_interval=None).keep_alive_interval is None


def test_connection_attempt_delay_may_be_zero() -> None:
    assert ClientConfig(connection_attempt_delay=0).connection_attempt_delay == 0.0
    with raises_for("connection_attempt_delay"):
        ClientConfig(connection_attempt_delay=-0.1)


def test_optional_paths() -> None:
    config = ServerConfig(**SERVER_FILES, secrets_log_file="keys.log", qlog_dir="qlog")
    assert config.secrets_log_file == "keys.log"
    assert config.qlog_dir == "qlog"
    with raises_for("qlog_dir"):
        ClientConfig(qlog_dir="")


@given(field=st.sampled_from(sorted(INT_LIMITS)), data=st.data())
def test_any_int_below_minimum_is_rejected(field: str, data: st.DataObject) -> None:
    value = data.draw(st.integers(max_value=INT_LIMITS[field] - 1))
    with pytest.raises(ConfigurationError) as info:
        ClientConfig(**{field: value})
    assert info.value.config_key == field
    assert field in str(info.value)
    assert info.value.config_value == value


@given(field=st.sampled_from(sorted(INT_LIMITS)), data=st.data())
def test_any_int_at_or_above_minimum_is_accepted(field: str, data: st.DataObject) -> None:
    value = data.draw(st.integers(min_value=INT_LIMITS[field], max_value=2**40))
    assert getattr(ServerConfig(**SERVER_FILES, **{field: value}), field) == value


@given(
    field=st.sampled_from(sorted(INT_LIMITS)),
    value=st.one_of(st.booleans(), st.floats(), st.text(max_size=3), st.none()),
)
def test_non_int_limits_are_rejected(field: str, value: Any) -> None:
    with raises_for(field):
        ClientConfig(**{field: value})


@given(
    field=st.sampled_from(OPTIONAL_TIMEOUTS + REQUIRED_TIMEOUTS),
    value=st.one_of(
        st.floats(max_value=0.0),
        st.integers(max_value=0),
        st.sampled_from([math.inf, math.nan, True]),
    ),
)
def test_non_positive_timeouts_are_rejected(field: str, value: float) -> None:
    with raises_for(field):
        ClientConfig(**{field: value})


@pytest.mark.parametrize("field", REQUIRED_TIMEOUTS)
def test_required_timeouts_reject_none(field: str) -> None:
    with raises_for(field):
        ClientConfig(**{field: None})


@pytest.mark.parametrize("field", OPTIONAL_TIMEOUTS)
def test_optional_timeouts_accept_none(field: str) -> None:
    assert getattr(ClientConfig(**{field: None}), field) is None


@pytest.mark.parametrize("field", ["connect_timeout", "handshake_timeout"])
def test_subclass_timeouts_validated(field: str) -> None:
    cls: type[BaseConfig] = ClientConfig if field == "connect_timeout" else ServerConfig
    extra = {} if cls is ClientConfig else SERVER_FILES
    with raises_for(field):
        cls(**extra, **{field: 0})
    assert getattr(cls(**extra, **{field: 3}), field) == 3.0


def test_update_returns_new_validated_copy() -> None:
    config = ClientConfig()
    updated = config.update(max_sessions=3, read_timeout=None)
    assert updated is not config
    assert updated.max_sessions == 3
    assert updated.read_timeout is None
    assert config.max_sessions == 10
    assert config.read_timeout == 60.0
    with raises_for("max_sessions"):
        config.update(max_sessions=0)


def test_update_rejects_unknown_key() -> None:
    with pytest.raises(ConfigurationError) as info:
        ClientConfig().update(max_session=3)
    assert info.value.config_key == "max_session"
    assert "max_session" in str(info.value)
    # A server-only field is unknown to a client config.
    with raises_for("bind_port"):
        ClientConfig().update(bind_port=1)


def test_copy_is_equal_and_independent() -> None:
    config = ClientConfig(headers={"a": "1"})
    copied = config.copy()
    assert copied == config
    assert copied is not config
    assert copied.headers is not config.headers


def test_validate_reruns_checks() -> None:
    config = ServerConfig(**SERVER_FILES)
    config.validate()
    object.__setattr__(config, "max_sessions", 0)
    with raises_for("max_sessions"):
        config.validate()


@pytest.mark.parametrize(
    "config",
    [
        ClientConfig(),
        ClientConfig(
            alpn_protocols=("h3",),
            headers={"x-a": "1", b"x-b": b"2"},
            server_certificate_hashes=(bytes(32),),
            wt_available_protocols=("chat",),
            verify_mode=ssl.CERT_NONE,
            keep_alive_interval=None,
            max_datagram_size=1200,
            secrets_log_file="keys.log",
        ),
        ServerConfig(**SERVER_FILES),
        ServerConfig(**SERVER_FILES, bind_host="127.0.0.1", bind_port=0, log_level="DEBUG"),
    ],
)
def test_to_dict_from_dict_round_trip(config: ClientConfig | ServerConfig) -> None:
    as_dict = config.to_dict()
    assert set(as_dict) == {f.name for f in dataclasses.fields(config)}
    rebuilt = type(config).from_dict(config_dict=as_dict)
    assert rebuilt == config
    assert rebuilt.to_dict() == as_dict
    assert type(config).from_dict(as_dict) == config


def test_to_dict_does_not_alias_headers() -> None:
    config = ClientConfig(headers={"a": "1"})
    config.to_dict()["headers"]["a"] = "2"
    assert config.headers == {"a": "1"}


def test_from_dict_rejects_unknown_and_invalid() -> None:
    with raises_for("nonsense"):
        ClientConfig.from_dict(config_dict={"nonsense": 1})
    with raises_for("max_connections"):
        ServerConfig.from_dict(config_dict={**SERVER_FILES, "max_connections": -5})
    assert ServerConfig.from_dict(config_dict=SERVER_FILES).bind_port == 4433
