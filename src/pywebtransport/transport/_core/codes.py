"""WebTransport application error codes on HTTP/3 (draft-ietf-webtrans-http3 §4.4).

An application code `n` (0..2**32-1) travels in RESET_STREAM / STOP_SENDING as
the HTTP/3 code `0x52e4a40fa8db + n + n // 0x1e`, which skips the reserved
(GREASE) points `0x1f * N + 0x21` of the range.
"""

from __future__ import annotations

from typing import Final

from ...shared.constants import WT_APPLICATION_ERROR_FIRST, WT_APPLICATION_ERROR_LAST

__all__ = ["MAX_APPLICATION_CODE", "http3_to_wt_error", "wt_to_http3_error"]

MAX_APPLICATION_CODE: Final = 0xFFFFFFFF
_GREASE_PERIOD: Final = 0x1F


def wt_to_http3_error(code: int) -> int:
    """Map a WebTransport application error code to its HTTP/3 error code.

    Args:
        code: An application error code, 0 to 2**32-1.

    Returns:
        The HTTP/3 code that carries it on RESET_STREAM / STOP_SENDING.

    Raises:
        ValueError: The code is outside 0..2**32-1.
    """
    if not 0 <= code <= MAX_APPLICATION_CODE:
        raise ValueError(f"WebTransport error codes are 0..{MAX_APPLICATION_CODE}, got {code}")
    return WT_APPLICATION_ERROR_FIRST + code + code // (_GREASE_PERIOD - 1)


def http3_to_wt_error(code: int) -> int | None:
    """Map an HTTP/3 error code back to a WebTransport application error code.

    Args:
        code: The HTTP/3 code received on RESET_STREAM / STOP_SENDING.

    Returns:
        The application code, or None when `code` is outside the WebTransport
        range or is one of its reserved (GREASE) points.
    """
    if not WT_APPLICATION_ERROR_FIRST <= code <= WT_APPLICATION_ERROR_LAST:
        return None
    if (code - 0x21) % _GREASE_PERIOD == 0:
        return None
    shifted = code - WT_APPLICATION_ERROR_FIRST
    return shifted - shifted // _GREASE_PERIOD
