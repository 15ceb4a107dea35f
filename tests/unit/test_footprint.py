"""Per-connection memory savings on bare aioquic objects (no sockets)."""

from __future__ import annotations

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicProtocolVersion
from aioquic.tls import SessionTicket, SessionTicketHandler

from pywebtransport.shared.utils import CertificateInfo
from pywebtransport.transport.connection import release_crypto_buffers


def _quic(
    certificate: CertificateInfo,
    *,
    is_client: bool,
    session_ticket_handler: SessionTicketHandler | None = None,
) -> QuicConnection:
    config = QuicConfiguration(is_client=is_client)
    if not is_client:
        config.load_cert_chain(certificate.certfile, certificate.keyfile)
    odcid = None if is_client else b"\x00" * 8
    quic = QuicConnection(
        configuration=config,
        original_destination_connection_id=odcid,
        session_ticket_handler=session_ticket_handler,
    )
    # What receiving the first packet (server) or connect() (client) does.
    quic._version = QuicProtocolVersion.VERSION_1
    quic._initialize(b"\x01" * 8)
    return quic


def test_crypto_buffers_released_to_one_shared_empty_buffer(certificate: CertificateInfo) -> None:
    first = _quic(certificate, is_client=True)
    second = _quic(certificate, is_client=False)
    assert all(buffer.capacity > 0 for buffer in first._crypto_buffers.values())
    assert release_crypto_buffers(first)
    assert release_crypto_buffers(second)
    buffers = [*first._crypto_buffers.values(), *second._crypto_buffers.values()]
    assert len(buffers) == 6
    assert len({id(buffer) for buffer in buffers}) == 1
    assert buffers[0].capacity == 0
    # What aioquic does with them after every CRYPTO frame: read and rewind.
    first._push_crypto_data()
    second._push_crypto_data()
    assert all(not stream.sender._buffer for stream in first._crypto_streams.values())


def test_server_issuing_session_tickets_keeps_crypto_buffers(
    certificate: CertificateInfo,
) -> None:
    tickets: list[SessionTicket] = []
    quic = _quic(certificate, is_client=False, session_ticket_handler=tickets.append)
    before = dict(quic._crypto_buffers)
    assert not release_crypto_buffers(quic)
    assert quic._crypto_buffers == before
    assert all(buffer.capacity > 0 for buffer in quic._crypto_buffers.values())
