"""Every byte accounted for, end to end, under loss, reordering, delay, closes and resets.

A property test over the deterministic harness: each example is a random
scenario (network, streams each way, datagrams, and one ending at a random
moment: a graceful close or an abort from either side, a connection close,
a reset or a stop of one stream, or nothing). Whatever happens:

1. A reader that ends without an error got exactly the bytes written, never a
   truncated or altered stream.
2. A stream its writer finished before its own side began a graceful close
   (or with no close at all), and that nobody reset or stopped, reaches its
   reader whole, unless the reader's own side closed first (its reader is
   then told with an error).
3. Nothing waits past its bound: every read and write ends, with data or an
   error, within the scenario's virtual deadline.
4. No credit is left behind: while the session stays open, streams and data
   beyond the initial session limits (draft-15) still get through afterwards,
   and no stream record stays behind on either side.

The suite runs this with aioquic's optimisations on and off (make
test-patches-off) and on the lowest aioquic of the range (make
test-aioquic-min). A failing example prints its seed; replay it with
`PWT_INVARIANT_SEED=<seed> pytest tests/deterministic/test_invariants.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import itertools
import os
import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pywebtransport import (
    ClientConfig,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
    WebTransportStream,
)
from pywebtransport.shared.exceptions import WebTransportError

from .simnet import VirtualLoop, run_virtual

pytestmark = pytest.mark.timeout(300)

URL = "https://127.0.0.1:4433/"
KINDS = ("c2s_uni", "c2s_bidi", "s2c_uni")
ENDINGS = (
    "none",
    "client_close",
    "server_close",
    "client_abort",
    "server_abort",
    "client_connection_close",
    "reset_one",
    "stop_one",
)
STREAM_LIMIT = 4
"""The draft-15 stream limits both sides grant: the scenario plus the after-check exceed them."""
DATA_LIMIT = 96 * 1024
"""The draft-15 session data limit both sides grant: exceeded by most scenarios."""
DEADLINE = 60.0
"""Virtual seconds a scenario may take (close_timeout is 5 s)."""


@dataclass
class Plan:
    index: int
    kind: str
    size: int
    chunk: int
    payload: bytes = field(default=b"", repr=False)


@dataclass
class Scenario:
    seed: int
    delay: float
    loss: float
    jitter: float
    plans: list[Plan]
    datagrams: int
    ending: str
    ending_at: float
    target: int

    @classmethod
    def from_seed(cls, seed: int) -> Scenario:
        rng = random.Random(seed)
        plans = []
        for index in range(rng.randint(1, 4)):
            size = rng.choice(
                [0, 1, 100, 5000, rng.randint(1, 60_000), rng.randint(60_000, 250_000)]
            )
            plan = Plan(index, rng.choice(KINDS), size, rng.choice([1000, 16_384, 100_000]))
            body = random.Random(seed * 31 + index).randbytes(size)
            plan.payload = index.to_bytes(4, "big") + body
            plans.append(plan)
        return cls(
            seed=seed,
            delay=rng.choice([0.0005, 0.005, 0.02]),
            loss=rng.choice([0.0, 0.0, 0.01, 0.05]),
            jitter=rng.choice([0.0, 0.0, 0.002, 0.01]),
            plans=plans,
            datagrams=rng.randint(0, 5),
            ending=rng.choice(ENDINGS),
            ending_at=rng.choice([0.0, 0.001, 0.01, 0.05, 0.2, 1.0]),
            target=rng.randrange(len(plans)),
        )


@dataclass(repr=False)
class Outcome:
    """What each side's readers and writers ended with, and when (virtual seconds)."""

    received: dict[tuple[str, int], bytes] = field(default_factory=dict)
    """(reader side, plan index) -> everything read, for readers that ended cleanly."""
    read_failed: list[tuple[str, str]] = field(default_factory=list)
    written: dict[tuple[str, int], int] = field(default_factory=dict)
    """(writer side, plan index) -> the step at which write(..., end_stream=True) returned."""
    pending: list[str] = field(default_factory=list)
    ending_started: int | None = None
    """The step at which the ending began (steps order what happened in one virtual instant)."""
    after_check: str = ""
    after_received: int = 0
    leftover_streams: int = -1
    steps: itertools.count[int] = field(default_factory=itertools.count)


AFTER_INDEX = 0xFFFFFFFF
AFTER_PAYLOAD = AFTER_INDEX.to_bytes(4, "big") + bytes(30_000)


def _verify_payload(data: bytes, plans: list[Plan]) -> int:
    """Return the plan index of a stream read whole, or fail on anything else."""
    assert len(data) >= 4, f"a clean end with only {len(data)} bytes"
    index = int.from_bytes(data[:4], "big")
    if index == AFTER_INDEX:
        assert data == AFTER_PAYLOAD, "an after-check stream corrupted"
        return index
    assert index < len(plans), f"unknown stream index {index}"
    expected = plans[index].payload
    assert len(data) == len(expected), (
        f"stream {index} ended cleanly after {len(data)} of {len(expected)} bytes"
    )
    assert hashlib.sha256(data).digest() == hashlib.sha256(expected).digest(), (
        f"stream {index} corrupted"
    )
    return index


