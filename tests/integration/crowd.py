"""A hostile crowd on loopback, for the flood tests and the soak benchmark.

- `RawClient`: a WebTransport client run by hand (real aioquic `QuicConnection`
  and `H3Connection` over its own non-blocking UDP socket, serviced through
  `loop.add_reader` and one timer). It can send what a well-behaved client
  never would, and `abandon()` makes it go silent at any moment: no more
  reads, so no ACKs, no timers, no CONNECTION_CLOSE. The socket stays open
  until `close()`, as a phone out of coverage keeps its address: the server's
  packets queue in the kernel and are dropped there, and no ICMP error tells
  the server anything.
- `abandon_sessions()`: clients that open a session, echo once and go silent.
- `half_open_flood()`: first Initials of real aioquic clients, one per socket,
  never continued.
- `send_garbage()`, `MALFORMED_*`: bytes no peer should send.
- `probe_every()`: a well-behaved `WebTransportClient` arriving at a fixed
  cadence, timed from connect to one echo.
- `ServerProcess`: a default `WebTransportServer` in a child process
  (``python -m tests.integration.crowd serve``) with a line protocol on
  stdin/stdout: ``stats`` answers one JSON line with its RSS, the
  `get_stats()` of its connection and session managers, the sessions it
  admitted and what its ``/sink`` route received.

The crowd comes from `crowd_hosts()`, addresses 127.0.0.2 and up (all of
127/8 is loopback on Linux), while probes come from 127.0.0.1: a server with
per-address limits then treats the crowd as the many other hosts it is, not
as the probing user.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import resource
import socket
import ssl
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from aioquic.buffer import encode_uint_var
from aioquic.h3 import events as h3e
from aioquic.h3.connection import H3Connection
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from pywebtransport import (
    ClientConfig,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.shared.exceptions import WebTransportError

from .conftest import echo_handler

ROOT = Path(__file__).resolve().parents[2]
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

Address = tuple[str, int]


def crowd_hosts(count: int = 64) -> list[str]:
    """Loopback source addresses for the crowd: 127.0.0.2 onwards (probes use 127.0.0.1)."""
    if not 1 <= count <= 250:
        raise ValueError("between 1 and 250 crowd hosts")
    return [f"127.0.0.{i}" for i in range(2, 2 + count)]


def rss_of(pid: int | str = "self") -> int:
    """Resident set size of a process in bytes (from /proc/<pid>/statm)."""
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


def ensure_fd_limit(needed: int) -> None:
    """Raise the soft RLIMIT_NOFILE to at least `needed` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise RuntimeError(f"need {needed} file descriptors, the hard limit allows {soft}")


def _udp_socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, 0))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _client_quic_config() -> QuicConfiguration:
    return QuicConfiguration(
        is_client=True,
        alpn_protocols=["h3"],
        verify_mode=ssl.CERT_NONE,
        server_name="127.0.0.1",
        max_datagram_frame_size=65536,
    )


def connect_headers(server: Address, path: str = "/echo") -> list[tuple[bytes, bytes]]:
    """The CONNECT request headers a browser sends (draft-02 dialect, as Chromium does)."""
    return [
        (b":method", b"CONNECT"),
        (b":scheme", b"https"),
        (b":authority", f"{server[0]}:{server[1]}".encode()),
        (b":path", path.encode()),
        (b":protocol", b"webtransport"),
        (b"sec-webtransport-http3-draft02", b"1"),
        (b"origin", b"https://127.0.0.1"),
    ]


# ---------------------------------------------------------------------- a client run by hand


