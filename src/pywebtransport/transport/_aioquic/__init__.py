"""The fence around aioquic's (and asyncio's) internals: every private access lives here.

One module per concern: `features` (the feature table and the environment
switch), `checks` and `verify` (what is verified at import, and the warnings),
`connection` (the QuicConnection the library builds: stream windows, connection
ids, pacing, memory), `scheduling` (the active-stream scheduler), `queries`
(read-only questions about aioquic's state), `h3` (the H3Connection: QPACK,
SETTINGS, malformed requests), `bbr` (BBR congestion control on aioquic's
public congestion-control interface, registered as `"bbr"`) and `port` (the
core's `QuicPort` over aioquic, and `feed_event`, which hands the core
aioquic's events). This package re-exports what the rest of the library
uses; ruff's SLF001 is ignored for this folder only.

The rest of the library uses aioquic's public API only. What stock aioquic
cannot do for us (backpressure on received data, pacing that suits event-loop
clocks, a smaller memory footprint, WebTransport SETTINGS, stream-local errors
for malformed requests) is done here, feature by feature. Each feature lists
the internals it relies on; at import a prototype connection is built and every
feature whose internals are not what this package expects (a newer aioquic) is
switched off with one `RuntimeWarning`, and the library keeps working on stock
aioquic behaviour. `PYWEBTRANSPORT_AIOQUIC_PATCHES=off` switches every
optimisation off (a comma-separated list of feature names switches off just
those, essential ones included), which is how CI proves the stock path still
passes the suite. An essential feature lost to a different aioquic is
reported a second time, loudly, from the user's import line.

Every feature was checked against aioquic 1.7.0 to 1.7.2, the range declared in
pyproject.toml: before 1.7, aioquic doubles stream limits as peers use them
(no cap on the streams a peer opens) and 1.2 fails an assertion when a peer
stops a stream it already reset.
"""

from __future__ import annotations

import logging

from .checks import logic_digest
from .connection import (
    BurstPacer,
    ConnectionTuning,
    after_handshake,
    hasten_ack,
    manage_stream_window,
    new_quic_connection,
    set_stream_window,
)
from .features import AIOQUIC_VERSION, FEATURES, REFUSALS, Feature, enabled, parse_patch_setting
from .port import AioquicPort, feed_event
from .queries import (
    can_open_stream,
    datagram_limits,
    has_unacked_stream_data,
    is_stateless_reset,
    nothing_sent,
    peer_address,
    peer_certificate,
    pending_datagrams,
    selector_socket,
    send_buffered,
    stats,
)
from .verify import verify_features

# aioquic logs each connection error at WARNING on its "quic" logger; the library reports
# the same error as an exception or in its own log, with context. Without this handler an
# application that never configured logging would get aioquic's raw line on stderr too
# (logging's last-resort handler); configured logging still receives it.
logging.getLogger("quic").addHandler(logging.NullHandler())

__all__ = [
    "AIOQUIC_VERSION",
    "FEATURES",
    "REFUSALS",
    "AioquicPort",
    "BurstPacer",
    "ConnectionTuning",
    "Feature",
    "after_handshake",
    "can_open_stream",
    "datagram_limits",
    "enabled",
    "feed_event",
    "has_unacked_stream_data",
    "hasten_ack",
    "is_stateless_reset",
    "logic_digest",
    "manage_stream_window",
    "new_quic_connection",
    "nothing_sent",
    "parse_patch_setting",
    "peer_address",
    "peer_certificate",
    "pending_datagrams",
    "selector_socket",
    "send_buffered",
    "set_stream_window",
    "stats",
]

verify_features()
