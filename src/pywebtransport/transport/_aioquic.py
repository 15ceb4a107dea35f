"""The fence around aioquic's (and asyncio's) internals: every private access lives here.

The rest of the library uses aioquic's public API only. What stock aioquic
cannot do for us (backpressure on received data, pacing that suits event-loop
clocks, a smaller memory footprint, WebTransport SETTINGS, stream-local errors
for malformed requests) is done here, feature by feature. Each feature lists
the internals it relies on; at import a prototype connection is built and every
feature whose internals are not what this module expects (a newer aioquic) is
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

import ast
import hashlib
import inspect
import logging
import os
import socket
import textwrap
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, ClassVar, Final, cast

import pylsqpack
from aioquic.buffer import (  # type: ignore[attr-defined]  # re-exported without __all__
    Buffer,
    size_uint_var,
)
from aioquic.h3 import events as h3e
from aioquic.h3.connection import H3Connection, MessageError
from aioquic.h3.connection import ProtocolError as H3ProtocolError
from aioquic.h3.exceptions import H3Error
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionId, stream_is_client_initiated
from aioquic.quic.crypto import CryptoPair, NoCallback
from aioquic.quic.packet import QuicFrameType, QuicPacketType
from aioquic.quic.packet_builder import QuicDeliveryState, QuicPacketBuilder, QuicPacketBuilderStop
from aioquic.quic.recovery import QuicPacketPacer
from aioquic.quic.stream import QuicStream
from aioquic.tls import Epoch
from cryptography import x509

__all__ = [
    "AIOQUIC_VERSION",
    "FEATURES",
    "REFUSALS",
    "ConnectionTuning",
    "after_handshake",
    "can_open_stream",
    "datagram_frame_limit",
    "enabled",
    "forget_stream_window",
    "has_unacked_stream_data",
    "malformed_requests",
    "manage_stream_window",
    "new_h3",
    "new_quic_connection",
    "nothing_sent",
    "peer_address",
    "peer_certificate",
    "pending_datagrams",
    "release_early_streams",
    "reset_final_size",
    "selector_socket",
    "send_buffered",
    "send_finished",
    "sent_offset",
    "set_stream_window",
    "stats",
]

logger = logging.getLogger("pywebtransport.aioquic")


def _aioquic_version() -> str:
    try:
        return version("aioquic")
    except PackageNotFoundError:  # pragma: no cover - aioquic vendored without metadata
        return "unknown"


AIOQUIC_VERSION: Final = _aioquic_version()

_ENV = "PYWEBTRANSPORT_AIOQUIC_PATCHES"

REFUSALS: Final[tuple[type[Exception], ...]] = (
    ValueError,
    AssertionError,
    RuntimeError,
    H3Error,
    H3ProtocolError,
)
"""What aioquic raises when it refuses a stream operation in a state that a race with
the peer can produce (a stream the peer reset or stopped meanwhile, one already
finished, one aioquic forgot): `ValueError` and `AssertionError` from QUIC streams,
HTTP/3's own errors from `H3Connection`. Callers that expect such a refusal catch
exactly these."""


@dataclass(slots=True)
class Feature:
    """One use of aioquic internals.

    Attributes:
        name: Short name (also used in `PYWEBTRANSPORT_AIOQUIC_PATCHES`).
        purpose: What it gives the library.
        fallback: What happens when it is off.
        enabled: Whether it is in use in this process.
        reason: Why it is off, when it is.
        essential: A protection, a protocol capability or a correctness
            query rather than an optimisation: `off` in the environment
            variable leaves it on (naming it switches it off), and losing it
            to a different aioquic is reported by a second, loud warning
            naming what is exposed.
        relies_on: The aioquic functions it copies, replaces or whose
            behaviour it assumes (`Class.method`); each one's logic digest must
            be one of those recorded in `_DIGESTS`, or the feature is off.
    """

    name: str
    purpose: str
    fallback: str
    enabled: bool = True
    reason: str = ""
    essential: bool = False
    relies_on: tuple[str, ...] = ()


FEATURES: Final[dict[str, Feature]] = {
    feature.name: feature
    for feature in (
        Feature(
            "stream_window",
            "a stream's receive window follows what its reader consumed (receive backpressure)",
            "aioquic doubles windows as data arrives: a slow reader buffers without bound",
            relies_on=(
                "QuicConnection._write_stream_limits",
                "QuicConnection._on_max_stream_data_delivery",
                "QuicConnection._handle_stream_frame",
            ),
        ),
        Feature(
            "stream_state",
            "write() waits while too much data is unacknowledged (send backpressure) and "
            "flush() until all is; a graceful close waits until the peer acknowledged every "
            "finished stream and queued data before the close capsule and CONNECTION_CLOSE; "
            "draft-15 session "
            "credit of a stream reset unread is given back up to its final size, and data "
            "queued behind a reset of ours stops counting against the peer's credit",
            "writes never wait for acknowledgements (a writer faster than the path buffers in "
            "aioquic without bound) and flush() returns at once; a graceful close waits its "
            "whole close_timeout (unless the peer closes first); a "
            "stream reset unread gives back up to its receive window (session data limits "
            "loosen by at most one window per such stream); data queued behind a reset of "
            "ours keeps counting against the peer's session credit",
            essential=True,
            relies_on=(
                "QuicStreamSender.write",
                "QuicStreamSender.on_data_delivery",
                "QuicStreamSender.on_reset_delivery",
                "QuicStreamSender.get_frame",
                "QuicStreamSender.get_reset_frame",
                "QuicStreamReceiver.handle_reset",
                "QuicConnection._handle_reset_stream_frame",
            ),
        ),
        Feature(
            "datagram_queue",
            "outgoing datagrams wait in a bounded per-session queue (high-water mark, maximum "
            "age) until QUIC can send them",
            "every datagram goes straight to aioquic's unbounded queue: a fast sender grows "
            "memory and delays fresh datagrams behind stale ones",
            relies_on=(
                "QuicConnection.send_datagram_frame",
                "QuicConnection._write_datagram_frame",
            ),
        ),
        Feature(
            "stream_credit",
            "create_*_stream() waits for the peer's QUIC stream credit",
            "streams open at once and aioquic holds their data until credit arrives; a "
            "reset of such a stream is sent before its credit, which the peer takes for a "
            "stream-limit violation and closes the connection",
            essential=True,
            relies_on=(
                "QuicConnection.get_next_available_stream_id",
                "QuicConnection._get_or_create_stream_for_send",
            ),
        ),
        Feature(
            "stream_limits",
            "quic_max_concurrent_bidi/uni_streams cap the streams a peer may have open at once "
            "(a denial-of-service bound)",
            "peers may keep aioquic's own 128 streams of each kind open (before aioquic 1.7: "
            "no cap at all, the limit doubles as it fills); the configured limits are not in "
            "force",
            essential=True,
            relies_on=("QuicConnection._write_connection_limits", "QuicConnection._stream_limit"),
        ),
        Feature(
            "pacer",
            "a pacer burst sized for event-loop clocks (bulk transfers no longer stall at one "
            "packet per millisecond on uvloop)",
            "aioquic's pacer",
            relies_on=(
                "QuicPacketPacer.update_rate",
                "QuicPacketPacer.next_send_time",
                "QuicPacketPacer.update_after_send",
            ),
        ),
        Feature(
            "stream_scheduling",
            "packets are built from the streams that have something to send (data, FIN, "
            "RESET_STREAM, STOP_SENDING) or owe MAX_STREAM_DATA, served round-robin",
            "aioquic visits every open stream for every packet it builds",
            relies_on=(
                "QuicConnection._write_application",
                "QuicConnection._write_stream_frame",
                "QuicConnection._write_reset_stream_frame",
                "QuicConnection._write_stop_sending_frame",
                "QuicConnection._handle_stream_frame",
                "QuicConnection._handle_reset_stream_frame",
                "QuicConnection._handle_stop_sending_frame",
                "QuicConnection._handle_max_stream_data_frame",
                "QuicConnection._unblock_streams",
                "QuicConnection._on_max_stream_data_delivery",
                "QuicConnection.send_stream_data",
                "QuicConnection.reset_stream",
                "QuicConnection.stop_stream",
                "QuicStreamSender.get_frame",
                "QuicStreamSender.get_reset_frame",
                "QuicStreamSender.on_data_delivery",
                "QuicStreamSender.on_reset_delivery",
                "QuicStreamReceiver.get_stop_frame",
                "QuicStreamReceiver.on_stop_sending_delivery",
            ),
        ),
        Feature(
            "frame_table",
            "one frame-handler table shared by all connections (about 7 KiB per connection)",
            "aioquic's per-connection table",
        ),
        Feature(
            "connection_ids",
            "2 active connection ids each way instead of 8 (memory; RFC 9000 minimum)",
            "aioquic issues 8",
            relies_on=("QuicConnection._replenish_connection_ids",),
        ),
        Feature(
            "tls_release",
            "TLS buffers, key-exchange keys, the server key schedule and the keys of spent "
            "epochs are freed after the handshake (about 53 KiB per connection)",
            "kept for the connection's lifetime",
        ),
        Feature(
            "qpack_static",
            "QPACK uses the static table only, both ways: peers are told our dynamic table "
            "holds nothing, one stateless decoder serves every connection (about 9 KiB per "
            "connection)",
            "aioquic's encoder and decoder with dynamic tables",
            relies_on=("H3Connection.__init__", "H3Connection._get_local_settings"),
        ),
        Feature(
            "h3_settings",
            "SETTINGS of every WebTransport dialect (draft-02, -07, -15) and "
            "max_field_section_size are announced",
            "aioquic's own SETTINGS: draft-02 peers only (browsers, the reference library's "
            "draft-07/-15 peers cannot connect), no field-size limit",
            essential=True,
            relies_on=("H3Connection.__init__", "H3Connection._get_local_settings"),
        ),
        Feature(
            "early_settings",
            "a server sends its SETTINGS in its first flight (clients CONNECT one RTT earlier)",
            "SETTINGS follow the handshake",
            relies_on=("QuicConnection._unblock_streams",),
        ),
        Feature(
            "malformed_request",
            "a malformed request resets its stream only (RFC 9114 section 4.1.2)",
            "aioquic closes the whole connection, every session on it included",
            relies_on=("H3Connection._receive_request_or_push_data",),
        ),
        Feature(
            "stats",
            "RTT, loss and congestion figures in connection statistics",
            "those figures are None",
        ),
        Feature(
            "datagram_limit",
            "max_datagram_size follows the peer's max_datagram_frame_size and the packet size",
            "a conservative limit computed from the configured packet size",
        ),
        Feature(
            "peer_certificate",
            "server_certificate_hashes (certificate pinning) can be checked",
            "connecting with server_certificate_hashes raises CertificateError (fails closed)",
            essential=True,
        ),
        Feature(
            "batch_reads",
            "under asyncio's selector loop, datagrams already queued on a socket are read in "
            "one go (one ACK and one transmit per batch, as uvloop does)",
            "one datagram per loop iteration",
        ),
    )
}
"""Every optimisation and fix that relies on aioquic internals, by name."""


def enabled(name: str) -> bool:
    """Return whether a feature is in use.

    Args:
        name: A key of `FEATURES`.

    Returns:
        True when it is on.
    """
    return FEATURES[name].enabled


# --------------------------------------------------------------------------- verification


class _Mismatch(Exception):
    """An internal is not what this module expects."""


def _require(condition: object, what: str) -> None:
    if not condition:
        raise _Mismatch(what)


def _has(obj: object, *names: str) -> None:
    for name in names:
        _require(hasattr(obj, name), f"{type(obj).__name__}.{name} is missing")


def _params(function: Any, *names: str) -> None:
    # The parameters after `self` (for a method) must be exactly `names`.
    try:
        found = tuple(inspect.signature(function).parameters)
    except (TypeError, ValueError) as exc:
        raise _Mismatch(f"cannot read the signature of {function!r}") from exc
    _require(
        found == names or found[1:] == names,
        f"{getattr(function, '__qualname__', function)} takes {found}, expected {names}",
    )


_DIGESTS: Final[dict[str, frozenset[str]]] = {
    name: frozenset(digests.split())
    for name, digests in {
        "H3Connection.__init__": "da3483baef3d75bc",
        "H3Connection._get_local_settings": "0647d791ba4164e3",
        "H3Connection._receive_request_or_push_data": "00d02bc4fa1dcf43",
        "QuicConnection._get_or_create_stream_for_send": "01b836b5e1925136",
        "QuicConnection._handle_max_stream_data_frame": "1a19c4bd664f7659",
        "QuicConnection._handle_reset_stream_frame": "057c713d49f72a0f",
        "QuicConnection._handle_stop_sending_frame": "12a823861086e8aa",
        "QuicConnection._handle_stream_frame": "fd8d5529b4fedf12",
        "QuicConnection._on_max_stream_data_delivery": "2cf19a67898b6d44",
        "QuicConnection._replenish_connection_ids": "7c881a3d786155a9",
        "QuicConnection._stream_limit": "646f7523e4b2472a",
        "QuicConnection._unblock_streams": "1e2a3ea39f489fd3",
        "QuicConnection._write_application": "91b6d1ab13657fcb",
        "QuicConnection._write_connection_limits": "4b836c7e3d9430eb",
        "QuicConnection._write_datagram_frame": "23561aad76278e50",
        "QuicConnection._write_reset_stream_frame": "b66d6ca2c9fc0812",
        "QuicConnection._write_stop_sending_frame": "2fe3517848c3eeac",
        "QuicConnection._write_stream_frame": "185ecbcb4ec668a9",
        "QuicConnection._write_stream_limits": "2226cc9b105715c0",
        "QuicConnection.get_next_available_stream_id": "6a60c140e9b5cb52",
        "QuicConnection.reset_stream": "b3c15c2278a2a0c1",
        "QuicConnection.send_datagram_frame": "3914be0e34e64fe1",
        "QuicConnection.send_stream_data": "959b0f8f1f7e1ad6",
        "QuicConnection.stop_stream": "de8b1ace9df8c8d1",
        "QuicPacketPacer.next_send_time": "a6f2839313b763b8",
        "QuicPacketPacer.update_after_send": "81f7e860e0b2dc65",
        "QuicPacketPacer.update_rate": "7cc272428d867b4a",
        # 1.7.0, then 1.7.1 and 1.7.2 (a refactoring; same frames, same offsets).
        "QuicStreamReceiver.get_stop_frame": "f366cd352ed345bd",
        "QuicStreamReceiver.handle_reset": "63a1a7ac45107fd7 21dbf3716b72b589",
        "QuicStreamReceiver.on_stop_sending_delivery": "a8ae491fc738a1b2",
        "QuicStreamSender.get_frame": "2bb2d011ab86541d eda4aaf6bb98b4c8",
        "QuicStreamSender.get_reset_frame": "94e882c9179702d1",
        "QuicStreamSender.on_data_delivery": "86a130bee417acc6",
        "QuicStreamSender.on_reset_delivery": "264b6039d818b0be",
        "QuicStreamSender.write": "9ecb465a866c103b",
    }.items()
}
"""Logic digests (`logic_digest`) of the aioquic functions features rely on, in every
aioquic of the supported range (1.7.0 to 1.7.2). A function whose digest is not
listed was changed: the features relying on it are switched off."""


def _aioquic_function(name: str) -> Any:
    from aioquic.quic.stream import QuicStreamReceiver, QuicStreamSender

    owners: dict[str, type] = {
        "H3Connection": H3Connection,
        "QuicConnection": QuicConnection,
        "QuicPacketPacer": QuicPacketPacer,
        "QuicStreamReceiver": QuicStreamReceiver,
        "QuicStreamSender": QuicStreamSender,
    }
    owner, _, attribute = name.partition(".")
    function = owners[owner].__dict__.get(attribute)
    _require(function is not None, f"aioquic's {name} is missing")
    return function


def _check_digests(feature: Feature) -> None:
    for name in feature.relies_on:
        function = _aioquic_function(name)
        try:
            digest = logic_digest(function)
        except (OSError, TypeError, SyntaxError) as exc:
            raise _Mismatch(f"cannot read aioquic's {name}: {exc}") from exc
        _require(digest in _DIGESTS[name], f"aioquic's {name} differs from 1.7's")


def _prototype() -> tuple[QuicConnection, QuicStream, H3Connection]:
    quic = QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=["h3"]))
    stream = QuicStream(stream_id=0, max_stream_data_local=1024, max_stream_data_remote=1024)
    h3 = H3Connection(quic, enable_webtransport=True)
    return quic, stream, h3


def _check(name: str, quic: QuicConnection, stream: QuicStream, h3: H3Connection) -> None:
    # One branch per feature: the internals it reads or replaces.
    cls = QuicConnection
    if name == "stream_window":
        _params(cls._write_stream_limits, "builder", "space", "stream")
        _has(cls, "_on_max_stream_data_delivery")
        _has(stream, "max_stream_data_local", "max_stream_data_local_sent", "receiver")
        _has(stream.receiver, "highest_offset")
        _has(quic, "_streams")
        _params(QuicPacketBuilder.start_frame, "frame_type", "capacity", "handler", "handler_args")
    elif name == "stream_state":
        _has(quic, "_streams")
        _require(isinstance(quic._streams, dict), "QuicConnection._streams is not a dict")
        _has(stream.sender, "_buffer", "buffer_is_empty", "is_finished", "highest_offset")
        _require(isinstance(stream.sender._buffer, bytearray), "sender._buffer is not a bytearray")
        _has(stream.receiver, "_final_size")
        _require(stream.receiver._final_size is None, "receiver._final_size is not None at first")
    elif name == "datagram_queue":
        _has(quic, "_datagrams_pending")
        _require(len(quic._datagrams_pending) == 0, "_datagrams_pending is not a sized queue")
    elif name == "stream_credit":
        _has(
            quic,
            "_local_next_stream_id_bidi",
            "_local_next_stream_id_uni",
            "_remote_max_streams_bidi",
            "_remote_max_streams_uni",
        )
    elif name == "stream_limits":
        for limit in (quic._local_max_streams_bidi, quic._local_max_streams_uni):
            _has(limit, "value", "sent")
        # aioquic before 1.7 doubled stream limits as they filled: a peer could open
        # streams without bound whatever the limit. 1.7 re-credits finished streams.
        try:
            source = inspect.getsource(cls._write_connection_limits)
        except (OSError, TypeError) as exc:
            raise _Mismatch("cannot read _write_connection_limits") from exc
        _require("limit.used * 2" not in source, "aioquic doubles stream limits (before 1.7)")
    elif name == "pacer":
        pacer = quic._loss._pacer
        _require(type(pacer) is QuicPacketPacer, "the pacer is not a QuicPacketPacer")
        _has(pacer, "_max_datagram_size", "bucket_max", "bucket_time", "packet_time")
        _params(QuicPacketPacer.update_rate, "congestion_window", "smoothed_rtt")
    elif name == "stream_scheduling":
        _check_stream_scheduling(quic, stream)
    elif name == "frame_table":
        handlers = quic.__dict__.get("_QuicConnection__frame_handlers")
        _require(isinstance(handlers, dict) and handlers, "no per-connection frame-handler dict")
        assert isinstance(handlers, dict)
        for handler, epochs in handlers.values():
            _require(inspect.ismethod(handler), "a frame handler is not a bound method")
            _require(isinstance(epochs, frozenset), "frame handler epochs are not a frozenset")
    elif name == "connection_ids":
        _params(cls._replenish_connection_ids)
        _has(
            quic,
            "_host_cids",
            "_host_cid_seq",
            "_remote_active_connection_id_limit",
            "_local_active_connection_id_limit",
            "_configuration",
        )
        _params(QuicConnectionId, "cid", "sequence_number", "stateless_reset_token", "was_sent")
    elif name == "tls_release":
        _has(quic, "_crypto_buffers", "_is_client", "_session_ticket_handler", "_quic_logger")
        _has(quic, "_cryptos", "_cryptos_initial", "_spaces")
        pair = CryptoPair()
        _has(pair.recv, "_setup_cb", "_teardown_cb", "is_valid")
        _require(not pair.recv.is_valid(), "a new CryptoPair has valid keys")
        _require(isinstance(quic._crypto_buffers, dict), "_crypto_buffers is not a dict")
        context = _tls_context_class()
        _has(context, "_ec_private_keys", "_x25519_private_key", "_x448_private_key")
    elif name == "qpack_static":
        _has(h3, "_encoder", "_decoder", "_max_table_capacity", "_blocked_streams")
        _require(isinstance(h3._encoder, pylsqpack.Encoder), "H3Connection._encoder changed")
        _require(isinstance(h3._decoder, pylsqpack.Decoder), "H3Connection._decoder changed")
        _params(H3Connection._get_local_settings)
        local = h3._get_local_settings()
        _require(
            {_QPACK_MAX_TABLE_CAPACITY, _QPACK_BLOCKED_STREAMS} <= set(local),
            "H3Connection._get_local_settings has no QPACK settings",
        )
    elif name == "h3_settings":
        _params(H3Connection._get_local_settings)
        _require(isinstance(h3._get_local_settings(), dict), "_get_local_settings changed")
    elif name == "early_settings":
        _params(cls._unblock_streams, "is_unidirectional")
    elif name == "malformed_request":
        _params(H3Connection._receive_request_or_push_data, "stream", "data", "stream_ended")
        _has(h3, "_is_client")
    elif name == "stats":
        _has(quic, "_loss", "_network_paths", "_packet_number")
        _has(quic._loss, "_rtt_smoothed", "_rtt_min", "_rtt_latest", "_cc")
    elif name == "datagram_limit":
        _has(quic, "_remote_max_datagram_frame_size", "_max_datagram_size")
    elif name == "peer_certificate":
        _has(_tls_context_class(), "_peer_certificate")
    elif name == "batch_reads":
        pass  # checked per transport: `selector_socket` finds the socket or returns None


def _tls_context_class() -> Any:
    from aioquic import tls

    # Instance attributes are set in __init__: read them off a throwaway client context.
    return tls.Context(is_client=True)


_ENV_ON: Final = frozenset({"", "on", "all", "1"})
_ENV_OFF: Final = frozenset({"off", "none", "0"})


def parse_patch_setting(setting: str) -> set[str]:
    """Return the features a `PYWEBTRANSPORT_AIOQUIC_PATCHES` value switches off.

    Args:
        setting: The variable's value: `on` (or empty, `all`, `1`), `off`
            (`none`, `0`: every optimisation; essential features stay on), or
            a comma-separated list of feature names.

    Returns:
        The names switched off.

    Raises:
        ValueError: An unknown value or feature name (the message lists the valid ones).
    """
    value = setting.strip().lower()
    if value in _ENV_ON:
        return set()
    if value in _ENV_OFF:
        return {name for name, feature in FEATURES.items() if not feature.essential}
    names = {name.strip() for name in value.split(",") if name.strip()}
    unknown = sorted(names - FEATURES.keys())
    if unknown or not names:
        raise ValueError(
            f"{_ENV}={setting!r}: unknown feature {', '.join(unknown) or '(none named)'}; "
            f"use on, off, or a comma-separated list of: {', '.join(sorted(FEATURES))}"
        )
    return names


def _apply_environment() -> None:
    for name in parse_patch_setting(os.environ.get(_ENV, "")):
        feature = FEATURES[name]
        feature.enabled = False
        feature.reason = f"switched off by {_ENV}"


def _verify() -> None:
    _apply_environment()
    prototype: tuple[Any, Any, Any] = (None, None, None)
    failure = ""
    try:
        prototype = _prototype()
    except Exception as exc:  # pragma: no cover - only with an incompatible aioquic
        failure = f"building a prototype connection failed: {exc!r}"
    mismatched = []
    for feature in FEATURES.values():
        if not feature.enabled:
            continue
        try:
            if failure:
                raise _Mismatch(failure)
            _check(feature.name, *prototype)
            _check_digests(feature)
        except (_Mismatch, AttributeError, TypeError) as exc:
            feature.enabled = False
            feature.reason = str(exc) or type(exc).__name__
            mismatched.append(feature)
    if mismatched:
        details = "; ".join(f"{f.name} ({f.reason}) -> {f.fallback}" for f in mismatched)
        warnings.warn(
            f"pywebtransport: aioquic {AIOQUIC_VERSION} differs from the versions this release "
            f"was tested with; switched off: {details}",
            RuntimeWarning,
            stacklevel=_user_stacklevel(),
        )
    exposed = [f for f in mismatched if f.essential]
    if exposed:
        # Loud, once, from the user's own import: what the server is now open to.
        warnings.warn(
            "pywebtransport: SECURITY AND CORRECTNESS: with this aioquic "
            f"({AIOQUIC_VERSION}) these essential features are OFF: "
            + "; ".join(f"{f.name}: {f.fallback}" for f in exposed)
            + ". Install an aioquic of the range pyproject.toml declares (1.7.0 to 1.7.2).",
            RuntimeWarning,
            stacklevel=_user_stacklevel(),
        )
        for feature in exposed:
            logger.error("aioquic feature %s is off: %s", feature.name, feature.fallback)


def _user_stacklevel() -> int:
    # The first frame outside pywebtransport and importlib: the user's import line.
    current = inspect.currentframe()
    frame = current.f_back if current is not None else None  # the caller of warn()
    level = 1
    while frame is not None:
        filename = frame.f_code.co_filename
        # warnings.warn does not count importlib's frames (its "internal" ones).
        internal = "importlib" in filename and "_bootstrap" in filename
        if not internal:
            if not str(frame.f_globals.get("__name__", "")).startswith("pywebtransport"):
                return level
            level += 1
        frame = frame.f_back
    return 2


# --------------------------------------------------------------------------- QuicConnection

_ACTIVE_CONNECTION_ID_LIMIT: Final = 2
"""Connection ids each side keeps issued to the other (aioquic: 8).

