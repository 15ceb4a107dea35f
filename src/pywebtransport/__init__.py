"""pywebtransport: WebTransport for asyncio, pure Python on aioquic's HTTP/3.

Every public name of the library is importable from here::

    from pywebtransport import ClientConfig, WebTransportClient
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import framework, shared, transport
from .client import WebTransportClient
from .framework import *  # noqa: F403 - the framework's __all__ is curated
from .server import WebTransportServer
from .shared import *  # noqa: F403 - the shared layer's __all__ is curated
from .transport import *  # noqa: F403 - the transport layer's __all__ is curated

try:
    __version__ = version("pywebtransport")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    *framework.__all__,
    *shared.__all__,
    *transport.__all__,
    "WebTransportClient",
    "WebTransportServer",
    "__version__",
]