async def _write(stream: Any, plan: Plan) -> None:
    data = memoryview(plan.payload)
    for start in range(0, len(data), plan.chunk):
        await stream.write(data[start : start + plan.chunk])
    await stream.write(b"", end_stream=True)


def _run(scenario: Scenario, server_config: ServerConfig, client_config: ClientConfig) -> Outcome:
    outcome = Outcome()
    plans = scenario.plans
    tasks: list[asyncio.Task[Any]] = []

    async def main(loop: VirtualLoop) -> None:
        net = loop.network
        net.delay = scenario.delay
        net.jitter = scenario.jitter
        net.rng = random.Random(scenario.seed)
        handshake_done = asyncio.Event()

        def drop(data: bytes, source: Any, destination: Any) -> bool:
            # The handshake is not what is under test: loss starts once it is done.
            return handshake_done.is_set() and net.rng.random() < scenario.loss

        net.drop = drop
        server_session: asyncio.Future[WebTransportSession] = loop.create_future()

        def track(side: str, coro: Any, name: str) -> None:
            task = asyncio.ensure_future(coro)
            task.set_name(f"{side}:{name}")
            tasks.append(task)

        async def read(side: str, stream: Any, echo: bool) -> None:
            try:
                data = await stream.read_all(max_size=1 << 22)
            except (WebTransportError, asyncio.IncompleteReadError) as exc:
                outcome.read_failed.append((side, type(exc).__name__))
                return
            index = _verify_payload(data, plans)
            if index == AFTER_INDEX:
                outcome.after_received += 1
                return
            outcome.received[(side, index)] = data
            if echo:
                with contextlib.suppress(WebTransportError):
                    await stream.write(data, end_stream=True)
                    outcome.written[("server-echo", index)] = next(outcome.steps)

        async def handler(session: WebTransportSession) -> None:
            server_session.set_result(session)
            for plan in plans:
                if plan.kind == "s2c_uni":
                    track("server", push(session, plan), f"push{plan.index}")
            for _ in range(scenario.datagrams):
                with contextlib.suppress(WebTransportError):
                    session.send_datagram_nowait(b"server datagram")
            with contextlib.suppress(WebTransportError):
                async for stream in session.incoming_streams():
                    echo = isinstance(stream, WebTransportStream)
                    track("server", read("server", stream, echo), f"read{stream.stream_id}")
                    del stream  # the reading task holds what it needs
            await session.wait_closed()

        async def push(session: WebTransportSession, plan: Plan) -> None:
            with contextlib.suppress(WebTransportError):
                stream = await session.create_unidirectional_stream()
                streams[("server", plan.index)] = stream
                await _write(stream, plan)
                outcome.written[("server", plan.index)] = next(outcome.steps)

        async def send(session: WebTransportSession, plan: Plan) -> None:
            with contextlib.suppress(WebTransportError):
                if plan.kind == "c2s_uni":
                    stream: Any = await session.create_unidirectional_stream()
                else:
                    stream = await session.create_bidirectional_stream()
                streams[("client", plan.index)] = stream
                await _write(stream, plan)
                outcome.written[("client", plan.index)] = next(outcome.steps)
                if plan.kind == "c2s_bidi":
                    await read("client", stream, echo=False)

        streams: dict[tuple[str, int], Any] = {}
        async with (
            WebTransportServer(server_config, handler=handler),
            WebTransportClient(client_config) as client,
        ):
            session = await client.connect(URL)
            peer = await asyncio.wait_for(server_session, 5)
            handshake_done.set()
            for plan in plans:
                if plan.kind != "s2c_uni":
                    track("client", send(session, plan), f"send{plan.index}")

            async def client_reads() -> None:
                with contextlib.suppress(WebTransportError):
                    async for stream in session.incoming_unidirectional_streams():
                        track("client", read("client", stream, False), f"read{stream.stream_id}")
                        del stream

            track("client", client_reads(), "accept")
            for _ in range(scenario.datagrams):
                with contextlib.suppress(WebTransportError):
                    session.send_datagram_nowait(b"client datagram")
            await asyncio.sleep(scenario.ending_at)
            outcome.ending_started = next(outcome.steps)
            await _end(scenario, session, peer, streams, client)
            readers = [t for t in tasks if not t.get_name().endswith("accept")]
            done, waiting = await asyncio.wait(readers, timeout=DEADLINE)
            outcome.pending = sorted(t.get_name() for t in waiting)
            for task in done:
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            if scenario.ending in ("none", "reset_one", "stop_one") and session.is_ready:
                outcome.after_check = await _after_check(session, outcome, loop)
            # Streams the application let go of are closed (both halves) by the
            # library; the test's own references are dropped first.
            streams.clear()
            gc.collect()
            await asyncio.sleep(1.0)
            outcome.leftover_streams = session.connection.get_stats()["streams"]
        for task in tasks:
            task.cancel()

    run_virtual(main)
    return outcome


