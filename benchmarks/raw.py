"""Raw aioquic baselines, server and client, for every scenario of the suite.

impl ``rawh3`` (stock): aioquic ``H3Connection(enable_webtransport=True)`` on aioquic's own
asyncio protocol: extended CONNECT, WebTransport bidi streams (both sides parse them through
H3Connection) and HTTP datagrams. It transmits the way stock aioquic does: the protocol's
``transmit()`` right after each received datagram is processed, and every client write is
followed by ``transmit()`` at once. This is what a user writes with aioquic's public API.

impl ``rawh3t`` (tuned): the same code plus what our transport adds underneath: a pacer burst
sized for event-loop clocks (2 ms of the pacing rate, 10 to 256 packets, 2 to 256 from a 5 ms
RTT on, instead of aioquic's 16-packet cap that shrinks as the window grows), 4 MiB socket
buffers, and under asyncio's
selector loop batched reads (up to 32 queued datagrams per loop turn, then one transmit per
connection for the batch). uvloop already reads in batches, so there only the pacer and the
buffers differ.

impl ``rawquic``: aioquic QUIC streams and QUIC DATAGRAM frames, ALPN "pwt-bench-raw", no
HTTP/3 (stock transmit, like ``rawh3``); not in the default runs.

All run with the suite's settings (common.SETTINGS): packet size, congestion control, QUIC
max_data / max_stream_data, concurrent bidi streams, idle timeout; the writer keeps at most
``max_stream_write_buffer_size`` bytes un-acked per stream (64 KiB send_stream_data() calls).

Each stream starts with one opcode byte from the client (not counted):
``E`` echo every chunk, FIN after the peer's FIN; ``U`` count until FIN, reply the count;
``D`` read a decimal size until FIN, send that many bytes + FIN; ``S`` reply datagram stats
(JSON); ``H`` SHA-256 of everything until FIN, reply the hex digest; ``P`` reply the server's
process id. Datagrams whose first byte is ``E`` are echoed, all others are counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import ssl
import struct
import sys
import time
from collections.abc import Callable
from typing import Any, cast

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer, serve
from aioquic.h3.connection import H3_ALPN, FrameType, H3Connection
from aioquic.h3.events import DatagramReceived, HeadersReceived, WebTransportStreamDataReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import DatagramFrameReceived, ProtocolNegotiated, StreamDataReceived
from aioquic.quic.recovery import QuicPacketPacer

from .common import CpuMeter, MiB, RssMeter, fairness, lat_summary, med

RAW_ALPN = ["pwt-bench-raw"]
CHUNK = 64 * 1024
TUNED = frozenset({"rawh3t"})
perf = time.perf_counter
_tasks: set[asyncio.Task[Any]] = set()


def spawn(coro: Any) -> None:
    t = asyncio.ensure_future(coro)
    _tasks.add(t)
    t.add_done_callback(_tasks.discard)


def quic_config(impl: str, is_client: bool, s: dict[str, Any]) -> QuicConfiguration:
    cfg = QuicConfiguration(
        is_client=is_client,
        alpn_protocols=RAW_ALPN if impl == "rawquic" else H3_ALPN,
        congestion_control_algorithm=s["congestion_control_algorithm"],
        max_datagram_size=s["max_datagram_size"],
        max_data=s["quic_receive_window"],
        max_stream_data=s["quic_stream_receive_window"],
        max_datagram_frame_size=65536,
        idle_timeout=s["connection_idle_timeout"],
    )
    if is_client:
        cfg.verify_mode = ssl.CERT_NONE
    return cfg


# --------------------------------------------------------------------------- tuning

# The tuned baseline's pacer, the same shape as our transport's (and quinn's): the bucket
# holds what the pacing rate allows over 2 ms, 10 to 256 packets (2 to 256 from a 5 ms
# RTT on), counted in packet times.
_BURST_INTERVAL = 0.002
_BURST_MIN_PACKETS = 10
_BURST_MIN_PACKETS_LONG_PATH = 2  # from a 5 ms RTT on, as in our transport
_LONG_PATH_RTT = 0.005
_BURST_MAX_PACKETS = 256
_MIN_PACKET_TIME = 1e-6
_SOCKET_BUFFER = 4 * MiB
_READ_BATCH = 32


class BurstPacer(QuicPacketPacer):
    """aioquic's token bucket with a burst that survives a 1 ms loop clock."""

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        rate = congestion_window / max(smoothed_rtt, _MIN_PACKET_TIME)
        packet_time = max(_MIN_PACKET_TIME, min(self._max_datagram_size / rate, 1.0))
        burst = rate * _BURST_INTERVAL / self._max_datagram_size
        floor = (
            _BURST_MIN_PACKETS_LONG_PATH if smoothed_rtt >= _LONG_PATH_RTT else _BURST_MIN_PACKETS
        )
        burst = min(max(burst, floor), _BURST_MAX_PACKETS)
        self.packet_time = packet_time
        self.bucket_max = burst * packet_time
        if self.bucket_time > self.bucket_max:
            self.bucket_time = self.bucket_max


