"""The state of sessions and streams: one record each, owned by `WebTransportCore`.

The protocol creates, changes and forgets records; the asyncio layer reads
them (through the public session and stream objects) and parks its waiters in
the slots marked "I/O layer", which the protocol never touches.

Session states follow a transition table, as data (h11 style): a move not in
`SESSION_TRANSITIONS` is a bug in the caller and raises `RuntimeError`.

    CONNECTING --established--> CONNECTED --drain--> DRAINING
         |                          |                   |
         +--------closed------------+------closed-------+--> CLOSED
"""

from __future__ import annotations

import copy
import enum
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from ...shared.exceptions import StreamError
from ...shared.types import SessionState

if TYPE_CHECKING:
    from .dialects import Dialect
    from .flow import SessionFlow
    from .headers import ConnectRequest, PlainRequest

__all__ = [
    "SESSION_TRANSITIONS",
    "ExchangeRecord",
    "HeldStream",
    "SessionMove",
    "SessionRecord",
    "StreamIds",
    "StreamRecord",
    "fresh",
]


def fresh(error: StreamError) -> StreamError:
    """Return a copy of a stored error, to raise.

    A stream keeps the error that ended a half and raises it on every later
    call. Raising the stored instance itself would chain each traceback onto
    it, and the frames of those tracebacks (the application's, holding the
    stream object) would live as long as the stream's record: the stream
    could never be let go of and closed.

    Args:
        error: The stored error.

    Returns:
        An equal error with no traceback.
    """
    return copy.copy(error).with_traceback(None)


class SessionMove(enum.Enum):
    """What can happen to a session."""

    ESTABLISH = "establish"
    DRAIN = "drain"
    FINISH = "finish"
    CLOSE = "close"


class StreamBlocker(enum.Enum):
    """Whose stream credit keeps a session from opening another stream."""

    QUIC = "QUIC"
    """The connection's: the peer's MAX_STREAMS."""
    SESSION = "session"
    """The session's (draft-15 flow control): the peer's WT_MAX_STREAMS."""


SESSION_TRANSITIONS: Final[dict[SessionState, dict[SessionMove, SessionState]]] = {
    SessionState.CONNECTING: {
        SessionMove.ESTABLISH: SessionState.CONNECTED,
        SessionMove.CLOSE: SessionState.CLOSED,
    },
    SessionState.CONNECTED: {
        SessionMove.DRAIN: SessionState.DRAINING,
        SessionMove.FINISH: SessionState.CLOSING,
        SessionMove.CLOSE: SessionState.CLOSED,
    },
    SessionState.DRAINING: {
        SessionMove.DRAIN: SessionState.DRAINING,
        SessionMove.FINISH: SessionState.CLOSING,
        SessionMove.CLOSE: SessionState.CLOSED,
    },
    SessionState.CLOSING: {
        SessionMove.DRAIN: SessionState.CLOSING,
        SessionMove.CLOSE: SessionState.CLOSED,
    },
    SessionState.CLOSED: {},
}
"""Legal session moves: state -> move -> next state."""


