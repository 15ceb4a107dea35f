"""Per-connection memory savings on bare aioquic objects (no sockets)."""

from __future__ import annotations

import pylsqpack
import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicProtocolVersion
from aioquic.tls import SessionTicket, SessionTicketHandler

from pywebtransport.shared.config import ClientConfig
from pywebtransport.shared.utils import CertificateInfo
from pywebtransport.transport._protocol import _StaticTableEncoder
from pywebtransport.transport.connection import (
    _ConnectionExtras,
    _QuicConnection,
    adopt_quic_connection,
    release_crypto_buffers,
)


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


def test_shared_frame_handler_table_answers_like_aioquics(certificate: CertificateInfo) -> None:
    reference = _quic(certificate, is_client=True)
    table = reference.__dict__["_QuicConnection__frame_handlers"]
    quic = _quic(certificate, is_client=True)
    adopt_quic_connection(quic, ClientConfig())
    extras = quic.__dict__["_QuicConnection__frame_handlers"]
    assert isinstance(quic, _QuicConnection)
    assert isinstance(extras, _ConnectionExtras)
    for frame_type, (handler, epochs) in table.items():
        bound, shared_epochs = extras[frame_type]
        assert bound.__func__ is handler.__func__
        assert bound.__self__ is quic
        assert shared_epochs == epochs
    # aioquic turns a KeyError into FRAME_ENCODING_ERROR ("Unknown frame type").
    for unknown in (0x1F, 0x20, 0x32, 2**62 - 1):
        with pytest.raises(KeyError):
            extras[unknown]
    assert quic.consumed is extras.consumed == {}
    assert "consumed" not in quic.__dict__


@pytest.mark.parametrize("peer_capacity", [0, 4096, 65536])
def test_static_table_encoder_is_decodable_without_a_dynamic_table(peer_capacity: int) -> None:
    encoder = _StaticTableEncoder(pylsqpack.Encoder())
    # What aioquic does with the peer's SETTINGS: the capacity instruction is empty.
    assert encoder.apply_settings(max_table_capacity=peer_capacity, blocked_streams=16) == b""
    headers = [
        (b":method", b"CONNECT"),
        (b":protocol", b"webtransport"),
        (b":scheme", b"https"),
        (b":authority", b"example.com:4433"),
        (b":path", b"/chat?room=1"),
        (b"origin", b"https://example.com"),
        (b"x-long", b"v" * 300),
    ]
    # A decoder that allows no dynamic table at all accepts every block, again and again.
    decoder = pylsqpack.Decoder(max_table_capacity=0, blocked_streams=0)
    for stream_id in (0, 4, 8):
        encoder_stream, block = encoder.encode(stream_id, headers)
        assert encoder_stream == b""
        assert decoder.feed_header(stream_id, block) == (b"", headers)
    encoder.feed_decoder(b"")