class RawClient:
    """One WebTransport client run by hand over its own UDP socket (see the module docstring).

    Args:
        server: The server address.
        host: The local address to send from.
    """

    def __init__(self, server: Address, *, host: str = "127.0.0.1") -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.sock = _udp_socket(host)
        self.quic = QuicConnection(configuration=_client_quic_config())
        self.h3 = H3Connection(self.quic, enable_webtransport=True)
        self.session_id: int | None = None
        self.connected = False
        self.terminated: qe.ConnectionTerminated | None = None
        self.statuses: dict[int, int] = {}
        self.stream_data: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.datagrams: list[bytes] = []
        self.resets: dict[int, int] = {}
        self.received = 0
        self._own_bidi: set[int] = set()
        self._serviced = False
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._changed = asyncio.Event()

    @property
    def is_serviced(self) -> bool:
        """True between `start()` and `abandon()`/`close()`."""
        return self._serviced

    def start(self) -> None:
        """Begin the handshake and service the socket and timers."""
        self.loop.add_reader(self.sock.fileno(), self._on_readable)
        self._serviced = True
        self.quic.connect(self.server, now=self.loop.time())
        self.transmit()

    def _on_readable(self) -> None:
        now = self.loop.time()
        for _ in range(64):
            try:
                data, addr = self.sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            self.received += 1
            self.quic.receive_datagram(data, addr, now=now)
        self._process()
        self.transmit()

    def _on_timer(self) -> None:
        self._timer = None
        self.quic.handle_timer(now=self.loop.time())
        self._process()
        self.transmit()

    def _process(self) -> None:
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, qe.HandshakeCompleted):
                self.connected = True
            elif isinstance(event, qe.ConnectionTerminated):
                self.terminated = event
            elif isinstance(event, qe.StreamReset):
                self.resets[event.stream_id] = event.error_code
            elif isinstance(event, qe.StreamDataReceived) and event.stream_id in self._own_bidi:
                # aioquic's H3Connection does not mark the WebTransport bidirectional
                # streams it creates, and would parse the reply as HTTP/3 frames.
                self._on_stream(event.stream_id, event.data, event.end_stream)
                continue
            for h3_event in self.h3.handle_event(event):
                self._on_h3(h3_event)
        self._changed.set()

    def _on_h3(self, event: h3e.H3Event) -> None:
        if isinstance(event, h3e.HeadersReceived):
            for name, value in event.headers:
                if name == b":status":
                    self.statuses[event.stream_id] = int(value)
            if event.stream_ended:
                self.ended.add(event.stream_id)
        elif isinstance(event, h3e.WebTransportStreamDataReceived | h3e.DataReceived):
            self._on_stream(event.stream_id, event.data, event.stream_ended)
        elif isinstance(event, h3e.DatagramReceived):
            self.datagrams.append(event.data)

    def _on_stream(self, stream_id: int, data: bytes, ended: bool) -> None:
        self.stream_data.setdefault(stream_id, bytearray()).extend(data)
        if ended:
            self.ended.add(stream_id)

    def transmit(self) -> None:
        """Send what aioquic has queued and re-arm its timer (no-op once silent)."""
        if not self._serviced:
            return
        now = self.loop.time()
        for data, addr in self.quic.datagrams_to_send(now=now):
            # A full socket buffer drops the datagram, as the network would.
            with contextlib.suppress(BlockingIOError, InterruptedError):
                self.sock.sendto(data, addr)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        at = self.quic.get_timer()
        if at is not None:
            self._timer = self.loop.call_at(at, self._on_timer)

    async def until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until `predicate()` holds; False on timeout or when the connection ends."""
        deadline = self.loop.time() + timeout
        while not predicate():
            remaining = deadline - self.loop.time()
            if remaining <= 0 or self.terminated is not None or not self._serviced:
                return predicate()
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True

    async def quiet(self, period: float) -> None:
        """Return once no datagram has arrived for `period` seconds."""
        while await self.next_datagram(period):
            pass

    async def next_datagram(self, timeout: float) -> bool:
        """Wait for the next datagram from the server; False if none came in time."""
        seen = self.received
        return await self.until(lambda: self.received > seen, timeout)

    async def handshake(self, timeout: float = 5.0) -> bool:
        """Start (if needed) and wait for the QUIC handshake to complete."""
        if not self._serviced and not self._closed:
            self.start()
        return await self.until(lambda: self.connected, timeout)

    def send_request(
        self, headers: Sequence[tuple[bytes, bytes]], *, end_stream: bool = False
    ) -> int:
        """Send a request's HEADERS on a new bidirectional stream; return its id."""
        stream_id = self.quic.get_next_available_stream_id()
        self.h3.send_headers(stream_id, list(headers), end_stream=end_stream)
        self.transmit()
        return stream_id

    async def open_session(
        self,
        path: str = "/echo",
        *,
        headers: Sequence[tuple[bytes, bytes]] | None = None,
        timeout: float = 5.0,
    ) -> int | None:
        """Send a CONNECT and return the response status (None without one in time)."""
        if not await self.handshake(timeout):
            return None
        stream_id = self.send_request(headers or connect_headers(self.server, path))
        await self.until(lambda: stream_id in self.statuses, timeout)
        status = self.statuses.get(stream_id)
        if status == 200:
            self.session_id = stream_id
        return status

    def open_stream(self) -> int:
        """Open a WebTransport bidirectional stream on the session; return its id."""
        if self.session_id is None:
            raise RuntimeError("no session")
        stream_id = self.h3.create_webtransport_stream(self.session_id)
        self._own_bidi.add(stream_id)
        return stream_id

    async def echo(self, payload: bytes = b"ping", *, timeout: float = 5.0) -> bool:
        """Send `payload` on a new WebTransport bidirectional stream and await it back."""
        if self.session_id is None:
            raise RuntimeError("no session")
        stream_id = self.open_stream()
        self.quic.send_stream_data(stream_id, payload, end_stream=True)
        self.transmit()
        await self.until(lambda: stream_id in self.ended, timeout)
        return bytes(self.stream_data.get(stream_id, b"")) == payload

    def send_on_session(self, data: bytes, *, end_stream: bool = False) -> None:
        """Send bytes as HTTP/3 DATA on the CONNECT stream (where capsules travel)."""
        if self.session_id is None:
            raise RuntimeError("no session")
        self.h3.send_data(self.session_id, data, end_stream=end_stream)
        self.transmit()

    def send_raw_stream(self, data: bytes, *, end_stream: bool = True) -> int:
        """Send raw bytes on a new bidirectional stream (no HTTP/3 framing); return its id."""
        stream_id = self.quic.get_next_available_stream_id()
        self.quic.send_stream_data(stream_id, data, end_stream=end_stream)
        self.transmit()
        return stream_id

    def send_raw_datagram(self, data: bytes) -> None:
        """Send a QUIC DATAGRAM frame with arbitrary content (no HTTP/3 framing added)."""
        self.quic.send_datagram_frame(data)
        self.transmit()

    def abandon(self) -> None:
        """Go silent: stop reading (no ACKs) and stop all timers; keep the socket open."""
        if self._serviced:
            self.loop.remove_reader(self.sock.fileno())
        self._serviced = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._changed.set()

    def close(self) -> None:
        """Abandon and close the socket, still without any CONNECTION_CLOSE."""
        self.abandon()
        if not self._closed:
            self._closed = True
            self.sock.close()


