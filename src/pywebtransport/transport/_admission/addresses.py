"""Address accounting: the key a peer counts under, and counters of holders per address.

Shared by the handshake admission (handshakes per address) and the server
(connections and sessions per address).
"""

from __future__ import annotations

import socket
import struct

# aioquic.buffer re-exports these from its C extension without __all__.
from ...shared.exceptions import ConfigurationError

_PORT = struct.Struct("!H")
_IPV4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"

NetworkAddress = tuple[str, int] | tuple[str, int, int, int]
"""A UDP peer address as asyncio reports it: `(host, port)` or `(host, port, flow, scope)`."""


def _packed_host(address: NetworkAddress) -> bytes:
    """Return the 4 (IPv4, including IPv4-mapped IPv6) or 16 (IPv6) bytes of a host.

    Raises:
        ValueError: The host is not an IP literal.
    """
    host = address[0].partition("%")[0]
    try:
        if ":" in host:
            packed = socket.inet_pton(socket.AF_INET6, host)
            # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; the same
            # client must map to the same bytes whichever socket saw it.
            if packed.startswith(_IPV4_MAPPED_PREFIX):
                return packed[12:]
            return packed
        return socket.inet_pton(socket.AF_INET, host)
    except OSError as exc:
        raise ValueError(f"not an IP address: {address[0]!r}") from exc


def _packed_address(address: NetworkAddress) -> bytes:
    port = address[1]
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range: {port}")
    return _packed_host(address) + _PORT.pack(port)


def address_key(address: NetworkAddress) -> bytes:
    """Return the key under which per-address limits count a peer.

    IPv4 peers count per address (/32), IPv6 peers per /64: one host usually
    holds a whole /64, so counting per IPv6 address would let it pick a fresh
    address per connection. IPv4-mapped IPv6 addresses count as IPv4. The port
    is ignored.

    Args:
        address: The peer address, `(host, port)` or asyncio's IPv6 4-tuple.

    Returns:
        4 bytes for IPv4, 8 bytes for an IPv6 /64.

    Raises:
        ValueError: The host is not an IP literal.
    """
    packed = _packed_host(address)
    return packed if len(packed) == 4 else packed[:8]


class AddressCounter:
    """Counts holders (handshakes, connections, sessions) per source address.

    Each address (`address_key`) may hold at most `per_address` at once, and
    all together at most `total`. Use it around anything a peer can make the
    server hold, so that one address cannot take the whole table.

    Args:
        total: Bound on all holders together.
        per_address: Bound on the holders of one address.

    Raises:
        ConfigurationError: A bound is smaller than 1.
    """

    __slots__ = ("_counts", "_per_address", "_total", "_used")

    def __init__(self, *, total: int, per_address: int) -> None:
        if total < 1 or per_address < 1:
            raise ConfigurationError(
                f"address counter bounds must be at least 1, got total={total}, "
                f"per_address={per_address}"
            )
        self._total = total
        self._per_address = per_address
        self._counts: dict[bytes, int] = {}
        self._used = 0

    @property
    def used(self) -> int:
        """Holders counted, over all addresses."""
        return self._used

    @property
    def total(self) -> int:
        """Bound on all holders together."""
        return self._total

    @property
    def per_address(self) -> int:
        """Bound on the holders of one address."""
        return self._per_address

    @property
    def addresses(self) -> int:
        """Number of addresses holding at least one."""
        return len(self._counts)

    def count(self, address: NetworkAddress) -> int:
        """Return how many the address holds.

        Args:
            address: The peer address.

        Returns:
            The count for the address's key.
        """
        return self._counts.get(address_key(address), 0)

    def can_acquire(self, address: NetworkAddress) -> bool:
        """Tell whether `try_acquire()` would succeed, without counting.

        Args:
            address: The peer address.

        Returns:
            True when neither bound is reached.
        """
        return self._used < self._total and self.count(address) < self._per_address

    def try_acquire(self, address: NetworkAddress) -> bool:
        """Count one more holder for an address if both bounds allow it.

        Args:
            address: The peer address.

        Returns:
            True when counted (pair with one `release()`), False when a bound is reached.
        """
        key = address_key(address)
        held = self._counts.get(key, 0)
        if self._used >= self._total or held >= self._per_address:
            return False
        self._counts[key] = held + 1
        self._used += 1
        return True

    def release(self, address: NetworkAddress) -> None:
        """Count one holder less for an address.

        Args:
            address: The peer address given to a successful `try_acquire()`.

        Raises:
            ValueError: The address holds nothing (an unpaired release).
        """
        key = address_key(address)
        held = self._counts.get(key, 0)
        if held <= 0:
            raise ValueError(f"release without acquire for {address[0]!r}")
        if held == 1:
            del self._counts[key]
        else:
            self._counts[key] = held - 1
        self._used -= 1