async def _end(
    scenario: Scenario,
    session: WebTransportSession,
    peer: WebTransportSession,
    streams: dict[tuple[str, int], Any],
    client: WebTransportClient,
) -> None:
    ending = scenario.ending
    if ending == "client_close":
        await session.close(reason="client done")
    elif ending == "server_close":
        await peer.close(reason="server done")
    elif ending == "client_abort":
        session.abort(9, "client abort")
    elif ending == "server_abort":
        peer.abort(9, "server abort")
    elif ending == "client_connection_close":
        await session.connection.close(reason="bye")
    elif ending in ("reset_one", "stop_one"):
        plan = scenario.plans[scenario.target]
        side = "server" if plan.kind == "s2c_uni" else "client"
        stream = streams.get((side, plan.index))
        if stream is None:
            return
        if ending == "reset_one":
            with contextlib.suppress(WebTransportError):
                await stream.reset(3)
        elif plan.kind == "c2s_bidi":
            with contextlib.suppress(WebTransportError):
                await stream.stop_receiving(4)


async def _after_check(session: WebTransportSession, outcome: Outcome, loop: Any) -> str:
    """Credit came back: more streams and more data than the initial limits, all through."""
    count = 2 * STREAM_LIMIT
    try:
        for _ in range(count):
            stream = await asyncio.wait_for(session.create_unidirectional_stream(), 10)
            await asyncio.wait_for(stream.write(AFTER_PAYLOAD, end_stream=True), 10)
        for _ in range(1000):
            if outcome.after_received == count:
                return "ok"
            await asyncio.sleep(0.01)
    except (TimeoutError, WebTransportError) as exc:
        return f"failed: {exc!r}"
    return f"only {outcome.after_received} of {count} after-check streams arrived"


def _check(scenario: Scenario, outcome: Outcome) -> None:
    replay = f"replay: PWT_INVARIANT_SEED={scenario.seed}  ({scenario})"
    assert not outcome.pending, f"waiting past the deadline: {outcome.pending}; {replay}"
    ending = scenario.ending
    started = outcome.ending_started
    assert started is not None
    for plan in scenario.plans:
        if plan.kind == "s2c_uni":
            writer, reader = "server", "client"
        else:
            writer, reader = "client", "server"
        finished = outcome.written.get((writer, plan.index))
        touched = ending in ("reset_one", "stop_one") and plan.index == scenario.target
        aborted = ending in ("client_abort", "server_abort")
        # The reader's own side closing first may cut its reading short (it is told).
        reader_closed = ending == f"{reader}_close" or (
            reader == "client" and ending == "client_connection_close"
        )
        must = (
            finished is not None
            and finished <= started
            and not touched
            and not aborted
            and not reader_closed
        )
        if must:
            assert (reader, plan.index) in outcome.received, (
                f"stream {plan.index} ({plan.kind}, {plan.size} B) finished at {finished:.4f}s, "
                f"before the ending at {started:.4f}s, but its reader did not get it; {replay}"
            )
        if plan.kind == "c2s_bidi":
            echoed = outcome.written.get(("server-echo", plan.index))
            if (
                echoed is not None
                and echoed <= started
                and ending in ("none", "server_close")
                and not touched
            ):
                assert ("client", plan.index) in outcome.received, (
                    f"echo of stream {plan.index} lost; {replay}"
                )
    if ending == "none" or outcome.after_check:
        assert outcome.after_check == "ok", f"credit not back: {outcome.after_check}; {replay}"
    assert outcome.leftover_streams == 0, (
        f"{outcome.leftover_streams} stream records left behind on the client; {replay}"
    )


@pytest.fixture
def limited(
    server_config: ServerConfig, client_config: ClientConfig
) -> tuple[ServerConfig, ClientConfig]:
    limits = {
        "initial_max_streams_uni": STREAM_LIMIT,
        "initial_max_streams_bidi": STREAM_LIMIT,
        "initial_max_data": DATA_LIMIT,
        "flow_control_window": DATA_LIMIT,
        "close_timeout": 5.0,
        "quic_stream_receive_window": 64 * 1024,
        "max_stream_read_buffer_size": 64 * 1024,
    }
    return server_config.update(**limits), client_config.update(**limits)


@settings(
    max_examples=int(os.environ.get("PWT_INVARIANT_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
# Seeds that found bugs: an application's stream kept alive by the traceback of the error it
# raised (so never let go of), and data queued behind a reset counted against session credit.
@example(seed=6367)
@example(seed=4048090198)
@example(seed=687088619)
# A time-threshold loss deadline that aioquic's check found a rounding error short of, at
# one virtual instant forever, until the harness's loop turns took time (simnet.TURN).
@example(seed=323870)
def test_every_byte_is_delivered_or_reported(
    limited: tuple[ServerConfig, ClientConfig], seed: int
) -> None:
    scenario = Scenario.from_seed(seed)
    _check(scenario, _run(scenario, *limited))


if "PWT_INVARIANT_SEED" in os.environ:  # defined only to replay a seed, never skipped

    def test_replay_one_seed(limited: tuple[ServerConfig, ClientConfig]) -> None:
        scenario = Scenario.from_seed(int(os.environ["PWT_INVARIANT_SEED"]))
        print(scenario)
        _check(scenario, _run(scenario, *limited))