def close_all(items: Iterable[RawClient | socket.socket]) -> None:
    """Close crowd clients and sockets."""
    for item in items:
        item.close()


# ---------------------------------------------------------------------- crowds


async def abandon_sessions(
    server: Address,
    count: int,
    *,
    hosts: Sequence[str],
    path: str = "/echo",
    concurrency: int = 25,
    timeout: float = 5.0,
) -> tuple[list[RawClient], Counter[str]]:
    """Open `count` sessions that echo once, then go silent (see `RawClient.abandon`).

    Returns:
        The clients (close them after the test) and their outcomes:
        ``echoed``, ``status <n>`` (CONNECT refused), ``closed 0x<code>``
        (connection closed by the server), ``no handshake``, ``no echo``.
    """
    ensure_fd_limit(count + 512)
    clients: list[RawClient] = []
    outcomes: Counter[str] = Counter()
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with gate:
            client = RawClient(server, host=hosts[index % len(hosts)])
            clients.append(client)
            outcomes[await _open_and_echo(client, path, timeout)] += 1
            client.abandon()

    await asyncio.gather(*(one(i) for i in range(count)))
    return clients, outcomes


async def _open_and_echo(client: RawClient, path: str, timeout: float) -> str:
    status = await client.open_session(path, timeout=timeout)
    if client.terminated is not None:
        return f"closed 0x{client.terminated.error_code:x}"
    if status is None:
        return "no handshake" if not client.connected else "no response"
    if status != 200:
        return f"status {status}"
    return "echoed" if await client.echo(timeout=timeout) else "no echo"


