"""Every `EventType` is emitted where its docstring says, with the data keys it lists."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest

from pywebtransport import (
    ClientConfig,
    Event,
    EventEmitter,
    EventType,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
    WebTransportStream,
)
from pywebtransport.shared.exceptions import StreamError

from .simnet import VirtualLoop, run_virtual, until

pytestmark = pytest.mark.timeout(30)

URL = "https://127.0.0.1:4433/"


class Recorder:
    """Records every event of every type on the emitters it is attached to."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, EventType], list[Event]] = defaultdict(list)

    def attach(self, name: str, emitter: EventEmitter) -> None:
        for event_type in EventType:
            emitter.on(event_type, lambda event, n=name: self.seen[(n, event.type)].append(event))

    def one(self, name: str, event_type: EventType) -> dict[str, Any]:
        events = self.seen[(name, event_type)]
        assert events, f"no {event_type} on {name}; seen {sorted(map(str, self.seen))}"
        data: dict[str, Any] = events[-1].data
        return data


def test_connection_and_session_lifecycle_events(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    async def main(loop: VirtualLoop) -> None:
        record = Recorder()
        sessions: list[WebTransportSession] = []

        async def keep(session: WebTransportSession) -> None:
            record.attach("server session", session.events)
            sessions.append(session)
            await session.wait_closed()

        server = WebTransportServer(server_config, handler=keep)
        record.attach("server", server)
        await server.listen()
        client = WebTransportClient(client_config)
        record.attach("client", client)
        session = await client.connect(URL)
        record.attach("client session", session.events)
        record.attach("connection", session.connection.events)
        await until(lambda: bool(sessions))

        for side in ("server", "client"):
            data = record.one(side, EventType.CONNECTION_ESTABLISHED)
            assert data["handle"] == data["connection_handle"]
            assert data["connection"] is not None and data["remote_address"]
        pending = record.one("client", EventType.SESSION_PENDING)
        assert pending["session"] is session and pending["path"] == "/"
        assert record.one("server", EventType.SESSION_REQUEST)["path"] == "/"

        await sessions[0].drain()
        await until(lambda: bool(record.seen[("client session", EventType.SESSION_DRAINING)]))
        await session.close(7, "bye")
        await until(lambda: bool(record.seen[("server session", EventType.SESSION_CLOSED)]))
        closed = record.one("server session", EventType.SESSION_CLOSED)
        assert (closed["error_code"], closed["reason"], closed["remote"]) == (7, "bye", True)
        mine = record.one("client session", EventType.SESSION_CLOSED)
        assert (mine["error_code"], mine["remote"], mine["clean"]) == (7, False, True)

        await client.close()
        data = record.one("connection", EventType.CONNECTION_CLOSED)
        assert data["connection"] is session.connection
        assert record.one("client", EventType.CONNECTION_CLOSED)["handle"] == data["handle"]
        await until(lambda: bool(record.seen[("server", EventType.CONNECTION_CLOSED)]))
        await server.close()

    run_virtual(main)


def test_stream_events(server_config: ServerConfig, client_config: ClientConfig) -> None:
    async def main(loop: VirtualLoop) -> None:
        record = Recorder()
        server_streams: list[WebTransportStream] = []

        async def serve(session: WebTransportSession) -> None:
            record.attach("server session", session.events)
            async for stream in session.incoming_bidirectional_streams():
                record.attach(f"server stream {len(server_streams)}", stream.events)
                server_streams.append(stream)

        async with (
            WebTransportServer(server_config, handler=serve),
            WebTransportClient(client_config) as client,
        ):
            session = await client.connect(URL)
            first = await session.create_bidirectional_stream()
            record.attach("client stream", first.events)
            await first.write(b"one")
            await until(lambda: len(server_streams) == 1)
            opened = record.one("server session", EventType.STREAM_OPENED)
            assert opened["stream"] is server_streams[0]
            # The peer resets its half and stops ours.
            await first.reset(9)
            await first.stop_receiving(10)
            await until(lambda: bool(record.seen[("server stream 0", EventType.STREAM_CLOSED)]))
            reset = record.one("server stream 0", EventType.STREAM_RESET_RECEIVED)
            assert (reset["error_code"], reset["stream"]) == (9, server_streams[0])
            stop = record.one("server stream 0", EventType.STOP_SENDING_RECEIVED)
            assert stop["error_code"] == 10
            with pytest.raises(StreamError):
                await server_streams[0].write(b"nope")
            assert record.one("server session", EventType.STREAM_RESET_RECEIVED)["stream_id"] == (
                first.stream_id
            )
            assert record.one("client stream", EventType.STREAM_CLOSED)["stream"] is first
            await session.close()

    run_virtual(main)


@pytest.mark.aioquic_patch("h3_settings")
def test_session_flow_control_events(
    server_config: ServerConfig, client_config: ClientConfig
) -> None:
    """draft-15: the writer's side sees MAX_DATA updates, the reader's side sees BLOCKED."""

    async def main(loop: VirtualLoop) -> None:
        record = Recorder()
        streams: list[WebTransportStream] = []

        async def keep(session: WebTransportSession) -> None:
            record.attach("server session", session.events)
            streams.append(await session.accept_bidirectional_stream())
            await session.wait_closed()

        config = server_config.update(
            initial_max_data=8192, flow_control_window=8192, initial_max_streams_bidi=1
        )
        async with (
            WebTransportServer(config, handler=keep),
            WebTransportClient(client_config) as client,
        ):
            session = await client.connect(URL)
            assert session.dialect == "draft-15"
            record.attach("client session", session.events)
            stream = await session.create_bidirectional_stream()
            writer = asyncio.create_task(stream.write(b"d" * 30000, end_stream=True))
            await until(lambda: bool(streams))
            await until(
                lambda: bool(record.seen[("server session", EventType.SESSION_DATA_BLOCKED)])
            )
            assert record.one("server session", EventType.SESSION_DATA_BLOCKED)["max_data"] == 8192
            assert await streams[0].read_all() == b"d" * 30000
            await writer
            updated = record.one("client session", EventType.SESSION_MAX_DATA_UPDATED)
            assert updated["max_data"] > 8192
            # The one stream the server granted is used: asking for another blocks.
            opener = asyncio.create_task(session.create_bidirectional_stream())
            await until(
                lambda: bool(record.seen[("server session", EventType.SESSION_STREAMS_BLOCKED)])
            )
            blocked = record.one("server session", EventType.SESSION_STREAMS_BLOCKED)
            assert (blocked["max_streams"], blocked["is_unidirectional"]) == (1, False)
            await streams[0].write(b"", end_stream=True)  # both halves done: credit comes back
            await opener
            bidi = record.one("client session", EventType.SESSION_MAX_STREAMS_BIDI_UPDATED)
            assert bidi["max_streams"] >= 2
            await session.close()

    run_virtual(main)
