"""Session life cycle: open, accept, reject, the graceful close and its end."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

from ...shared.constants import (
    CAPSULE_CLOSE_WEBTRANSPORT_SESSION,
    CAPSULE_DRAIN_WEBTRANSPORT_SESSION,
    MAX_CLOSE_REASON_BYTES,
    ErrorCodes,
)
from ...shared.exceptions import FlowControlError, StreamError
from ...shared.types import ConnectionState, SessionState
from ...shared.utils import encode_varint
from .capsules import encode_capsule
from .dialects import Dialect
from .events import SessionClosed, SessionEstablished
from .flow import SessionFlow
from .headers import build_request, build_response
from .held import HeldLayer
from .records import SessionMove, SessionRecord


class SessionLayer(HeldLayer):
    """Sessions (see `base` for how the layers fit)."""

    __slots__ = ()

    def _new_session(self, session_id: int, dialect: Dialect) -> SessionRecord:
        session = SessionRecord(session_id, is_client=self.is_client, dialect=dialect)
        session.datagram_prefix = encode_varint(session_id // 4)
        if dialect.flow_control:
            session.flow = SessionFlow(self.limits, self.quic.peer_settings or {})
        self.sessions[session_id] = session
        return session

    def open_session(
        self,
        *,
        authority: str,
        path: str,
        dialect: Dialect,
        headers: Iterable[tuple[str | bytes, str | bytes]] = (),
        protocols: Sequence[str] = (),
    ) -> SessionRecord:
        """Send a CONNECT request for a new session (client side).

        Args:
            authority: The `:authority` (host:port).
            path: The `:path` (with query).
            dialect: The dialect to speak (see `dialects.choose_dialect`).
            headers: Extra request headers.
            protocols: Subprotocols offered, in preference order.

        Returns:
            The new session, connecting.

        Raises:
            HeaderError: A header is not valid in HTTP/3 (nothing was sent).
        """
        request = build_request(
            authority=authority, path=path, dialect=dialect, headers=headers, protocols=protocols
        )
        stream_id = self.quic.next_stream_id(False)
        self._http3.add(stream_id)
        session = self._new_session(stream_id, dialect)
        session.path = path
        session.authority = authority
        session.offered_protocols = list(protocols)
        self.quic.send_headers(stream_id, request, False)
        self.want_transmit = True
        return session

    def accept(
        self,
        session: SessionRecord,
        *,
        protocol: str | None = None,
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        """Accept a requested session with a 200 answer (server side).

        Reports `SessionEstablished`, then delivers the streams that arrived
        for it before (`StreamOpened`).

        Args:
            session: The session from `SessionRequested`.
            protocol: The selected subprotocol (answered as `wt-protocol`).
            headers: Extra response headers.
        """
        if session.state is not SessionState.CONNECTING or self.is_client:
            return
        response = build_response(session.dialect, protocol=protocol, headers=headers)
        self.quic.send_headers(session.session_id, response, False)
        session.protocol = protocol
        session.move(SessionMove.ESTABLISH)
        self.want_transmit = True
        self._events.append(SessionEstablished(session))
        self._release_held(session)

    def choose_protocol(self, session: SessionRecord, protocol: str | None) -> None:
        """Choose the subprotocol a requested session's answer selects (server side).

        Args:
            session: The session from `SessionRequested`, not accepted yet.
            protocol: One of the protocols the client offered, or None for none.

        Raises:
            ValueError: The client did not offer it, or the session was already
                answered (or this is the client).
        """
        if self.is_client or session.state is not SessionState.CONNECTING:
            raise ValueError("only the server chooses a subprotocol, before it accepts")
        if protocol is not None and protocol not in (session.offered_protocols or ()):
            raise ValueError(
                f"subprotocol {protocol!r} was not offered by the client "
                f"(offered: {session.offered_protocols or []})"
            )
        session.protocol = protocol

    def reject(self, session: SessionRecord, status_code: int) -> None:
        """Refuse a requested session with an HTTP status (server side).

        Args:
            session: The session from `SessionRequested`.
            status_code: A non-2xx HTTP status.
        """
        if session.state is not SessionState.CONNECTING or self.is_client:
            return
        self._answer(session.session_id, status_code)
        session.fin_sent = True
        self._end_session(session, status_code, "rejected", by_peer=False, clean=True)

    def close_session(self, session: SessionRecord, error_code: int = 0, reason: str = "") -> None:
        """Close a session: CLOSE_WEBTRANSPORT_SESSION, then FIN, then reset its streams.

        A session not established yet is cancelled instead: a client resets
        its CONNECT stream, a server answers 500.

        Args:
            session: The session.
            error_code: Application error code (0..2**32-1).
            reason: UTF-8 reason, cut to 1024 bytes.
        """
        self._close(session, error_code, reason, by_peer=False, clean=True)

    def begin_close(self, session: SessionRecord) -> bool:
        """Start a graceful close: no new streams or datagrams, written data goes on.

        The session moves to CLOSING. Its streams keep sending what was
        written; `writes_delivered` tells when the peer has all of it, and
        `close_session` then sends the close capsule (draft section 6: a peer
        resets and stops every stream of a session it learns is closed, so
        data still in flight then would be lost).

        Args:
            session: The session.

        Returns:
            True when the session is closing (now or already) and there may be
            something to wait for; False when `close_session` may follow at
            once (not established yet, or closed).
        """
        if session.state is SessionState.CLOSING:
            return True
        if not session.is_established:
            return False
        session.move(SessionMove.FINISH)
        return True

    def writes_delivered(self, session: SessionRecord) -> bool:
        """Return whether the peer acknowledged every stream this side finished.

        A stream counts once its FIN was acknowledged, or once it was reset or
        stopped (its writer was told). Streams still being written (no FIN)
        are not waited for: the close resets them.

        Args:
            session: The session.

        Returns:
            The answer (always True for a session no longer open).
        """
        if not session.is_open:
            return True
        if not self.quic.tracks_delivery:
            return False  # unknowable: the close waits for its bound
        quic = self.quic
        for rec in session.streams.values():
            if rec.fin_sent and rec.write_error is None and not quic.send_finished(rec.stream_id):
                return False
        self._prune_unacked()
        return session not in self._unacked.values()

    def _close(
        self, session: SessionRecord, code: int, reason: str, *, by_peer: bool, clean: bool
    ) -> None:
        if session.is_closed:
            return
        sid = session.session_id
        if session.is_open:
            if not session.fin_sent:
                encoded = reason.encode("utf-8")[:MAX_CLOSE_REASON_BYTES]
                encoded = encoded.decode("utf-8", "ignore").encode("utf-8")
                payload = (code & 0xFFFFFFFF).to_bytes(4, "big") + encoded
                session.fin_sent = True
                with contextlib.suppress(*self.quic.refusals):  # the stream may be reset meanwhile
                    self.quic.send_data(
                        sid, encode_capsule(CAPSULE_CLOSE_WEBTRANSPORT_SESSION, payload), True
                    )
        elif self.is_client:
            session.fin_sent = True
            self._safe_reset(sid, ErrorCodes.H3_REQUEST_CANCELLED)
        else:
            self._answer(sid, 500)
            session.fin_sent = True
        self.want_transmit = True
        self._end_session(session, code, reason, by_peer=by_peer, clean=clean)

    def drain_session(self, session: SessionRecord) -> None:
        """Send DRAIN_WEBTRANSPORT_SESSION: ask the peer to wrap up the session.

        Args:
            session: The session.
        """
        if not session.is_established or session.fin_sent:
            return
        self._send_raw_capsule(session, encode_capsule(CAPSULE_DRAIN_WEBTRANSPORT_SESSION, b""))

    def _end_session(
        self,
        session: SessionRecord,
        code: int,
        reason: str,
        *,
        by_peer: bool,
        clean: bool,
        stream_error: StreamError | None = None,
    ) -> None:
        if session.is_closed:
            return
        session.move(SessionMove.CLOSE)
        session.close_code = code
        session.close_reason = reason
        session.closed_by_peer = by_peer
        session.closed_cleanly = clean
        sid = session.session_id
        if not session.fin_sent:
            session.fin_sent = True
            with contextlib.suppress(*self.quic.refusals):
                self.quic.send_data(sid, b"", True)
        error = stream_error
        if error is None and code == ErrorCodes.WT_FLOW_CONTROL_ERROR:
            # Either side found a session flow-control limit overstepped (draft-15).
            error = FlowControlError(
                f"session {sid} closed: {reason or 'flow control violated'}",
                error_code=ErrorCodes.WT_FLOW_CONTROL_ERROR,
                remote=by_peer,
            )
        if error is None:
            error = StreamError(
                f"session {sid} closed",
                error_code=ErrorCodes.WT_SESSION_GONE,
                remote=by_peer,
            )
        for rec in list(session.streams.values()):
            if stream_error is None:
                # draft §6: streams of a closed session are reset / stopped with SESSION_GONE.
                if rec.writable and not rec.write_done:
                    self._safe_reset(rec.stream_id, ErrorCodes.WT_SESSION_GONE)
                if rec.readable and not rec.read_done and not rec.fin_received:
                    self._safe_stop(rec.stream_id, ErrorCodes.WT_SESSION_GONE)
                    self._refused[rec.stream_id] = None
            # A stream whose FIN arrived holds all its data: the reader still gets
            # it. Nothing is left to abort on the wire (its receiving half is
            # complete), so this departs from the draft's "abort reading" only
            # locally, and it is what makes write-then-close deliver.
            if not rec.fin_received:
                rec.read_done = True
                if rec.read_error is None:
                    rec.read_error = error
            elif rec.buffered == 0:
                rec.read_done = True
            if rec.write_error is None and not rec.fin_sent:
                rec.write_error = error
            rec.write_done = True
            self._forget(rec)
        self._drop_held(sid, ErrorCodes.WT_SESSION_GONE)
        if self._unacked:
            for stream_id in [i for i, s in self._unacked.items() if s is session]:
                del self._unacked[stream_id]
        self._datagram_backlog.pop(sid, None)
        session.outgoing = None
        del self.sessions[sid]
        self._remember_ended(sid)
        self.want_transmit = True
        self._events.append(SessionClosed(session))

    def handshake_completed(self) -> None:
        """Take QUIC's HandshakeCompleted event: the connection is CONNECTED."""
        if self.state is ConnectionState.CONNECTING:
            self.state = ConnectionState.CONNECTED

    def begin_closing(self) -> bool:
        """Move the connection to CLOSING: a close (graceful or on an error) began.

        Returns:
            False when it was closing or closed already.
        """
        if self.state in (ConnectionState.CLOSING, ConnectionState.CLOSED):
            return False
        self.state = ConnectionState.CLOSING
        return True

    def terminate(self, error_code: int, reason: str) -> None:
        """Take QUIC's ConnectionTerminated: the connection is CLOSED, every session with it.

        The first close code and reason known (a connection error found here,
        else these) stay the connection's `close_reason`.

        Args:
            error_code: The connection's close code.
            reason: Its reason phrase.
        """
        if self.close_reason is None:
            self.close_reason = (error_code, reason)
        self.state = ConnectionState.CLOSED
        self._end_all_sessions(error_code, reason)

    def _end_all_sessions(self, error_code: int, reason: str) -> None:
        error = StreamError(f"connection closed: {reason or 'no reason'}", error_code=error_code)
        for session in list(self.sessions.values()):
            session.fin_sent = True
            self._end_session(
                session,
                error_code,
                reason or "connection lost",
                by_peer=True,
                clean=False,
                stream_error=error,
            )

    def _answer(self, stream_id: int, status: int) -> None:
        self._http3.discard(stream_id)
        try:
            self.quic.send_headers(stream_id, [(b":status", str(status).encode())], True)
        except self.quic.refusals:  # the request stream is gone or already answered
            self._safe_reset(stream_id, ErrorCodes.H3_REQUEST_REJECTED)
        self.want_transmit = True
