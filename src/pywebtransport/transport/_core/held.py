"""Peer streams that arrive before their session is established (draft section 4.6)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ...shared.constants import ErrorCodes
from .halves import StreamLayer
from .records import HeldStream, SessionRecord

_MAX_ENDED_SESSIONS: Final = 1024
"""Ended session ids remembered exactly; older ones are told apart by their id."""


class HeldLayer(StreamLayer):
    """Holding early peer streams (see `base` for how the layers fit)."""

    __slots__ = ()

    if TYPE_CHECKING:

        def _deliver(
            self,
            session: SessionRecord,
            stream_id: int,
            unidirectional: bool,
            data: bytes,
            fin: bool,
            header_size: int,
        ) -> None: ...

    def _claim(
        self,
        session_id: int,
        stream_id: int,
        unidirectional: bool,
        data: bytes,
        fin: bool,
        header_size: int,
    ) -> None:
        session = self.sessions.get(session_id)
        if session is not None and session.is_open:
            self._deliver(session, stream_id, unidirectional, data, fin, header_size)
            return
        if session is None and self._session_ended(session_id):
            self._refuse(stream_id, unidirectional, ErrorCodes.WT_SESSION_GONE)
            return
        held_here = self._held.get(session_id)
        if (
            self._held_count >= self._max_held_streams
            or (held_here is not None and len(held_here) >= self._max_held_per_session)
            or len(data) > self._max_held_bytes
        ):
            self._refuse(stream_id, unidirectional, ErrorCodes.WT_BUFFERED_STREAM_REJECTED)
            return
        # The CONNECT (or its answer) may still be on its way: hold the stream.
        self._held.setdefault(session_id, {})[stream_id] = HeldStream(
            unidirectional, self.now, bytearray(data), fin, header_size
        )
        self._held_count += 1

    @property
    def held_count(self) -> int:
        """Peer streams held for sessions that are not established yet."""
        return self._held_count

    def expire_held(self, before: float) -> None:
        """Refuse held streams that arrived before `before` (their session never came).

        Args:
            before: Streams held since earlier than this are refused with
                WT_BUFFERED_STREAM_REJECTED.
        """
        for session_id, held in list(self._held.items()):
            for stream_id, entry in list(held.items()):
                if entry.since < before:
                    del held[stream_id]
                    self._held_count -= 1
                    code = ErrorCodes.WT_BUFFERED_STREAM_REJECTED
                    self._refuse(stream_id, entry.unidirectional, code)
            if not held:
                del self._held[session_id]

    def _is_held(self, stream_id: int) -> bool:
        return any(stream_id in held for held in self._held.values())

    def _hold_more(self, stream_id: int, data: bytes, fin: bool) -> None:
        for session_id, held in self._held.items():
            entry = held.get(stream_id)
            if entry is None:
                continue
            if len(entry.data) + len(data) > self._max_held_bytes:
                # Held streams are not flow-controlled by a reader: cap what each may buffer.
                del held[stream_id]
                self._held_count -= 1
                if not held:
                    del self._held[session_id]
                self._refuse(
                    stream_id, entry.unidirectional, ErrorCodes.WT_BUFFERED_STREAM_REJECTED
                )
                return
            entry.data += data
            entry.fin = entry.fin or fin
            return

    def _release_held(self, session: SessionRecord) -> None:
        held = self._held.pop(session.session_id, None)
        if not held:
            return
        self._held_count -= len(held)
        for stream_id, entry in held.items():
            if session.is_closed:
                self._refuse(stream_id, entry.unidirectional, ErrorCodes.WT_SESSION_GONE)
            else:
                self._deliver(
                    session,
                    stream_id,
                    entry.unidirectional,
                    bytes(entry.data),
                    entry.fin,
                    entry.header_size,
                )

    def _drop_held(self, session_id: int, code: int) -> None:
        held = self._held.pop(session_id, None)
        if held:
            self._held_count -= len(held)
            for stream_id, entry in held.items():
                self._refuse(stream_id, entry.unidirectional, code)

    def _session_ended(self, session_id: int) -> bool:
        if session_id in self._ended:
            return True
        # Beyond the exactly remembered ones, anything older than the oldest of them ended.
        return (
            bool(self._ended)
            and len(self._ended) >= _MAX_ENDED_SESSIONS
            and (session_id < min(self._ended))
        )

    def _remember_ended(self, session_id: int) -> None:
        ended = self._ended
        ended[session_id] = None
        if len(ended) > _MAX_ENDED_SESSIONS:
            del ended[next(iter(ended))]