async def half_open_flood(
    server: Address, count: int, *, hosts: Sequence[str]
) -> list[socket.socket]:
    """Send the first Initial of `count` real aioquic clients, each from its own socket.

    The handshakes are never continued; the sockets stay open (and unread) so
    the server's replies are not refused by ICMP. Close them with `close_all()`.

    Returns:
        The sockets.
    """
    ensure_fd_limit(count + 512)
    sockets: list[socket.socket] = []
    try:
        for index in range(count):
            sock = _udp_socket(hosts[index % len(hosts)])
            sockets.append(sock)
            quic = QuicConnection(configuration=_client_quic_config())
            now = time.monotonic()
            quic.connect(server, now=now)
            first, _ = quic.datagrams_to_send(now=now)[0]
            with contextlib.suppress(BlockingIOError):
                sock.sendto(first, server)
            if index % 50 == 49:
                await asyncio.sleep(0)
    except BaseException:
        close_all(sockets)
        raise
    return sockets


def send_garbage(server: Address, *, host: str = "127.0.0.2") -> int:
    """Send UDP datagrams no QUIC peer would send; return how many."""
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        for size in (0, 1, 7, 20, 1200, 1350, 1500, 9000):
            for first in (0x00, 0xC0, 0xC3, 0x40, 0xFF):
                body = bytes([first]) + os.urandom(max(0, size - 1)) if size else b""
                sock.sendto(body, server)
                sent += 1
        for _ in range(100):
            # Long-header Initials with random connection ids and an undecryptable payload.
            header = b"\xc0\x00\x00\x00\x01\x08" + os.urandom(8) + b"\x08" + os.urandom(8)
            sock.sendto(header + os.urandom(1200 - len(header)), server)
            sent += 1
    return sent


def _without(headers: list[tuple[bytes, bytes]], name: bytes) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in headers if k != name]


def _replaced(
    headers: list[tuple[bytes, bytes]], name: bytes, value: bytes
) -> list[tuple[bytes, bytes]]:
    return [(k, value if k == name else v) for k, v in headers]


def malformed_connects(server: Address) -> list[list[tuple[bytes, bytes]]]:
    """CONNECT requests a server must reject without harm."""
    good = connect_headers(server)
    return [
        _without(good, b":protocol"),
        _without(good, b":path"),
        _without(good, b":authority"),
        _replaced(good, b":scheme", b"http"),
        _replaced(good, b":path", b""),
        _replaced(good, b":path", b"/" + b"a" * 16000),
        _replaced(good, b":protocol", b"websocket"),
        [*good, (b"x-big", b"v" * 60000)],
        [*good, (b"bad name", b"x")],
        [*good, (b":unknown", b"x")],
        [(b":method", b"CONNECT"), *good],
    ]


MALFORMED_STREAMS: list[bytes] = [
    b"\xff" * 64,  # a frame type and length varint that never ends
    encode_uint_var(0x1) + encode_uint_var(2**30) + b"x" * 10,  # HEADERS claiming 1 GiB
    encode_uint_var(0x0) + encode_uint_var(5) + b"data!",  # DATA before HEADERS
    encode_uint_var(0x4) + encode_uint_var(3) + b"\x01\x02\x03",  # SETTINGS on a request stream
    encode_uint_var(0x41),  # a WebTransport stream signal without a session id
    encode_uint_var(0x41) + encode_uint_var(2**40) + b"x" * 100,  # ... for no such session
]
"""Bytes sent as a whole request stream (no HTTP/3 framing of ours)."""

