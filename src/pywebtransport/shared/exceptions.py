"""The exception hierarchy of pywebtransport.

Every exception the library raises on purpose derives from `WebTransportError`,
which carries a numeric `error_code` (the code a peer sent, or the class's
default from `ErrorCodes`, shown in brackets) and optional `details`::

    WebTransportError             (APP_GENERIC_ERROR)
    ├── ConnectionError           (APP_GENERIC_ERROR; also the builtin ConnectionError)
    ├── SessionError              (LIB_SESSION_STATE_ERROR)
    │   └── SessionClosedError    (APP_NO_ERROR)
    ├── StreamError               (LIB_STREAM_STATE_ERROR)
    │   └── FlowControlError      (WT_FLOW_CONTROL_ERROR)
    ├── DatagramError             (APP_GENERIC_ERROR)
    ├── ProtocolError             (H3_GENERAL_PROTOCOL_ERROR)
    ├── TimeoutError              (APP_OPERATION_TIMEOUT; also the builtin TimeoutError)
    ├── ConfigurationError        (APP_INVALID_REQUEST; also ValueError)
    ├── ClientError               (APP_INVALID_REQUEST)
    │   └── HandshakeError        (APP_GENERIC_ERROR)
    ├── ServerError               (APP_SERVICE_UNAVAILABLE)
    ├── CertificateError          (APP_AUTHENTICATION_FAILED)
    └── AuthenticationError       (APP_AUTHENTICATION_FAILED)

The defaults are the reference library's. Because `ConnectionError` and
`TimeoutError` also derive from the builtins of the same name (and so from
`OSError`), `except ConnectionError:` and `except TimeoutError:` catch them
whichever of the two names is in scope.

`remote` tells whether the peer (``True``) or this endpoint (``False``) caused
the condition, where that is known.
"""

from __future__ import annotations

import builtins
import re
from typing import Any, ClassVar, Self

from .constants import ErrorCodes

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

# As in the reference library: codes after which retrying cannot help, and codes
# of conditions that may pass.
_FATAL_ERROR_CODES = frozenset(
    {
        ErrorCodes.APP_AUTHENTICATION_FAILED,
        ErrorCodes.APP_PERMISSION_DENIED,
        ErrorCodes.H3_CLOSED_CRITICAL_STREAM,
        ErrorCodes.H3_INTERNAL_ERROR,
        ErrorCodes.LIB_CONNECTION_STATE_ERROR,
        ErrorCodes.LIB_INTERNAL_ERROR,
        ErrorCodes.QUIC_AEAD_LIMIT_REACHED,
        ErrorCodes.QUIC_CRYPTO_BUFFER_EXCEEDED,
        ErrorCodes.QUIC_FLOW_CONTROL_ERROR,
        ErrorCodes.QUIC_FRAME_ENCODING_ERROR,
        ErrorCodes.QUIC_INTERNAL_ERROR,
        ErrorCodes.QUIC_PROTOCOL_VIOLATION,
        ErrorCodes.WT_ALPN_ERROR,
    }
)
_RETRIABLE_ERROR_CODES = frozenset(
    {
        ErrorCodes.APP_CONNECTION_TIMEOUT,
        ErrorCodes.APP_OPERATION_TIMEOUT,
        ErrorCodes.APP_RESOURCE_EXHAUSTED,
        ErrorCodes.APP_SERVICE_UNAVAILABLE,
        ErrorCodes.H3_EXCESSIVE_LOAD,
        ErrorCodes.QUIC_CONNECTION_REFUSED,
    }
)
_CAMEL_BOUNDARY = re.compile(r"(?<!^)(?=[A-Z])")


def error_code_name(code: int) -> str | None:
    """Return the name of a protocol or library error code, where it has one.

    Only codes that mean the same wherever they appear are named: HTTP/3
    (0x33 and from 0x100), QPACK, WebTransport, and this library's `APP_*`
    and `LIB_*` codes. QUIC transport codes below 0x100 are not, because the
    same small numbers are also applications' own codes.

    Args:
        code: The numeric code.

    Returns:
        The `ErrorCodes` name (e.g. `"WT_SESSION_GONE"`), or None.
    """
    if code < 0x100 and code != ErrorCodes.H3_DATAGRAM_ERROR:
        return None
    try:
        name = ErrorCodes(code).name
    except ValueError:
        return None
    return None if name.endswith(("_FIRST", "_LAST")) else name


