"""Extended CONNECT requests and answers: building, validating, parsing, subprotocols.

Client side: `build_request` checks every header a user supplies, because a
server rejects a malformed request (RFC 9114 §4.1.2) and the client could then
only report a lost session. Server side: `parse_request` turns a header block
into a `ConnectRequest` or the HTTP status that refuses it. Subprotocols
(`wt-available-protocols` / `wt-protocol`) are RFC 8941 lists of strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from ...shared.constants import WT_PROTOCOL_TOKENS
from .dialects import Dialect
from .sfv import encode_sf_string, encode_sf_string_list, parse_sf_string, parse_sf_string_list

__all__ = [
    "ConnectRequest",
    "HeaderError",
    "PlainRequest",
    "build_request",
    "build_response",
    "checked_headers",
    "field_section_size",
    "parse_plain_request",
    "parse_request",
    "parse_response",
    "select_protocol",
]

HeaderList = list[tuple[bytes, bytes]]

_WT_AVAILABLE_PROTOCOLS = b"wt-available-protocols"
_WT_PROTOCOL = b"wt-protocol"


_REQUEST_PSEUDO: Final = frozenset({b":method", b":scheme", b":authority", b":path", b":protocol"})


class HeaderError(ValueError):
    """A request header is not valid in HTTP/3 (names the header)."""


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """A WebTransport CONNECT request a server received.

    Attributes:
        path: `:path`, query included.
        authority: `:authority`.
        protocol_token: `:protocol` (`webtransport` or `webtransport-h3`).
        headers: Every header, pseudo-headers included, in order.
        offered_protocols: Subprotocols from `wt-available-protocols`, in the client's order.
    """

    path: str
    authority: str
    protocol_token: bytes
    headers: HeaderList
    offered_protocols: list[str]


@dataclass(frozen=True, slots=True)
class PlainRequest:
    """An HTTP/3 request that is not a WebTransport CONNECT (RFC 9114 section 4.3.1).

    Attributes:
        method: `:method`, as sent (`GET`, `POST`, ...).
        scheme: `:scheme`.
        authority: `:authority` (or the `host` header when that is absent), may be empty.
        path: `:path`, query included.
        headers: The regular headers (no pseudo-headers), in order.
    """

    method: str
    scheme: str
    authority: str
    path: str
    headers: HeaderList


def _to_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def build_request(
    *,
    authority: str,
    path: str,
    dialect: Dialect,
    headers: Iterable[tuple[str | bytes, str | bytes]] = (),
    protocols: Sequence[str] = (),
) -> HeaderList:
    """Build a client's extended CONNECT header block.

    Args:
        authority: `:authority` (host:port).
        path: `:path`, query included.
        dialect: The dialect spoken (its `:protocol` token and extra headers).
        headers: Extra headers; names are lower-cased.
        protocols: Subprotocols offered, in preference order.

    Returns:
        The header block.

    Raises:
        HeaderError: A header name or value is not valid in HTTP/3 (e.g.
            upper-case after folding is fine, surrounding whitespace or CR/LF is not).
    """
    request: HeaderList = [
        (b":method", b"CONNECT"),
        (b":protocol", dialect.protocol_token),
        (b":scheme", b"https"),
        (b":authority", authority.encode()),
        (b":path", path.encode()),
        *dialect.request_headers,
    ]
    request.extend(checked_headers(headers, "request"))
    if protocols:
        request.append((_WT_AVAILABLE_PROTOCOLS, encode_sf_string_list(tuple(protocols))))
    return request


def checked_headers(
    headers: Iterable[tuple[str | bytes, str | bytes]], kind: str = "request"
) -> HeaderList:
    """Check headers an application supplies; names are lower-cased.

    Args:
        headers: (name, value) pairs, str or bytes.
        kind: `"request"` or `"response"`, for the error message.

    Returns:
        The headers as byte pairs.

    Raises:
        HeaderError: A name or value is not valid in HTTP/3 (pseudo-headers,
            surrounding whitespace, CR/LF, ...).
    """
    checked: HeaderList = []
    for name, value in headers:
        raw_name = _to_bytes(name).lower()
        raw_value = _to_bytes(value)
        problem = header_problem(raw_name, raw_value)
        if problem is not None:
            raise HeaderError(f"invalid {kind} header: {problem}")
        checked.append((raw_name, raw_value))
    return checked


_FIELD_WHITESPACE: Final = frozenset(b" \t")
_FORBIDDEN_IN_VALUE: Final = frozenset(b"\x00\r\n")


def header_problem(name: bytes, value: bytes) -> str | None:
    """Say what makes a regular (not pseudo-) header invalid in HTTP/3, if anything.

    RFC 9110 section 5.1 limits a name to token characters; RFC 9114 section
    4.2 requires it lower-case; RFC 9110 section 5.5 forbids NUL, CR and LF in
    a value, and leading or trailing whitespace.

    Args:
        name: The field name.
        value: The field value.

    Returns:
        The problem, or None when the header is valid.
    """
    if name.startswith(b":"):
        return f"Header {name!r} is a pseudo-header"
    if not name or any(c <= 0x20 or 0x41 <= c <= 0x5A or c >= 0x7F or c == 0x3A for c in name):
        return f"Header {name!r} contains invalid characters"
    if not _FORBIDDEN_IN_VALUE.isdisjoint(value):
        return f"Header {name!r} value has forbidden characters"
    if value and (value[0] in _FIELD_WHITESPACE or value[-1] in _FIELD_WHITESPACE):
        where = "starts" if value[0] in _FIELD_WHITESPACE else "ends"
        return f"Header {name!r} value {where} with whitespace"
    return None


def field_section_size(headers: Iterable[tuple[bytes, bytes]]) -> int:
    """Return the RFC 9114 §4.2.2 size of a header block: names + values + 32 per field.

    Args:
        headers: The header block.

    Returns:
        The size in bytes.
    """
    return sum(len(name) + len(value) + 32 for name, value in headers)


def parse_request(
    headers: HeaderList, *, stream_ended: bool, max_field_section_size: int
) -> ConnectRequest | int:
    """Check a request a server received.

    Args:
        headers: The decoded header block.
        stream_ended: Whether the request stream already ended (a CONNECT must not).
        max_field_section_size: Largest header block accepted.

    Returns:
        The request, or the HTTP status that refuses it: 431 (too large),
        404/405 (not a WebTransport request: this server serves nothing else),
        400 (malformed WebTransport request).
    """
    if field_section_size(headers) > max_field_section_size:
        return 431
    pseudo: dict[bytes, bytes] = {}
    offered: list[str] = []
    for name, value in headers:
        if name.startswith(b":"):
            pseudo[name] = value
        elif name == _WT_AVAILABLE_PROTOCOLS:
            offered = parse_sf_string_list(value) or []
    method = pseudo.get(b":method")
    protocol = pseudo.get(b":protocol")
    if method != b"CONNECT" or protocol is None:
        return 404 if method in (b"GET", b"HEAD") else 405
    path = pseudo.get(b":path")
    authority = pseudo.get(b":authority")
    if (
        protocol not in WT_PROTOCOL_TOKENS
        or not path
        or not authority
        or pseudo.get(b":scheme") != b"https"
        or stream_ended
    ):
        return 400
    return ConnectRequest(
        path=path.decode("utf-8", "replace"),
        authority=authority.decode("utf-8", "replace"),
        protocol_token=protocol,
        headers=list(headers),
        offered_protocols=offered,
    )


def parse_plain_request(headers: HeaderList) -> PlainRequest | int:
    """Check an HTTP/3 request that is not a WebTransport CONNECT.

    Args:
        headers: The decoded header block (its size was checked by `parse_request`).

    Returns:
        The request, or the status that refuses it: 405 for a CONNECT (this is
        not a proxy), 400 for a malformed request (a missing `:method`,
        `:scheme` or `:path`, a path that is not origin-form or `*`, or an
        unknown or repeated pseudo-header).
    """
    pseudo: dict[bytes, bytes] = {}
    regular: HeaderList = []
    host = b""
    for name, value in headers:
        if name.startswith(b":"):
            if name not in _REQUEST_PSEUDO or name in pseudo or regular:
                return 400  # RFC 9114 section 4.3: pseudo-headers come first, once each
            pseudo[name] = value
        else:
            if name == b"host":
                host = value
            regular.append((name, value))
    method = pseudo.get(b":method")
    scheme = pseudo.get(b":scheme")
    path = pseudo.get(b":path")
    if method == b"CONNECT":
        return 405
    if not method or not scheme or not path or b":protocol" in pseudo:
        return 400
    if not (path.startswith(b"/") or (path == b"*" and method == b"OPTIONS")):
        return 400
    return PlainRequest(
        method=method.decode("ascii", "replace"),
        scheme=scheme.decode("ascii", "replace"),
        authority=pseudo.get(b":authority", host).decode("utf-8", "replace"),
        path=path.decode("utf-8", "replace"),
        headers=regular,
    )


def select_protocol(offered: Sequence[str], supported: Sequence[str]) -> str | None:
    """Pick the client's first offered subprotocol that the server speaks.

    Args:
        offered: The client's offer, in its preference order.
        supported: What the server speaks.

    Returns:
        The chosen subprotocol, or None.
    """
    return next((protocol for protocol in offered if protocol in supported), None)


def build_response(
    dialect: Dialect,
    *,
    status: int = 200,
    protocol: str | None = None,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> HeaderList:
    """Build a server's answer to a CONNECT.

    Args:
        dialect: The session's dialect (a 2xx carries its response headers).
        status: The HTTP status.
        protocol: The selected subprotocol (`wt-protocol`), or None.
        headers: Extra headers.

    Returns:
        The header block.
    """
    response: HeaderList = [(b":status", str(status).encode())]
    if 200 <= status < 300:
        response.extend(dialect.response_headers)
        if protocol:
            response.append((_WT_PROTOCOL, encode_sf_string(protocol)))
    response.extend(headers)
    return response


def parse_response(headers: HeaderList, offered: Sequence[str]) -> tuple[int, str | None]:
    """Read a server's answer to our CONNECT.

    Args:
        headers: The response header block.
        offered: The subprotocols we offered.

    Returns:
        The status (0 when missing or malformed) and the selected subprotocol;
        a `wt-protocol` we did not offer, or a malformed one, counts as none,
        as browsers do.
    """
    status = 0
    protocol: str | None = None
    for name, value in headers:
        if name == b":status":
            status = int(value) if value.isdigit() else 0
        elif name == _WT_PROTOCOL:
            chosen = parse_sf_string(value)
            if chosen is not None and chosen in offered:
                protocol = chosen
    return status, protocol
