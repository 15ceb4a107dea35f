"""A deterministic harness for the asyncio layer: virtual time and an in-memory network.

`VirtualLoop` is asyncio's selector loop with two changes:

* `time()` is a virtual clock. When nothing is ready to run, the loop jumps the
  clock to the next timer instead of sleeping, so a 60-second idle timeout
  takes no wall-clock time and always fires at exactly the same instant.
* `create_datagram_endpoint()` binds to an in-memory network (`SimNetwork`)
  instead of a socket. Datagrams travel with a configurable one-way delay and
  may be dropped by a filter, so a peer can vanish at a precise moment.

The library runs on it unchanged: the same client, server, engine, aioquic and
timers as in production. A test that waits for something that never comes
fails at once ("idle with nothing scheduled") instead of hanging.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import selectors
import socket
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["Deadlock", "Livelock", "SimNetwork", "VirtualLoop", "run_virtual", "until"]

T = TypeVar("T")

Address = tuple[str, int]
DropFilter = Callable[[bytes, Address, Address], bool]
PathModel = Callable[[bytes, Address, Address, float], list[float]]


class Deadlock(RuntimeError):
    """The loop has nothing ready and nothing scheduled: the test would wait forever."""


class Livelock(RuntimeError):
    """Timers keep coming due at one instant and the clock cannot move: the test would spin."""


TURN = 1e-9
"""Virtual seconds a loop turn woken by a due timer takes (see `_VirtualSelector.select`)."""
SPIN_LIMIT = 100_000
"""Consecutive turns woken by due timers, without the clock ever being free to jump, that
count as a livelock."""


class _VirtualSelector(selectors.DefaultSelector):
    """Polls real file descriptors without blocking; waiting advances the virtual clock."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualLoop | None = None
        self.spin = 0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready:
            return ready
        loop = self.loop
        assert loop is not None
        if timeout == 0:
            if not loop.has_ready_callbacks():
                # A timer came due: on a real clock its turn takes time. Without this, a
                # handler that finds its deadline not quite reached (aioquic's time-threshold
                # loss check subtracts what the deadline added, and the float rounding can
                # land a hair short) re-arms the same deadline forever at one instant.
                loop.advance(TURN)
                self.spin += 1
                if self.spin > SPIN_LIMIT:
                    raise Livelock(
                        f"timers due at {loop.time()!r} keep re-arming: {loop.due_timers()}"
                    )
            return ready
        self.spin = 0
        if timeout is None:
            raise Deadlock("virtual loop idle with nothing scheduled: the test waits forever")
        loop.advance(timeout)
        return []


class SimNetwork:
    """Hosts bound by the loop's datagram endpoints, and the wire between them.

    Args:
        loop: The virtual loop whose clock times delivery.
        delay: One-way delay of every datagram, in seconds.
    """

    def __init__(self, loop: VirtualLoop, delay: float = 0.0005) -> None:
        self.loop = loop
        self.delay = delay
        self.hosts: dict[Address, _MemoryTransport] = {}
        self.drop: DropFilter | None = None
        """Called for each datagram (data, source, destination); True drops it."""
        self.jitter = 0.0
        """Extra random delay of each datagram, up to this many seconds; datagrams
        may then overtake each other (reordering)."""
        self.rng = random.Random(0)
        """The randomness of `jitter` (seed it for a reproducible run)."""
        self.path: PathModel | None = None
        """Replaces `delay`, `jitter` and `drop` when set: called for each datagram
        (data, source, destination, now), it returns the virtual times at which copies
        arrive (none: dropped), as `Link.admit` of tests/integration/udp_relay.py does."""
        self.receive_cost = 0.0
        """Virtual seconds each delivered datagram takes its receiver (CPU time): the
        clock moves on by this much after the receiver has processed it, so that
        datagrams arriving together are processed over time, as on a busy host."""
        self.sent = 0
        self.dropped = 0
        self._next_port = 40000
        self._last: dict[tuple[Address, Address], float] = {}

    def bind(self, transport: _MemoryTransport, local: Address | None) -> Address:
        host, port = local if local is not None else ("127.0.0.1", 0)
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if port == 0:
            while (host, self._next_port) in self.hosts:
                self._next_port += 1
            port = self._next_port
            self._next_port += 1
        address = (host, port)
        if address in self.hosts:
            raise OSError(98, f"address {address} already in use")
        self.hosts[address] = transport
        return address

    def unbind(self, address: Address) -> None:
        self.hosts.pop(address, None)

    def send(self, data: bytes, source: Address, destination: Address) -> None:
        self.sent += 1
        destination = (str(destination[0]), int(destination[1]))
        if self.path is not None:
            arrivals = self.path(data, source, destination, self.loop.time())
            if not arrivals:
                self.dropped += 1
            for when in arrivals:
                # The loop runs timers of equal deadline in no fixed order, and a model
                # that keeps order gives datagrams sent together one arrival time: a
                # picosecond per datagram sent keeps them in order, as the wire would.
                when += self.sent * 1e-12
                self.loop.call_at(when, self._deliver, bytes(data), source, destination)
            return
        if self.drop is not None and self.drop(data, source, destination):
            self.dropped += 1
            return
        link = (source, destination)
        if self.jitter > 0:
            when = self.loop.time() + self.delay + self.rng.uniform(0, self.jitter)
        else:
            # In order on each link: timers of equal deadlines have no fixed order.
            when = max(self.loop.time() + self.delay, self._last.get(link, 0.0) + 1e-9)
        self._last[link] = when
        self.loop.call_at(when, self._deliver, bytes(data), source, destination)

    def _deliver(self, data: bytes, source: Address, destination: Address) -> None:
        transport = self.hosts.get(destination)
        if transport is not None:
            transport.deliver(data, source)
            self.loop.advance(self.receive_cost)