MALFORMED_CAPSULES: list[bytes] = [
    encode_uint_var(0x2843) + encode_uint_var(2) + b"\x00\x01",  # CLOSE body under 4 bytes
    encode_uint_var(0x2843) + encode_uint_var(2000) + os.urandom(2000),  # reason too long
    encode_uint_var(0x78AE) + encode_uint_var(5) + b"extra",  # DRAIN with a body
    encode_uint_var(0x17) + encode_uint_var(2**40),  # a declared length far past the limit
    encode_uint_var(0x29) + encode_uint_var(1_000_000) + b"x" * 1000,  # huge unknown capsule
    b"\xff\xff\xff",  # a truncated varint
]
"""Capsule bytes sent on an accepted session's CONNECT stream (each on its own session)."""

MALFORMED_DATAGRAMS: list[bytes] = [
    b"",  # no quarter stream id at all
    b"\xff",  # a truncated varint
    encode_uint_var(2**40) + b"nobody",  # a quarter stream id of no session
    encode_uint_var(1) + b"x" * 64,  # quarter stream id 1: stream 4, not a session
    os.urandom(1100),
]
"""QUIC DATAGRAM payloads that are not a valid HTTP/3 datagram for the session."""


async def malformed_requests(
    server: Address, *, hosts: Sequence[str], settle: float = 1.0, timeout: float = 5.0
) -> tuple[list[RawClient], Counter[str]]:
    """Send every malformed CONNECT, request stream, capsule and datagram, each on its own client.

    Capsules and datagrams need an accepted session first; without one (the
    server is full) they are not sent and the outcome says so.

    Returns:
        The clients (close them after the test) and, per kind, how the server
        reacted: ``<kind>: closed 0x<code>``, ``<kind>: status <n>``,
        ``<kind>: no session`` or ``<kind>: no reaction``.
    """
    clients: list[RawClient] = []
    outcomes: Counter[str] = Counter()

    def client_for(index: int) -> RawClient:
        client = RawClient(server, host=hosts[index % len(hosts)])
        clients.append(client)
        return client

    async def connect_request(index: int, headers: list[tuple[bytes, bytes]]) -> None:
        client = client_for(index)
        if not await client.handshake(timeout):
            outcomes["connect: no handshake"] += 1
            return
        stream_id = client.send_request(headers)
        await client.until(lambda: stream_id in client.statuses, settle)
        outcomes["connect: " + _reaction(client, stream_id)] += 1

    async def raw_stream(index: int, data: bytes) -> None:
        client = client_for(index)
        if not await client.handshake(timeout):
            outcomes["stream: no handshake"] += 1
            return
        client.send_raw_stream(data)
        await client.until(lambda: client.terminated is not None, settle)
        outcomes["stream: " + _reaction(client, None)] += 1

    async def in_session(index: int, kind: str, send: Callable[[RawClient], None]) -> None:
        client = client_for(index)
        if await client.open_session(timeout=timeout) != 200:
            outcomes[f"{kind}: no session"] += 1
            return
        send(client)
        await client.until(lambda: client.terminated is not None, settle)
        outcomes[f"{kind}: " + _reaction(client, None)] += 1

    def send_datagrams(client: RawClient) -> None:
        for datagram in MALFORMED_DATAGRAMS:
            client.send_raw_datagram(datagram)

    jobs = [connect_request(i, h) for i, h in enumerate(malformed_connects(server))]
    jobs += [raw_stream(i, data) for i, data in enumerate(MALFORMED_STREAMS)]
    jobs += [
        in_session(i, "capsule", functools.partial(RawClient.send_on_session, data=data))
        for i, data in enumerate(MALFORMED_CAPSULES)
    ]
    jobs.append(in_session(0, "datagrams", send_datagrams))
    await asyncio.gather(*jobs)
    return clients, outcomes


