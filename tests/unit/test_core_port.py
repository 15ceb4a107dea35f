"""The core against a fake QUIC: bytes in, events out, no aioquic anywhere.

`WebTransportCore` talks to QUIC only through the `QuicPort` it is handed.
`FakeQuic` implements that port with a few dictionaries: what the core sends
is recorded, the peer's HTTP/3 requests are scripted, acknowledgements are
set by the test. Together with the import check below, this proves the core
is a layer of its own, testable without the library under it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

import pywebtransport.transport._core as core_package
from pywebtransport.shared.constants import (
    BIDI_STREAM_SIGNAL,
    CAPSULE_CLOSE_WEBTRANSPORT_SESSION,
    UNI_STREAM_TYPE,
    ErrorCodes,
)
from pywebtransport.shared.exceptions import StreamError
from pywebtransport.shared.types import ConnectionState, SessionState
from pywebtransport.shared.utils import encode_varint
from pywebtransport.transport._core.capsules import decode_capsules, encode_capsule
from pywebtransport.transport._core.codes import wt_to_http3_error
from pywebtransport.transport._core.dialects import DRAFT15, Limits, all_settings
from pywebtransport.transport._core.events import (
    SessionClosed,
    SessionRequested,
    SettingsReceived,
    StopSendingReceived,
    StreamOpened,
    StreamResetReceived,
)
from pywebtransport.transport._core.headers import build_request
from pywebtransport.transport._core.protocol import WebTransportCore
from pywebtransport.transport._core.quic import H3Event, RequestData, RequestHeaders
from pywebtransport.transport._core.records import SessionRecord, StreamRecord

pytestmark = pytest.mark.timeout(30)

SESSION = 0
"""The CONNECT stream of the client's first session (client bidirectional stream 0)."""


class Refused(Exception):
    """What the fake raises for a command on a stream it no longer knows."""


class FakeQuic:
    """`QuicPort` over dictionaries: a server-side QUIC connection and its HTTP/3."""

    refusals = (Refused,)

    def __init__(self, *, is_client: bool = False) -> None:
        self.is_client = is_client
        self.settings: dict[int, int] | None = None
        self.peer: dict[int, int] | None = None
        self.sent: dict[int, bytearray] = {}
        self.finished: set[int] = set()
        self.acked: set[int] = set()
        self.left: set[int] = set()
        """Streams some of whose bytes were transmitted."""
        self.resets: dict[int, int] = {}
        self.stops: dict[int, int] = {}
        self.datagrams: list[bytes] = []
        self.headers: dict[int, list[tuple[bytes, bytes]]] = {}
        self.request_data: dict[int, bytearray] = {}
        self.request_fin: set[int] = set()
        self.windows: dict[int, int] = {}
        self.script: dict[int, list[H3Event]] = {}
        self.closed: tuple[int, str] | None = None
        self.next_bidi = 1 if not is_client else 0
        self.next_uni = 3 if not is_client else 2

    # hot commands (attributes on the real port; methods work the same for the core)
    def send_stream_data(self, stream_id: int, data: bytes | memoryview, fin: bool) -> None:
        if stream_id in self.finished or stream_id in self.resets:
            raise Refused(f"stream {stream_id} is finished")
        self.sent.setdefault(stream_id, bytearray()).extend(data)
        if fin:
            self.finished.add(stream_id)

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        self.resets[stream_id] = error_code

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        self.stops[stream_id] = error_code

    def send_datagram_frame(self, data: bytes | bytearray | memoryview) -> None:
        self.datagrams.append(bytes(data))

    # commands
    def start_http3(self, settings: dict[int, int]) -> None:
        self.settings = settings

    def next_stream_id(self, unidirectional: bool) -> int:
        if unidirectional:
            self.next_uni += 4
            return self.next_uni - 4
        self.next_bidi += 4
        return self.next_bidi - 4

    def close(self, error_code: int, reason: str) -> None:
        self.closed = (error_code, reason)

    def send_headers(
        self, stream_id: int, headers: Sequence[tuple[bytes, bytes]], end_stream: bool
    ) -> None:
        self.headers[stream_id] = list(headers)
        if end_stream:
            self.request_fin.add(stream_id)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        if stream_id in self.request_fin:
            raise Refused(f"request stream {stream_id} is finished")
        self.request_data.setdefault(stream_id, bytearray()).extend(data)
        if end_stream:
            self.request_fin.add(stream_id)

    def set_stream_window(self, stream_id: int, limit: int) -> None:
        self.windows[stream_id] = limit

    def forget_stream_window(self, stream_id: int) -> None:
        self.windows.pop(stream_id, None)

    def protocol_negotiated(self) -> None:
        pass

    # HTTP/3 input: the peer's requests are scripted by the test
    def h3_stream_data(self, stream_id: int, data: bytes, fin: bool) -> list[H3Event]:
        return self.script.pop(stream_id, [])

    def h3_stream_reset(self, stream_id: int, error_code: int) -> None:
        pass

    def h3_stop_sending(self, stream_id: int, error_code: int) -> None:
        pass

    def malformed_requests(self) -> Iterable[int]:
        return ()

    # queries
    @property
    def peer_settings(self) -> dict[int, int] | None:
        return self.peer

    def manage_stream_window(self, stream_id: int) -> bool:
        self.windows[stream_id] = 0
        return True

    def can_open_stream(self, unidirectional: bool) -> bool:
        return True

    def pending_datagrams(self) -> int:
        return 0

    @property
    def tracks_delivery(self) -> bool:
        return True

    def nothing_sent(self, stream_id: int) -> bool:
        return stream_id in self.sent and stream_id not in self.left

    def send_finished(self, stream_id: int) -> bool:
        return stream_id in self.acked

    def sent_offset(self, stream_id: int) -> int | None:
        return len(self.sent.get(stream_id, b""))

    def reset_final_size(self, stream_id: int) -> int | None:
        return None