class _MemoryTransport(asyncio.DatagramTransport):
    """A datagram transport on the in-memory network."""

    def __init__(
        self, network: SimNetwork, protocol: asyncio.DatagramProtocol, local: Address | None
    ) -> None:
        super().__init__()
        self._network = network
        self._protocol = protocol
        self._closing = False
        self.address = network.bind(self, local)

    def sendto(self, data: Any, addr: Any = None) -> None:
        if not self._closing:
            self._network.send(bytes(data), self.address, addr)

    def deliver(self, data: bytes, source: Address) -> None:
        if not self._closing:
            self._protocol.datagram_received(data, source)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return self.address
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._network.unbind(self.address)
        self._network.loop.call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()


class VirtualLoop(asyncio.SelectorEventLoop):
    """asyncio's selector loop on a virtual clock, with an in-memory UDP network."""

    def __init__(self, *, delay: float = 0.0005) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self._virtual_now = 1000.0
        self.network = SimNetwork(self, delay)

    def time(self) -> float:
        return self._virtual_now

    def has_ready_callbacks(self) -> bool:
        """Whether callbacks wait to run in this turn (a zero select timeout then is theirs)."""
        return bool(self._ready)

    def due_timers(self) -> list[asyncio.TimerHandle]:
        """The first few timers still scheduled, for a livelock's message."""
        return [handle for handle in self._scheduled if not handle.cancelled()][:3]

    def advance(self, seconds: float) -> None:
        """Move the clock forward (the loop does this itself when idle)."""
        self._virtual_now += max(0.0, seconds)

    async def create_datagram_endpoint(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], asyncio.DatagramProtocol],
        local_addr: Address | None = None,
        remote_addr: Address | None = None,
        **kwargs: Any,
    ) -> tuple[asyncio.DatagramTransport, asyncio.DatagramProtocol]:
        protocol = protocol_factory()
        transport = _MemoryTransport(self.network, protocol, local_addr)
        protocol.connection_made(transport)
        return transport, protocol

    async def getaddrinfo(  # type: ignore[override]
        self,
        host: Any,
        port: Any,
        *,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        # No resolver thread: its completion would race the virtual clock.
        return socket.getaddrinfo(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)


async def until(predicate: Callable[[], bool], step: float = 0.001) -> None:
    """Wait (in virtual time) until `predicate()` holds, checking every `step` seconds.

    Args:
        predicate: The condition.
        step: Virtual seconds between checks.
    """
    for _ in itertools.count():
        if predicate():
            return
        await asyncio.sleep(step)


def run_virtual(
    main: Callable[[VirtualLoop], Coroutine[Any, Any, T]], *, delay: float = 0.0005
) -> T:
    """Run `main(loop)` to completion on a fresh `VirtualLoop`, then close the loop.

    Args:
        main: A coroutine function taking the loop (for `loop.time()` and
            `loop.network`).
        delay: One-way network delay.

    Returns:
        What `main` returned.
    """
    loop = VirtualLoop(delay=delay)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main(loop))
    finally:
        try:
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            # Closed even when the clean-up hits the livelock or deadlock the run did.
            asyncio.set_event_loop(None)
            loop.close()
