"""Crowds on loopback (real UDP, real aioquic peers) against a default `WebTransportServer`.

The acceptance tests of issue #15, item 7, with the issue's bounds: well-behaved
clients arriving every 0.5 s are each served within 3 s while a crowd holds
abandoned sessions and half-open handshakes; a client flooding `send_datagram`
for 3 s grows by at most 16 MiB and a datagram sent afterwards arrives within
500 ms; a vanished peer is freed within the idle timeout + 1 s. Plus everything
of `test_hostile.py` at once.

The server runs in a child process (`crowd.ServerProcess`) wherever its memory
or the client's is measured, so neither pollutes the other and the server has
a core of its own. The crowd sends from 127.0.0.2 and up, probes from 127.0.0.1
(see `crowd.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pywebtransport import ClientConfig, WebTransportClient, WebTransportServer
from pywebtransport.shared.utils import CertificateInfo

from .conftest import ServerFactory, echo_handler, wait_until
from .crowd import (
    RawClient,
    ServerProcess,
    abandon_sessions,
    close_all,
    crowd_hosts,
    half_open_flood,
    malformed_requests,
    probe_every,
    rss_of,
    send_garbage,
    summary,
    unread_streams,
)

MIB = 1024 * 1024

ABANDONED = 150
HALF_OPEN = 500
PROBE_INTERVAL = 0.5
PROBE_DEADLINE = 3.0

# Measured today on a server child with raised limits: 150 abandoned sessions
# grow it by 12.4 MiB (84 KiB each with their connections), 500 half-open
# handshakes held as aioquic connections by 46.5 MiB (95 KiB each). 32 MiB
# holds the sessions plus some 200 handshakes in flight (a Retry threshold's
# worth, with slack), and fails a server that keeps state for the whole flood.
SERVER_RSS_BOUND = 32 * MIB
CLIENT_RSS_BOUND = 16 * MIB


@pytest.fixture
async def server_process(certificate: CertificateInfo) -> AsyncIterator[ServerProcess]:
    """A default server in a child process, stopped after the test."""
    server = await ServerProcess.start(certificate.certfile, certificate.keyfile)
    try:
        yield server
    finally:
        await server.stop()


def describe(label: str, stats: dict[str, Any]) -> str:
    conns, sessions = stats["connections"], stats["sessions"]
    return (
        f"{label}: RSS {stats['rss'] / MIB:.1f} MiB, connections {conns['current_count']} "
        f"(created {conns['total_created']}), sessions {sessions['current_count']} "
        f"(created {sessions['total_created']}), admitted {stats['admitted']}"
    )


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_real_clients_served_through_abandoned_sessions_and_handshake_flood(
    server_process: ServerProcess, client_config: ClientConfig
) -> None:
    hosts = crowd_hosts()
    held: list[Any] = []
    try:
        before = await server_process.stats()
        clients, outcomes = await abandon_sessions(server_process.address, ABANDONED, hosts=hosts)
        held += clients
        held += await half_open_flood(server_process.address, HALF_OPEN, hosts=hosts)
        probes = await probe_every(
            server_process.url(),
            client_config,
            count=16,
            interval=PROBE_INTERVAL,
            deadline=PROBE_DEADLINE,
        )
        after = await server_process.stats()
    finally:
        close_all(held)
    growth = after["rss"] - before["rss"]
    print(f"\n{ABANDONED} abandoned sessions: {dict(outcomes)}")
    print(describe("server before", before))
    print(describe(f"server after {HALF_OPEN} half-open + probes", after))
    print(f"probes every {PROBE_INTERVAL}s: {summary(probes)}")
    print(f"server RSS growth {growth / MIB:.1f} MiB (bound {SERVER_RSS_BOUND / MIB:.0f})")
    assert all(p.served for p in probes), summary(probes)
    assert growth <= SERVER_RSS_BOUND


@pytest.mark.timeout(60)
@pytest.mark.aioquic_patch("datagram_queue")
async def test_datagram_flood_is_bounded_and_fresh_datagrams_get_through(
    server_process: ServerProcess, client_config: ClientConfig
) -> None:
    loop = asyncio.get_running_loop()
    async with WebTransportClient(client_config) as client:
        session = await client.connect(server_process.url("/sink"))
        payload = b"x" * 1000
        before = rss_of()
        peak = before
        sent = 0
        start = loop.time()
        while loop.time() < start + 3.0:
            await session.send_datagram(payload)
            sent += 1
            if sent % 256 == 0:
                peak = max(peak, rss_of())
                if peak - before > CLIENT_RSS_BOUND:
                    # Already failed: stop before an unbounded queue takes a GiB.
                    break
        flooded = max(peak, rss_of())
        flood_time = loop.time() - start
        sent_at = time.monotonic()
        await session.send_datagram(b"mark after flood")
        # The server notes the arrival time (CLOCK_MONOTONIC is system-wide); the
        # check below may run late without changing the verdict.
        await asyncio.sleep(0.5)
        stats = await server_process.stats()
        growth = max(flooded, rss_of()) - before
        arrived = stats["marks"].get("mark after flood")
        delay = None if arrived is None else arrived - sent_at
        print(
            f"\ndatagram flood: {sent} send_datagram calls in {flood_time:.2f}s, client RSS growth "
            f"{growth / MIB:.1f} MiB (bound 16); server got {stats['sink_datagrams']} so far; "
            f"the datagram sent after the flood "
            + ("had not arrived" if delay is None else f"arrived after {delay * 1000:.0f} ms")
            + f" when checked {time.monotonic() - sent_at:.2f}s later"
        )
        await session.close()
    assert growth <= CLIENT_RSS_BOUND
    assert delay is not None and delay <= 0.5


@pytest.mark.timeout(30)
async def test_vanished_peer_freed_within_idle_timeout(start_server: ServerFactory) -> None:
    # The keep-alive interval is above 1 s so that holding a peer for idle timeout
    # + interval breaks the idle timeout + 1 s bound in every phase tested.
    idle, keep_alive = 2.0, 1.5
    server: WebTransportServer = await start_server(
        echo_handler, connection_idle_timeout=idle, keep_alive_interval=keep_alive
    )
    address = server.local_address
    assert address is not None
    client = RawClient(("127.0.0.1", address[1]))
    loop = asyncio.get_running_loop()
    try:
        assert await client.open_session("/echo") == 200
        assert await client.echo()
        assert len(server.session_manager) == 1

        # Vanish in the worst phase: just after answering the server's keep-alive
        # PING, the first datagram after the connection has gone quiet.
        await client.quiet(0.3)
        assert await client.next_datagram(keep_alive + 1.0), "no keep-alive PING came"
        # Our ACK of the PING leaves after the client's ack delay (25 ms).
        await asyncio.sleep(0.1)
        client.abandon()
        vanished = loop.time()

        freed = await wait_until(
            lambda: len(server.connection_manager) == 0 and len(server.session_manager) == 0,
            idle + keep_alive + 3.0,
        )
        held = loop.time() - vanished
        print(
            f"\nvanished peer (idle timeout {idle}s, keep-alive {keep_alive}s): "
            + (f"freed after {held:.2f}s" if freed else f"still held after {held:.2f}s")
        )
        assert freed and held <= idle + 1.0
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_everything_hostile_at_once_while_real_clients_are_served(
    server_process: ServerProcess, client_config: ClientConfig
) -> None:
    hosts = crowd_hosts()
    address = server_process.address
    held: list[Any] = []
    stop_garbage = asyncio.Event()

    async def garbage() -> int:
        sent = 0
        while not stop_garbage.is_set():
            sent += send_garbage(address, host=hosts[-1])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_garbage.wait(), 0.5)
        return sent

    async def vanishing() -> Counter[str]:
        clients, outcomes = await abandon_sessions(address, 50, hosts=hosts)
        held.extend(clients)
        return outcomes

    async def half_open() -> None:
        held.extend(await half_open_flood(address, HALF_OPEN, hosts=hosts))

    async def malformed() -> Counter[str]:
        clients, outcomes = await malformed_requests(address, hosts=hosts)
        held.extend(clients)
        return outcomes

    async def unread() -> int:
        client, opened = await unread_streams(address, 1000, host=hosts[0])
        held.append(client)
        return opened

    try:
        before = await server_process.stats()
        garbage_task = asyncio.create_task(garbage())
        abuse = asyncio.gather(vanishing(), half_open(), malformed(), unread())
        probes = await probe_every(
            server_process.url(),
            client_config,
            count=10,
            interval=PROBE_INTERVAL,
            deadline=PROBE_DEADLINE,
        )
        vanished, _, reactions, opened = await abuse
        stop_garbage.set()
        garbage_sent = await garbage_task
        after = await server_process.stats()
    finally:
        stop_garbage.set()
        close_all(held)
    print(f"\ngarbage datagrams: {garbage_sent}; unread streams queued: {opened}")
    print(f"vanished clients: {dict(vanished)}")
    print(f"malformed requests: {dict(sorted(reactions.items()))}")
    print(describe("server before", before))
    print(describe("server after", after))
    print(f"probes every {PROBE_INTERVAL}s during the run: {summary(probes)}")
    assert all(p.served for p in probes), summary(probes)
    assert after["rss"] - before["rss"] <= SERVER_RSS_BOUND


# The server's stateless-reset budget (transport/_endpoint.py): a burst of 20, then
# 100 a second. Measured here from outside, by what the crowd gets back.
RESET_BURST, RESETS_PER_SECOND = 20, 100


def _short_header_packets(count: int, size: int = 1200) -> list[bytes]:
    # Short header (0b01 form bits, random rest of the first byte), then a random
    # destination connection id and payload: a packet for no connection the server has.
    return [bytes([0x40 | (os.urandom(1)[0] & 0x3F)]) + os.urandom(size - 1) for _ in range(count)]


def _drain(sock: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(sock.recv(65536))
        except BlockingIOError:
            return got


@pytest.mark.slow  # as the other crowds: the main pass only
@pytest.mark.timeout(40)
async def test_a_crowd_of_unknown_connection_ids_gets_few_small_resets_and_real_users_are_served(
    server_process: ServerProcess, client_config: ClientConfig
) -> None:
    # Every short-header packet for an unknown connection id invites a stateless
    # reset. A crowd sending them (with spoofed sources: a reflection attack) must
    # get a bounded number of answers, each smaller than what asked for it, while
    # real users connect; and once the crowd stops, resets flow again.
    loop = asyncio.get_running_loop()
    socks = []
    for host in crowd_hosts(16):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((host, 0))
        sock.setblocking(False)
        socks.append(sock)
    packets = _short_header_packets(25)
    sent = 0
    try:

        async def flood(seconds: float) -> float:
            nonlocal sent
            start = loop.time()
            while loop.time() < start + seconds:
                for sock in socks:
                    for packet in packets:
                        with contextlib.suppress(BlockingIOError):
                            sock.sendto(packet, server_process.address)
                            sent += 1
                await asyncio.sleep(0.05)
            return loop.time() - start

        flooding = asyncio.create_task(flood(2.0))
        probes = await probe_every(
            server_process.url(), client_config, count=4, interval=0.5, deadline=PROBE_DEADLINE
        )
        elapsed = await flooding
        await asyncio.sleep(0.2)  # resets still on their way
        answers = [answer for sock in socks for answer in _drain(sock)]
        await asyncio.sleep(0.5)  # the budget refills
        late = socks[0]
        late.sendto(_short_header_packets(1)[0], server_process.address)
        for _ in range(50):
            await asyncio.sleep(0.02)
            if late_answers := _drain(late):
                break
    finally:
        close_all(socks)
    bound = RESET_BURST + RESETS_PER_SECOND * (elapsed + 0.5)  # the server may lag
    print(
        f"\n{sent} short-header packets for unknown ids from {len(socks)} hosts in "
        f"{elapsed:.2f}s: {len(answers)} stateless resets back (bound {bound:.0f}), "
        f"sizes {sorted({len(answer) for answer in answers})}; probes: {summary(probes)}"
    )
    assert all(p.served for p in probes), summary(probes)
    assert 0 < len(answers) <= bound
    assert all(21 <= len(answer) <= 43 and answer[0] & 0xC0 == 0x40 for answer in answers)
    assert len(late_answers) == 1 and len(late_answers[0]) <= 43
