"""Per-connection memory savings, checked structurally over real loopback connections.

The benchmark's `idle_cost` scenario measures RSS; these tests pin the
mechanisms behind it instead (no RSS thresholds, which would be flaky), and
check that connections still carry streams and datagrams in both directions
once the handshake state is gone.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicProtocolVersion
from aioquic.tls import Epoch

from pywebtransport import (
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
    WebTransportStream,
)
from pywebtransport.shared.events import EventType
from pywebtransport.shared.exceptions import TimeoutError as WTTimeoutError
from pywebtransport.transport._aioquic.connection import _FrameTable
from pywebtransport.transport._aioquic.h3 import _StaticTableEncoder
from pywebtransport.transport.connection import WebTransportConnection

from .conftest import Capture, ServerFactory, echo_handler, url_of, wait_until


def _quic(conn: WebTransportConnection) -> Any:
    return conn._engine.quic


async def _server_connections(
    server: WebTransportServer, count: int
) -> list[WebTransportConnection]:
    manager = server.connection_manager
    assert await wait_until(lambda: sum(c.is_connected for c in manager.connections()) >= count, 5)
    return [c for c in manager.connections() if c.is_connected]


def _assert_crypto_released(conn: WebTransportConnection) -> None:
    buffers = _quic(conn)._crypto_buffers
    assert len(buffers) == 3
    assert all(buffer.capacity == 0 for buffer in buffers.values()), [
        buffer.capacity for buffer in buffers.values()
    ]
    tls = _quic(conn).tls
    assert tls._ec_private_keys == []
    assert tls._x25519_private_key is None and tls._x448_private_key is None
    # A client keeps it for the resumption secret of a late NewSessionTicket.
    assert (tls.key_schedule is None) is not conn.is_client


async def _exercise(session: WebTransportSession) -> None:
    """Bulk echo, streams opened by either side and datagrams, all after the handshake."""
    payload = os.urandom(2 * 1024 * 1024 + 17)
    stream = await session.create_bidirectional_stream()
    writer = asyncio.create_task(stream.write(payload, end_stream=True))
    assert await asyncio.wait_for(stream.read_all(), 10) == payload
    await writer
    # The echo server answers a unidirectional stream on a stream of its own.
    out = await session.create_unidirectional_stream()
    await out.write(b"uni after handshake", end_stream=True)
    back = await session.accept_unidirectional_stream(timeout=5)
    assert not isinstance(back, WebTransportStream)
    assert await asyncio.wait_for(back.read_all(), 5) == b"uni after handshake"
    # Loopback may still drop a datagram under load: retry until one comes back.
    async with asyncio.timeout(5):
        while True:
            session.send_datagram_nowait(b"datagram after handshake")
            try:
                echoed = await session.receive_datagram(timeout=0.2)
            except WTTimeoutError:
                continue
            assert echoed == b"datagram after handshake"
            break


@pytest.mark.timeout(30)
@pytest.mark.aioquic_patch("tls_release")
async def test_crypto_buffers_released_after_handshake(
    echo_server: WebTransportServer, client: WebTransportClient
) -> None:
    session = await client.connect(url_of(echo_server))
    (server_conn,) = await _server_connections(echo_server, 1)
    _assert_crypto_released(session.connection)
    _assert_crypto_released(server_conn)
    await _exercise(session)
    # A key update goes through aioquic's packet protection, not the TLS buffers.
    _quic(session.connection).request_key_update()
    session.connection._engine.transmit()
    await _exercise(session)
    _assert_crypto_released(session.connection)
    _assert_crypto_released(server_conn)
    await session.close()


@pytest.mark.timeout(30)
@pytest.mark.aioquic_patch("frame_table")
async def test_connections_share_one_frame_handler_table(
    echo_server: WebTransportServer, client: WebTransportClient
) -> None:
    sessions = [await client.connect(url_of(echo_server)) for _ in range(2)]
    connections = [s.connection for s in sessions]
    connections += await _server_connections(echo_server, 2)
    extras = [_quic(conn).__dict__["_QuicConnection__frame_handlers"] for conn in connections]
    assert all(isinstance(e, _FrameTable) for e in extras)
    assert len({id(e._table) for e in extras}) == 1
    stream_frame = 0x08
    handlers = [e[stream_frame] for e in extras]
    # Bound to its own connection, with one epoch set shared by all.
    for conn, (handler, epochs) in zip(connections, handlers, strict=True):
        assert getattr(handler, "__self__", None) is _quic(conn)
        assert epochs is handlers[0][1]
    # The library added no attribute to aioquic's (full) instance dict.
    plain = QuicConnection(configuration=QuicConfiguration(is_client=True))
    plain._version = QuicProtocolVersion.VERSION_1
    plain._initialize(b"\x01" * 8)
    for conn in connections:
        assert set(_quic(conn).__dict__) <= set(plain.__dict__)
    for session in sessions:
        await _exercise(session)
        await session.close()


@pytest.mark.timeout(30)
@pytest.mark.aioquic_patch("qpack_static")
async def test_qpack_encoders_use_the_static_table_only(
    echo_server: WebTransportServer, client: WebTransportClient
) -> None:
    headers = {"x-custom": "value-" * 20, "x-other": "repeated"}
    sessions = [await client.connect(url_of(echo_server), headers=headers) for _ in range(2)]
    connections = [s.connection for s in sessions]
    connections += await _server_connections(echo_server, 2)
    for conn in connections:
        h3 = conn._engine.core.quic.h3
        assert isinstance(h3._encoder, _StaticTableEncoder)
        # Nothing on the encoder stream: no capacity instruction, no insertion.
        assert h3._encoder_bytes_sent == 0
    for session in sessions:
        await _exercise(session)
        await session.close()


@pytest.mark.timeout(30)
@pytest.mark.aioquic_patch("tls_release")
async def test_server_with_key_log_and_qlog_after_handshake(
    start_server: ServerFactory, client: WebTransportClient, tmp_path: Path
) -> None:
    keylog = tmp_path / "server-keys.log"
    qlog_dir = tmp_path / "qlog"
    qlog_dir.mkdir()
    server = await start_server(echo_handler, secrets_log_file=str(keylog), qlog_dir=str(qlog_dir))
    session = await client.connect(url_of(server))
    (server_conn,) = await _server_connections(server, 1)
    _assert_crypto_released(server_conn)
    await _exercise(session)
    await session.close()
    lines = keylog.read_text().splitlines()
    assert any(line.startswith("SERVER_TRAFFIC_SECRET_0 ") for line in lines), lines[:3]
    # The qlog trace is written when the connection ends.
    assert await wait_until(lambda: any(qlog_dir.iterdir()), 5), "no qlog file written"


@pytest.mark.timeout(30)
async def test_idle_session_allocates_lazily_and_still_works(
    echo_server: WebTransportServer, client: WebTransportClient
) -> None:
    session = await client.connect(url_of(echo_server))
    (server_conn,) = await _server_connections(echo_server, 1)
    assert await wait_until(lambda: bool(server_conn.sessions), 5)
    (server_session,) = server_conn.sessions
    # The echo handler waits for streams and datagrams, but nothing arrived yet.
    await asyncio.sleep(0.05)
    for idle in (server_session, session):
        record = idle._rec
        assert record.incoming_bidi is None
        assert record.incoming_uni is None
        assert record.datagrams is None
        assert record.emitter is None
    for conn in (server_conn, session.connection):
        assert conn._engine.emitter is None
    # The handshake timer went with the handshake.
    assert server_conn._engine not in echo_server._handshake_timers
    await _exercise(session)
    assert session.connection.events is session.connection.events
    await session.close()


@pytest.mark.timeout(30)
async def test_connection_events_and_aioquic_wait_closed_still_work(
    echo_server: WebTransportServer, client: WebTransportClient
) -> None:
    session = await client.connect(url_of(echo_server))
    conn = session.connection
    closed: list[Any] = []
    conn.events.on(EventType.CONNECTION_CLOSED, closed.append)
    waiting = asyncio.create_task(conn.wait_closed())
    await asyncio.sleep(0)
    await conn.close()
    await asyncio.wait_for(waiting, 5)
    await conn.wait_closed()  # already set: returns at once
    assert await wait_until(lambda: bool(closed), 5)
    assert closed[0].data["handle"] == conn.handle


@pytest.mark.timeout(30)
async def test_cancelling_one_of_two_stream_waiters_leaves_the_other_waiting(
    start_server: ServerFactory, client: WebTransportClient, capture: Capture
) -> None:
    server = await start_server(capture)
    session = await client.connect(url_of(server))
    server_session = await capture.next()
    first = asyncio.create_task(server_session.accept_bidirectional_stream())
    second = asyncio.create_task(server_session.accept_stream())
    iterator = server_session.incoming_bidirectional_streams()
    third = asyncio.create_task(anext(iterator))
    await asyncio.sleep(0.05)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    # A timed-out wait cancels the shared waiter too.
    with pytest.raises(WTTimeoutError):
        await server_session.accept_bidirectional_stream(timeout=0.05)
    assert not second.done() and not third.done()
    for payload in (b"one", b"two"):
        stream = await session.create_bidirectional_stream()
        await stream.write(payload, end_stream=True)
    received = await asyncio.wait_for(asyncio.gather(second, third), 5)
    assert sorted([await s.read_all() for s in received]) == [b"one", b"two"]
    await session.close()
    # The session's end ends the iteration.
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(iterator), 5)


class _Rebound(asyncio.DatagramProtocol):
    """A client's new socket after a NAT rebinding: datagrams go to the same pump."""

    def __init__(self, conn: WebTransportConnection) -> None:
        self.conn = conn

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.conn._engine.datagram_received(data, addr)


