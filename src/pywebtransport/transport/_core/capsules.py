"""The capsule protocol (RFC 9297 §3.2) spoken on a CONNECT stream."""

from __future__ import annotations

from ...shared.utils import decode_varint, encode_varint

__all__ = ["decode_capsules", "encode_capsule"]


def encode_capsule(capsule_type: int, payload: bytes) -> bytes:
    """Encode one capsule.

    Args:
        capsule_type: The capsule type.
        payload: The capsule value.

    Returns:
        Type, length and value as bytes.
    """
    return encode_varint(capsule_type) + encode_varint(len(payload)) + payload


def decode_capsules(buffer: bytearray, max_size: int) -> list[tuple[int, bytes]]:
    """Remove every complete capsule from the front of `buffer`.

    Args:
        buffer: Bytes received so far on the CONNECT stream; consumed in place.
        max_size: The largest capsule value accepted.

    Returns:
        The complete capsules as (type, value) pairs; an incomplete tail stays
        in `buffer`.

    Raises:
        ValueError: A capsule announces a value larger than `max_size`.
    """
    capsules: list[tuple[int, bytes]] = []
    offset = 0
    while True:
        head = decode_varint(buffer, offset)
        if head is None:
            break
        capsule_type, pos = head
        length_field = decode_varint(buffer, pos)
        if length_field is None:
            break
        length, pos = length_field
        if length > max_size:
            raise ValueError(f"capsule of {length} bytes exceeds the {max_size}-byte limit")
        if len(buffer) - pos < length:
            break
        capsules.append((capsule_type, bytes(buffer[pos : pos + length])))
        offset = pos + length
    del buffer[:offset]
    return capsules