def _reaction(client: RawClient, stream_id: int | None) -> str:
    if client.terminated is not None:
        return f"closed 0x{client.terminated.error_code:x}"
    if stream_id is not None and stream_id in client.statuses:
        return f"status {client.statuses[stream_id]}"
    if client.resets:
        return "reset " + ",".join(f"0x{code:x}" for code in client.resets.values())
    if client.session_id is not None and client.session_id in client.ended:
        return "session ended"
    return "no reaction"


async def unread_streams(
    server: Address, count: int, *, host: str = "127.0.0.2", timeout: float = 5.0
) -> tuple[RawClient, int]:
    """Open a session and `count` WebTransport streams on it, 1 KiB each, never finished.

    The streams beyond the server's stream credit wait in aioquic and go out as
    credit arrives. Nothing sent back is ever looked at.

    Returns:
        The client (close it after the test) and the number of streams queued
        (0 when the session was refused).
    """
    client = RawClient(server, host=host)
    if await client.open_session(timeout=timeout) != 200:
        return client, 0
    for _ in range(count):
        client.quic.send_stream_data(client.open_stream(), b"u" * 1024)
    client.transmit()
    return client, count


# ---------------------------------------------------------------------- well-behaved probes


@dataclass(frozen=True, slots=True)
class Probe:
    """One well-behaved client's attempt: connect, open a session, echo once."""

    started: float
    """Loop time the attempt started."""

    elapsed: float | None
    """Seconds from start to the echo, or None when not served."""

    error: str | None = None
    """Why it was not served."""

    @property
    def served(self) -> bool:
        """True when the echo came back within the deadline."""
        return self.elapsed is not None


async def probe_once(url: str, config: ClientConfig, *, deadline: float = 3.0) -> Probe:
    """Connect a fresh `WebTransportClient`, open a session, echo once, within `deadline`."""
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def attempt(client: WebTransportClient) -> None:
        session = await client.connect(url)
        stream = await session.create_bidirectional_stream()
        await stream.write(b"probe", end_stream=True)
        if await stream.read_all() != b"probe":
            raise AssertionError("echo differs")

    try:
        async with WebTransportClient(config) as client:
            await asyncio.wait_for(attempt(client), deadline)
            return Probe(started=started, elapsed=loop.time() - started)
    except (WebTransportError, TimeoutError, OSError, AssertionError) as exc:
        return Probe(started=started, elapsed=None, error=f"{type(exc).__name__}: {exc}"[:200])