def tune_transport(transport: asyncio.BaseTransport) -> socket.socket | None:
    """4 MiB socket buffers; return the socket to drain under asyncio's selector loop.

    uvloop reads several datagrams per poll and hides its socket: None there.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
    raw = getattr(transport, "_sock", None)
    return raw if isinstance(raw, socket.socket) else None


def read_queued(sock: socket.socket, receive: Callable[[bytes, Any], None]) -> None:
    """Hand `receive` up to 31 more datagrams already queued on the socket."""
    for _ in range(_READ_BATCH - 1):
        try:
            data, addr = sock.recvfrom(65535)
        except OSError:
            return
        receive(data, addr)


# The tuned server's receive batch: protocols that received during it transmit once at its end.
_batch: set[_Base] | None = None


class TunedServer(QuicServer):
    """aioquic's server endpoint with big buffers and batched reads under the selector loop."""

    _sock: socket.socket | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._sock = tune_transport(transport)

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        global _batch
        batch: set[_Base] = set()
        _batch = batch
        try:
            super().datagram_received(data, addr)
            if self._sock is not None:
                read_queued(self._sock, super().datagram_received)
        finally:
            _batch = None
        for proto in batch:
            proto.transmit()


# --------------------------------------------------------------------------- protocol


class _Base(QuicConnectionProtocol):
    """Per-stream receive buffers, waiters, and write backpressure shared by both sides."""

    impl = "rawh3"
    settings: dict[str, Any] = {}  # noqa: RUF012 (set per subclass)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        q = self._quic
        q._local_max_streams_bidi.value = self.settings["quic_max_concurrent_bidi_streams"]
        self.tuned = self.impl in TUNED
        if self.tuned:
            q._loss._pacer = BurstPacer(max_datagram_size=q._max_datagram_size)
        self._sock: socket.socket | None = None
        self._high = self.settings["max_stream_write_buffer_size"]
        self._drains: dict[int, asyncio.Future[None]] = {}
        self._http: H3Connection | None = None
        self.session_id: int | None = None
        if self.impl != "rawquic" and q.configuration.is_client:
            self._http = H3Connection(q, enable_webtransport=True)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.tuned and self._quic.configuration.is_client:
            self._sock = tune_transport(transport)

    def unacked(self, sid: int) -> int:
        st = self._quic._streams.get(sid)
        if st is None:
            return 0
        return int(st.sender._buffer_stop - st.sender._buffer_start)

    def _receive(self, data: bytes, addr: Any) -> None:
        self._quic.receive_datagram(data, addr, now=self._loop.time())
        self._process_events()

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        if not self.tuned:
            super().datagram_received(data, addr)  # aioquic: receive, events, transmit
        else:
            self._receive(data, addr)  # type: ignore[arg-type]
            if self._sock is not None:
                read_queued(self._sock, self._receive)
            if _batch is not None:
                _batch.add(self)
            else:
                self.transmit()
        if self._drains:
            low = self._high // 2
            for sid, fut in list(self._drains.items()):
                if self.unacked(sid) <= low:
                    del self._drains[sid]
                    if not fut.done():
                        fut.set_result(None)

    async def send_all(self, sid: int, payload: bytes | memoryview, fin: bool = True) -> None:
        """Write in 64 KiB calls; wait while more than the high-water mark is un-acked."""
        q = self._quic
        mv = memoryview(payload)
        n = len(mv)
        if n == 0:
            q.send_stream_data(sid, b"", end_stream=fin)
            self.transmit()
            return
        for off in range(0, n, CHUNK):
            end = min(off + CHUNK, n)
            q.send_stream_data(sid, bytes(mv[off:end]), end_stream=fin and end >= n)
            self.transmit()
            while self.unacked(sid) > self._high:
                fut = self._drains[sid] = asyncio.get_running_loop().create_future()
                await fut

    def send_dgram(self, data: bytes, flush: bool = True) -> None:
        if self._http is not None:
            assert self.session_id is not None
            self._http.send_datagram(self.session_id, data)
        else:
            self._quic.send_datagram_frame(data)
        if flush:
            self.transmit()

    # events, normalised: stream data / datagram / headers
    def quic_event_received(self, event: Any) -> None:
        if self._http is None:
            if self.impl != "rawquic" and isinstance(event, ProtocolNegotiated):
                self._http = H3Connection(self._quic, enable_webtransport=True)
            elif isinstance(event, StreamDataReceived):
                self.on_stream(event.stream_id, event.data, event.end_stream)
                return
            elif isinstance(event, DatagramFrameReceived):
                self.on_dgram(event.data)
                return
            if self._http is None:
                return
        for ev in self._http.handle_event(event):
            if isinstance(ev, WebTransportStreamDataReceived):
                self.on_stream(ev.stream_id, ev.data, ev.stream_ended)
            elif isinstance(ev, DatagramReceived):
                self.on_dgram(ev.data)
            elif isinstance(ev, HeadersReceived):
                self.on_headers(ev.stream_id, dict(ev.headers))

    def on_stream(self, sid: int, data: bytes, fin: bool) -> None:
        raise NotImplementedError

    def on_dgram(self, data: bytes) -> None:
        raise NotImplementedError

    def on_headers(self, sid: int, headers: dict[bytes, bytes]) -> None:
        pass