2 is the minimum RFC 9000 (section 18.2) allows and the value peers assume
when none is sent: the id in use plus one spare, enough to move to a new path
(connection migration, NAT rebinding). A retired id is replaced at once.
"""

_MAX_STREAM_DATA_FRAME_CAPACITY: Final = 1 + 8 + 8

_FrameHandler = tuple[Callable[..., None], frozenset[Any]]


class _FrameTable:
    """Stands in for aioquic's per-connection frame-handler dict.

    aioquic gives every connection its own dict of 33 bound methods, each with
    its own frozenset of allowed epochs (about 7 KiB per connection), and only
    reads it as `handlers[frame_type]` (a KeyError meaning an unknown frame
    type). This answers the same from one table shared by all connections,
    binding the handler on lookup.
    """

    __slots__ = ("_quic",)

    _table: ClassVar[dict[int, _FrameHandler]] = {}

    def __init__(self, quic: QuicConnection, handlers: dict[int, _FrameHandler]) -> None:
        self._quic = quic
        if not _FrameTable._table:
            epoch_sets: dict[frozenset[Any], frozenset[Any]] = {}
            _FrameTable._table = {
                frame_type: (cast(Any, handler).__func__, epoch_sets.setdefault(epochs, epochs))
                for frame_type, (handler, epochs) in handlers.items()
            }

    def __getitem__(self, frame_type: int) -> _FrameHandler:
        function, epochs = self._table[frame_type]
        return function.__get__(self._quic), epochs


def _write_stream_limits(self: Any, builder: QuicPacketBuilder, space: Any, stream: Any) -> None:
    # Called for every open stream each time a packet is built, so the common
    # nothing-to-send case is decided from two attributes. The window of a
    # managed (WebTransport) stream is moved by its reader (`set_stream_window`),
    # never doubled here.
    local = stream.max_stream_data_local
    unsent = stream.max_stream_data_local_sent != local
    if not unsent and (not local or stream.receiver.highest_offset * 2 <= local):
        return
    managed = self.wt_managed
    if managed is None or stream.stream_id not in managed:
        QuicConnection._write_stream_limits(self, builder, space, stream)
        return
    if not unsent:
        return
    buf = builder.start_frame(
        QuicFrameType.MAX_STREAM_DATA,
        capacity=_MAX_STREAM_DATA_FRAME_CAPACITY,
        handler=self._on_max_stream_data_delivery,
        handler_args=(stream,),
    )
    buf.push_uint_var(stream.stream_id)
    buf.push_uint_var(local)
    stream.max_stream_data_local_sent = local


def _replenish_connection_ids(self: Any) -> None:
    wanted = min(_ACTIVE_CONNECTION_ID_LIMIT, self._remote_active_connection_id_limit)
    while len(self._host_cids) < wanted:
        self._host_cids.append(
            QuicConnectionId(
                cid=os.urandom(self._configuration.connection_id_length),
                sequence_number=self._host_cid_seq,
                stateless_reset_token=os.urandom(16),
            )
        )
        self._host_cid_seq += 1


_PACING_BURST_INTERVAL: Final = 0.002
_PACING_MIN_BURST_PACKETS: Final = 10
_PACING_MAX_BURST_PACKETS: Final = 256
_PACING_MIN_PACKET_TIME: Final = 1e-6


class BurstPacer(QuicPacketPacer):
    """aioquic's token-bucket pacer with a burst sized for event-loop clocks.

    aioquic caps the bucket at 16 packets' worth of *time* (less once the
    congestion window grows), and its packet time never drops below 1 µs. The
    bucket only refills when the loop clock moves, and uvloop's clock moves in
    1 ms steps: once the window passes about 1.3 MB at the 1 ms RTT floor, the
    bucket holds a single packet and a bulk sender is held to one packet per
    millisecond (~1.8 MiB/s), spinning on a timer that is always due. Here the
    bucket holds what the pacing rate allows over 2 ms, between 10 and 256
    packets (the shape of quinn's pacer), counted in packet times so the 1 µs
    floor cannot shrink it.
    """

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        """Recompute the packet time and the burst from the congestion window and RTT.

        Args:
            congestion_window: Bytes the congestion controller allows in flight.
            smoothed_rtt: Smoothed round-trip time in seconds.
        """
        size = self._max_datagram_size
        rate = congestion_window / max(smoothed_rtt, _PACING_MIN_PACKET_TIME)
        packet_time = max(_PACING_MIN_PACKET_TIME, min(size / rate, 1.0))
        burst = rate * _PACING_BURST_INTERVAL / size
        burst = min(max(burst, _PACING_MIN_BURST_PACKETS), _PACING_MAX_BURST_PACKETS)
        self.packet_time = packet_time
        self.bucket_max = burst * packet_time
        if self.bucket_time > self.bucket_max:
            self.bucket_time = self.bucket_max


# --------------------------------------------------------------------------- stream scheduling

_RESET_STREAM_FRAME_CAPACITY: Final = 1 + 8 + 8 + 8
_STOP_SENDING_FRAME_CAPACITY: Final = 1 + 8 + 8
_STREAM_FRAME_FIXED: Final = 3
"""A STREAM frame's type byte and its 2-byte length, before the id and offset varints."""

_WRITE_APPLICATION_DIGEST: Final = "91b6d1ab13657fcb"
"""`logic_digest` of aioquic's `_write_application` in 1.7.0 to 1.7.2.

`_write_application` below replaces it: it writes the same frames in the same
order and differs only in which streams it visits. Another aioquic whose method
differs (a new frame, a new rule) switches the feature off rather than silently
dropping what changed.
"""


def logic_digest(function: Any) -> str:
    """Return a digest of a function's logic, blind to annotations, docstrings and layout.

    Args:
        function: A Python function or method.

    Returns:
        16 hex digits; two functions with the same parameters, statements and
        expressions share it whatever their names, type hints, docstrings,
        comments or formatting.
    """
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    skipped = {"annotation", "returns", "type_comment", "type_params", "kind"}

    def walk(node: object) -> str:
        if isinstance(node, list):
            return "[" + ",".join(walk(item) for item in node) + "]"
        if not isinstance(node, ast.AST):
            return repr(node)
        if isinstance(node, ast.AnnAssign):
            declared = ast.Name(id="<declared>")  # `x: T` alone, no value
            node = ast.Assign(targets=[node.target], value=node.value or declared)
        fields = []
        for field in node._fields:
            value: Any = getattr(node, field, None)
            if field in skipped or (field == "name" and isinstance(node, ast.FunctionDef)):
                continue
            if field == "body" and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = value[0] if value else None
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                    value = value[1:]
            fields.append(f"{field}={walk(value)}")
        return f"{type(node).__name__}({','.join(fields)})"

    return hashlib.sha256(walk(tree).encode()).hexdigest()[:16]


class _NoQueue:
    """Stands in for aioquic's `_streams_queue`, which only its `_write_application` reads."""

    __slots__ = ()

    def append(self, stream: QuicStream) -> None:
        """Drop a new stream: the schedule learns of it when it has something to send."""

    def __iter__(self) -> Iterator[QuicStream]:
        return iter(())


_NO_QUEUE: Final = _NoQueue()


class _StreamSchedule:
    """The streams a connection visits when it builds packets.

    A connection has one only while some stream needs a visit; an idle
    connection holds none.

    Attributes:
        ready: Streams with data, a FIN, a RESET_STREAM or a STOP_SENDING to
            send, in service order (served ones go to the back).
        queued: The members of `ready`.
        blocked: Streams with data the peer's stream-level flow control or
            stream limit holds back; woken by MAX_STREAM_DATA or MAX_STREAMS.
        owing: Streams whose receive window may have to be announced.
        finished: Streams done both ways, to be forgotten on the next packet.
    """

    __slots__ = ("blocked", "finished", "owing", "queued", "ready")

    def __init__(self) -> None:
        self.ready: deque[QuicStream] = deque()
        self.queued: set[QuicStream] = set()
        self.blocked: set[QuicStream] = set()
        self.owing: set[QuicStream] = set()
        self.finished: list[QuicStream] = []

    def idle(self) -> bool:
        return not (self.ready or self.blocked or self.owing or self.finished)


def _schedule(self: Any) -> _StreamSchedule:
    schedule: _StreamSchedule | None = self.wt_schedule
    if schedule is None:
        schedule = self.wt_schedule = _StreamSchedule()
    return schedule


def _wake(self: Any, stream: QuicStream) -> None:
    schedule = _schedule(self)
    if stream not in schedule.queued:
        schedule.queued.add(stream)
        schedule.ready.append(stream)
        schedule.blocked.discard(stream)


def _owe(self: Any, stream: QuicStream) -> None:
    _schedule(self).owing.add(stream)


def _peek_stream_id(buf: Buffer) -> int:
    start = buf.tell()
    stream_id: int = buf.pull_uint_var()
    buf.seek(start)
    return stream_id


# Public entry points: whatever makes a stream need a visit wakes it.


def _send_stream_data(self: Any, stream_id: int, data: bytes, end_stream: bool = False) -> None:
    QuicConnection.send_stream_data(self, stream_id, data, end_stream)
    _wake(self, self._streams[stream_id])


def _reset_stream(self: Any, stream_id: int, error_code: int) -> None:
    QuicConnection.reset_stream(self, stream_id, error_code)
    stream = self._streams.get(stream_id)
    if stream is not None and stream.sender.reset_pending:
        _wake(self, stream)


def _stop_stream(self: Any, stream_id: int, error_code: int) -> None:
    QuicConnection.stop_stream(self, stream_id, error_code)
    _wake(self, self._streams[stream_id])


# Frames from the peer.


def _handle_stream_frame(self: Any, context: Any, frame_type: int, buf: Buffer) -> None:
    stream_id = _peek_stream_id(buf)
    QuicConnection._handle_stream_frame(self, context, frame_type, buf)
    stream = self._streams.get(stream_id)
    if stream is None:
        return
    if stream.is_finished:
        _schedule(self).finished.append(stream)
        return
    # A managed window moves with its reader (`set_stream_window`); aioquic's own
    # doubles once the peer has sent past half of it.
    local = stream.max_stream_data_local
    managed = self.wt_managed
    if (managed is None or stream_id not in managed) and stream.receiver.highest_offset * 2 > local:
        _owe(self, stream)


def _handle_reset_stream_frame(self: Any, context: Any, frame_type: int, buf: Buffer) -> None:
    stream_id = _peek_stream_id(buf)
    QuicConnection._handle_reset_stream_frame(self, context, frame_type, buf)
    stream = self._streams.get(stream_id)
    if stream is not None and stream.is_finished:
        _schedule(self).finished.append(stream)


def _handle_stop_sending_frame(self: Any, context: Any, frame_type: int, buf: Buffer) -> None:
    stream_id = _peek_stream_id(buf)
    QuicConnection._handle_stop_sending_frame(self, context, frame_type, buf)
    stream = self._streams.get(stream_id)
    if stream is not None and stream.sender.reset_pending:
        _wake(self, stream)


def _handle_max_stream_data_frame(self: Any, context: Any, frame_type: int, buf: Buffer) -> None:
    stream_id = _peek_stream_id(buf)
    QuicConnection._handle_max_stream_data_frame(self, context, frame_type, buf)
    schedule: _StreamSchedule | None = self.wt_schedule
    stream = self._streams.get(stream_id)
    if schedule is not None and stream in schedule.blocked:
        _wake(self, stream)


def _unblock_streams(self: Any, is_unidirectional: bool) -> None:
    QuicConnection._unblock_streams(self, is_unidirectional)
    schedule: _StreamSchedule | None = self.wt_schedule
    if schedule is not None and schedule.blocked:
        for stream in [s for s in schedule.blocked if not s.is_blocked]:
            _wake(self, stream)


# Acknowledgements and losses of what we sent.


def _on_stream_delivery(
    self: Any, delivery: QuicDeliveryState, stream: QuicStream, start: int, stop: int, fin: bool
) -> None:
    stream.sender.on_data_delivery(delivery, start, stop, fin)
    if delivery == QuicDeliveryState.ACKED:
        if stream.is_finished:
            _schedule(self).finished.append(stream)
    elif not stream.sender.buffer_is_empty:
        _wake(self, stream)


def _on_reset_delivery(self: Any, delivery: QuicDeliveryState, stream: QuicStream) -> None:
    stream.sender.on_reset_delivery(delivery)
    if stream.sender.reset_pending:
        _wake(self, stream)
    elif stream.is_finished:
        _schedule(self).finished.append(stream)


def _on_stop_sending_delivery(self: Any, delivery: QuicDeliveryState, stream: QuicStream) -> None:
    stream.receiver.on_stop_sending_delivery(delivery)
    if stream.receiver.stop_pending:
        _wake(self, stream)


def _on_max_stream_data_delivery(
    self: Any, delivery: QuicDeliveryState, stream: QuicStream
) -> None:
    QuicConnection._on_max_stream_data_delivery(self, delivery, stream)
    if stream.max_stream_data_local_sent != stream.max_stream_data_local:
        _owe(self, stream)


# Building packets.


def _write_stream_data(self: Any, builder: Any, stream: Any, limit: int) -> int:
    sender = stream.sender
    stream_id = stream.stream_id
    offset = sender.next_offset
    overhead = (
        _STREAM_FRAME_FIXED + size_uint_var(stream_id) + (size_uint_var(offset) if offset else 0)
    )
    before = sender.highest_offset
    frame = sender.get_frame(builder.remaining_flight_space - overhead, limit)
    if frame is None:
        return 0
    size = len(frame.data)
    frame_type = (
        QuicFrameType.STREAM_BASE | 2 | (4 if frame.offset else 0) | (1 if frame.fin else 0)
    )
    buf = builder.start_frame(
        frame_type,
        capacity=overhead,
        handler=self._wt_on_stream_delivery,
        handler_args=(stream, frame.offset, frame.offset + size, frame.fin),
    )
    buf.push_uint_var(stream_id)
    if frame.offset:
        buf.push_uint_var(frame.offset)
    buf.push_uint16(size | 0x4000)
    buf.push_bytes(frame.data)
    if self._quic_logger is not None:
        builder.quic_logger_frames.append(
            self._quic_logger.encode_stream_frame(frame, stream_id=stream_id)
        )
    return int(sender.highest_offset - before)


def _write_reset(self: Any, builder: Any, stream: Any) -> None:
    buf = builder.start_frame(
        QuicFrameType.RESET_STREAM,
        capacity=_RESET_STREAM_FRAME_CAPACITY,
        handler=self._wt_on_reset_delivery,
        handler_args=(stream,),
    )
    frame = stream.sender.get_reset_frame()
    buf.push_uint_var(frame.stream_id)
    buf.push_uint_var(frame.error_code)
    buf.push_uint_var(frame.final_size)
    if self._quic_logger is not None:
        builder.quic_logger_frames.append(
            self._quic_logger.encode_reset_stream_frame(
                error_code=frame.error_code, final_size=frame.final_size, stream_id=frame.stream_id
            )
        )


def _write_stop_sending(self: Any, builder: Any, stream: Any) -> None:
    buf = builder.start_frame(
        QuicFrameType.STOP_SENDING,
        capacity=_STOP_SENDING_FRAME_CAPACITY,
        handler=self._wt_on_stop_sending_delivery,
        handler_args=(stream,),
    )
    frame = stream.receiver.get_stop_frame()
    buf.push_uint_var(frame.stream_id)
    buf.push_uint_var(frame.error_code)
    if self._quic_logger is not None:
        builder.quic_logger_frames.append(
            self._quic_logger.encode_stop_sending_frame(
                error_code=frame.error_code, stream_id=frame.stream_id
            )
        )


def _forget_finished(self: Any, schedule: _StreamSchedule) -> bool:
    # What aioquic does when its walk meets a finished stream: forget it and,
    # for a peer's stream, let the peer open one more (RFC 9000 section 4.6).
    forgot = False
    streams = self._streams
    for stream in schedule.finished:
        if streams.get(stream.stream_id) is not stream:
            continue
        del streams[stream.stream_id]
        forgot = True
        if stream_is_client_initiated(stream.stream_id) != self._is_client:
            self._stream_limit(stream.stream_id).value += 1
        if stream in schedule.queued:
            schedule.queued.discard(stream)
            schedule.ready.remove(stream)
        schedule.blocked.discard(stream)
        schedule.owing.discard(stream)
    schedule.finished.clear()
    return forgot


def _write_owed_limits(
    self: Any, builder: QuicPacketBuilder, space: Any, schedule: _StreamSchedule
) -> None:
    owing = schedule.owing
    managed = self.wt_managed
    for stream in list(owing):
        self._write_stream_limits(builder=builder, space=space, stream=stream)
        local = stream.max_stream_data_local
        if stream.max_stream_data_local_sent == local and (
            (managed is not None and stream.stream_id in managed)
            or stream.receiver.highest_offset * 2 <= local
        ):
            owing.discard(stream)


def _write_streams(self: Any, builder: QuicPacketBuilder, schedule: _StreamSchedule) -> None:
    ready, queued = schedule.ready, schedule.queued
    visits = len(ready)
    while visits and builder.remaining_flight_space > _STREAM_FRAME_FIXED:
        visits -= 1
        stream = ready.popleft()
        sender, receiver = stream.sender, stream.receiver
        try:
            if stream.is_finished:
                queued.discard(stream)
                schedule.finished.append(stream)
                continue
            if receiver.stop_pending:
                self._wt_write_stop_sending(builder, stream)
            if sender.reset_pending:
                self._wt_write_reset(builder, stream)
            elif not sender.buffer_is_empty and not stream.is_blocked:
                limit = min(
                    sender.highest_offset + self._remote_max_data - self._remote_max_data_used,
                    stream.max_stream_data_remote,
                )
                self._remote_max_data_used += self._wt_write_stream_data(builder, stream, limit)
        except BaseException:
            ready.appendleft(stream)
            raise
        if sender.buffer_is_empty and not sender.reset_pending and not receiver.stop_pending:
            queued.discard(stream)
        elif (
            not sender.reset_pending
            and not receiver.stop_pending
            and (
                stream.is_blocked
                or (len(sender._pending) and sender.next_offset >= stream.max_stream_data_remote)
            )
        ):
            queued.discard(stream)
            schedule.blocked.add(stream)
        else:
            ready.append(stream)


def _write_application(
    self: Any, builder: QuicPacketBuilder, network_path: Any, now: float
) -> None:
    # aioquic's method, frame for frame (see _WRITE_APPLICATION_DIGEST), except
    # that streams come from the schedule rather than a walk over all of them.
    if self._cryptos[Epoch.ONE_RTT].send.is_valid():
        crypto = self._cryptos[Epoch.ONE_RTT]
        crypto_stream = self._crypto_streams[Epoch.ONE_RTT]
        packet_type = QuicPacketType.ONE_RTT
    elif self._cryptos[Epoch.ZERO_RTT].send.is_valid():
        crypto = self._cryptos[Epoch.ZERO_RTT]
        crypto_stream = None
        packet_type = QuicPacketType.ZERO_RTT
    else:
        return
    space = self._spaces[Epoch.ONE_RTT]
    pacer = self._loss._pacer
    schedule: _StreamSchedule | None = self.wt_schedule
    if schedule is not None and schedule.finished:
        _forget_finished(self, schedule)
    try:
        while True:
            # Pacing does not hold back ACKs that are due.
            if space.ack_at is None or space.ack_at >= now:
                self._pacing_at = pacer.next_send_time(now=now)
                if self._pacing_at is not None:
                    break
            builder.start_packet(packet_type, crypto)
            # Never in 0-RTT packets (RFC 9000 section 13.2.1).
            if (
                packet_type == QuicPacketType.ONE_RTT
                and space.ack_at is not None
                and space.ack_at <= now
            ):
                self._write_ack_frame(builder=builder, space=space, now=now)
            if self._handshake_complete:
                _write_connection_frames(self, builder, network_path, space, now)
            schedule = self.wt_schedule
            if schedule is not None and schedule.owing:
                _write_owed_limits(self, builder, space, schedule)
            if self._ping_pending:
                self._write_ping_frame(builder, self._ping_pending)
                self._ping_pending.clear()
            if self._probe_pending:
                self._write_ping_frame(builder, comment="probe")
                self._probe_pending = False
            if crypto_stream is not None and not crypto_stream.sender.buffer_is_empty:
                self._write_crypto_frame(builder=builder, space=space, stream=crypto_stream)
            pending = self._datagrams_pending
            while pending:
                try:
                    self._write_datagram_frame(
                        builder=builder,
                        data=pending[0],
                        frame_type=QuicFrameType.DATAGRAM_WITH_LENGTH,
                    )
                except QuicPacketBuilderStop:
                    break
                pending.popleft()
            if schedule is not None and schedule.ready:
                _write_streams(self, builder, schedule)
            if builder.packet_is_empty:
                # Forgotten peer streams are re-credited by MAX_STREAMS in the next packet.
                if (
                    schedule is None
                    or not schedule.finished
                    or not _forget_finished(self, schedule)
                ):
                    break
            else:
                pacer.update_after_send(now=now)
    finally:
        schedule = self.wt_schedule
        if schedule is not None and schedule.idle():
            self.wt_schedule = None


def _write_connection_frames(
    self: Any, builder: QuicPacketBuilder, network_path: Any, space: Any, now: float
) -> None:
    if not (network_path.is_validated or network_path.local_challenge_sent):
        # A server whose client moved to a new path validates it (RFC 9000 section 9.3)
        # and gives up after 3 PTOs of the larger of the two paths (section 8.2.4).
        self._write_path_challenge_frame(builder=builder, network_path=network_path)
        if network_path.validation_deadline is None:
            network_path.validation_deadline = now + 3 * max(
                self._loss.get_probe_timeout(), 2 * self._configuration.initial_rtt
            )
    if self._handshake_done_pending:
        self._write_handshake_done_frame(builder=builder)
        self._handshake_done_pending = False
    challenges = network_path.remote_challenges
    while challenges:
        self._write_path_response_frame(builder=builder, challenge=challenges[0])
        challenges.popleft()
    for connection_id in self._host_cids:
        if not connection_id.was_sent:
            self._write_new_connection_id_frame(builder=builder, connection_id=connection_id)
    retiring = self._retire_connection_ids
    while retiring:
        self._write_retire_connection_id_frame(builder=builder, sequence_number=retiring[0])
        retiring.pop(0)
    if self._streams_blocked_pending:
        if self._streams_blocked_bidi:
            self._write_streams_blocked_frame(
                builder=builder,
                frame_type=QuicFrameType.STREAMS_BLOCKED_BIDI,
                limit=self._remote_max_streams_bidi,
            )
        if self._streams_blocked_uni:
            self._write_streams_blocked_frame(
                builder=builder,
                frame_type=QuicFrameType.STREAMS_BLOCKED_UNI,
                limit=self._remote_max_streams_uni,
            )
        self._streams_blocked_pending = False
    self._write_connection_limits(builder=builder, space=space)


_SCHEDULING_METHODS: Final[dict[str, Callable[..., Any]]] = {
    "send_stream_data": _send_stream_data,
    "reset_stream": _reset_stream,
    "stop_stream": _stop_stream,
    "_handle_stream_frame": _handle_stream_frame,
    "_handle_reset_stream_frame": _handle_reset_stream_frame,
    "_handle_stop_sending_frame": _handle_stop_sending_frame,
    "_handle_max_stream_data_frame": _handle_max_stream_data_frame,
    "_unblock_streams": _unblock_streams,
    "_on_max_stream_data_delivery": _on_max_stream_data_delivery,
    "_write_application": _write_application,
    "_wt_on_stream_delivery": _on_stream_delivery,
    "_wt_on_reset_delivery": _on_reset_delivery,
    "_wt_on_stop_sending_delivery": _on_stop_sending_delivery,
    "_wt_write_stream_data": _write_stream_data,
    "_wt_write_reset": _write_reset,
    "_wt_write_stop_sending": _write_stop_sending,
}
"""The methods `stream_scheduling` replaces or adds on the connection class."""


def _check_stream_scheduling(quic: QuicConnection, stream: QuicStream) -> None:
    try:
        digest = logic_digest(QuicConnection._write_application)
        source = inspect.getsource(QuicConnection)
    except (OSError, TypeError, SyntaxError) as exc:
        raise _Mismatch(f"cannot read QuicConnection._write_application: {exc}") from exc
    _require(
        digest == _WRITE_APPLICATION_DIGEST,
        "QuicConnection._write_application differs from aioquic 1.7's",
    )
    _require(source.count("_streams_queue") == 7, "_streams_queue is used beyond 1.7's places")
    for name in _SCHEDULING_METHODS:
        if not name.startswith("_wt_"):
            _has(QuicConnection, name)
    _params(QuicConnection.send_stream_data, "stream_id", "data", "end_stream")
    _params(QuicConnection.reset_stream, "stream_id", "error_code")
    _params(QuicConnection.stop_stream, "stream_id", "error_code")
    _params(QuicConnection._stream_limit, "stream_id")
    _params(QuicConnection._on_max_stream_data_delivery, "delivery", "stream")
    _has(quic, "_streams", "_streams_queue", "_remote_max_data", "_remote_max_data_used")
    _has(stream, "is_blocked", "max_stream_data_remote", "is_finished")
    _has(stream.sender, "_pending", "next_offset", "highest_offset", "reset_pending")
    _has(stream.sender, "buffer_is_empty", "get_frame", "get_reset_frame", "on_data_delivery")
    _has(stream.sender, "on_reset_delivery")
    _has(stream.receiver, "stop_pending", "get_stop_frame", "on_stop_sending_delivery")
    _params(type(stream.sender).get_frame, "max_size", "max_offset")
    _params(type(stream.sender).on_data_delivery, "delivery", "start", "stop", "fin")
    _has(QuicPacketBuilder, "remaining_flight_space")


_connection_class: type[QuicConnection] | None = None


def _quic_connection_class() -> type[QuicConnection]:
    global _connection_class
    if _connection_class is None:
        namespace: dict[str, Any] = {
            "__slots__": ("wt_managed",),
            "__module__": __name__,
            "__doc__": "aioquic's QuicConnection with the enabled features of this module.",
        }
        if enabled("stream_window"):
            namespace["_write_stream_limits"] = _write_stream_limits
        if enabled("stream_scheduling"):
            namespace["__slots__"] += ("wt_schedule",)
            namespace.update(_SCHEDULING_METHODS)
        if enabled("connection_ids"):
            namespace["_replenish_connection_ids"] = _replenish_connection_ids
        _connection_class = type("QuicConnection", (QuicConnection,), namespace)
    return _connection_class


@dataclass(frozen=True, slots=True)
class ConnectionTuning:
    """What a new connection gets beyond aioquic's defaults.

    Attributes:
        max_streams_bidi: Bidirectional streams the peer may have open at once.
        max_streams_uni: Unidirectional streams the peer may have open at once.
    """

    max_streams_bidi: int
    max_streams_uni: int


def new_quic_connection(
    configuration: QuicConfiguration,
    tuning: ConnectionTuning,
    *,
    original_destination_connection_id: bytes | None = None,
    retry_source_connection_id: bytes | None = None,
) -> QuicConnection:
    """Create a `QuicConnection` with every enabled feature applied.

    Args:
        configuration: The aioquic configuration.
        tuning: Stream limits and other settings aioquic does not take.
        original_destination_connection_id: Server side: the client's first DCID.
        retry_source_connection_id: Server side: the SCID of our Retry, if one was sent.

    Returns:
        The connection (nothing sent or received yet).
    """
    quic = _quic_connection_class()(
        configuration=configuration,
        original_destination_connection_id=original_destination_connection_id,
        retry_source_connection_id=retry_source_connection_id,
    )
    tuned: Any = quic
    tuned.wt_managed = set() if enabled("stream_window") else None
    if enabled("stream_scheduling"):
        tuned.wt_schedule = None
        tuned._streams_queue = _NO_QUEUE
    if enabled("frame_table"):
        handlers = quic.__dict__["_QuicConnection__frame_handlers"]
        quic.__dict__["_QuicConnection__frame_handlers"] = _FrameTable(quic, handlers)
    if enabled("connection_ids"):
        # Announced in the transport parameters: the peer issues us at most this many.
        tuned._local_active_connection_id_limit = _ACTIVE_CONNECTION_ID_LIMIT
    if enabled("pacer"):
        tuned._loss._pacer = BurstPacer(max_datagram_size=tuned._max_datagram_size)
    if enabled("stream_limits"):
        # `sent` must follow: aioquic only sends MAX_STREAMS once `value` passes it,
        # so a limit below aioquic's 128 left at sent=128 would never be re-credited.
        for limit, value in (
            (tuned._local_max_streams_bidi, tuning.max_streams_bidi),
            (tuned._local_max_streams_uni, tuning.max_streams_uni),
        ):
            limit.value = limit.sent = value
    return quic


_NO_CRYPTO_OUTPUT: Final = Buffer(capacity=0)
"""Stands in for aioquic's per-epoch TLS output buffers once the handshake is over."""


_SPENT_KEYS: Final = CryptoPair()
"""Stands in for the key pairs of epochs a connection is done with (never set up)."""


def _release_spent_keys(tuned: Any) -> None:
    # The Initial and Handshake key pairs are torn down once their packet spaces
    # are discarded (a server: by HandshakeCompleted), but aioquic keeps them,
    # each with four logging callbacks, and Initial pairs for every QUIC
    # version it supports. Packets of a spent epoch find keys that are not valid
    # and are dropped, as they were; nothing sets such keys up again.
    cryptos, spaces = tuned._cryptos, tuned._spaces
    for epoch in (Epoch.INITIAL, Epoch.HANDSHAKE):
        if spaces[epoch].discarded:
            cryptos[epoch] = _SPENT_KEYS
    if spaces[Epoch.INITIAL].discarded:
        initial = tuned._cryptos_initial
        for version in initial:
            initial[version] = _SPENT_KEYS
    zero_rtt = cryptos.get(Epoch.ZERO_RTT)
    if zero_rtt is not None and not (zero_rtt.recv.is_valid() or zero_rtt.send.is_valid()):
        cryptos[Epoch.ZERO_RTT] = _SPENT_KEYS
    if tuned._quic_logger is None:
        # Without a qlog trace the callbacks of the live 1-RTT keys log nothing.
        live = cryptos[Epoch.ONE_RTT]
        for context in (live.recv, live.send):
            context._setup_cb = context._teardown_cb = NoCallback


def after_handshake(quic: QuicConnection) -> bool:
    """Free what a connected `QuicConnection` only needed for its TLS handshake.

    The TLS output buffers: aioquic allocates three of 16 KiB per connection and
    keeps them, but TLS only writes into them during the handshake (in the
    post-handshake states a client only parses NewSessionTicket and a server
    answers every message with an alert, neither writing output). The ephemeral
    key-exchange keys (also a forward-secrecy gain), and on a server the key
    schedule: a client keeps it to derive the resumption secret of a
    NewSessionTicket, but the server's post-handshake state rejects every
    message before using it. A server with a session-ticket handler keeps all
    of it: TLS 1.3 lets a server send further tickets at any time.

    Args:
        quic: A connection whose handshake has completed.

    Returns:
        True when the state was released.
    """
    if not enabled("tls_release"):
        return False
    tuned: Any = quic
    _release_spent_keys(tuned)
    is_client = tuned._is_client
    if not is_client and tuned._session_ticket_handler is not None:
        return False
    buffers = tuned._crypto_buffers
    for epoch in buffers:
        buffers[epoch] = _NO_CRYPTO_OUTPUT
    tls = tuned.tls
    tls._ec_private_keys = []
    tls._x25519_private_key = None
    tls._x448_private_key = None
    if not is_client:
        tls.key_schedule = None
    return True


def release_early_streams(quic: QuicConnection) -> None:
    """Let a server's control and QPACK streams leave in its first flight.

    They were opened before the client's transport parameters arrived, so
    aioquic holds them as blocked until the handshake completes. Released when
    the ALPN is negotiated, SETTINGS leave as 0.5-RTT data and the client can
    send CONNECT one round trip earlier.

    Args:
        quic: A server connection that just negotiated its ALPN.
    """
    if enabled("early_settings"):
        tuned: Any = quic
        tuned._unblock_streams(is_unidirectional=True)


# --------------------------------------------------------------------------- stream credit


def manage_stream_window(quic: QuicConnection, stream_id: int) -> bool:
    """Make a stream's receive window follow its reader (see `set_stream_window`).

    Args:
        quic: The connection.
        stream_id: A WebTransport stream with a receiving half.

    Returns:
        False when the feature is off (aioquic manages the window).
    """
    tuned: Any = quic
    managed = tuned.wt_managed if enabled("stream_window") else None
    if managed is None:
        return False
    managed.add(stream_id)
    return True


def forget_stream_window(quic: QuicConnection, stream_id: int) -> None:
    """Stop managing a stream's receive window.

    Args:
        quic: The connection.
        stream_id: The stream.
    """
    tuned: Any = quic
    managed = tuned.wt_managed if enabled("stream_window") else None
    if managed is not None:
        managed.discard(stream_id)


def set_stream_window(quic: QuicConnection, stream_id: int, limit: int) -> None:
    """Grant the peer credit up to `limit` bytes on a managed stream (MAX_STREAM_DATA).

    Args:
        quic: The connection.
        stream_id: A stream passed to `manage_stream_window`.
        limit: The new absolute limit; the frame leaves with the next packet.
    """
    tuned: Any = quic
    stream = tuned._streams.get(stream_id)
    if stream is not None and limit > stream.max_stream_data_local:
        stream.max_stream_data_local = limit
        if enabled("stream_scheduling"):
            _owe(quic, stream)


def nothing_sent(quic: QuicConnection, stream_id: int) -> bool:
    """Return True when a stream has data queued of which no byte has left yet.

    Args:
        quic: The connection.
        stream_id: The stream.

    Returns:
        The answer (True when the feature is off: the caller then transmits
        once more than it needs to).
    """
    if not enabled("stream_state"):
        return True
    tuned: Any = quic
    stream = tuned._streams.get(stream_id)
    return (
        stream is not None
        and not stream.sender.buffer_is_empty
        and not stream.sender.highest_offset
    )


def reset_final_size(quic: QuicConnection, stream_id: int) -> int | None:
    """Return the final size a peer's RESET_STREAM gave a stream (stream offset, bytes).

    Args:
        quic: The connection.
        stream_id: A stream whose receiving half the peer reset.

    Returns:
        The final size, or None when unknown (the feature is off, or aioquic has
        already forgotten the stream).
    """
    if not enabled("stream_state"):
        return None
    tuned: Any = quic
    stream = tuned._streams.get(stream_id)
    final: int | None = None if stream is None else stream.receiver._final_size
    return final


def sent_offset(quic: QuicConnection, stream_id: int) -> int | None:
    """Return how far a stream's data has left (the final size, once it is reset).

    Args:
        quic: The connection.
        stream_id: A stream this side sends on.

    Returns:
        The highest stream offset sent, or None when unknown (the feature is
        off, or aioquic has already forgotten the stream).
    """
    if not enabled("stream_state"):
        return None
    tuned: Any = quic
    stream = tuned._streams.get(stream_id)
    return None if stream is None else int(stream.sender.highest_offset)


def send_finished(quic: QuicConnection, stream_id: int) -> bool:
    """Return whether the peer acknowledged a stream's data and FIN (or its reset).

    Args:
        quic: The connection.
        stream_id: A stream whose sending half was finished or reset.

    Returns:
        True once nothing of it can still be lost (aioquic may have forgotten
        the stream); False while in flight, and always False when the feature
        is off (a graceful close then waits for its bound).
    """
    if not enabled("stream_state"):
        return False
    tuned: Any = quic
    stream = tuned._streams.get(stream_id)
    return stream is None or bool(stream.sender.is_finished)


def send_buffered(quic: QuicConnection, stream_id: int) -> int:
    """Return the bytes of a stream not yet acknowledged by the peer.

    Args:
        quic: The connection.
        stream_id: The stream.

    Returns:
        The count (0 when the feature is off: writes then never wait).
    """
    if not enabled("stream_state"):
        return 0
    tuned: Any = quic
    stream = tuned._streams.get(stream_id)
    return 0 if stream is None else len(stream.sender._buffer)


def has_unacked_stream_data(quic: QuicConnection) -> bool:
    """Return whether any stream has data the peer has not acknowledged yet.

    Args:
        quic: The connection.

    Returns:
        True while data is in flight or queued (always True when the feature
        is off: a close then waits for its bound).
    """
    if not enabled("stream_state"):
        return True
    tuned: Any = quic
    return any(
        stream.sender._buffer and not stream.sender.is_finished
        for stream in tuned._streams.values()
    )


def pending_datagrams(quic: QuicConnection) -> int:
    """Return the datagrams handed to aioquic that it has not sent yet.

    Args:
        quic: The connection.

    Returns:
        The count (0 when the feature is off: then nothing waits in our queues).
    """
    if not enabled("datagram_queue"):
        return 0
    tuned: Any = quic
    return len(tuned._datagrams_pending)


def can_open_stream(quic: QuicConnection, unidirectional: bool) -> bool:
    """Return whether the peer's QUIC stream limit lets us open another stream.

    Args:
        quic: The connection.
        unidirectional: The kind of stream.

    Returns:
        The answer (True when the feature is off).
    """
    if not enabled("stream_credit"):
        return True
    tuned: Any = quic
    if unidirectional:
        return bool(tuned._local_next_stream_id_uni // 4 < tuned._remote_max_streams_uni)
    return bool(tuned._local_next_stream_id_bidi // 4 < tuned._remote_max_streams_bidi)


# --------------------------------------------------------------------------- queries

_PACKET_OVERHEAD: Final = 50
"""Short header, packet number, AEAD tag and slack in a 1-RTT packet."""


def datagram_frame_limit(quic: QuicConnection) -> int | None:
    """Return the largest DATAGRAM frame payload that fits the peer's limit and one packet.

    Args:
        quic: A connected connection.

    Returns:
        The byte count, or None when the feature is off.
    """
    if not enabled("datagram_limit"):
        return None
    tuned: Any = quic
    remote: int = tuned._remote_max_datagram_frame_size or 0
    packet: int = tuned._max_datagram_size
    return max(0, min(remote, packet - _PACKET_OVERHEAD))


def stats(quic: QuicConnection) -> dict[str, Any]:
    """Return RTT, byte, packet and congestion figures.

    Args:
        quic: The connection.

    Returns:
        `rtt_smoothed`, `rtt_min`, `rtt_latest` (seconds), `bytes_sent`,
        `bytes_received`, `packets_sent`, `congestion_window`; all None when
        the feature is off.
    """
    keys = (
        "rtt_smoothed",
        "rtt_min",
        "rtt_latest",
        "bytes_sent",
        "bytes_received",
        "packets_sent",
        "congestion_window",
    )
    if not enabled("stats"):
        return dict.fromkeys(keys)
    tuned: Any = quic
    recovery = tuned._loss
    paths = tuned._network_paths
    rtt_min = recovery._rtt_min
    return {
        "rtt_smoothed": recovery._rtt_smoothed,
        "rtt_min": None if rtt_min == float("inf") else rtt_min,
        "rtt_latest": recovery._rtt_latest,
        "bytes_sent": sum(path.bytes_sent for path in paths),
        "bytes_received": sum(path.bytes_received for path in paths),
        "packets_sent": tuned._packet_number,
        "congestion_window": getattr(recovery._cc, "congestion_window", None),
    }


def peer_address(quic: QuicConnection) -> Any:
    """Return the peer's current network address.

    Args:
        quic: The connection.

    Returns:
        The address tuple, or None before any packet.
    """
    getter = getattr(quic, "get_peer_address", None)
    if getter is not None:
        return getter()
    if enabled("stats"):
        tuned: Any = quic
        paths = tuned._network_paths
        return paths[0].addr if paths else None
    return None


def peer_certificate(quic: QuicConnection) -> x509.Certificate | None:
    """Return the certificate the peer presented in the TLS handshake.

    Args:
        quic: A connection whose handshake completed.

    Returns:
        The certificate, or None when none was presented.

    Raises:
        RuntimeError: The feature is off: the certificate cannot be read.
    """
    if not enabled("peer_certificate"):
        raise RuntimeError(FEATURES["peer_certificate"].reason or "peer_certificate is off")
    return cast(x509.Certificate | None, cast(Any, quic.tls)._peer_certificate)


def selector_socket(transport: Any) -> socket.socket | None:
    """Return the socket of an asyncio selector datagram transport, else None.

    asyncio's selector loop reads one datagram per loop iteration; uvloop reads
    several per poll and hides its socket, so this is None there.

    Args:
        transport: A datagram transport.

    Returns:
        The non-blocking socket to drain, or None.
    """
    if not enabled("batch_reads"):
        return None
    sock = getattr(transport, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


# --------------------------------------------------------------------------- H3Connection


class _StaticTableEncoder:
    """A QPACK encoder that never inserts into the dynamic table.

    We encode one CONNECT request or response per session, so a dynamic table
    saves a few bytes per session, while lsqpack would keep encoder state sized
    to the peer's table (about 4.5 KiB per connection for 4096 bytes). RFC 9204
    section 3.2.3 lets the encoder choose any capacity up to the peer's
    maximum, 0 included, and header blocks referencing only the static table
    never block a stream. A wrapper because `pylsqpack.Encoder` cannot be
    subclassed; aioquic only calls these three methods.
    """

    __slots__ = ("_encoder",)

    def __init__(self, encoder: pylsqpack.Encoder) -> None:
        self._encoder = encoder

    def apply_settings(self, max_table_capacity: int, blocked_streams: int) -> bytes:
        settings: bytes = self._encoder.apply_settings(max_table_capacity=0, blocked_streams=0)
        return settings

    def encode(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
        encoded: tuple[bytes, bytes] = self._encoder.encode(stream_id, headers)
        return encoded

    def feed_decoder(self, data: bytes) -> None:
        self._encoder.feed_decoder(data)


_QPACK_MAX_TABLE_CAPACITY: Final = 0x01
_QPACK_BLOCKED_STREAMS: Final = 0x07
_SET_CAPACITY_ZERO: Final = 0x20
"""The one encoder-stream instruction valid towards a table of capacity 0 (RFC 9204 4.3.1)."""


class _StaticTableDecoder:
    """A QPACK decoder for peers told that our dynamic table holds nothing.

    With SETTINGS_QPACK_MAX_TABLE_CAPACITY and SETTINGS_QPACK_BLOCKED_STREAMS
    at 0 (RFC 9204 section 5), a peer's header blocks reference only the
    static table and can never block, so decoding one keeps no state: a single
    lsqpack decoder serves every connection (lsqpack's is about 4.4 KiB, each
    connection had its own). The encoder stream carries nothing but "Set
    Dynamic Table Capacity 0"; it is parsed here rather than in the shared
    decoder, so no connection's partial instruction meets another's. A header
    block that fails to decode replaces the shared decoder.
    """

    __slots__ = ()

    _shared: ClassVar[pylsqpack.Decoder | None] = None

    def feed_encoder(self, data: bytes) -> list[int]:
        if data.strip(bytes((_SET_CAPACITY_ZERO,))):
            raise pylsqpack.EncoderStreamError("dynamic table instruction with capacity 0")
        return []

    def feed_header(self, stream_id: int, data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        decoder = _StaticTableDecoder._shared
        if decoder is None:
            decoder = _StaticTableDecoder._shared = pylsqpack.Decoder(0, 0)
        try:
            decoded: tuple[bytes, list[tuple[bytes, bytes]]] = decoder.feed_header(stream_id, data)
        except BaseException:
            _StaticTableDecoder._shared = None
            raise
        return decoded

    def resume_header(self, stream_id: int) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        # Only a blocked stream is resumed, and none can block.
        raise pylsqpack.DecompressionFailed("no blocked stream to resume")

    def cancel_stream(self, stream_id: int) -> bytes:
        return b""


_STATIC_DECODER: Final = _StaticTableDecoder()


def _h3_init(self: Any, quic: QuicConnection, extra_settings: dict[int, int]) -> None:
    self.wt_settings = extra_settings
    self.wt_malformed = []
    H3Connection.__init__(self, quic, enable_webtransport=True)
    if enabled("qpack_static"):
        # SETTINGS already left with capacity 0 (see `_get_local_settings`).
        self._encoder = _StaticTableEncoder(self._encoder)
        self._decoder = _STATIC_DECODER
        self._max_table_capacity = self._blocked_streams = 0


def _get_local_settings(self: Any) -> dict[int, int]:
    settings = H3Connection._get_local_settings(self)
    if enabled("qpack_static"):
        settings[_QPACK_MAX_TABLE_CAPACITY] = settings[_QPACK_BLOCKED_STREAMS] = 0
    if enabled("h3_settings"):
        settings.update(self.wt_settings)
    return settings


def _receive_request_or_push_data(
    self: Any, stream: Any, data: bytes, stream_ended: bool
) -> list[h3e.H3Event]:
    try:
        return H3Connection._receive_request_or_push_data(self, stream, data, stream_ended)
    except MessageError:
        if self._is_client:
            raise
        # RFC 9114 section 4.1.2: a malformed request is a stream error, not a
        # connection error (aioquic would close every session on the connection).
        stream.buffer = b""
        stream.receiving_ended = stream.sending_ended = True
        self.wt_malformed.append(stream.stream_id)
        return []


_h3_class: type[H3Connection] | None = None


def _h3_connection_class() -> type[H3Connection]:
    global _h3_class
    if _h3_class is None:
        namespace: dict[str, Any] = {
            "__slots__": ("wt_malformed", "wt_settings"),
            "__module__": __name__,
            "__doc__": "aioquic's H3Connection with the enabled features of this module.",
            "__init__": _h3_init,
        }
        if enabled("h3_settings") or enabled("qpack_static"):
            namespace["_get_local_settings"] = _get_local_settings
        if enabled("malformed_request"):
            namespace["_receive_request_or_push_data"] = _receive_request_or_push_data
        _h3_class = type("H3Connection", (H3Connection,), namespace)
    return _h3_class


def new_h3(quic: QuicConnection, settings: dict[int, int]) -> H3Connection:
    """Create the `H3Connection` of a QUIC connection.

    Args:
        quic: The QUIC connection.
        settings: SETTINGS to announce beyond aioquic's own (every dialect's).

    Returns:
        The HTTP/3 layer (its control streams are opened at once).
    """
    return cast(Callable[..., H3Connection], _h3_connection_class())(quic, settings)


def malformed_requests(h3: H3Connection) -> Iterator[int]:
    """Yield (and forget) the request streams found malformed since the last call.

    Args:
        h3: An H3Connection from `new_h3`.

    Yields:
        Stream ids whose requests were malformed (the caller resets them).
    """
    pending: list[int] | None = getattr(h3, "wt_malformed", None)
    while pending:
        yield pending.pop(0)


_verify()
