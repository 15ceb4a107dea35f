"""The transport layer: connections, sessions, streams and their managers on aioquic."""

from .connection import WebTransportConnection
from .http import HttpRequest
from .manager import ConnectionManager, SessionManager
from .session import SessionCloseInfo, WebTransportSession
from .stream import WebTransportReceiveStream, WebTransportSendStream, WebTransportStream

__all__ = [
    "ConnectionManager",
    "HttpRequest",
    "SessionCloseInfo",
    "SessionManager",
    "WebTransportConnection",
    "WebTransportReceiveStream",
    "WebTransportSendStream",
    "WebTransportSession",
    "WebTransportStream",
]