class SessionRecord:
    """One WebTransport session: its CONNECT stream, dialect, streams and flow control.

    Attributes:
        session_id: The CONNECT stream id.
        is_client: Which side we are.
        dialect: The draft spoken on this session.
        state: Where the session is in `SESSION_TRANSITIONS`.
        request: The CONNECT the server received (server side), else None.
        path: `:path` of the request.
        authority: `:authority` of the request.
        headers: Request headers (server side) or response headers (client side).
        offered_protocols: Subprotocols the client offered.
        protocol: The selected subprotocol, or None.
        streams: Open streams of the session (held ones included), by id.
        flow: Session flow control (draft-15), or None.
        datagram_prefix: The quarter stream id that starts each of its datagrams.
        capsules: Unparsed bytes of the CONNECT stream.
        outgoing: Datagrams queued for sending, as (time queued, payload).
        datagrams_send_dropped: Queued datagrams dropped because the queue was full.
        datagrams_expired: Queued datagrams dropped for being older than the maximum age.
        close_received: The peer's (code, reason) from CLOSE_WEBTRANSPORT_SESSION.
        fin_sent: Whether our side of the CONNECT stream is finished.
        close_code: Application code the session closed with.
        close_reason: Reason it closed with.
        closed_by_peer: True when the peer ended the session.
        closed_cleanly: False for a reset, a protocol error or a lost connection.
        rejected_with: Client side: the HTTP status that refused our CONNECT, if it was.
        owner: I/O layer: the public session object.
        ready: I/O layer: future resolved when the session is established.
        ended: I/O layer: future resolved with the close info when the session ends.
        incoming_bidi: I/O layer: accepted bidirectional streams not taken yet.
        incoming_uni: I/O layer: accepted unidirectional streams not taken yet.
        incoming_waiter: I/O layer: future of tasks waiting for an incoming stream.
        datagrams: I/O layer: received datagrams not read yet.
        datagram_waiter: I/O layer: future of a task waiting for a datagram.
        credit_waiters: I/O layer: futures waiting for session flow-control credit.
        counters: I/O layer: the session's statistics counters.
        send_waiters: I/O layer: futures of senders waiting for the datagram queue.
        emitter: I/O layer: the session's event emitter, once created.
    """

    __slots__ = (
        "authority",
        "capsules",
        "close_code",
        "close_reason",
        "close_received",
        "closed_by_peer",
        "closed_cleanly",
        "counters",
        "credit_waiters",
        "datagram_prefix",
        "datagram_waiter",
        "datagrams",
        "datagrams_expired",
        "datagrams_send_dropped",
        "dialect",
        "emitter",
        "ended",
        "fin_sent",
        "flow",
        "headers",
        "incoming_bidi",
        "incoming_uni",
        "incoming_waiter",
        "is_client",
        "offered_protocols",
        "outgoing",
        "owner",
        "path",
        "protocol",
        "ready",
        "rejected_with",
        "request",
        "send_waiters",
        "session_id",
        "state",
        "streams",
    )

    def __init__(self, session_id: int, *, is_client: bool, dialect: Dialect) -> None:
        self.session_id = session_id
        self.is_client = is_client
        self.dialect = dialect
        self.state = SessionState.CONNECTING
        self.request: ConnectRequest | None = None
        self.path = ""
        self.authority = ""
        self.headers: list[tuple[bytes, bytes]] = []
        self.offered_protocols: list[str] = []
        self.protocol: str | None = None
        self.streams: dict[int, StreamRecord] = {}
        self.flow: SessionFlow | None = None
        self.datagram_prefix = b""
        self.capsules: bytearray | None = None
        self.outgoing: deque[tuple[float, bytes]] | None = None
        self.datagrams_send_dropped = 0
        self.datagrams_expired = 0
        self.close_received: tuple[int, str] | None = None
        self.fin_sent = False
        self.close_code = 0
        self.close_reason = ""
        self.closed_by_peer = False
        self.closed_cleanly = True
        self.rejected_with: int | None = None
        self.owner: Any = None
        self.ready: Any = None
        self.ended: Any = None
        self.incoming_bidi: Any = None
        self.incoming_uni: Any = None
        self.incoming_waiter: Any = None
        self.datagrams: Any = None
        self.datagram_waiter: Any = None
        self.credit_waiters: Any = None
        self.counters: dict[str, int] = {}
        self.send_waiters: Any = None
        self.emitter: Any = None

    @property
    def is_established(self) -> bool:
        """True while the session is connected or draining."""
        return self.state is SessionState.CONNECTED or self.state is SessionState.DRAINING

    @property
    def is_open(self) -> bool:
        """True while the session carries data: established, or closing gracefully.

        A closing session no longer opens streams or sends datagrams, but its
        streams still deliver what was written and it still receives.
        """
        return self.is_established or self.state is SessionState.CLOSING

    @property
    def is_closed(self) -> bool:
        """True once the session ended."""
        return self.state is SessionState.CLOSED

    def move(self, move: SessionMove) -> None:
        """Apply a transition of `SESSION_TRANSITIONS`.

        Args:
            move: What happened.

        Raises:
            RuntimeError: The move is not legal in the current state.
        """
        target = SESSION_TRANSITIONS[self.state].get(move)
        if target is None:
            raise RuntimeError(f"session {self.session_id}: cannot {move.value} when {self.state}")
        self.state = target

    def __repr__(self) -> str:
        return f"<SessionRecord {self.session_id} {self.state.value} {self.dialect.name}>"


