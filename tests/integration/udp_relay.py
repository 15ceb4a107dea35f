"""A userspace UDP relay that delays, reorders, duplicates and drops datagrams.

Run it between a client and a server (inside a test namespace):

    python udp_relay.py --listen 5000 --target 4433 --delay 10-20 --reorder 25 --dup 5

Every datagram, in both directions, waits a uniform random delay; `--reorder` percent
of them wait an extra 5-15 ms so later datagrams overtake them (the others keep
their order); `--dup` percent are sent twice; `--loss` percent are dropped.
On SIGTERM it prints one JSON line of counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
from typing import Any


class Relay:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        low, _, high = args.delay.partition("-")
        self.delay = (float(low) / 1000, float(high or low) / 1000)
        self.client_addr: Any = None
        self.front: asyncio.DatagramTransport | None = None
        self.back: asyncio.DatagramTransport | None = None
        self.counts = {"forwarded": 0, "dropped": 0, "duplicated": 0, "reordered": 0}
        self.loop = asyncio.get_running_loop()
        self.rng = random.Random(args.seed)
        self.last_due: dict[str, float] = {}

    def schedule(self, data: bytes, send: Any, direction: str) -> None:
        if self.rng.random() * 100 < self.args.loss:
            self.counts["dropped"] += 1
            return
        copies = 1
        if self.rng.random() * 100 < self.args.dup:
            copies = 2
            self.counts["duplicated"] += 1
        now = self.loop.time()
        for _ in range(copies):
            due = now + self.rng.uniform(*self.delay)
            if self.rng.random() * 100 < self.args.reorder:
                # Held back: datagrams sent after it overtake it.
                due += self.rng.uniform(0.005, 0.015)
                self.counts["reordered"] += 1
            else:
                # Jitter alone keeps order, as on a real path: never before the last one.
                due = max(due, self.last_due.get(direction, 0.0))
                self.last_due[direction] = due
            self.loop.call_at(due, send, data)
            self.counts["forwarded"] += 1


class Front(asyncio.DatagramProtocol):
    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def connection_made(self, transport: Any) -> None:
        self.relay.front = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        relay = self.relay
        relay.client_addr = addr
        if relay.back is not None:
            relay.schedule(data, relay.back.sendto, "up")


class Back(asyncio.DatagramProtocol):
    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def connection_made(self, transport: Any) -> None:
        self.relay.back = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        relay = self.relay
        if relay.front is not None and relay.client_addr is not None:
            client = relay.client_addr
            relay.schedule(
                data,
                lambda d: relay.front.sendto(d, client),  # type: ignore[union-attr]
                "down",
            )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--target", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--delay", default="0", help="ms, or a range like 10-20")
    parser.add_argument("--reorder", type=float, default=0.0, help="percent")
    parser.add_argument("--dup", type=float, default=0.0, help="percent")
    parser.add_argument("--loss", type=float, default=0.0, help="percent")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    relay = Relay(args)
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: Front(relay), local_addr=(args.host, args.listen))
    await loop.create_datagram_endpoint(lambda: Back(relay), remote_addr=(args.host, args.target))
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("READY", flush=True)
    await stop.wait()
    print(json.dumps(relay.counts), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