# --------------------------------------------------------------------------- server


class ServerProtocol(_Base):
    """Answers inside aioquic's event callbacks; the datagram's own transmit sends it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._mode: dict[int, int] = {}
        self._acc: dict[int, Any] = {}
        self.dg = {"count": 0, "first": 0.0, "last": 0.0}

    def on_headers(self, sid: int, h: dict[bytes, bytes]) -> None:
        assert self._http is not None
        if h.get(b":method") == b"CONNECT" and h.get(b":protocol") == b"webtransport":
            self.session_id = sid
            self._http.send_headers(
                sid, [(b":status", b"200"), (b"sec-webtransport-http3-draft", b"draft02")]
            )
        else:
            self._http.send_headers(sid, [(b":status", b"404")], end_stream=True)

    def on_dgram(self, data: bytes) -> None:
        if data[:1] == b"E":
            self.send_dgram(data, flush=False)
            return
        now = perf()
        d = self.dg
        if not d["count"]:
            d["first"] = now
        d["last"] = now
        d["count"] += 1

    def on_stream(self, sid: int, data: bytes, fin: bool) -> None:
        q = self._quic
        mode = self._mode.get(sid)
        if mode is None:
            if not data:
                if fin:
                    q.send_stream_data(sid, b"", end_stream=True)
                return
            mode = self._mode[sid] = data[0]
            data = data[1:]
            self._acc[sid] = (
                0 if mode == 0x55 else hashlib.sha256() if mode == 0x48 else bytearray()
            )
        if mode == 0x45:  # E
            if data or fin:
                q.send_stream_data(sid, data, end_stream=fin)
        elif mode == 0x55:  # U
            self._acc[sid] += len(data)
            if fin:
                q.send_stream_data(sid, str(self._acc[sid]).encode(), end_stream=True)
        elif mode == 0x48:  # H
            self._acc[sid].update(data)
            if fin:
                q.send_stream_data(sid, self._acc[sid].hexdigest().encode(), end_stream=True)
        else:  # D, S, P: small request until FIN
            self._acc[sid] += data
            if fin:
                if mode == 0x44:
                    spawn(self.send_all(sid, bytes(int(self._acc[sid]))))
                elif mode == 0x50:
                    q.send_stream_data(sid, str(os.getpid()).encode(), end_stream=True)
                else:
                    q.send_stream_data(sid, json.dumps(self.dg).encode(), end_stream=True)
        if fin:
            self._mode.pop(sid, None)
            self._acc.pop(sid, None)


async def serve_main(
    impl: str,
    port: int,
    cert: str,
    key: str,
    settings: dict[str, Any],
    reuse_port: bool = False,
) -> None:
    proto = type("Srv", (ServerProtocol,), {"impl": impl, "settings": settings})
    cfg = quic_config(impl, False, settings)
    cfg.load_cert_chain(cert, key)
    if impl in TUNED or reuse_port:
        server_cls = TunedServer if impl in TUNED else QuicServer
        await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: server_cls(configuration=cfg, create_protocol=proto),
            local_addr=("127.0.0.1", port),
            reuse_port=reuse_port or None,
        )
    else:
        await serve("127.0.0.1", port, configuration=cfg, create_protocol=proto)
    sys.stdout.write(f"READY {port}\n")
    sys.stdout.flush()
    await asyncio.Event().wait()


# --------------------------------------------------------------------------- client


class ClientProtocol(_Base):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rx: dict[int, bytearray] = {}
        self._fin: set[int] = set()
        self._count: dict[int, int] = {}  # download: count only
        self._waiter: dict[int, tuple[int | None, asyncio.Future[bytes]]] = {}
        self._ready: asyncio.Future[int] | None = None
        self.dgram_q: asyncio.Queue[bytes] = asyncio.Queue()
        self.dgram_cb: Callable[[bytes], None] | None = None

    def on_headers(self, sid: int, h: dict[bytes, bytes]) -> None:
        if sid == self.session_id and self._ready is not None and not self._ready.done():
            if h.get(b":status") == b"200":
                self._ready.set_result(sid)
            else:
                self._ready.set_exception(RuntimeError(f"CONNECT status {h.get(b':status')!r}"))

    def on_dgram(self, data: bytes) -> None:
        if self.dgram_cb is not None:
            self.dgram_cb(data)
        else:
            self.dgram_q.put_nowait(data)

    def on_stream(self, sid: int, data: bytes, fin: bool) -> None:
        if sid in self._count:
            self._count[sid] += len(data)
        else:
            self._rx.setdefault(sid, bytearray()).extend(data)
        if fin:
            self._fin.add(sid)
        self._check(sid)

    def _check(self, sid: int) -> None:
        w = self._waiter.get(sid)
        if w is None:
            return
        want, fut = w
        if fut.done():
            return
        if want is None:
            if sid in self._fin:
                del self._waiter[sid]
                self._fin.discard(sid)
                if sid in self._count:
                    fut.set_result(str(self._count.pop(sid)).encode())
                else:
                    fut.set_result(bytes(self._rx.pop(sid, b"")))
        else:
            buf = self._rx.get(sid)
            if buf is not None and len(buf) >= want:
                out = bytes(buf[:want])
                del buf[:want]
                del self._waiter[sid]
                fut.set_result(out)

    def expect(self, sid: int, want: int | None, count_only: bool = False) -> asyncio.Future[bytes]:
        """Future of the next `want` bytes (None: everything up to FIN)."""
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        if count_only:
            self._count.setdefault(sid, 0)
        self._waiter[sid] = (want, fut)
        self._check(sid)
        return fut

    async def open_session(self, authority: str, path: str = "/wt") -> None:
        if self._http is None:
            return
        sid = self._quic.get_next_available_stream_id()
        self.session_id = sid
        self._ready = asyncio.get_running_loop().create_future()
        self._http.send_headers(
            sid,
            [
                (b":method", b"CONNECT"),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", path.encode()),
                (b":protocol", b"webtransport"),
                (b"sec-webtransport-http3-draft02", b"1"),
            ],
        )
        self.transmit()
        await asyncio.wait_for(self._ready, 10)

    def open_stream(self, opcode: bytes) -> int:
        if self._http is None:
            sid = self._quic.get_next_available_stream_id()
        else:
            assert self.session_id is not None
            sid = self._http.create_webtransport_stream(self.session_id)
            # aioquic does not mark a locally opened WT bidi stream: without this the reply
            # would be parsed as HTTP/3 frames (PROTOCOL.md, "aioquic pitfalls").
            with self._http._get_or_create_stream(sid) as st:
                st.frame_type = FrameType.WEBTRANSPORT_STREAM
                st.session_id = self.session_id
        self._quic.send_stream_data(sid, opcode)
        return sid


class Ctx:
    def __init__(
        self,
        impl: str,
        port: int,
        server_pid: int | None,
        params: dict[str, Any],
        settings: dict[str, Any],
        env: Any = None,
    ) -> None:
        self.impl, self.port, self.server_pid = impl, port, server_pid
        self.params, self.settings, self.env = params, settings, env
        self.proto = type("Cli", (ClientProtocol,), {"impl": impl, "settings": settings})

    def cfg(self) -> QuicConfiguration:
        return quic_config(self.impl, True, self.settings)

    def connect(self, port: int | None = None) -> Any:
        return connect(
            "127.0.0.1",
            port or self.port,
            configuration=self.cfg(),
            create_protocol=self.proto,
        )

    async def session(self, proto: ClientProtocol, port: int | None = None) -> None:
        await proto.open_session(f"127.0.0.1:{port or self.port}")

    def dialer(self, port: int | None = None, **overrides: Any) -> Dialer:
        return Dialer(self.impl, port or self.port, {**self.settings, **overrides})


# --------------------------------------------------------------------------- load adapters
# The load scenarios (benchmarks/load.py) are written once against these small adapters;
# ours.py has the same three classes over the public API.


class Stream:
    def __init__(self, proto: ClientProtocol, sid: int) -> None:
        self.proto, self.sid = proto, sid

    async def write(self, data: bytes, end_stream: bool = False) -> None:
        await self.proto.send_all(self.sid, data, fin=end_stream)

    async def readexactly(self, n: int) -> bytes:
        return await self.proto.expect(self.sid, n)

    async def read_all(self) -> bytes:
        return await self.proto.expect(self.sid, None)


class Conn:
    def __init__(self, proto: ClientProtocol, stack: contextlib.AsyncExitStack) -> None:
        self.proto, self._stack = proto, stack

    async def stream(self, op: bytes) -> Stream:
        sid = self.proto.open_stream(op)
        self.proto.transmit()
        return Stream(self.proto, sid)

    async def send_datagram(self, data: bytes) -> None:
        self.proto.send_dgram(data)

    def on_datagram(self, callback: Callable[[bytes], None]) -> None:
        self.proto.dgram_cb = callback

    async def close(self) -> None:
        await self._stack.aclose()


class Dialer:
    """Opens sessions (one QUIC connection each) with aioquic's ``connect()``."""

    def __init__(self, impl: str, port: int, settings: dict[str, Any]) -> None:
        self.impl, self.port, self.settings = impl, port, settings
        self.proto = type("Cli", (ClientProtocol,), {"impl": impl, "settings": settings})

    async def connect(self, path: str = "/op") -> Conn:
        stack = contextlib.AsyncExitStack()
        try:
            proto = cast(
                ClientProtocol,
                await stack.enter_async_context(
                    connect(
                        "127.0.0.1",
                        self.port,
                        configuration=quic_config(self.impl, True, self.settings),
                        create_protocol=self.proto,
                    )
                ),
            )
            await proto.open_session(f"127.0.0.1:{self.port}", path)
        except BaseException:
            await stack.aclose()
            raise
        return Conn(proto, stack)

    async def aclose(self) -> None:
        pass


