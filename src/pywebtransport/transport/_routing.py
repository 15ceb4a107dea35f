"""Connection ids that say where a connection lives: across worker processes, and across hosts.

Several processes serving one UDP port (`ServerApp.run(workers=N)`) share it
with `SO_REUSEPORT`, and by default the kernel picks a process by a hash of the
datagram's addresses and ports. A client whose address changes (NAT rebinding,
a phone changing networks, QUIC connection migration) then reaches another
process, which does not know its connection. Here each worker issues
connection ids that carry its index, and a classic BPF program attached to the
port's reuseport group (`attach_reuseport_program`, Linux) picks the socket from
the datagram's own bytes:

- short header (bit 0x80 of the first byte clear): the destination connection
  id starts at byte 1, and it is one this server issued;
- long header: the destination connection id starts at byte 6 (after the
  first byte, the version and the id's length). In a client's first Initials
  it is random, chosen by the client, and all of them carry the same one, so
  one handshake reaches one worker; the worker that takes it answers with an
  id of its own, which maps to itself.

Either way the worker is `(first id byte & 0x1f) % workers`, so up to 32
workers. The low five bits leave the top three to the QUIC-LB draft's
"config rotation" codepoint: with a server id (`server_id`), ids are laid out
as that draft's plaintext algorithm does (first octet, server id, nonce), and
a load balancer that understands it routes each connection to its host
without state, whatever the client's address.

Secrets the processes must agree on (Retry tokens, stateless reset tokens)
are derived from one shared secret (`derive_key`).
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import os
import socket
import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_WORKERS",
    "CidScheme",
    "attach_reuseport_program",
    "derive_key",
    "reuseport_program",
]

MAX_WORKERS: Final = 32
"""Workers the routing can tell apart: the five low bits of a connection id's first byte."""

_SO_ATTACH_REUSEPORT_CBPF: Final = 51
"""Linux `SO_ATTACH_REUSEPORT_CBPF` (asm-generic/socket.h)."""

# Classic BPF opcodes (linux/filter.h).
_LD_B_ABS: Final = 0x30
_JSET_K: Final = 0x45
_JA: Final = 0x05
_AND_K: Final = 0x54
_MOD_K: Final = 0x94
_RET_A: Final = 0x16

_LONG_HEADER_CID_OFFSET: Final = 6
_SHORT_HEADER_CID_OFFSET: Final = 1
_WORKER_BITS: Final = 0x1F
_MIN_RESET: Final = 21
"""RFC 9000 section 10.3: 5 unpredictable bytes and the 16-byte token."""
_MAX_RESET: Final = 43
_MIN_NONCE: Final = 4
"""QUIC-LB: the nonce after the server id is at least 4 bytes."""


def derive_key(secret: bytes, label: str, size: int = 32) -> bytes:
    """Derive a key for one purpose from the servers' shared secret.

    Args:
        secret: The shared secret.
        label: What the key is for (`"retry"`, `"stateless reset"`).
        size: Bytes wanted, at most 32.

    Returns:
        The key.
    """
    return hmac.new(secret, b"pywebtransport " + label.encode(), hashlib.sha256).digest()[:size]


