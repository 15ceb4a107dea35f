"""Per-connection memory savings on bare aioquic objects (no sockets)."""

from __future__ import annotations

import pylsqpack
import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicProtocolVersion
from aioquic.tls import CipherSuite, KeySchedule, SessionTicket, SessionTicketHandler
from wire import Pair, h3_of

from pywebtransport.shared.utils import CertificateInfo
from pywebtransport.transport._aioquic import ConnectionTuning, after_handshake, new_quic_connection
from pywebtransport.transport._aioquic.connection import _FrameTable
from pywebtransport.transport._aioquic.h3 import _StaticTableDecoder, _StaticTableEncoder


def _server(
    certificate: CertificateInfo, session_ticket_handler: SessionTicketHandler | None = None
) -> QuicConnection:
    config = QuicConfiguration(is_client=False)
    config.load_cert_chain(certificate.certfile, certificate.keyfile)
    quic = QuicConnection(
        configuration=config,
        original_destination_connection_id=b"\x00" * 8,
        session_ticket_handler=session_ticket_handler,
    )
    # What receiving the first packet does.
    quic._version = QuicProtocolVersion.VERSION_1
    quic._initialize(b"\x01" * 8)
    return quic


def _client() -> QuicConnection:
    quic = QuicConnection(configuration=QuicConfiguration(is_client=True))
    quic.connect(("127.0.0.1", 4433), now=0.0)  # ClientHello: key shares generated
    return quic


@pytest.mark.aioquic_patch("tls_release")
def test_handshake_state_released(certificate: CertificateInfo) -> None:
    client, server = _client(), _server(certificate)
    assert client.tls._x25519_private_key is not None or client.tls._ec_private_keys
    for quic in (client, server):
        # As after the peer's hello.
        quic.tls.key_schedule = KeySchedule(CipherSuite.AES_128_GCM_SHA256)
        assert all(buffer.capacity > 0 for buffer in quic._crypto_buffers.values())
    queued = [len(stream.sender._buffer) for stream in client._crypto_streams.values()]
    assert after_handshake(client)
    assert after_handshake(server)
    buffers = [*client._crypto_buffers.values(), *server._crypto_buffers.values()]
    assert len(buffers) == 6
    assert len({id(buffer) for buffer in buffers}) == 1
    assert buffers[0].capacity == 0
    for quic in (client, server):
        assert quic.tls._ec_private_keys == []
        assert quic.tls._x25519_private_key is None
        assert quic.tls._x448_private_key is None
    # A client derives the resumption secret of a late NewSessionTicket from it.
    assert client.tls.key_schedule is not None
    assert server.tls.key_schedule is None
    # What aioquic does with the buffers after every CRYPTO frame: read and rewind.
    client._push_crypto_data()
    server._push_crypto_data()
    assert [len(stream.sender._buffer) for stream in client._crypto_streams.values()] == queued


@pytest.mark.aioquic_patch("tls_release")
def test_server_issuing_session_tickets_keeps_handshake_state(
    certificate: CertificateInfo,
) -> None:
    tickets: list[SessionTicket] = []
    quic = _server(certificate, session_ticket_handler=tickets.append)
    quic.tls.key_schedule = schedule = KeySchedule(CipherSuite.AES_128_GCM_SHA256)
    before = dict(quic._crypto_buffers)
    assert not after_handshake(quic)
    assert quic._crypto_buffers == before
    assert all(buffer.capacity > 0 for buffer in quic._crypto_buffers.values())
    assert quic.tls.key_schedule is schedule


@pytest.mark.aioquic_patch("frame_table", "stream_window")
def test_shared_frame_handler_table_answers_like_aioquics() -> None:
    reference = _client()
    table = reference.__dict__["_QuicConnection__frame_handlers"]
    quic = new_quic_connection(
        QuicConfiguration(is_client=True),
        ConnectionTuning(max_streams_bidi=100, max_streams_uni=100),
    )
    extras = quic.__dict__["_QuicConnection__frame_handlers"]
    assert isinstance(extras, _FrameTable)
    for frame_type, (handler, epochs) in table.items():
        bound, shared_epochs = extras[frame_type]
        # The same method as aioquic's, or the override of it on the tuned class.
        assert bound.__func__ is getattr(type(quic), handler.__func__.__name__)
        assert bound.__self__ is quic
        assert shared_epochs == epochs
    # aioquic turns a KeyError into FRAME_ENCODING_ERROR ("Unknown frame type").
    for unknown in (0x1F, 0x20, 0x32, 2**62 - 1):
        with pytest.raises(KeyError):
            extras[unknown]
    # The library's own per-connection state lives in a slot, not aioquic's instance dict.
    assert quic.wt_managed == set()  # type: ignore[attr-defined]
    assert "wt_managed" not in quic.__dict__


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


_QPACK_DECOMPRESSION_FAILED = 0x200
_QPACK_ENCODER_STREAM_ERROR = 0x201


@pytest.mark.aioquic_patch("qpack_static")
def test_peers_are_told_our_qpack_table_holds_nothing(certificate: CertificateInfo) -> None:
    pair = Pair(certificate)
    pair.open_session()
    for h3 in (h3_of(pair.client), h3_of(pair.server)):
        assert isinstance(h3._decoder, _StaticTableDecoder)
    for received in (h3_of(pair.client).received_settings, h3_of(pair.server).received_settings):
        assert received is not None
        assert received[0x01] == 0  # SETTINGS_QPACK_MAX_TABLE_CAPACITY
        assert received[0x07] == 0  # SETTINGS_QPACK_BLOCKED_STREAMS


@pytest.mark.aioquic_patch("qpack_static")
@pytest.mark.parametrize(
    ("kind", "wire", "code"),
    [
        # Set Dynamic Table Capacity 4096 on the encoder stream.
        ("encoder", b"\x3f\xe1\x1f", _QPACK_ENCODER_STREAM_ERROR),
        # Insert With Literal Name.
        ("encoder", b"\x20\x43abc\x01x", _QPACK_ENCODER_STREAM_ERROR),
        # A HEADERS frame whose block needs 2 dynamic entries (Required Insert Count 2).
        ("request", b"\x01\x03\x02\x00\x80", _QPACK_DECOMPRESSION_FAILED),
    ],
)
def test_dynamic_table_use_fails_only_its_connection(
    certificate: CertificateInfo, kind: str, wire: bytes, code: int
) -> None:
    bad = Pair(certificate, raw_client_h3=True)
    assert bad.raw_h3 is not None
    good = Pair(certificate)
    session_id = good.open_session()
    if kind == "encoder":
        # "Set Dynamic Table Capacity 0" alone is valid, and harmless.
        bad.cq.send_stream_data(bad.raw_h3._local_encoder_stream_id, b"\x20\x20")
        bad.pump()
        assert bad.server_close is None
        bad.cq.send_stream_data(bad.raw_h3._local_encoder_stream_id, wire)
    else:
        bad.cq.send_stream_data(bad.cq.get_next_available_stream_id(), wire, end_stream=True)
    bad.pump()
    assert bad.server_close is not None
    assert bad.server_close.error_code == code
    # The decoder every connection shares still decodes the others' requests.
    good.assert_alive(session_id)
    assert good.open_session("/again") in good.server.sessions