# --------------------------------------------------------------------------- scenarios


async def sc_handshake(ctx: Ctx) -> dict[str, Any]:
    n, warm = ctx.params["n_handshake"], 3
    conn_s: list[float] = []
    close_s: list[float] = []
    for i in range(warm + n):
        t0 = perf()
        async with ctx.connect() as proto:
            await ctx.session(proto)
            t1 = perf()
            proto.close()
            t2 = perf()
        if i >= warm:
            conn_s.append(t1 - t0)
            close_s.append(t2 - t1)
    return {**lat_summary(conn_s, "connect", (50, 90)), **lat_summary(close_s, "close", (50, 90))}


async def sc_rtt_stream(ctx: Ctx) -> dict[str, Any]:
    n, warm = ctx.params["n_rtt"], 10
    payload = bytes(range(64))
    reused: list[float] = []
    fresh: list[float] = []
    async with ctx.connect() as proto:
        await ctx.session(proto)
        sid = proto.open_stream(b"E")
        proto.transmit()
        for i in range(warm + n):
            fut = proto.expect(sid, 64)
            t0 = perf()
            proto._quic.send_stream_data(sid, payload)
            proto.transmit()
            got = await asyncio.wait_for(fut, 10)
            if i >= warm:
                reused.append(perf() - t0)
            assert got == payload
        for i in range(warm + n):
            t0 = perf()
            s = proto.open_stream(b"E")
            fut = proto.expect(s, None)
            proto._quic.send_stream_data(s, payload, end_stream=True)
            proto.transmit()
            got = await asyncio.wait_for(fut, 10)
            if i >= warm:
                fresh.append(perf() - t0)
            assert got == payload
    return {**lat_summary(reused, "reused", (50, 99)), **lat_summary(fresh, "fresh", (50, 99))}