def drain(core: WebTransportCore) -> list[object]:
    events = []
    while (event := core.next_event()) is not None:
        events.append(event)
    return events


def established() -> tuple[FakeQuic, WebTransportCore, SessionRecord]:
    """A server core whose client opened one draft-15 session, accepted."""
    quic = FakeQuic()
    core = WebTransportCore(quic, limits=Limits(max_sessions=4))
    quic.peer = all_settings(Limits())
    request = build_request(authority="example.test:443", path="/chat", dialect=DRAFT15)
    quic.script[SESSION] = [RequestHeaders(SESSION, request, ended=False)]
    # The bytes of a HEADERS frame: frame type 0x01 is no WebTransport stream header.
    assert core.receive_stream_data(SESSION, b"\x01\x00", False) is None
    events = drain(core)
    assert isinstance(events[0], SettingsReceived)
    requested = [e for e in events if isinstance(e, SessionRequested)]
    assert len(requested) == 1
    session = requested[0].session
    assert session.path == "/chat"
    assert session.dialect is DRAFT15
    core.accept(session)
    assert (b":status", b"200") in quic.headers[SESSION]
    assert session.state is SessionState.CONNECTED
    return quic, core, session


def open_peer_stream(core: WebTransportCore, stream_id: int, data: bytes) -> StreamRecord:
    kind = UNI_STREAM_TYPE if stream_id & 2 else BIDI_STREAM_SIGNAL
    header = encode_varint(kind) + encode_varint(SESSION)
    assert core.receive_stream_data(stream_id, header + data, False) is None
    opened = [e for e in drain(core) if isinstance(e, StreamOpened)]
    assert len(opened) == 1
    return opened[0].stream


def test_core_announces_every_dialects_settings_to_the_port() -> None:
    quic = FakeQuic()
    WebTransportCore(quic, limits=Limits(max_sessions=4), max_field_section_size=1234)
    assert quic.settings is not None
    assert quic.settings.items() >= all_settings(Limits(max_sessions=4)).items()
    assert quic.settings[0x06] == 1234  # SETTINGS_MAX_FIELD_SECTION_SIZE


def test_streams_and_datagrams_through_the_port() -> None:
    quic, core, session = established()
    rec = open_peer_stream(core, 4, b"hello")
    assert core.read(rec) == b"hello"
    # Reading granted credit back through the port once half the window was used.
    assert 4 in quic.windows
    rec2 = core.receive_stream_data(4, b" world", True)
    assert rec2 is rec
    assert core.read(rec) == b" world"
    core.send(rec, b"echo", fin=True)
    assert bytes(quic.sent[4]) == b"echo"
    assert 4 in quic.finished

    uni = core.open_stream(session, unidirectional=True)
    core.send(uni, b"push", fin=False)
    assert bytes(quic.sent[uni.stream_id]) == b"\x40\x54\x00push"  # type 0x54, session 0

    delivered = core.receive_datagram(b"\x00ping")
    assert delivered == (session, b"ping")
    assert core.send_datagram(session, b"pong")
    assert quic.datagrams == [b"\x00pong"]


