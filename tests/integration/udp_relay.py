"""A userspace UDP relay that models a path: bottleneck, queue, loss, delay, reordering.

Run it between clients and a server (inside a test namespace, or on loopback):

    python udp_relay.py --listen 5000 --target 4433 --delay 10-20 --reorder 25 --dup 5
    python udp_relay.py --listen 5000 --target 4433 --delay 10 --rate 20 --queue 64
    python udp_relay.py --listen 5000 --target 4433 --delay-up 5 --delay-down 30 --loss 2 --burst 4

Each direction is its own link (`Link`). A datagram first enters the link's drop-tail
queue (`--rate` Mbit/s of UDP payload, `--queue` datagrams deep; no rate means no
queue), then is lost with `--loss` percent (independent, or in bursts of `--burst`
datagrams on average: a Gilbert-Elliott chain), then waits the one-way delay
(`--delay`, or `--delay-up` / `--delay-down` for client-to-server / server-to-client;
a range like 10-20 is uniform jitter that keeps order). `--reorder` percent wait an
extra 5-15 ms so later datagrams overtake them; `--dup` percent are sent twice.

Every client address gets its own socket towards the target, so several clients (one
QUIC connection each) share the links, as flows share a real bottleneck. `--rebind-every`
seconds, each of those sockets is replaced by a new one (a new source port), as a NAT
rebinds an idle flow or a phone changes networks: the server sees the client move. On
SIGTERM it prints one JSON line: counts (both ways summed, and `up` and `down` apart),
and per client port the bytes of its datagrams the uplink carried (not dropped), in
`bin_s` bins from the relay's start (`flows`), from which a benchmark reads each flow's
share of the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

BIN_S = 0.25
_BUFFER = 4 * 1024 * 1024
_TIE = 1e-9  # seconds between dues that would tie


class Link:
    """One direction of the path, as a pure function of arrival times (no clock of its own).

    `admit(now, size)` returns when the datagram leaves the far end, or None when it is
    dropped (queue full, or lost). The random draws come from `rng`, in a fixed order,
    so a seed gives the same path every run.
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        delay: tuple[float, float] = (0.0, 0.0),
        rate_bps: float = 0.0,
        queue: int = 64,
        loss: float = 0.0,
        burst: float = 1.0,
        reorder: float = 0.0,
        dup: float = 0.0,
    ) -> None:
        self.rng, self.delay, self.rate_bps, self.queue_limit = rng, delay, rate_bps, queue
        self.loss, self.burst, self.reorder, self.dup = loss, burst, reorder, dup
        self._bad = False  # Gilbert-Elliott state: in a loss burst
        self._busy_until = 0.0  # when the bottleneck finishes serialising the queue
        self._queue: deque[float] = deque()  # departure times of the queued datagrams
        self._last_due = 0.0
        self.counts = {
            "forwarded": 0,
            "dropped": 0,
            "queue_dropped": 0,
            "duplicated": 0,
            "reordered": 0,
        }

    def queued(self, now: float) -> int:
        """Datagrams in the queue (the one on the wire included) at time `now`."""
        queue = self._queue
        while queue and queue[0] <= now:
            queue.popleft()
        return len(queue)

    def _lost(self) -> bool:
        if self.burst <= 1.0:
            return self.rng.random() * 100 < self.loss
        # Stationary loss rate `loss`, mean burst length `burst`.
        p = self.loss / 100
        if self._bad:
            self._bad = self.rng.random() >= 1.0 / self.burst
        else:
            self._bad = self.rng.random() < p / (self.burst * (1.0 - p))
        return self._bad

    def admit(self, now: float, size: int) -> list[float]:
        """Times at which the copies of a datagram of `size` bytes arriving at `now` leave
        the link: none when it is dropped, two when it is duplicated."""
        start = now
        if self.rate_bps > 0:
            if self.queued(now) >= self.queue_limit:
                self.counts["queue_dropped"] += 1
                return []
            start = max(now, self._busy_until) + size * 8 / self.rate_bps
            self._busy_until = start
            self._queue.append(start)
        if self._lost():
            self.counts["dropped"] += 1
            return []
        copies = 1
        if self.rng.random() * 100 < self.dup:
            copies = 2
            self.counts["duplicated"] += 1
        dues = []
        for _ in range(copies):
            due = start + self.rng.uniform(*self.delay)
            if self.rng.random() * 100 < self.reorder:
                # Held back: datagrams sent after it overtake it.
                due += self.rng.uniform(0.005, 0.015)
                self.counts["reordered"] += 1
            else:
                # Jitter alone keeps order, as on a real path: after the last one, never
                # at the same time, since a loop runs timers of equal deadline in no
                # fixed order (a nanosecond is above a float's resolution at loop times).
                due = max(due, self._last_due + _TIE)
                self._last_due = due
            dues.append(due)
            self.counts["forwarded"] += 1
        return dues