async def _dgram_rtts(proto: ClientProtocol, n: int, warm: int) -> tuple[list[float], int]:
    rtts: list[float] = []
    lost = 0
    for i in range(warm + n):
        payload = b"E" + struct.pack("!I", i) + bytes(59)
        t0 = perf()
        proto.send_dgram(payload)
        while True:
            try:
                got = await asyncio.wait_for(proto.dgram_q.get(), max(t0 + 0.5 - perf(), 0))
            except TimeoutError:
                lost += i >= warm
                break
            if got[:5] == payload[:5]:
                if i >= warm:
                    rtts.append(perf() - t0)
                break
    return rtts, lost


async def sc_rtt_datagram(ctx: Ctx) -> dict[str, Any]:
    """Two passes of the same method: raw aioquic has one datagram API (its event callback),
    measured once against each of our two (receive_datagram and DATAGRAM_RECEIVED)."""
    n, warm = ctx.params["n_rtt"], 10
    async with ctx.connect() as proto:
        await ctx.session(proto)
        rtts, lost = await _dgram_rtts(proto, n, warm)
        rtts_ev, lost_ev = await _dgram_rtts(proto, n, warm)
    return {
        **lat_summary(rtts, "dgram", (50, 99)),
        "dgram_lost": lost,
        **lat_summary(rtts_ev, "dgram_ev", (50, 99)),
        "dgram_ev_lost": lost_ev,
    }


