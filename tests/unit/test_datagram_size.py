"""The largest datagram payload: packet size, the peer's frame limit, the session prefix."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pywebtransport.transport._core.datagrams import (
    FRAME_OVERHEAD,
    PACKET_OVERHEAD,
    max_datagram_payload,
)

pytestmark = pytest.mark.timeout(30)


def test_the_packet_bounds_it_when_the_peer_allows_more() -> None:
    assert max_datagram_payload(1350, 65536, 1) == 1350 - PACKET_OVERHEAD - FRAME_OVERHEAD - 1


def test_the_peer_frame_limit_bounds_it() -> None:
    assert max_datagram_payload(1350, 500, 2) == 500 - FRAME_OVERHEAD - 2


def test_a_peer_that_takes_no_datagrams_leaves_none() -> None:
    assert max_datagram_payload(1350, 0, 1) == 0


@given(
    packet=st.integers(0, 70000),
    peer=st.none() | st.integers(0, 1 << 20),
    prefix=st.integers(1, 8),
)
def test_what_fits_fits(packet: int, peer: int | None, prefix: int) -> None:
    size = max_datagram_payload(packet, peer, prefix)
    assert size >= 0
    if size:
        frame = size + FRAME_OVERHEAD + prefix
        assert frame + PACKET_OVERHEAD <= packet
        assert peer is None or frame <= peer