def test_peer_reset_and_stop_reach_the_stream_records() -> None:
    _quic, core, session = established()
    rec = open_peer_stream(core, 8, b"partial")
    core.receive_reset(8, wt_to_http3_error(7))
    events = drain(core)
    assert any(isinstance(e, StreamResetReceived) for e in events)
    with pytest.raises(StreamError) as caught:
        core.read(rec)
    assert caught.value.error_code == 7

    out = core.open_stream(session, unidirectional=False)
    core.receive_stop_sending(out.stream_id, wt_to_http3_error(9))
    assert any(isinstance(e, StopSendingReceived) for e in drain(core))
    with pytest.raises(StreamError):
        core.send(out, b"late")


def test_graceful_close_waits_for_the_peer_to_acknowledge_through_the_port() -> None:
    quic, core, session = established()
    rec = core.open_stream(session, unidirectional=True)
    core.send(rec, b"last words", fin=True)
    assert core.begin_close(session)
    assert not core.writes_delivered(session)  # the FIN is not acknowledged yet
    quic.acked.add(rec.stream_id)
    assert core.writes_delivered(session)
    core.close_session(session, 5, "done")
    capsules = decode_capsules(bytearray(quic.request_data[SESSION]), 1 << 16)
    assert capsules == [(CAPSULE_CLOSE_WEBTRANSPORT_SESSION, (5).to_bytes(4, "big") + b"done")]
    assert SESSION in quic.request_fin
    closed = [e for e in drain(core) if isinstance(e, SessionClosed)]
    assert [c.session for c in closed] == [session]


def test_malformed_peer_input_closes_the_connection_through_the_port() -> None:
    quic, core, _session = established()
    # A datagram whose quarter stream id is >= 2**60 (RFC 9297 section 2.1).
    core.receive_datagram(b"\xd0" + bytes(7) + b"x")
    assert quic.closed is not None
    assert quic.closed[0] == ErrorCodes.H3_DATAGRAM_ERROR
    # The connection closes (QUIC's closing period), its sessions end at once.
    assert core.state is ConnectionState.CLOSING
    assert not core.sessions
    assert core.close_reason == quic.closed
    # QUIC's ConnectionTerminated ends it; the first reason known stays.
    core.terminate(0, "closing period over")
    assert core.state is ConnectionState.CLOSED
    assert core.close_reason == quic.closed


def test_connection_state_lives_in_the_core() -> None:
    core = WebTransportCore(FakeQuic())
    assert core.state is ConnectionState.CONNECTING
    core.handshake_completed()
    assert core.state is ConnectionState.CONNECTED
    assert core.begin_closing()
    assert not core.begin_closing()  # already closing
    assert core.state is ConnectionState.CLOSING
    core.terminate(0x10, "bye")
    assert (core.state, core.close_reason) == (ConnectionState.CLOSED, (0x10, "bye"))
    assert not core.begin_closing()


def test_capsules_from_the_peer_close_the_session() -> None:
    quic, core, session = established()
    payload = (3).to_bytes(4, "big") + b"bye"
    capsule = encode_capsule(CAPSULE_CLOSE_WEBTRANSPORT_SESSION, payload)
    quic.script[SESSION] = [RequestData(SESSION, capsule, ended=True)]
    core.receive_stream_data(SESSION, b"\x00", True)
    closed = [e for e in drain(core) if isinstance(e, SessionClosed)]
    assert len(closed) == 1
    assert session.close_code == 3
    assert session.close_reason == "bye"
    assert session.closed_by_peer


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append("." * node.level + (node.module or ""))
    return found