@pytest.mark.timeout(30)
@pytest.mark.aioquic_patch("connection_ids")
async def test_two_connection_ids_suffice_for_rotation_and_rebinding(
    echo_server: WebTransportServer, client: WebTransportClient
) -> None:
    session = await client.connect(url_of(echo_server))
    conn = session.connection
    (server_conn,) = await _server_connections(echo_server, 1)
    for side in (conn, server_conn):
        # Issued to the peer, and the peer's spares: one besides the one in use.
        assert await wait_until(lambda side=side: len(_quic(side)._host_cids) == 2, 5)
        assert _quic(side)._local_active_connection_id_limit == 2
        assert await wait_until(lambda side=side: len(_quic(side)._peer_cid_available) == 1, 5)
    endpoint = echo_server._endpoint
    assert endpoint is not None
    routes = endpoint._cids[server_conn._engine]
    assert len(routes) <= 3  # the client's initial destination id, and the two issued
    loop = asyncio.get_running_loop()
    original = conn._engine.transport
    assert original is not None
    sockets = [original]
    for _ in range(3):
        # The client moves to the spare id; the server issues a new spare.
        _quic(conn).change_connection_id()
        conn._engine.transmit()
        await _exercise(session)
        assert await wait_until(lambda: len(_quic(conn)._peer_cid_available) == 1, 5)
        # NAT rebinding: same connection, new client address; the server validates
        # the new path with its spare id from the client.
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Rebound(conn), local_addr=("127.0.0.1", 0)
        )
        sockets.append(transport)
        conn._engine.transport = transport
        await _exercise(session)
        assert await wait_until(lambda: len(_quic(server_conn)._peer_cid_available) == 1, 5)
    assert server_conn.remote_address == transport.get_extra_info("sockname")
    await conn.close()  # closes the socket in use
    for transport in sockets:
        transport.close()


@pytest.mark.timeout(30)
@pytest.mark.aioquic_patch("tls_release")
async def test_server_answers_post_handshake_tls_messages_with_an_alert(
    echo_server: WebTransportServer, client: WebTransportClient
) -> None:
    session = await client.connect(url_of(echo_server))
    (server_conn,) = await _server_connections(echo_server, 1)
    _assert_crypto_released(server_conn)
    # A (second) client Finished in 1-RTT CRYPTO data: the server's TLS state
    # machine refuses it before touching the key schedule it dropped.
    finished = b"\x14\x00\x00\x20" + bytes(32)
    _quic(session.connection)._crypto_streams[Epoch.ONE_RTT].sender.write(finished)
    session.connection._engine.transmit()
    assert await wait_until(lambda: server_conn.is_closed, 5)
    unexpected_message_alert = 0x100 + 10
    assert server_conn.close_reason is not None
    assert server_conn.close_reason[0] == unexpected_message_alert, server_conn.close_reason