class StreamRecord:
    """One WebTransport stream: both halves, its receive buffer and credit.

    A half that does not exist (the receiving half of a stream we opened
    unidirectionally, the sending half of a peer's unidirectional stream)
    starts done.

    Attributes:
        stream_id: The QUIC stream id.
        session: The session it belongs to.
        unidirectional: True for a unidirectional stream.
        local: True when we opened it.
        chunks: Received data not read yet, in order.
        buffered: Total bytes in `chunks`.
        fin_received: The peer finished sending (all data is in `chunks` or read).
        read_error: Why reading failed (peer reset, local stop, session or connection end).
        read_done: No read will return more data.
        consumed: Bytes the application read (the base of its receive credit).
        window_sent: The receive limit last granted (MAX_STREAM_DATA), -1 when
            the window is left to aioquic.
        fin_sent: We finished sending.
        queued: Data bytes handed to QUIC on the sending half (what draft-15
            session flow control counted for it).
        reset_sent: We reset the sending half.
        reset_received: The peer reset its sending half.
        write_error: Why writing failed (peer STOP_SENDING, local reset, session end).
        write_done: No more data will be sent.
        reader: I/O layer: the future a reader waits on.
        writers: I/O layer: futures of writers waiting for the buffer to drain.
        owner: I/O layer: the public stream object.
        emitter: I/O layer: the stream's event emitter, once created.
    """

    __slots__ = (
        "_owner",
        "buffered",
        "chunks",
        "consumed",
        "emitter",
        "fin_received",
        "fin_sent",
        "header_size",
        "local",
        "queued",
        "read_done",
        "read_error",
        "reader",
        "reset_received",
        "reset_sent",
        "session",
        "stream_id",
        "unidirectional",
        "window_sent",
        "write_done",
        "write_error",
        "writers",
    )

    def __init__(
        self, stream_id: int, session: SessionRecord, *, unidirectional: bool, local: bool
    ) -> None:
        self.stream_id = stream_id
        self.session = session
        self.unidirectional = unidirectional
        self.local = local
        readable = not (unidirectional and local)
        writable = not (unidirectional and not local)
        self.chunks: deque[bytes] = deque() if readable else _NO_CHUNKS
        self.buffered = 0
        self.fin_received = False
        self.read_error: StreamError | None = None
        self.read_done = not readable
        self.consumed = 0
        self.window_sent = -1
        self.fin_sent = False
        self.header_size = 0
        self.queued = 0
        """Bytes of the stream header before the data received (peer streams)."""
        self.reset_sent = False
        self.reset_received = False
        self.write_error: StreamError | None = None
        self.write_done = not writable
        self.reader: Any = None
        self.writers: list[Any] | None = None
        self._owner: weakref.ref[Any] | None = None
        self.emitter: Any = None

    @property
    def readable(self) -> bool:
        """True when the stream has a receiving half."""
        return not (self.unidirectional and self.local)

    @property
    def writable(self) -> bool:
        """True when the stream has a sending half."""
        return not (self.unidirectional and not self.local)

    @property
    def is_finished(self) -> bool:
        """True when both halves are done."""
        return self.read_done and self.write_done

    @property
    def owner(self) -> Any:
        """The application's stream object, while the application holds it (else None).

        Held weakly: a stream the application let go of can be cleaned up
        (`ConnectionEngine.abandon_stream`) rather than kept open forever.
        """
        ref = self._owner
        return None if ref is None else ref()

    @owner.setter
    def owner(self, owner: Any) -> None:
        self._owner = None if owner is None else weakref.ref(owner)

    def check_writable(self) -> None:
        """Raise unless data may still be queued on the sending half.

        Raises:
            StreamError: The sending half is finished, reset or stopped by the peer.
        """
        if self.write_error is not None:
            raise fresh(self.write_error)
        if self.write_done:
            raise StreamError(
                f"stream {self.stream_id} is closed for writing (write after close)",
                stream_id=self.stream_id,
                remote=False,
            )

    def take(self, max_bytes: int) -> bytes:
        """Remove up to `max_bytes` buffered bytes (all when negative) from the front.

        Args:
            max_bytes: Upper bound; negative for everything buffered.

        Returns:
            The bytes (empty when nothing is buffered).
        """
        chunks = self.chunks
        if max_bytes < 0 or max_bytes >= self.buffered:
            if len(chunks) == 1:
                data = chunks.popleft()
            else:
                data = b"".join(chunks)
                chunks.clear()
        else:
            first = chunks[0]
            if len(first) > max_bytes:
                data = first[:max_bytes]
                chunks[0] = first[max_bytes:]
            else:
                parts = []
                need = max_bytes
                while need:
                    chunk = chunks[0]
                    if len(chunk) <= need:
                        parts.append(chunks.popleft())
                        need -= len(chunk)
                    else:
                        parts.append(chunk[:need])
                        chunks[0] = chunk[need:]
                        need = 0
                data = b"".join(parts)
        self.buffered -= len(data)
        return data

    def contiguous(self) -> bytes:
        """Join the buffered chunks into one and return it (nothing is consumed).

        Returns:
            Every buffered byte.
        """
        chunks = self.chunks
        if len(chunks) > 1:
            joined = b"".join(chunks)
            chunks.clear()
            chunks.append(joined)
        return chunks[0] if chunks else b""

    def __repr__(self) -> str:
        kind = "uni" if self.unidirectional else "bidi"
        return f"<StreamRecord {self.stream_id} {kind} session={self.session.session_id}>"