async def sc_upload(ctx: Ctx) -> dict[str, Any]:
    size, reps = ctx.params["size"], ctx.params["reps"]
    payload = bytes(size)
    speeds: list[float] = []
    async with ctx.connect() as proto:
        await ctx.session(proto)

        async def one(data: bytes) -> float:
            sid = proto.open_stream(b"U")
            fut = proto.expect(sid, None)
            t0 = perf()
            await proto.send_all(sid, data)
            reply = await asyncio.wait_for(fut, 120)
            dt = perf() - t0
            if int(reply) != len(data):
                raise RuntimeError(f"server counted {reply!r}, expected {len(data)}")
            return dt

        await one(bytes(max(size // 8, 1)))
        cpu = CpuMeter(ctx.server_pid)
        for _ in range(reps):
            speeds.append(size / MiB / await one(payload))
        out = cpu.per_mib("upload", size * reps)
    return {"upload_MiBps": round(med(speeds) or 0, 2), **out}


async def sc_download(ctx: Ctx) -> dict[str, Any]:
    size, reps = ctx.params["size"], ctx.params["reps"]
    speeds: list[float] = []
    async with ctx.connect() as proto:
        await ctx.session(proto)

        async def one(n: int) -> float:
            t0 = perf()
            sid = proto.open_stream(b"D")
            fut = proto.expect(sid, None, count_only=True)
            proto._quic.send_stream_data(sid, str(n).encode(), end_stream=True)
            proto.transmit()
            got = int(await asyncio.wait_for(fut, 120))
            dt = perf() - t0
            if got != n:
                raise RuntimeError(f"received {got}, expected {n}")
            return dt

        await one(max(size // 8, 1))
        cpu = CpuMeter(ctx.server_pid)
        for _ in range(reps):
            speeds.append(size / MiB / await one(size))
        out = cpu.per_mib("download", size * reps)
    return {"download_MiBps": round(med(speeds) or 0, 2), **out}


async def sc_multiplex(ctx: Ctx) -> dict[str, Any]:
    nstreams, chunk, reps = ctx.params["streams"], ctx.params["chunk"], ctx.params["mux_reps"]
    payload = bytes(chunk)
    walls: list[float] = []
    done: list[float] = []

    async def one(proto: ClientProtocol, t0: float) -> int:
        sid = proto.open_stream(b"E")
        fut = proto.expect(sid, None)
        await proto.send_all(sid, payload)
        n = len(await fut)
        done.append(perf() - t0)
        return n

    for rep in range(reps + 1):
        async with ctx.connect() as proto:
            await ctx.session(proto)
            count = 20 if rep == 0 else nstreams
            done.clear()
            t0 = perf()
            got = await asyncio.wait_for(
                asyncio.gather(*[one(proto, t0) for _ in range(count)]),
                ctx.params.get("mux_timeout", 20),
            )
            if rep:
                walls.append(perf() - t0)
            if any(g != chunk for g in got):
                raise RuntimeError("multiplex: short echo")
    wall = med(walls) or 1.0
    return {
        "multiplex_MiBps": round(nstreams * chunk / MiB / wall, 2),
        "multiplex_wall_s": round(wall, 3),
        **fairness(done),
    }


async def sc_datagram_pps(ctx: Ctx) -> dict[str, Any]:
    n = ctx.params["n_dgram"]
    payload = b"C" + bytes(63)
    async with ctx.connect() as proto:
        await ctx.session(proto)
        t0 = perf()
        for i in range(n):
            proto.send_dgram(payload, flush=False)
            if i % 32 == 31:  # transmit and let ACKs in, like a library's transmit-soon
                proto.transmit()
                await asyncio.sleep(0)
        proto.transmit()
        send_s = perf() - t0
        prev, stats = -1, {"count": 0, "first": 0.0, "last": 0.0}
        deadline = perf() + 10
        while perf() < deadline:
            sid = proto.open_stream(b"S")
            fut = proto.expect(sid, None)
            proto._quic.send_stream_data(sid, b"", end_stream=True)
            proto.transmit()
            stats = json.loads(await asyncio.wait_for(fut, 10))
            if stats["count"] == prev:
                break
            prev = stats["count"]
            await asyncio.sleep(0.2)
    recv, span = stats["count"], stats["last"] - stats["first"]
    return {
        "send_pps": round(n / send_s),
        "recv_pps": round(recv / span) if recv > 1 and span > 0 else None,
        "received_pct": round(100.0 * recv / n, 2),
    }


async def sc_conn_rate(ctx: Ctx) -> dict[str, Any]:
    """Sequential connect + session; the close (and aioquic's closing wait) runs in the
    background, as `session.close()` leaves it to our client."""
    dur = ctx.params["duration"]
    cpu = CpuMeter(ctx.server_pid)
    t0, n = perf(), 0
    while perf() - t0 < dur:
        cm = ctx.connect()
        proto = await cm.__aenter__()
        await ctx.session(proto)
        spawn(cm.__aexit__(None, None, None))
        n += 1
    el = perf() - t0
    c = cpu.per_mib("x", MiB * n)
    await asyncio.sleep(0.2)
    return {
        "cps": round(n / el, 1),
        "server_cpu_ms_per_conn": c.get("x_server_cpu_ms_per_MiB"),
    }


async def sc_conn_rate_client_close(ctx: Ctx) -> dict[str, Any]:
    """A fresh connection per cycle, closed in the foreground: leaving aioquic's
    ``connect()`` context closes the connection and waits until it is closed."""
    dur, max_cycles = ctx.params["duration"], ctx.params["close_cycles"]
    warm = min(100, max_cycles // 10)
    close_s: list[float] = []
    cpu = CpuMeter(ctx.server_pid)
    rss: RssMeter | None = None
    t0, n = perf(), 0
    while perf() - t0 < dur and n < max_cycles:
        async with ctx.connect() as proto:
            await ctx.session(proto)
            tc = perf()
        close_s.append(perf() - tc)
        n += 1
        if n == warm:
            rss = RssMeter(ctx.server_pid)
    el = perf() - t0
    c = cpu.per_mib("x", MiB * n)
    return {
        "cycles_per_s": round(n / el, 1),
        "cycles": n,
        **lat_summary(close_s, "client_close", (50, 99)),
        "server_cpu_ms_per_cycle": c.get("x_server_cpu_ms_per_MiB"),
        **(rss.growth(n - warm) if rss is not None else {}),
    }


async def sc_idle_cost(ctx: Ctx) -> dict[str, Any]:
    n, settle, window = ctx.params["sessions"], ctx.params["settle"], ctx.params["idle_window"]
    held: list[Any] = []
    for _ in range(5):
        async with ctx.connect() as proto:
            await ctx.session(proto)
    await asyncio.sleep(settle / 3)
    rss = RssMeter(ctx.server_pid)
    for _ in range(n):
        cm = ctx.connect()
        proto = await cm.__aenter__()
        await ctx.session(proto)
        held.append((cm, proto))
    await asyncio.sleep(settle)
    result: dict[str, Any] = rss.per_session(n)
    if window:
        cpu = CpuMeter(ctx.server_pid)
        await asyncio.sleep(window)
        result.update(cpu.per_session_minute(n, window))
        if any(p._closed.is_set() for _cm, p in held):
            raise RuntimeError("idle connections closed during the window")
    for _cm, proto in held:
        proto.close()
    await asyncio.sleep(0.3)
    return result


def _load(name: str) -> Any:
    async def run(ctx: Ctx) -> dict[str, Any]:
        from . import load

        return await getattr(load, name)(ctx)  # type: ignore[no-any-return]

    return run


SCENARIOS = {
    "handshake": sc_handshake,
    "rtt_stream": sc_rtt_stream,
    "rtt_datagram": sc_rtt_datagram,
    "upload": sc_upload,
    "download": sc_download,
    "multiplex": sc_multiplex,
    "multiplex_1000": sc_multiplex,
    "datagram_pps": sc_datagram_pps,
    "conn_rate": sc_conn_rate,
    "conn_rate_client_close": sc_conn_rate_client_close,
    "idle_cost": sc_idle_cost,
    "capacity": _load("capacity"),
    "latency_under_load": _load("latency_under_load"),
    "lossy": _load("lossy"),
    "bottleneck": _load("bottleneck"),
    "shared": _load("shared"),
    "workers": _load("workers"),
}