@dataclass(frozen=True, slots=True)
class CidScheme:
    """How a server mints its connection ids and their stateless reset tokens.

    Attributes:
        worker: This process's index among the workers sharing the port.
        workers: How many workers share it (1: no worker routing).
        server_id: QUIC-LB server id placed after the first byte (empty: none).
        reset_key: Key of the stateless reset tokens (HMAC of the id), so that
            any process holding it can reset a connection it does not know.
    """

    worker: int = 0
    workers: int = 1
    server_id: bytes = b""
    reset_key: bytes = b""

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= MAX_WORKERS or not 0 <= self.worker < self.workers:
            raise ValueError(f"worker {self.worker} of {self.workers} (at most {MAX_WORKERS})")

    def check_length(self, length: int) -> None:
        """Check that ids of `length` bytes hold the layout.

        Args:
            length: The connection id length in use.

        Raises:
            ValueError: The server id leaves fewer than 4 bytes of nonce.
        """
        if self.server_id and length < 1 + len(self.server_id) + _MIN_NONCE:
            raise ValueError(
                f"a {len(self.server_id)}-byte server id needs connection ids of at least "
                f"{1 + len(self.server_id) + _MIN_NONCE} bytes, not {length}"
            )

    def mint(self, length: int) -> bytes:
        """Return a new connection id: routed to this worker, with the server id if any.

        Args:
            length: Its length in bytes.

        Returns:
            The id.
        """
        nonce = os.urandom(length)
        # First byte: config rotation 0 in the top three bits, then five bits whose
        # value modulo `workers` is this worker (any of them, so the byte stays random).
        choices = range(self.worker, _WORKER_BITS + 1, self.workers)
        low = choices[nonce[0] % len(choices)]
        server_id = self.server_id
        return bytes((low,)) + server_id + nonce[1 + len(server_id) :]

    def reset_token(self, cid: bytes) -> bytes:
        """Return the stateless reset token of one of our connection ids.

        Args:
            cid: The id.

        Returns:
            16 bytes: derived from the id when a reset key is set, else random.
        """
        if not self.reset_key:
            return os.urandom(16)
        return hmac.new(self.reset_key, cid, hashlib.sha256).digest()[:16]

    def stateless_reset(self, cid: bytes, received: int) -> bytes | None:
        """Build the stateless reset answering a short-header packet for an unknown id.

        RFC 9000 section 10.3: unpredictable bits with the short-header form,
        then the id's token. It is one byte shorter than what it answers (at
        most 43 bytes), so two endpoints cannot reset each other in a loop;
        nothing answers a datagram too short to carry a smaller reset.

        Args:
            cid: The destination connection id of the received packet.
            received: The received datagram's size.

        Returns:
            The datagram, or None when no reset may be sent (no reset key:
            the client could not recognise it; or too short a datagram).
        """
        size = min(received - 1, _MAX_RESET)
        if not self.reset_key or size < _MIN_RESET:
            return None
        head = bytearray(os.urandom(size - 16))
        head[0] = (head[0] & 0x3F) | 0x40  # short header, fixed bit set
        return bytes(head) + self.reset_token(cid)

    def worker_of(self, cid: bytes) -> int:
        """Return the worker the routing sends an id to (what the BPF program computes).

        Args:
            cid: A destination connection id.

        Returns:
            The worker index.
        """
        return ((cid[0] if cid else 0) & _WORKER_BITS) % self.workers


def reuseport_program(workers: int) -> list[tuple[int, int, int, int]]:
    """Return the classic BPF program that picks a worker's socket from a QUIC datagram.

    The program sees the UDP payload. Short header: the byte at offset 1; long
    header: the byte at offset 6; either is the destination connection id's
    first byte, whose five low bits modulo `workers` are the socket's index in
    the reuseport group (the order the sockets were bound in).

    Args:
        workers: Sockets in the group, 1 to 32.

    Returns:
        The instructions as (code, jt, jf, k).
    """
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"1 to {MAX_WORKERS} workers, not {workers}")
    return [
        (_LD_B_ABS, 0, 0, 0),  # A = first byte
        (_JSET_K, 0, 2, 0x80),  # long header? next : skip two
        (_LD_B_ABS, 0, 0, _LONG_HEADER_CID_OFFSET),
        (_JA, 0, 0, 1),
        (_LD_B_ABS, 0, 0, _SHORT_HEADER_CID_OFFSET),
        (_AND_K, 0, 0, _WORKER_BITS),
        (_MOD_K, 0, 0, workers),
        (_RET_A, 0, 0, 0),
    ]


def attach_reuseport_program(sock: socket.socket, workers: int) -> None:
    """Attach `reuseport_program(workers)` to the reuseport group of a bound socket.

    Args:
        sock: A UDP socket with `SO_REUSEPORT`, bound; the group's sockets are
            indexed in the order they were bound.
        workers: Sockets in the group.

    Raises:
        OSError: The platform has no `SO_ATTACH_REUSEPORT_CBPF` (not Linux) or
            refused the program.
    """
    code = b"".join(struct.pack("HBBI", *insn) for insn in reuseport_program(workers))
    instructions = ctypes.create_string_buffer(code)
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    fprog = struct.pack("HP", len(code) // 8, ctypes.addressof(instructions))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_REUSEPORT_CBPF, fprog)
