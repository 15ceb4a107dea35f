"""The harness itself: its clock moves as a real one would, and it names a hang."""

from __future__ import annotations

import asyncio

import pytest

from .simnet import TURN, Deadlock, Livelock, VirtualLoop, run_virtual

pytestmark = pytest.mark.timeout(30)


def test_a_deadline_found_short_by_rounding_is_reached() -> None:
    # aioquic's loss check: the timer fires at the deadline, the handler subtracts the delay
    # the deadline added and lands a hair short, so it re-arms the same deadline.
    async def main(loop: VirtualLoop) -> int:
        sent, delay = 1000.0094097261564, 0.0036132268384370
        deadline = sent + delay
        fired = 0
        done = loop.create_future()

        def on_timer() -> None:
            nonlocal fired
            fired += 1
            if loop.time() - delay > sent:
                done.set_result(None)
            else:
                loop.call_at(deadline, on_timer)

        loop.call_at(deadline, on_timer)
        await done
        assert loop.time() - deadline < 1000 * TURN
        return fired

    assert 1 <= run_virtual(main) < 1000


def test_a_timer_rearmed_in_the_past_forever_is_a_livelock() -> None:
    async def main(loop: VirtualLoop) -> None:
        instant = loop.time()

        def again() -> None:
            loop.call_at(instant, again)

        loop.call_at(instant, again)
        await asyncio.sleep(1.0)

    with pytest.raises(Livelock, match="keep re-arming"):
        run_virtual(main)


def test_waiting_for_nothing_is_a_deadlock() -> None:
    async def main(loop: VirtualLoop) -> None:
        await loop.create_future()

    with pytest.raises(Deadlock, match="waits forever"):
        run_virtual(main)


def test_a_path_model_decides_when_each_datagram_arrives() -> None:
    # Each datagram of a numbered run: 0 dropped, 1 arrives twice, the others once after
    # a delay that shrinks, so the later ones overtake the earlier.
    async def main(loop: VirtualLoop) -> list[tuple[float, bytes]]:
        start = loop.time()
        arrived: list[tuple[float, bytes]] = []

        def path(data: bytes, source: object, destination: object, now: float) -> list[float]:
            number = data[0]
            if number == 0:
                return []
            if number == 1:
                return [now + 0.010, now + 0.011]
            return [now + 0.050 - number * 0.010]

        loop.network.path = path

        class Receiver(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                arrived.append((round(loop.time() - start, 6), data))

        await loop.create_datagram_endpoint(Receiver, local_addr=("127.0.0.1", 5000))
        sender, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol)
        for number in range(4):
            sender.sendto(bytes([number]), ("127.0.0.1", 5000))
        await asyncio.sleep(0.1)
        assert (loop.network.sent, loop.network.dropped) == (4, 1)
        return arrived

    assert run_virtual(main) == [
        (0.01, b"\x01"),
        (0.011, b"\x01"),
        (0.02, b"\x03"),
        (0.03, b"\x02"),
    ]


def test_datagrams_a_path_model_gives_one_arrival_time_arrive_in_the_order_sent() -> None:
    # A model that keeps order (the relay's `Link` with a fixed delay) gives datagrams
    # sent together the same arrival time; the loop must not reorder them.
    async def main(loop: VirtualLoop) -> list[int]:
        arrived: list[int] = []

        def path(data: bytes, source: object, destination: object, now: float) -> list[float]:
            return [now + 0.010]

        loop.network.path = path

        class Receiver(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                arrived.append(data[0])

        await loop.create_datagram_endpoint(Receiver, local_addr=("127.0.0.1", 5000))
        sender, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol)
        for number in range(64):
            sender.sendto(bytes([number]), ("127.0.0.1", 5000))
        await asyncio.sleep(0.1)
        return arrived

    assert run_virtual(main) == list(range(64))
