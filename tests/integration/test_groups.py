"""`app.groups` over real loopback sessions: the in-process backend, and Redis
shared by several server processes (a real `redis-server`, killed and restarted)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from pywebtransport import ClientConfig, ServerConfig, WebTransportClient, WebTransportSession
from pywebtransport.framework import (
    GroupError,
    GroupManager,
    InProcessBackend,
    RedisBackend,
    ServerApp,
)
from pywebtransport.shared.exceptions import ServerError
from pywebtransport.shared.utils import CertificateInfo

from .conftest_redis import RedisServer, free_tcp_port, redis_server
from .processes import connect_when_ready, spawn, stop, until_logged

__all__ = ["redis_server"]  # the fixture, imported for the tests below

ROOT = Path(__file__).resolve().parents[2]
CHAT = ROOT / "examples" / "chat_server.py"


# ---------------------------------------------------------------- helpers


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def receive(session: WebTransportSession, count: int, timeout: float = 5.0) -> list[bytes]:
    """Read `count` messages (one unidirectional stream each), in arrival order."""
    messages = []
    for _ in range(count):
        stream = await asyncio.wait_for(session.accept_unidirectional_stream(), timeout)
        messages.append(await asyncio.wait_for(stream.read_all(), timeout))
    return messages


async def assert_silent(session: WebTransportSession, seconds: float = 0.3) -> None:
    """Assert that no message stream arrives within `seconds`."""
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(session.accept_unidirectional_stream(), seconds)


async def send(session: WebTransportSession, message: bytes) -> None:
    """Send one chat message on a new unidirectional stream."""
    stream = await session.create_unidirectional_stream()
    await stream.write(message, end_stream=True)


def group_app(config: ServerConfig, groups: GroupManager | None = None) -> ServerApp:
    """An app whose `/g/{room}?name=...` joins `room` until the session closes.

    `app.state_sessions[name]` is the server side of each session.
    """
    app = ServerApp(config, groups=groups)
    sessions: dict[str, WebTransportSession] = {}
    app.state_sessions = sessions  # type: ignore[attr-defined]

    @app.pattern_route("/g/{room}")
    async def handler(session: WebTransportSession, room: str) -> None:
        sessions[session.query_params["name"][0]] = session
        await app.groups.join(room, session)
        await session.wait_closed()

    return app


def url(app: ServerApp, room: str, name: str) -> str:
    address = app.local_address
    assert address is not None
    return f"https://127.0.0.1:{address[1]}/g/{room}?name={name}"


@pytest.fixture
async def apps() -> AsyncIterator[list[ServerApp]]:
    """Apps a test starts; each is shut down afterwards."""
    started: list[ServerApp] = []
    yield started
    for app in started:
        await app.shutdown()


async def start(app: ServerApp, apps: list[ServerApp]) -> ServerApp:
    apps.append(app)
    await app.listen("127.0.0.1", 0)
    return app


async def spawn_chat(
    processes: list[asyncio.subprocess.Process], certificate: CertificateInfo, *args: str
) -> asyncio.subprocess.Process:
    return await spawn(
        processes, str(CHAT), "--cert", certificate.certfile, "--key", certificate.keyfile, *args
    )


# ---------------------------------------------------------------- in-process backend


@pytest.mark.timeout(30)
async def test_in_process_join_publish_leave_and_cleanup(
    server_config: ServerConfig, client_config: ClientConfig, apps: list[ServerApp]
) -> None:
    app = await start(group_app(server_config), apps)
    assert isinstance(app.groups.backend, InProcessBackend) and app.groups.healthy
    server: dict[str, WebTransportSession] = app.state_sessions  # type: ignore[attr-defined]
    groups = app.groups
    async with WebTransportClient(client_config) as client:
        a = await client.connect(url(app, "lobby", "a"))
        b = await client.connect(url(app, "lobby", "b"))
        c = await client.connect(url(app, "other", "c"))
        await wait_until(lambda: len(groups.members("lobby")) == 2 and groups.members("other"))
        assert groups.groups() == {"lobby", "other"}
        assert groups.groups(server["a"]) == {"lobby"}

        expected = [f"m{i}".encode() for i in range(30)]
        for message in expected:
            await groups.publish("lobby", message)
        assert await receive(a, 30) == expected  # in publish order, once each
        assert await receive(b, 30) == expected
        await assert_silent(a)
        await assert_silent(c)

        await groups.publish("lobby", "text", datagram=True)
        assert await a.receive_datagram(timeout=5) == b"text"
        assert await b.receive_datagram(timeout=5) == b"text"

        await groups.join("lobby", server["a"])  # idempotent
        await groups.leave("lobby", server["b"])
        await groups.leave("lobby", server["b"])  # not a member: no error
        assert groups.members("lobby") == {server["a"]}
        assert groups.groups(server["b"]) == frozenset()
        await groups.publish("lobby", b"after leave")
        assert await receive(a, 1) == [b"after leave"]
        await assert_silent(b)

        await groups.publish("nobody-here", b"x")  # no members: nothing happens

        await a.close()
        await wait_until(lambda: not groups.members("lobby"))
        assert "lobby" not in groups.groups()
        with pytest.raises(GroupError, match="closed"):
            await groups.join("lobby", server["a"])
        with pytest.raises(ValueError):
            await groups.join("", server["c"])

    await wait_until(lambda: not groups.groups())  # every session closed: no group left


@pytest.mark.timeout(20)
async def test_groups_follow_the_app_lifecycle(
    server_config: ServerConfig, client_config: ClientConfig, apps: list[ServerApp]
) -> None:
    groups = GroupManager()
    app = group_app(server_config)
    app.groups = groups
    assert not groups.started
    await start(app, apps)
    assert groups.started
    with pytest.raises(ServerError):
        app.groups = GroupManager()
    async with WebTransportClient(client_config) as client:
        session = await client.connect(url(app, "room", "a"))
        await wait_until(lambda: bool(groups.members("room")))
        await groups.publish("room", b"hello")
        assert await receive(session, 1) == [b"hello"]
    await app.shutdown()
    assert not groups.started and not groups.groups()
    with pytest.raises(GroupError, match="stopped"):
        await groups.publish("room", b"late")


# ---------------------------------------------------------------- Redis


@pytest.mark.timeout(60)
async def test_redis_two_server_processes_share_rooms(
    redis_server: RedisServer,
    certificate: CertificateInfo,
    client_config: ClientConfig,
    processes: list[asyncio.subprocess.Process],
) -> None:
    ports = [free_tcp_port(), free_tcp_port()]
    servers = [
        await spawn_chat(processes, certificate, "--port", str(port), "--redis", redis_server.url)
        for port in ports
    ]
    one, two = (f"https://127.0.0.1:{port}/chat" for port in ports)
    async with WebTransportClient(client_config) as client:
        alice = await connect_when_ready(client, f"{one}/lobby", servers[0])
        dave = await client.connect(f"{one}/other")
        bob = await connect_when_ready(client, f"{two}/lobby", servers[1])
        carol = await client.connect(f"{two}/lobby")
        # Every handler joined before the first message (each server logs its joins).
        await until_logged(servers[0], "joined 'lobby'")
        await until_logged(servers[1], "joined 'lobby'", 2)

        from_alice = [f"alice {i}".encode() for i in range(10)]
        from_bob = [f"bob {i}".encode() for i in range(10)]

        async def say(session: WebTransportSession, messages: list[bytes]) -> None:
            for message in messages:
                await send(session, message)

        await asyncio.gather(say(alice, from_alice), say(bob, from_bob))
        for member in (alice, bob, carol):
            got = await receive(member, 20)
            assert sorted(got) == sorted(from_alice + from_bob)  # each exactly once
            assert [m for m in got if m.startswith(b"alice")] == from_alice  # publish order
            assert [m for m in got if m.startswith(b"bob")] == from_bob
        for member in (alice, bob, carol, dave):
            await assert_silent(member, 0.5)  # no duplicate arrives late

        await carol.close()  # carol's session leaves the room
        await send(dave, b"to other")  # dave's room has only dave
        assert await receive(dave, 1) == [b"to other"]
        await send(bob, b"last")
        assert await receive(alice, 1) == [b"last"]
        assert await receive(bob, 1) == [b"last"]
        await assert_silent(dave)
    for process in servers:
        assert await stop(process) == 0


@pytest.mark.timeout(60)
async def test_redis_chat_with_two_workers(
    redis_server: RedisServer,
    certificate: CertificateInfo,
    client_config: ClientConfig,
    processes: list[asyncio.subprocess.Process],
) -> None:
    port = free_tcp_port()
    server = await spawn_chat(
        processes, certificate, "--port", str(port), "--workers", "2", "--redis", redis_server.url
    )
    target = f"https://127.0.0.1:{port}/chat/lobby"
    clients = [WebTransportClient(client_config) for _ in range(6)]
    try:
        # One client (one UDP socket, one source port) each: the kernel spreads them
        # over both workers; with in-process rooms some would miss the message.
        sessions = [await connect_when_ready(c, target, server, workers=2) for c in clients]
        await until_logged(server, "joined 'lobby'", len(sessions))
        await send(sessions[0], b"hello everyone")
        for session in sessions:
            assert await receive(session, 1) == [b"hello everyone"]
        for session in sessions:
            await assert_silent(session, 0.2)
    finally:
        for c in clients:
            await c.close()
    assert await stop(server) == 0


@pytest.mark.timeout(60)
async def test_redis_leave_outage_and_recovery(
    redis_server: RedisServer,
    server_config: ServerConfig,
    client_config: ClientConfig,
    apps: list[ServerApp],
) -> None:
    health: list[tuple[int, bool]] = []

    def backend(index: int) -> RedisBackend:
        return RedisBackend(
            redis_server.url,
            channel_prefix="test-groups:",
            on_health_change=lambda healthy: health.append((index, healthy)),
            initial_backoff=0.05,
            max_backoff=0.4,
        )

    app1 = await start(group_app(server_config, GroupManager(backend(1))), apps)
    app2 = await start(group_app(server_config, GroupManager(backend(2))), apps)
    g1, g2 = app1.groups, app2.groups
    assert g1.healthy and g2.healthy and health == [(1, True), (2, True)]
    server2: dict[str, WebTransportSession] = app2.state_sessions  # type: ignore[attr-defined]
    async with WebTransportClient(client_config) as client:
        x = await client.connect(url(app1, "lobby", "x"))
        y = await client.connect(url(app2, "lobby", "y"))
        await wait_until(lambda: bool(g1.members("lobby") and g2.members("lobby")))

        for i in range(5):
            await g1.publish("lobby", f"one {i}".encode())
            await g2.publish("lobby", f"two {i}".encode())
        for member in (x, y):
            got = await receive(member, 10)
            assert [m for m in got if m.startswith(b"one")] == [b"one %d" % i for i in range(5)]
            assert [m for m in got if m.startswith(b"two")] == [b"two %d" % i for i in range(5)]
            await assert_silent(member)

        await g2.leave("lobby", server2["y"])
        await g1.publish("lobby", b"y has left")
        assert await receive(x, 1) == [b"y has left"]
        await assert_silent(y)
        await g2.join("lobby", server2["y"])

        health.clear()
        await redis_server.kill()
        await wait_until(lambda: not g1.healthy and not g2.healthy)
        assert sorted(health) == [(1, False), (2, False)]
        with pytest.raises(GroupError, match="Redis unavailable"):
            await g1.publish("lobby", b"lost")
        with pytest.raises(GroupError, match="Redis unavailable"):
            await g2.publish("lobby", b"lost", datagram=True)

        await redis_server.start()
        await wait_until(lambda: g1.healthy and g2.healthy, timeout=15)
        assert sorted(health) == [(1, False), (1, True), (2, False), (2, True)]
        await g2.publish("lobby", b"back")
        for member in (x, y):
            assert await receive(member, 1) == [b"back"]
            await assert_silent(member)
