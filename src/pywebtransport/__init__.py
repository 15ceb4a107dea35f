"""pywebtransport: WebTransport for asyncio, pure Python on aioquic's HTTP/3.

Every public name of the library is importable from here::

    from pywebtransport import ClientConfig, WebTransportClient
"""

from __future__ import annotations

from . import framework, shared, transport
from .client import WebTransportClient
from .framework import *  # noqa: F403 - the framework's __all__ is curated
from .server import WebTransportServer
from .shared import *  # noqa: F403 - the shared layer's __all__ is curated
from .shared.version import __version__
from .transport import *  # noqa: F403 - the transport layer's __all__ is curated

__all__ = [
    *framework.__all__,
    *shared.__all__,
    *transport.__all__,
    "WebTransportClient",
    "WebTransportServer",
    "__version__",
]