def _delay(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    return float(low) / 1000, float(high or low) / 1000


def _socket(bind: tuple[str, int] | None, connect: tuple[str, int] | None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, _BUFFER)
    if bind is not None:
        sock.bind(bind)
    if connect is not None:
        sock.connect(connect)
    sock.setblocking(False)
    return sock


class Relay:
    def __init__(self, args: argparse.Namespace, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.target = (args.host, args.target)
        rng = random.Random(args.seed)
        common = {
            "rate_bps": args.rate * 1e6,
            "queue": args.queue,
            "loss": args.loss,
            "burst": args.burst,
            "reorder": args.reorder,
            "dup": args.dup,
        }
        self.up = Link(rng, delay=_delay(args.delay_up or args.delay), **common)
        self.down = Link(rng, delay=_delay(args.delay_down or args.delay), **common)
        self.front = _socket((args.host, args.listen), None)
        self.backs: dict[Any, socket.socket] = {}
        self.flows: dict[int, list[int]] = {}
        self.start = loop.time()
        self.send_errors = 0
        self.rebinds = 0
        loop.add_reader(self.front.fileno(), self._from_clients)
        if args.rebind_every > 0:
            self._rebind_every = args.rebind_every
            loop.call_later(args.rebind_every, self._rebind)

    def _rebind(self) -> None:
        for addr, old in list(self.backs.items()):
            self.loop.remove_reader(old.fileno())
            old.close()
            back = self.backs[addr] = _socket(None, self.target)
            self.loop.add_reader(back.fileno(), self._from_server, back, addr)
            self.rebinds += 1
        self.loop.call_later(self._rebind_every, self._rebind)

    def _send(self, sock: socket.socket, data: bytes, addr: Any) -> None:
        try:
            if addr is None:
                sock.send(data)
            else:
                sock.sendto(data, addr)
        except OSError:
            self.send_errors += 1

    def _schedule(self, link: Link, data: bytes, send: Callable[..., None], *args: Any) -> bool:
        dues = link.admit(self.loop.time(), len(data))
        for due in dues:
            self.loop.call_at(due, send, *args)
        return bool(dues)

    def _from_clients(self) -> None:
        while True:
            try:
                data, addr = self.front.recvfrom(65536)
            except BlockingIOError:
                return
            back = self.backs.get(addr)
            if back is None:
                back = self.backs[addr] = _socket(None, self.target)
                self.loop.add_reader(back.fileno(), self._from_server, back, addr)
            bins = self.flows.setdefault(addr[1], [])
            if self._schedule(self.up, data, self._send, back, data, None):
                index = int((self.loop.time() - self.start) / BIN_S)
                if len(bins) <= index:
                    bins.extend([0] * (index + 1 - len(bins)))
                bins[index] += len(data)

    def _from_server(self, back: socket.socket, client: Any) -> None:
        while True:
            try:
                data = back.recv(65536)
            except BlockingIOError:
                return
            except OSError:  # e.g. ICMP port unreachable once the server is gone
                continue
            self._schedule(self.down, data, self._send, self.front, data, client)

    def report(self) -> dict[str, Any]:
        counts = {k: self.up.counts[k] + self.down.counts[k] for k in self.up.counts}
        return {
            **counts,
            "up": dict(self.up.counts),
            "down": dict(self.down.counts),
            "send_errors": self.send_errors,
            "rebinds": self.rebinds,
            "bin_s": BIN_S,
            "flows": {str(port): bins for port, bins in self.flows.items()},
        }


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--target", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--delay", default="0", help="one-way ms each way, or a range like 10-20")
    ap.add_argument("--delay-up", default="", help="client-to-server ms (overrides --delay)")
    ap.add_argument("--delay-down", default="", help="server-to-client ms (overrides --delay)")
    ap.add_argument("--rate", type=float, default=0.0, help="bottleneck Mbit/s each way")
    ap.add_argument("--queue", type=int, default=64, help="drop-tail queue, datagrams")
    ap.add_argument("--reorder", type=float, default=0.0, help="percent")
    ap.add_argument("--dup", type=float, default=0.0, help="percent")
    ap.add_argument("--loss", type=float, default=0.0, help="percent")
    ap.add_argument("--burst", type=float, default=1.0, help="mean loss burst, datagrams")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--rebind-every", type=float, default=0.0, help="seconds; 0: never")
    return ap


async def main() -> None:
    args = parser().parse_args()
    loop = asyncio.get_running_loop()
    relay = Relay(args, loop)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("READY", flush=True)
    await stop.wait()
    print(json.dumps(relay.report()), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