class WebTransportError(Exception):
    """Root of every pywebtransport exception.

    `str()` of an error is its message, followed by the code when one was
    passed explicitly (a class default is not repeated there), with its name
    where it has one: `(error code 0x170d7b68
    WT_SESSION_GONE)`.

    Args:
        message: What went wrong and, where possible, what to do about it.
        error_code: The numeric code involved (ours or the peer's); None
            selects the class's `default_error_code`.
        details: Extra structured information for logs and diagnostics.
        remote: True when the peer caused the condition, False when we did,
            None when unknown.

    Attributes:
        message: The human-readable message.
        error_code: The numeric code (always an int).
        details: Extra structured information.
        remote: Who caused the condition, where known.
    """

    default_error_code: ClassVar[int] = ErrorCodes.APP_GENERIC_ERROR
    """The `error_code` of an instance created without one."""

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
        self._code_given = error_code is not None
        self.error_code: int = self.default_error_code if error_code is None else error_code
        self.details: dict[str, Any] = dict(details) if details else {}
        self.remote = remote

    def __str__(self) -> str:
        if not self._code_given:
            return self.message
        name = error_code_name(self.error_code)
        if name is None:
            return f"{self.message} (error code {self.error_code:#x})"
        return f"{self.message} (error code {self.error_code:#x} {name})"

    @classmethod
    def from_cause(
        cls,
        message: str,
        *,
        cause: BaseException,
        error_code: int | None = None,
        details: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Self:
        """Builds an error that inherits the code and details of another exception.

        Chain it yourself: `raise StreamError.from_cause("...", cause=exc) from exc`.

        Args:
            message: What went wrong.
            cause: The exception being translated; its `error_code` and
                `details` (when it has them) are inherited.
            error_code: Overrides the inherited code.
            details: Merged over the inherited details.
            **kwargs: Further keyword arguments of the class (e.g. `stream_id`).

        Returns:
            The new exception (not raised).
        """
        inherited = getattr(cause, "error_code", None)
        merged = dict(getattr(cause, "details", None) or {})
        merged.update(details or {})
        code = error_code if error_code is not None else inherited
        return cls(
            message,
            error_code=code if isinstance(code, int) else None,
            details=merged,
            **kwargs,
        )

    @property
    def category(self) -> str:
        """The class name in snake case without `Error`, e.g. `"flow_control"`."""
        name = type(self).__name__.removesuffix("Error")
        return _CAMEL_BOUNDARY.sub("_", name).lower()

    @property
    def is_fatal(self) -> bool:
        """True when `error_code` is one after which retrying cannot help."""
        return self.error_code in _FATAL_ERROR_CODES

    @property
    def is_retriable(self) -> bool:
        """True when `error_code` names a condition that may pass (timeouts, load)."""
        return self.error_code in _RETRIABLE_ERROR_CODES

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly description of the error.

        Returns:
            A dictionary with the type, category, message, code, details, fault
            side, `is_fatal` and `is_retriable`, plus the subclass's own
            attributes (such as `stream_id`).
        """
        data: dict[str, Any] = {
            "type": type(self).__name__,
            "category": self.category,
            "message": self.message,
            "error_code": self.error_code,
            "details": self.details,
            "remote": self.remote,
            "is_fatal": self.is_fatal,
            "is_retriable": self.is_retriable,
        }
        for key, value in vars(self).items():
            if key not in data and not key.startswith("_"):
                data[key] = str(value) if isinstance(value, BaseException) else value
        return data


class ConnectionError(WebTransportError, builtins.ConnectionError):
    """A QUIC connection failed, was refused or closed unexpectedly.

    It is also a builtin `ConnectionError` (and so an `OSError`), so existing
    ``except ConnectionError`` handlers catch it.

    Args:
        message: What went wrong.
        connection_handle: The connection involved, where known.
        remote_address: The peer's address, where known.
        **kwargs: Passed to `WebTransportError`.
    """

    def __init__(
        self,
        message: str = "",
        *,
        connection_handle: int | None = None,
        remote_address: tuple[str, int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.connection_handle = connection_handle
        self.remote_address = remote_address


class SessionError(WebTransportError):
    """A WebTransport session operation failed.

    Args:
        message: What went wrong.
        session_id: The session involved, where known.
        reason: The reason the peer gave, where it closed the session.
        **kwargs: Passed to `WebTransportError`.
    """

    default_error_code: ClassVar[int] = ErrorCodes.LIB_SESSION_STATE_ERROR

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

    default_error_code: ClassVar[int] = ErrorCodes.APP_NO_ERROR

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

    default_error_code: ClassVar[int] = ErrorCodes.LIB_STREAM_STATE_ERROR

    def __init__(self, message: str = "", *, stream_id: int | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.stream_id = stream_id


class FlowControlError(StreamError):
    """A flow-control limit was violated.

    Raised by reads and writes on the streams of a draft-15 session that was
    closed with `ErrorCodes.WT_FLOW_CONTROL_ERROR`: because the peer opened more
    streams than the session's limit allowed (`remote` is False: we closed it),
    or because the peer closed it with that code (`remote` is True). The
    session's close info carries the same code. Running out of the peer's
    credit is not a violation: writes wait for credit until `write_timeout`.

    Args:
        message: What went wrong.
        actual: The amount sent or requested, where known.
        limit: The limit it exceeded, where known.
        **kwargs: Passed to `StreamError` (e.g. `stream_id`).
    """

    default_error_code: ClassVar[int] = ErrorCodes.WT_FLOW_CONTROL_ERROR

    def __init__(
        self,
        message: str = "",
        *,
        actual: int | None = None,
        limit: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.actual = actual
        self.limit = limit


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
    """The peer (or we) violated the WebTransport / HTTP/3 protocol.

    A violation by the peer closes only what it must, with the error code the
    drafts name, and your code sees that close where it waits: `ConnectionError`
    (its `error_code`, e.g. `H3_FRAME_ERROR`) for the connection, the session's
    close info and `SessionClosedError` for a session, `StreamError` for a
    stream. None of them is raised as `ProtocolError`, which could not say
    which of your operations the violation belongs to; this class is the base
    of the library's internal protocol errors (an invalid QUIC Retry token) and
    keeps the reference library's name importable for code that catches it.

    Args:
        message: What went wrong.
        frame_type: The frame or capsule type involved, where known.
        **kwargs: Passed to `WebTransportError`.
    """

    default_error_code: ClassVar[int] = ErrorCodes.H3_GENERAL_PROTOCOL_ERROR

    def __init__(self, message: str = "", *, frame_type: int | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.frame_type = frame_type


class TimeoutError(WebTransportError, builtins.TimeoutError):
    """An operation did not finish in time.

    It is also a builtin `TimeoutError` (and so `asyncio.TimeoutError`), so
    existing ``except TimeoutError`` handlers catch it.

    Args:
        message: What timed out.
        operation: Name of the operation, e.g. ``"connect"``.
        **kwargs: Passed to `WebTransportError`.
    """

    default_error_code: ClassVar[int] = ErrorCodes.APP_OPERATION_TIMEOUT

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

    default_error_code: ClassVar[int] = ErrorCodes.APP_INVALID_REQUEST

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

    default_error_code: ClassVar[int] = ErrorCodes.APP_INVALID_REQUEST

    def __init__(self, message: str = "", *, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.url = url


class HandshakeError(ClientError):
    """The server refused the WebTransport CONNECT request.

    Args:
        message: What went wrong.
        status_code: The HTTP status the server answered, where it answered.
        stage: The step of the handshake that failed, where known.
        **kwargs: Passed to `ClientError`.
    """

    default_error_code: ClassVar[int] = ErrorCodes.APP_GENERIC_ERROR

    def __init__(
        self,
        message: str = "",
        *,
        status_code: int | None = None,
        stage: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.status_code = status_code
        self.stage = stage


class ServerError(WebTransportError):
    """A server operation failed (bind, listen, serve).

    Args:
        message: What went wrong.
        bind_address: The address the server tried to use.
        **kwargs: Passed to `WebTransportError`.
    """

    default_error_code: ClassVar[int] = ErrorCodes.APP_SERVICE_UNAVAILABLE

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

    default_error_code: ClassVar[int] = ErrorCodes.APP_AUTHENTICATION_FAILED

    def __init__(self, message: str = "", *, path: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.path = path


class AuthenticationError(WebTransportError):
    """Authentication of a peer failed.

    In a `ServerApp`, a middleware (or the `auth_handler` of
    `create_auth_middleware`) that raises `AuthenticationError` rejects the
    requested session with HTTP status 401, like `MiddlewareRejected(status_code=401)`.

    Args:
        message: Why authentication failed (logged, never sent to the client).
        auth_scheme: The scheme that failed, e.g. `"bearer"`, where relevant.
        **kwargs: Passed to `WebTransportError`.
    """

    default_error_code: ClassVar[int] = ErrorCodes.APP_AUTHENTICATION_FAILED

    def __init__(self, message: str = "", *, auth_scheme: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.auth_scheme = auth_scheme
