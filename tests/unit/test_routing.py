"""Connection ids that route: minting, QUIC-LB layout, stateless resets, the kernel program."""

from __future__ import annotations

import socket
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pywebtransport import ConfigurationError, ServerConfig
from pywebtransport.transport._routing import (
    MAX_WORKERS,
    CidScheme,
    attach_reuseport_program,
    derive_key,
    reuseport_program,
)

pytestmark = pytest.mark.timeout(30)


@given(
    workers=st.integers(min_value=1, max_value=MAX_WORKERS),
    data=st.data(),
    length=st.integers(min_value=8, max_value=20),
)
def test_every_minted_id_routes_to_its_worker(
    workers: int, data: st.DataObject, length: int
) -> None:
    worker = data.draw(st.integers(min_value=0, max_value=workers - 1))
    scheme = CidScheme(worker=worker, workers=workers)
    cid = scheme.mint(length)
    assert len(cid) == length
    assert scheme.worker_of(cid) == worker
    assert cid[0] >> 5 == 0  # QUIC-LB config rotation 0


@given(server_id=st.binary(min_size=1, max_size=3), worker=st.integers(min_value=0, max_value=3))
def test_a_server_id_sits_after_the_first_octet_as_quic_lb_lays_it_out(
    server_id: bytes, worker: int
) -> None:
    scheme = CidScheme(worker=worker, workers=4, server_id=server_id)
    cid = scheme.mint(8)
    assert cid[1 : 1 + len(server_id)] == server_id
    assert scheme.worker_of(cid) == worker


def test_ids_too_short_for_the_server_id_and_its_nonce_are_refused() -> None:
    CidScheme(server_id=b"\x01\x02\x03").check_length(8)
    with pytest.raises(ValueError, match="at least 9 bytes"):
        CidScheme(server_id=b"\x01\x02\x03\x04").check_length(8)


def test_the_worker_count_is_bounded() -> None:
    with pytest.raises(ValueError):
        CidScheme(worker=0, workers=MAX_WORKERS + 1)
    with pytest.raises(ValueError):
        CidScheme(worker=2, workers=2)
    with pytest.raises(ValueError):
        reuseport_program(0)


@given(cid=st.binary(min_size=1, max_size=20), received=st.integers(min_value=0, max_value=1500))
def test_a_stateless_reset_is_smaller_than_what_it_answers_and_carries_the_token(
    cid: bytes, received: int
) -> None:
    scheme = CidScheme(reset_key=derive_key(b"s" * 32, "stateless reset"))
    reset = scheme.stateless_reset(cid, received)
    if received - 1 < 21:
        assert reset is None  # too short to answer without risking a loop
        return
    assert reset is not None
    assert 21 <= len(reset) < received and len(reset) <= 43
    assert reset[0] & 0xC0 == 0x40  # looks like a short-header packet
    assert reset.endswith(scheme.reset_token(cid))


def test_tokens_are_bound_to_the_secret_and_the_id() -> None:
    one = CidScheme(reset_key=derive_key(b"a" * 32, "stateless reset"))
    same = CidScheme(reset_key=derive_key(b"a" * 32, "stateless reset"))
    other = CidScheme(reset_key=derive_key(b"b" * 32, "stateless reset"))
    assert one.reset_token(b"12345678") == same.reset_token(b"12345678")
    assert one.reset_token(b"12345678") != other.reset_token(b"12345678")
    assert one.reset_token(b"12345678") != one.reset_token(b"12345679")
    assert CidScheme().stateless_reset(b"12345678", 100) is None  # no key: never sent
    assert derive_key(b"a" * 32, "retry") != derive_key(b"a" * 32, "stateless reset")


@pytest.mark.skipif(sys.platform != "linux", reason="SO_ATTACH_REUSEPORT_CBPF is Linux only")
@pytest.mark.parametrize("workers", [2, 3, 4])
def test_the_kernel_delivers_each_datagram_to_the_worker_its_id_names(workers: int) -> None:
    """Real sockets on 127.0.0.1 and the real kernel program, short and long headers."""
    group: list[socket.socket] = []
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _ in range(workers):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            group.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("127.0.0.1", group[0].getsockname()[1] if len(group) > 1 else 0))
            sock.setblocking(False)
        attach_reuseport_program(group[0], workers)
        port = group[0].getsockname()[1]
        sent = 0
        for worker in range(workers):
            scheme = CidScheme(worker=worker, workers=workers)
            for _ in range(10):
                cid = scheme.mint(8)
                sender.sendto(b"\x40" + cid + bytes(30), ("127.0.0.1", port))
                sender.sendto(b"\xc0\x00\x00\x00\x01\x08" + cid + bytes(30), ("127.0.0.1", port))
                sent += 2
        received = 0
        deadline = time.monotonic() + 5
        while received < sent and time.monotonic() < deadline:
            for index, sock in enumerate(group):
                try:
                    data = sock.recv(100)
                except BlockingIOError:
                    continue
                cid = data[1:9] if not data[0] & 0x80 else data[6:14]
                assert CidScheme(workers=workers).worker_of(cid) == index
                received += 1
        assert received == sent
    finally:
        sender.close()
        for sock in group:
            sock.close()


def test_config_checks_the_secret_and_the_server_id(certificate_paths: tuple[str, str]) -> None:
    cert, key = certificate_paths
    ServerConfig(certfile=cert, keyfile=key, server_secret=bytes(16), quic_lb_server_id="0a01")
    with pytest.raises(ConfigurationError, match="server_secret") as short:
        ServerConfig(certfile=cert, keyfile=key, server_secret=b"short")
    assert "short" not in str(short.value)  # the secret never appears in messages
    for bad in ("xyz", "01020304", 5):
        with pytest.raises(ConfigurationError, match="quic_lb_server_id"):
            ServerConfig(certfile=cert, keyfile=key, quic_lb_server_id=bad)  # type: ignore[arg-type]
    config = ServerConfig(certfile=cert, keyfile=key, server_secret=b"s" * 32)
    assert "sss" not in repr(config)


@pytest.fixture
def certificate_paths() -> tuple[str, str]:
    # Config validation checks only that the paths are non-empty strings.
    return "cert.pem", "key.pem"
