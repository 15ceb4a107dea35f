"""The slice of RFC 8941 structured fields that subprotocol negotiation needs: sf-strings."""

from __future__ import annotations

__all__ = ["encode_sf_string", "encode_sf_string_list", "parse_sf_string", "parse_sf_string_list"]


def encode_sf_string(value: str) -> bytes:
    """Encode an RFC 8941 structured-field string (``"a"``).

    Args:
        value: Printable ASCII text.

    Returns:
        The quoted, escaped string.
    """
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'.encode("ascii", "replace")


def encode_sf_string_list(values: list[str] | tuple[str, ...]) -> bytes:
    """Encode an RFC 8941 list of sf-strings (``"a", "b"``).

    Args:
        values: Printable ASCII strings.

    Returns:
        The header value.
    """
    return b", ".join(encode_sf_string(value) for value in values)


def parse_sf_string(value: bytes) -> str | None:
    """Decode one RFC 8941 sf-string.

    Args:
        value: The header value.

    Returns:
        The string, or None when the value is not a single sf-string.
    """
    items = parse_sf_string_list(value)
    return items[0] if items is not None and len(items) == 1 else None


def parse_sf_string_list(value: bytes) -> list[str] | None:
    """Decode an RFC 8941 list of sf-strings (``"a", "b"``); parameters are ignored.

    Args:
        value: The header value.

    Returns:
        The strings in order, or None when the value is malformed or holds
        something other than strings.
    """
    text = value.decode("ascii", "replace")
    items: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in " \t":
            i += 1
        if i >= n or text[i] != '"':
            return None
        i += 1
        chars: list[str] = []
        while True:
            if i >= n:
                return None
            char = text[i]
            if char == "\\":
                if i + 1 >= n or text[i + 1] not in '"\\':
                    return None
                chars.append(text[i + 1])
                i += 2
            elif char == '"':
                i += 1
                break
            elif not " " <= char <= "~":
                return None
            else:
                chars.append(char)
                i += 1
        items.append("".join(chars))
        while i < n and text[i] == ";":  # parameters: skip up to the next member
            while i < n and text[i] != ",":
                i += 1
        while i < n and text[i] in " \t":
            i += 1
        if i >= n:
            return items
        if text[i] != ",":
            return None
        i += 1
