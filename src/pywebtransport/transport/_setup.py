"""Setting up a connection: its QUIC configuration from ours, and its UDP socket.

Shared by the client and the server (and the server's endpoint, which drains
its socket the same way).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from aioquic.quic.configuration import QuicConfiguration

from ..shared.config import ClientConfig, ServerConfig
from ..shared.exceptions import ConfigurationError

__all__ = [
    "apply_log_level",
    "build_quic_configuration",
    "close_secrets_log",
    "drain_datagrams",
    "stream_window",
    "tune_udp_socket",
]

logger = logging.getLogger("pywebtransport.connection")

_RECEIVE_BATCH = 32
_MAX_UDP_PAYLOAD = 65535
_UDP_BUFFER_BYTES = 4 * 1024 * 1024
"""Socket buffers asked for; the kernel caps them at net.core.[rw]mem_max."""


def build_quic_configuration(
    config: ClientConfig | ServerConfig, *, is_client: bool, server_name: str | None = None
) -> QuicConfiguration:
    """Translate a pywebtransport config into aioquic's `QuicConfiguration`.

    Args:
        config: The client or server configuration.
        is_client: Which side the connection is.
        server_name: SNI / verification name (client).

    Returns:
        The aioquic configuration (certificates are loaded by the caller).
    """
    quic_config = QuicConfiguration(
        is_client=is_client,
        alpn_protocols=list(config.alpn_protocols),
        congestion_control_algorithm=config.congestion_control_algorithm,
        idle_timeout=config.connection_idle_timeout,
        max_data=config.quic_receive_window,
        max_stream_data=stream_window(config),
        max_datagram_size=config.max_datagram_size,
        max_datagram_frame_size=65536,
        server_name=server_name,
        verify_mode=config.verify_mode,
    )
    if config.secrets_log_file:
        # Line-buffered so tools reading the key log live see each secret at once;
        # closed by whoever owns the configuration (see `close_secrets_log`).
        quic_config.secrets_log_file = open(config.secrets_log_file, "a", buffering=1)  # noqa: SIM115
    if config.qlog_dir:
        from aioquic.quic.logger import QuicFileLogger

        try:
            os.makedirs(config.qlog_dir, exist_ok=True)
        except OSError as exc:
            close_secrets_log(quic_config)
            raise ConfigurationError(
                f"Invalid value for 'qlog_dir': {config.qlog_dir!r}; cannot create the "
                f"directory: {exc.strerror or exc}",
                config_key="qlog_dir",
                config_value=config.qlog_dir,
            ) from exc
        quic_config.quic_logger = QuicFileLogger(config.qlog_dir)
    return quic_config


def apply_log_level(config: ClientConfig | ServerConfig) -> None:
    """Set the `pywebtransport` logger's level from `config.log_level`, when it is set.

    Args:
        config: The configuration of a client or server being created.
    """
    if config.log_level is not None:
        logging.getLogger("pywebtransport").setLevel(config.log_level)


def stream_window(config: ClientConfig | ServerConfig) -> int:
    """Return the receive window of each stream: the peer may send this far past the reader.

    Args:
        config: The configuration.

    Returns:
        The smaller of `quic_stream_receive_window` and `max_stream_read_buffer_size`.
    """
    return min(config.quic_stream_receive_window, config.max_stream_read_buffer_size)


def close_secrets_log(quic_config: QuicConfiguration) -> None:
    """Close the TLS key log file that `build_quic_configuration` opened, if any.

    Args:
        quic_config: The configuration it was opened for.
    """
    log_file = quic_config.secrets_log_file
    if log_file is not None:
        quic_config.secrets_log_file = None
        log_file.close()


def tune_udp_socket(transport: asyncio.BaseTransport) -> None:
    """Enlarge a UDP socket's kernel buffers.

    The Linux default (about 208 KiB) overflows during one congestion window of
    a fast sender, and every datagram dropped there costs a QUIC loss recovery.

    Args:
        transport: The datagram transport whose socket to tune.
    """
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, _UDP_BUFFER_BYTES)


def drain_datagrams(sock: socket.socket, receive: Callable[[bytes, Any], None]) -> None:
    """Hand `receive` the datagrams already queued on a non-blocking socket.

    Reading them in the same loop iteration lets one transmit (one ACK) and one
    reader wake-up serve the whole batch, as under uvloop.

    Args:
        sock: The non-blocking UDP socket.
        receive: Called with `(data, addr)` for each datagram.
    """
    for _ in range(_RECEIVE_BATCH - 1):
        try:
            data, addr = sock.recvfrom(_MAX_UDP_PAYLOAD)
        except OSError:
            # Nothing queued (BlockingIOError) or an ICMP error for an earlier
            # send: either way the loop's own reader takes over again.
            return
        receive(data, addr)