def test_the_core_imports_nothing_below_it() -> None:
    """The core imports only the standard library, itself and `pywebtransport.shared`."""
    core_dir = Path(core_package.__file__).parent
    shared_dir = core_dir.parent.parent / "shared"
    for path in sorted(core_dir.glob("*.py")):
        for name in _imports(path):
            assert not name.startswith(("aioquic", "pylsqpack", "cryptography")), (path, name)
            if name.startswith(".."):
                # Two dots: the transport package (the fence, the asyncio layer): never.
                assert name.startswith("...shared"), (path.name, name)
    for path in sorted(shared_dir.glob("*.py")):
        for name in _imports(path):
            assert not name.startswith(("aioquic", "pylsqpack")), (path, name)
            assert not name.startswith(("..transport", "pywebtransport.transport")), (path, name)


def _requested(supported: tuple[str, ...], offered: tuple[str, ...]) -> SessionRecord:
    quic = FakeQuic()
    core = WebTransportCore(quic, supported_protocols=supported)
    quic.peer = all_settings(Limits())
    request = build_request(
        authority="example.test:443", path="/", dialect=DRAFT15, protocols=offered
    )
    quic.script[SESSION] = [RequestHeaders(SESSION, request, ended=False)]
    core.receive_stream_data(SESSION, b"\x01\x00", False)
    requested = [e for e in drain(core) if isinstance(e, SessionRequested)]
    assert len(requested) == 1
    session = requested[0].session
    assert session.offered_protocols == list(offered)
    return session


def test_the_core_selects_the_clients_first_offered_protocol_the_server_speaks() -> None:
    assert _requested(("chat", "echo"), ("echo", "chat")).protocol == "echo"
    assert _requested(("chat",), ("echo",)).protocol is None
    assert _requested((), ("echo",)).protocol is None


def test_choose_protocol_takes_only_an_offered_protocol_before_the_answer() -> None:
    quic = FakeQuic()
    core = WebTransportCore(quic)
    quic.peer = all_settings(Limits())
    request = build_request(
        authority="example.test:443", path="/", dialect=DRAFT15, protocols=("a", "b")
    )
    quic.script[SESSION] = [RequestHeaders(SESSION, request, ended=False)]
    core.receive_stream_data(SESSION, b"\x01\x00", False)
    session = next(e.session for e in drain(core) if isinstance(e, SessionRequested))
    with pytest.raises(ValueError, match="not offered"):
        core.choose_protocol(session, "c")
    core.choose_protocol(session, "b")
    core.accept(session, protocol=session.protocol)
    assert (b"wt-protocol", b'"b"') in quic.headers[SESSION]
    with pytest.raises(ValueError, match="before it accepts"):
        core.choose_protocol(session, "a")
    assert session.protocol == "b"


_WITHOUT_AIOQUIC = """
import importlib.abc, pathlib, sys, types

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("aioquic", "pylsqpack"):
            raise ImportError(f"{name} is blocked")
        return None

sys.meta_path.insert(0, Block())
# The package root and `transport` import the asyncio layer (and so aioquic):
# stand-ins that only point at the source let the core be imported alone.
src = pathlib.Path(sys.argv[1])
for name, path in (("pywebtransport", src), ("pywebtransport.transport", src / "transport")):
    module = types.ModuleType(name)
    module.__path__ = [str(path)]
    sys.modules[name] = module
sys.path.insert(0, sys.argv[2])
import test_core_port as tests

ran = 0
for name in dir(tests):
    if name.startswith("test_") and "without_aioquic" not in name:
        getattr(tests, name)()
        ran += 1
assert not [m for m in sys.modules if m.startswith(("aioquic", "pylsqpack"))]
print(ran)
"""


def test_the_core_runs_without_aioquic() -> None:
    """Every test above, again, in a process where importing aioquic fails."""
    import subprocess
    import sys

    src = Path(core_package.__file__).parent.parent.parent
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_AIOQUIC, str(src), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) >= 10


def test_a_stream_reset_before_its_header_left_asks_for_a_transmit_first() -> None:
    quic, core, session = established()
    rec = core.open_stream(session, unidirectional=True)
    assert core.reset_needs_flush(rec)  # only the header is queued, nothing left
    quic.left.add(rec.stream_id)
    assert not core.reset_needs_flush(rec)
    core.reset(rec, 3)
    assert quic.resets[rec.stream_id] == wt_to_http3_error(3)
    assert not core.reset_needs_flush(rec)  # the sending half is done