async def probe_every(
    url: str,
    config: ClientConfig,
    *,
    count: int,
    interval: float = 0.5,
    deadline: float = 3.0,
) -> list[Probe]:
    """Start a probe every `interval` seconds, `count` times; return them all in order."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    for index in range(count):
        delay = start + index * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(probe_once(url, config, deadline=deadline)))
    return list(await asyncio.gather(*tasks))


def summary(probes: Sequence[Probe]) -> str:
    """One line: served count and slowest, plus the first failure."""
    served = [p.elapsed for p in probes if p.elapsed is not None]
    line = f"{len(served)}/{len(probes)} served"
    if served:
        line += f", slowest {max(served):.2f}s"
    failures = [p.error for p in probes if p.error]
    if failures:
        line += f"; first failure: {failures[0]}"
    return line


# ---------------------------------------------------------------------- server in a child process


class ServerProcess:
    """A `WebTransportServer` (defaults plus `overrides`) in a child process.

    Use `await ServerProcess.start(...)`, then `stats()`, `rss()`, and always `stop()`.
    """

    def __init__(self, proc: asyncio.subprocess.Process, port: int, log: IO[bytes]) -> None:
        self.proc = proc
        self.port = port
        self.log = log

    @classmethod
    async def start(
        cls, certfile: str, keyfile: str, *, ready_timeout: float = 30.0, **overrides: Any
    ) -> ServerProcess:
        """Start the child and wait for it to listen.

        Raises:
            RuntimeError: The child did not report READY in time.
        """
        log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.crowd",
            "serve",
            "--certfile",
            certfile,
            "--keyfile",
            keyfile,
            "--config",
            json.dumps(overrides),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), ready_timeout)
        except TimeoutError:
            line = b""
        if not line.startswith(b"READY "):
            server = cls(proc, 0, log)
            tail = server.log_tail()
            await server.stop()
            raise RuntimeError(f"server child not ready: {line!r}\n{tail}")
        return cls(proc, int(line.split()[1]), log)

    @property
    def address(self) -> Address:
        """The server's UDP address."""
        return ("127.0.0.1", self.port)

    def url(self, path: str = "/echo") -> str:
        """The https URL of a path on the server."""
        return f"https://127.0.0.1:{self.port}{path}"

    def rss(self) -> int:
        """The child's resident set size in bytes."""
        return rss_of(self.proc.pid)

    async def stats(self, timeout: float = 10.0) -> dict[str, Any]:
        """Ask the child for its counters (see `_stats`)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"stats\n")
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"server child gone:\n{self.log_tail()}")
        result: dict[str, Any] = json.loads(line)
        return result

    def log_tail(self, size: int = 3000) -> str:
        """The end of the child's stderr."""
        self.log.seek(0, os.SEEK_END)
        end = self.log.tell()
        self.log.seek(max(0, end - size))
        return self.log.read().decode(errors="replace")

    async def stop(self, timeout: float = 5.0) -> None:
        """Close the server gracefully (stdin EOF), kill it if it does not exit in time."""
        if self.proc.returncode is None:
            if self.proc.stdin is not None:
                with contextlib.suppress(OSError, RuntimeError):
                    self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.log.close()


@dataclass
class _ServeState:
    admitted: int = 0
    sink_datagrams: int = 0
    marks: dict[str, float] = field(default_factory=dict)


async def _sink(session: WebTransportSession, state: _ServeState) -> None:
    """Count datagrams; note when each ``mark...`` one arrives (CLOCK_MONOTONIC is system-wide)."""
    with contextlib.suppress(WebTransportError):
        async for datagram in session.incoming_datagrams():
            state.sink_datagrams += 1
            if datagram.startswith(b"mark"):
                state.marks[datagram.decode(errors="replace")] = time.monotonic()


async def _stats(server: WebTransportServer, state: _ServeState) -> dict[str, Any]:
    return {
        "time": time.monotonic(),
        "rss": rss_of(),
        "connections": await server.connection_manager.get_stats(),
        "sessions": await server.session_manager.get_stats(),
        "admitted": state.admitted,
        "sink_datagrams": state.sink_datagrams,
        "marks": state.marks,
    }


async def _serve(args: argparse.Namespace) -> None:
    overrides: dict[str, Any] = json.loads(args.config)
    config = ServerConfig(
        certfile=args.certfile,
        keyfile=args.keyfile,
        bind_host="127.0.0.1",
        bind_port=0,
        **overrides,
    )
    state = _ServeState()

    async def handler(session: WebTransportSession) -> None:
        state.admitted += 1
        if session.path == "/sink":
            await _sink(session, state)
        else:
            await echo_handler(session)

    server = WebTransportServer(config, handler=handler)
    await server.listen()
    address = server.local_address
    assert address is not None
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    sys.stdout.write(f"READY {address[1]}\n")
    sys.stdout.flush()
    try:
        while line := await reader.readline():
            command = line.strip()
            if command == b"stats":
                sys.stdout.write(json.dumps(await _stats(server, state)) + "\n")
                sys.stdout.flush()
            elif command == b"quit":
                break
    finally:
        await server.close(timeout=2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description="crowd helpers: run a test server child")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="a WebTransportServer answering `stats` on stdin")
    serve.add_argument("--certfile", required=True)
    serve.add_argument("--keyfile", required=True)
    serve.add_argument("--config", default="{}", help="ServerConfig overrides as JSON")
    args = parser.parse_args()
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