class ExchangeRecord:
    """One plain HTTP/3 request and its response (server side, `serve_http`).

    Attributes:
        stream_id: The request stream.
        request: The request's line and headers.
        chunks: Request body received and not read yet, in order.
        buffered: Total bytes in `chunks`.
        received: Bytes of the request stream seen (frames included): the base
            of the credit granted back as the body is read.
        window_sent: The receive limit last granted, -1 when aioquic manages it.
        body_ended: The peer finished the request (all of the body is in `chunks` or read).
        response_started: The response's HEADERS were sent.
        response_ended: The response is complete (or abandoned).
        error: Why the exchange ended early (the peer reset or stopped the stream,
            the connection closed); set once.
        reader: I/O layer: the future a body reader waits on.
        writers: I/O layer: futures of body writers waiting for the buffer to drain.
    """

    __slots__ = (
        "body_ended",
        "buffered",
        "chunks",
        "error",
        "reader",
        "received",
        "request",
        "response_ended",
        "response_started",
        "stream_id",
        "window_sent",
        "writers",
    )

    def __init__(self, stream_id: int, request: PlainRequest) -> None:
        self.stream_id = stream_id
        self.request = request
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.received = 0
        self.window_sent = -1
        self.body_ended = False
        self.response_started = False
        self.response_ended = False
        self.error: StreamError | None = None
        self.reader: Any = None
        self.writers: list[Any] | None = None

    @property
    def write_error(self) -> StreamError | None:
        """Why writing the response failed (the I/O layer's name for `error`)."""
        return self.error

    @property
    def done(self) -> bool:
        """Whether nothing more can happen on the exchange."""
        return self.error is not None or (self.body_ended and self.response_ended)

    def __repr__(self) -> str:
        return f"<ExchangeRecord {self.stream_id} {self.request.method} {self.request.path!r}>"


_NO_CHUNKS: Final[deque[bytes]] = deque(maxlen=0)
"""The (always empty) receive buffer of a stream without a receiving half."""


@dataclass(slots=True)
class HeldStream:
    """A peer stream that arrived before its session was established (draft section 4.6)."""

    unidirectional: bool
    since: float
    data: bytearray = field(default_factory=bytearray)
    fin: bool = False
    header_size: int = 0


class StreamIds:
    """The peer stream ids seen so far, kept compact: everything below a mark plus the rest.

    Peers open streams in order, so the set of seen ids is almost always a
    contiguous run; late data for a stream we already forgot is then told
    apart from a new stream without remembering every id.
    """

    __slots__ = ("_above", "_next")

    def __init__(self, first: int) -> None:
        self._next = first
        """Every id of this kind below this one was seen."""
        self._above: set[int] = set()

    def add(self, stream_id: int) -> bool:
        """Record an id.

        Args:
            stream_id: A stream id of this tracker's kind (same low two bits).

        Returns:
            True when it was not seen before.
        """
        if stream_id < self._next or stream_id in self._above:
            return False
        if stream_id == self._next:
            self._next += 4
            above = self._above
            while self._next in above:
                above.discard(self._next)
                self._next += 4
        else:
            self._above.add(stream_id)
        return True

    def __contains__(self, stream_id: object) -> bool:
        return isinstance(stream_id, int) and (stream_id < self._next or stream_id in self._above)
