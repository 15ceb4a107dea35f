"""The exception hierarchy of pywebtransport.

Every exception the library raises on purpose derives from `WebTransportError`,
which carries a numeric `error_code` (an `ErrorCodes` value, or the code a peer
sent) and optional `details`::

    WebTransportError
    ├── ConnectionError
    ├── SessionError
    │   └── SessionClosedError
    ├── StreamError
    │   └── FlowControlError
    ├── DatagramError
    ├── ProtocolError
    ├── TimeoutError            (also the builtin TimeoutError)
    ├── ConfigurationError      (also ValueError)
    ├── ClientError
    │   └── HandshakeError
    ├── ServerError
    ├── CertificateError
    └── AuthenticationError

`remote` tells whether the peer (``True``) or this endpoint (``False``) caused
the condition, where that is known.
"""

from __future__ import annotations

import builtins
from typing import Any

__all__ = [
    "AuthenticationError",
    "CertificateError",
    "ClientError",
    "ConfigurationError",
    "ConnectionError",
    "DatagramError",
    "FlowControlError",
    "HandshakeError",
    "ProtocolError",
    "ServerError",
    "SessionClosedError",
    "SessionError",
    "StreamError",
    "TimeoutError",
    "WebTransportError",
]


class WebTransportError(Exception):
    """Root of every pywebtransport exception.

    Args:
        message: What went wrong and, where possible, what to do about it.
        error_code: The numeric code involved (ours or the peer's).
        details: Extra structured information for logs and diagnostics.
        remote: True when the peer caused the condition, False when we did,
            None when unknown.

    Attributes:
        message: The human-readable message.
        error_code: The numeric code, or None.
        details: Extra structured information.
        remote: Who caused the condition, where known.
    """

    def __init__(
        self,
        message: str = "",
        *,
        error_code: int | None = None,
        details: dict[str, Any] | None = None,
        remote: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code
        self.details: dict[str, Any] = dict(details) if details else {}
        self.remote = remote

    def __str__(self) -> str:
        if self.error_code is None:
            return self.message
        return f"{self.message} (error code {self.error_code:#x})"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly description of the error.

        Returns:
            A dictionary with the type, message, code, details and fault side.
        """
        return {
            "type": type(self).__name__,
            "message": self.message,
            "error_code": self.error_code,
            "details": self.details,
            "remote": self.remote,
        }


class ConnectionError(WebTransportError):
    """A QUIC connection failed, was refused or closed unexpectedly."""


class SessionError(WebTransportError):
    """A WebTransport session operation failed.

    Args:
        message: What went wrong.
        session_id: The session involved, where known.
        reason: The reason the peer gave, where it closed the session.
        **kwargs: Passed to `WebTransportError`.
    """

    def __init__(
        self,
        message: str = "",
        *,
        session_id: int | None = None,
        reason: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.session_id = session_id
        self.reason = reason


class SessionClosedError(SessionError):
    """The session is closed; `error_code` and `reason` say how it closed."""

    def __init__(self, message: str = "Session is closed", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


class StreamError(WebTransportError):
    """A stream operation failed, or the peer reset / stopped the stream.

    When the peer reset the stream or asked us to stop sending, `error_code`
    is the WebTransport application error code it sent and `remote` is True.

    Args:
        message: What went wrong.
        stream_id: The stream involved, where known.
        **kwargs: Passed to `WebTransportError`.
    """

    def __init__(self, message: str = "", *, stream_id: int | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.stream_id = stream_id


class FlowControlError(StreamError):
    """A flow-control limit was violated."""


class DatagramError(WebTransportError):
    """A datagram could not be sent (too large, session closed, not supported).

    Args:
        message: What went wrong.
        datagram_size: Size of the datagram in bytes.
        max_size: Largest payload that fits, where known.
        **kwargs: Passed to `WebTransportError`.
    """

    def __init__(
        self,
        message: str = "",
        *,
        datagram_size: int | None = None,
        max_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.datagram_size = datagram_size
        self.max_size = max_size


class ProtocolError(WebTransportError):
    """The peer (or we) violated the WebTransport / HTTP/3 protocol."""


class TimeoutError(WebTransportError, builtins.TimeoutError):
    """An operation did not finish in time.

    It is also a builtin `TimeoutError` (and so `asyncio.TimeoutError`), so
    existing ``except TimeoutError`` handlers catch it.

    Args:
        message: What timed out.
        operation: Name of the operation, e.g. ``"connect"``.
        **kwargs: Passed to `WebTransportError`.
    """

    def __init__(self, message: str = "", *, operation: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.operation = operation


class ConfigurationError(WebTransportError, ValueError):
    """A configuration value is invalid.

    Args:
        message: Which field is wrong and what it accepts.
        config_key: The field's name.
        config_value: The rejected value.
        **kwargs: Passed to `WebTransportError`.
    """

    def __init__(
        self,
        message: str = "",
        *,
        config_key: str | None = None,
        config_value: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.config_key = config_key
        self.config_value = config_value


class ClientError(WebTransportError):
    """A client operation failed.

    Args:
        message: What went wrong.
        url: The URL involved, where known.
        **kwargs: Passed to `WebTransportError`.
    """

    def __init__(self, message: str = "", *, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.url = url


class HandshakeError(ClientError):
    """The server refused the WebTransport CONNECT request.

    Args:
        message: What went wrong.
        status_code: The HTTP status the server answered, where it answered.
        **kwargs: Passed to `ClientError`.
    """

    def __init__(self, message: str = "", *, status_code: int | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.status_code = status_code


class ServerError(WebTransportError):
    """A server operation failed (bind, listen, serve).

    Args:
        message: What went wrong.
        bind_address: The address the server tried to use.
        **kwargs: Passed to `WebTransportError`.
    """

    def __init__(
        self, message: str = "", *, bind_address: tuple[str, int] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.bind_address = bind_address


class CertificateError(WebTransportError):
    """A certificate or key could not be loaded, or the peer's failed verification.

    Args:
        message: What went wrong.
        path: The certificate or key file involved, where relevant.
        **kwargs: Passed to `WebTransportError`.
    """

    def __init__(self, message: str = "", *, path: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.path = path


class AuthenticationError(WebTransportError):
    """Authentication of a peer failed."""
