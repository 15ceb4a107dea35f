"""Verification at import: every feature's internals and digests, the environment, the warnings."""

from __future__ import annotations

import inspect
import logging
import warnings
from typing import Any, Final

import pylsqpack
from aioquic.h3.connection import H3Connection
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionId
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketPacer, QuicPacketSpace
from aioquic.quic.stream import QuicStream

from .checks import Mismatch, has, logic_digest, params, require
from .features import AIOQUIC_VERSION, FEATURES, Feature, apply_environment
from .h3 import QPACK_BLOCKED_STREAMS, QPACK_MAX_TABLE_CAPACITY
from .scheduling import check_stream_scheduling

logger = logging.getLogger("pywebtransport.aioquic")


DIGESTS: Final[dict[str, frozenset[str]]] = {
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


def aioquic_function(name: str) -> Any:
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
    require(function is not None, f"aioquic's {name} is missing")
    return function


def check_digests(feature: Feature) -> None:
    for name in feature.relies_on:
        function = aioquic_function(name)
        try:
            digest = logic_digest(function)
        except (OSError, TypeError, SyntaxError) as exc:
            raise Mismatch(f"cannot read aioquic's {name}: {exc}") from exc
        require(digest in DIGESTS[name], f"aioquic's {name} differs from 1.7's")


def _prototype() -> tuple[QuicConnection, QuicStream, H3Connection]:
    quic = QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=["h3"]))
    stream = QuicStream(stream_id=0, max_stream_data_local=1024, max_stream_data_remote=1024)
    h3 = H3Connection(quic, enable_webtransport=True)
    return quic, stream, h3


def _check(name: str, quic: QuicConnection, stream: QuicStream, h3: H3Connection) -> None:
    # One branch per feature: the internals it reads or replaces.
    cls = QuicConnection
    if name == "stream_window":
        params(cls._write_stream_limits, "builder", "space", "stream")
        has(cls, "_on_max_stream_data_delivery")
        has(stream, "max_stream_data_local", "max_stream_data_local_sent", "receiver")
        has(stream.receiver, "highest_offset")
        has(quic, "_streams")
        params(QuicPacketBuilder.start_frame, "frame_type", "capacity", "handler", "handler_args")
    elif name == "stream_state":
        has(quic, "_streams")
        require(isinstance(quic._streams, dict), "QuicConnection._streams is not a dict")
        has(stream.sender, "_buffer", "buffer_is_empty", "is_finished", "highest_offset")
        require(isinstance(stream.sender._buffer, bytearray), "sender._buffer is not a bytearray")
        has(stream.receiver, "_final_size")
        require(stream.receiver._final_size is None, "receiver._final_size is not None at first")
    elif name == "datagram_queue":
        has(quic, "_datagrams_pending")
        require(len(quic._datagrams_pending) == 0, "_datagrams_pending is not a sized queue")
    elif name == "stream_credit":
        has(
            quic,
            "_local_next_stream_id_bidi",
            "_local_next_stream_id_uni",
            "_remote_max_streams_bidi",
            "_remote_max_streams_uni",
        )
    elif name == "stream_limits":
        for limit in (quic._local_max_streams_bidi, quic._local_max_streams_uni):
            has(limit, "value", "sent")
        # aioquic before 1.7 doubled stream limits as they filled: a peer could open
        # streams without bound whatever the limit. 1.7 re-credits finished streams.
        try:
            source = inspect.getsource(cls._write_connection_limits)
        except (OSError, TypeError) as exc:
            raise Mismatch("cannot read _write_connection_limits") from exc
        require("limit.used * 2" not in source, "aioquic doubles stream limits (before 1.7)")
    elif name == "pacer":
        pacer = quic._loss._pacer
        require(type(pacer) is QuicPacketPacer, "the pacer is not a QuicPacketPacer")
        has(pacer, "_max_datagram_size", "bucket_max", "bucket_time", "packet_time")
        params(QuicPacketPacer.update_rate, "congestion_window", "smoothed_rtt")
    elif name == "stream_scheduling":
        check_stream_scheduling(quic, stream)
    elif name == "frame_table":
        handlers = quic.__dict__.get("_QuicConnection__frame_handlers")
        require(isinstance(handlers, dict) and handlers, "no per-connection frame-handler dict")
        assert isinstance(handlers, dict)
        for handler, epochs in handlers.values():
            require(inspect.ismethod(handler), "a frame handler is not a bound method")
            require(isinstance(epochs, frozenset), "frame handler epochs are not a frozenset")
    elif name in ("connection_ids", "cid_routing"):
        params(cls._replenish_connection_ids)
        has(quic, "host_cid", "_local_initial_source_connection_id")
        has(
            quic,
            "_host_cids",
            "_host_cid_seq",
            "_remote_active_connection_id_limit",
            "_local_active_connection_id_limit",
            "_configuration",
        )
        params(QuicConnectionId, "cid", "sequence_number", "stateless_reset_token", "was_sent")
    elif name == "tls_release":
        has(quic, "_crypto_buffers", "_is_client", "_session_ticket_handler", "_quic_logger")
        has(quic, "_cryptos", "_cryptos_initial", "_spaces")
        pair = CryptoPair()
        has(pair.recv, "_setup_cb", "_teardown_cb", "is_valid")
        require(not pair.recv.is_valid(), "a new CryptoPair has valid keys")
        require(isinstance(quic._crypto_buffers, dict), "_crypto_buffers is not a dict")
        context = _tls_context_class()
        has(context, "_ec_private_keys", "_x25519_private_key", "_x448_private_key")
    elif name == "qpack_static":
        has(h3, "_encoder", "_decoder", "_max_table_capacity", "_blocked_streams")
        require(isinstance(h3._encoder, pylsqpack.Encoder), "H3Connection._encoder changed")
        require(isinstance(h3._decoder, pylsqpack.Decoder), "H3Connection._decoder changed")
        params(H3Connection._get_local_settings)
        local = h3._get_local_settings()
        require(
            {QPACK_MAX_TABLE_CAPACITY, QPACK_BLOCKED_STREAMS} <= set(local),
            "H3Connection._get_local_settings has no QPACK settings",
        )
    elif name == "h3_settings":
        params(H3Connection._get_local_settings)
        require(isinstance(h3._get_local_settings(), dict), "_get_local_settings changed")
    elif name == "early_settings":
        params(cls._unblock_streams, "is_unidirectional")
    elif name == "malformed_request":
        params(H3Connection._receive_request_or_push_data, "stream", "data", "stream_ended")
        has(h3, "_is_client")
    elif name == "stats":
        has(quic, "_loss", "_network_paths", "_packet_number")
        has(quic._loss, "_rtt_smoothed", "_rtt_min", "_rtt_latest", "_cc")
    elif name == "datagram_limit":
        has(quic, "_remote_max_datagram_frame_size", "_max_datagram_size")
    elif name == "peer_certificate":
        has(_tls_context_class(), "_peer_certificate")
    elif name == "prompt_acks":
        has(quic, "_spaces")
        has(QuicPacketSpace(), "ack_at", "ack_queue")
    elif name == "batch_reads":
        pass  # checked per transport: `selector_socket` finds the socket or returns None


def _tls_context_class() -> Any:
    from aioquic import tls

    # Instance attributes are set in __init__: read them off a throwaway client context.
    return tls.Context(is_client=True)


def verify_features() -> None:
    apply_environment()
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
                raise Mismatch(failure)
            _check(feature.name, *prototype)
            check_digests(feature)
        except (Mismatch, AttributeError, TypeError) as exc:
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
