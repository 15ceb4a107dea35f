"""Address validation and refusal at the first Initial (`transport/_admission/`).

The token codec gets hypothesis properties; the packets are checked against
REAL aioquic `QuicConnection` clients and servers exchanging datagrams in
memory with an explicit clock: a client is sent our Retry and then completes a
handshake with a server that echoes the validated connection IDs, a refused
client reports CONNECTION_REFUSED, a client of an unknown version is
negotiated down to one we speak.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterable

import pytest
from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicHeader,
    QuicPacketType,
    QuicProtocolVersion,
    pull_quic_header,
)
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from pywebtransport.shared.exceptions import ConfigurationError
from pywebtransport.shared.utils import CertificateInfo
from pywebtransport.transport._admission import (
    AMPLIFICATION_FACTOR,
    MIN_INITIAL_DATAGRAM_SIZE,
    AddressCounter,
    GateAction,
    HandshakeAdmission,
    HandshakeGate,
    InvalidRetryToken,
    NetworkAddress,
    RetryMode,
    RetryTokens,
    Screening,
    TokenRejection,
    address_key,
    build_refusal,
    build_retry,
    build_version_negotiation,
)

SERVER_ADDR = ("127.0.0.1", 4433)
CLIENT_ADDR = ("192.0.2.7", 50123)
UNKNOWN_VERSION = 0x1A2A3A4A  # a reserved "greasing" version (RFC 9000 §15)
KEY = bytes(range(16))

PROPERTIES = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

# ---------------------------------------------------------------------- strategies

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 0xFFFF)
addresses = st.tuples(st.one_of(ipv4, ipv6), ports)
cids = st.binary(min_size=0, max_size=20)
client_cids = st.binary(min_size=8, max_size=20)
times = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)


# ---------------------------------------------------------------------- helpers


def client_connection(
    *,
    version: int | None = None,
    supported: Iterable[int] | None = None,
    token: bytes = b"",
    cid_length: int = 8,
) -> QuicConnection:
    config = QuicConfiguration(
        is_client=True, alpn_protocols=["h3"], verify_mode=ssl.CERT_NONE, server_name="127.0.0.1"
    )
    if supported is not None:
        config.supported_versions = list(supported)
    if version is not None:
        config.original_version = version
    config.token = token
    config.connection_id_length = cid_length
    return QuicConnection(configuration=config)


def server_connection(
    certificate: CertificateInfo, screening: Screening, client: QuicConnection
) -> QuicConnection:
    """The server side a real endpoint would create for an accepted Initial."""
    config = QuicConfiguration(is_client=False, alpn_protocols=["h3"])
    config.load_cert_chain(certificate.certfile, certificate.keyfile)
    original = screening.original_destination_cid or client.original_destination_connection_id
    return QuicConnection(
        configuration=config,
        original_destination_connection_id=original,
        retry_source_connection_id=screening.retry_source_cid,
    )


def flight(connection: QuicConnection, now: float) -> list[bytes]:
    return [data for data, _ in connection.datagrams_to_send(now=now)]


def pump(client: QuicConnection, server: QuicConnection, now: float) -> None:
    """Move datagrams both ways until neither side has anything to send."""
    for _ in range(50):
        moved = False
        for data in flight(client, now):
            server.receive_datagram(data, CLIENT_ADDR, now=now)
            moved = True
        for data in flight(server, now):
            client.receive_datagram(data, SERVER_ADDR, now=now)
            moved = True
        if not moved:
            return
    raise AssertionError("the handshake never went quiet")


def drain(connection: QuicConnection) -> list[qe.QuicEvent]:
    found = []
    while (event := connection.next_event()) is not None:
        found.append(event)
    return found


def terminated(client: QuicConnection) -> qe.ConnectionTerminated:
    """Run the client's draining timer and return its ConnectionTerminated event."""
    timer = client.get_timer()
    assert timer is not None, "the client did not enter the draining state"
    client.handle_timer(now=timer)
    ends = [e for e in drain(client) if isinstance(e, qe.ConnectionTerminated)]
    assert len(ends) == 1
    return ends[0]


def same_client(a: NetworkAddress, b: NetworkAddress) -> bool:
    """Whether two addresses are one client (an IPv4-mapped IPv6 address is its IPv4 one)."""

    def normal(address: NetworkAddress) -> tuple[object, int]:
        ip = ipaddress.ip_address(address[0])
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return (mapped or ip, address[1])

    return normal(a) == normal(b)


def header_of(datagram: bytes) -> QuicHeader:
    return pull_quic_header(Buffer(data=datagram), host_cid_length=8)


def first_initial(client: QuicConnection, now: float = 1.0) -> bytes:
    client.connect(SERVER_ADDR, now=now)
    datagrams = flight(client, now)
    assert datagrams and len(datagrams[0]) >= MIN_INITIAL_DATAGRAM_SIZE
    return datagrams[0]


def gate(**admission: object) -> HandshakeGate:
    return HandshakeGate(tokens=RetryTokens(KEY), admission=HandshakeAdmission(**admission))  # type: ignore[arg-type]


# ---------------------------------------------------------------------- token codec


@PROPERTIES
@given(address=addresses, original=client_cids, retry=cids, issued=times, age=st.floats(0, 10))
def test_token_round_trip(
    address: NetworkAddress, original: bytes, retry: bytes, issued: float, age: float
) -> None:
    tokens = RetryTokens(KEY, lifetime=10.0)
    token = tokens.issue(
        address=address, original_destination_cid=original, retry_source_cid=retry, now=issued
    )
    assert tokens.is_ours(token)
    assert 38 <= len(token) <= 58
    back = tokens.validate(token, address=address, destination_cid=retry, now=issued + age)
    assert back == original


@PROPERTIES
@given(address=addresses, original=client_cids, retry=cids, issued=times, data=st.data())
def test_token_any_bit_flip_is_rejected(
    address: NetworkAddress, original: bytes, retry: bytes, issued: float, data: st.DataObject
) -> None:
    tokens = RetryTokens(KEY)
    token = bytearray(
        tokens.issue(
            address=address, original_destination_cid=original, retry_source_cid=retry, now=issued
        )
    )
    bit = data.draw(st.integers(0, len(token) * 8 - 1), label="bit")
    token[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(InvalidRetryToken) as info:
        tokens.validate(bytes(token), address=address, destination_cid=retry, now=issued)
    expected = TokenRejection.MALFORMED if bit < 8 else TokenRejection.UNAUTHENTIC
    assert info.value.rejection is expected
    assert info.value.error_code == QuicErrorCode.INVALID_TOKEN


@PROPERTIES
@given(address=addresses, other=addresses, original=client_cids, retry=cids, issued=times)
@example(  # one IPv6 /64, so one per-address key, but another address
    address=("2001:db8::1", 443), other=("2001:db8::2", 443), original=b"o" * 8, retry=b"", issued=1
)
@example(
    address=("192.0.2.1", 443), other=("192.0.2.1", 444), original=b"o" * 8, retry=b"", issued=1
)
def test_token_from_another_address_is_rejected(
    address: NetworkAddress, other: NetworkAddress, original: bytes, retry: bytes, issued: float
) -> None:
    assume(not same_client(address, other))
    tokens = RetryTokens(KEY)
    token = tokens.issue(
        address=address, original_destination_cid=original, retry_source_cid=retry, now=issued
    )
    with pytest.raises(InvalidRetryToken) as info:
        tokens.validate(token, address=other, destination_cid=retry, now=issued)
    assert info.value.rejection is TokenRejection.UNAUTHENTIC


@PROPERTIES
@given(address=addresses, original=client_cids, retry=cids, other=cids, issued=times)
def test_token_for_another_connection_id_is_rejected(
    address: NetworkAddress, original: bytes, retry: bytes, other: bytes, issued: float
) -> None:
    assume(other != retry)
    tokens = RetryTokens(KEY)
    token = tokens.issue(
        address=address, original_destination_cid=original, retry_source_cid=retry, now=issued
    )
    with pytest.raises(InvalidRetryToken) as info:
        tokens.validate(token, address=address, destination_cid=other, now=issued)
    assert info.value.rejection is TokenRejection.UNAUTHENTIC


@PROPERTIES
@given(
    address=addresses,
    original=client_cids,
    retry=cids,
    issued=times,
    late=st.floats(0.002, 1e6),
    lifetime=st.floats(0.01, 60),
)
def test_token_expires(
    address: NetworkAddress,
    original: bytes,
    retry: bytes,
    issued: float,
    late: float,
    lifetime: float,
) -> None:
    tokens = RetryTokens(KEY, lifetime=lifetime)
    token = tokens.issue(
        address=address, original_destination_cid=original, retry_source_cid=retry, now=issued
    )
    with pytest.raises(InvalidRetryToken) as info:
        tokens.validate(token, address=address, destination_cid=retry, now=issued + lifetime + late)
    assert info.value.rejection is TokenRejection.EXPIRED


def test_token_from_the_future_is_rejected() -> None:
    tokens = RetryTokens(KEY)
    token = tokens.issue(
        address=CLIENT_ADDR, original_destination_cid=b"o" * 8, retry_source_cid=b"r", now=100.0
    )
    # Within the clock skew allowed between processes sharing the key: fine.
    assert tokens.validate(token, address=CLIENT_ADDR, destination_cid=b"r", now=99.5) == b"o" * 8
    with pytest.raises(InvalidRetryToken) as info:
        tokens.validate(token, address=CLIENT_ADDR, destination_cid=b"r", now=98.0)
    assert info.value.rejection is TokenRejection.EXPIRED


@PROPERTIES
@given(token=st.binary(max_size=80), address=addresses, cid=cids, now=times)
def test_arbitrary_tokens_only_ever_raise_invalid_token(
    token: bytes, address: NetworkAddress, cid: bytes, now: float
) -> None:
    tokens = RetryTokens(KEY)
    with pytest.raises(InvalidRetryToken) as info:
        tokens.validate(token, address=address, destination_cid=cid, now=now)
    if not tokens.is_ours(token):
        assert info.value.rejection is TokenRejection.MALFORMED


def test_key_rotation_keeps_one_previous_key() -> None:
    tokens = RetryTokens(KEY)

    def issue() -> bytes:
        return tokens.issue(
            address=CLIENT_ADDR, original_destination_cid=b"o" * 8, retry_source_cid=b"r", now=5.0
        )

    old = issue()
    tokens.rotate(bytes(16))
    newer = issue()
    assert tokens.validate(old, address=CLIENT_ADDR, destination_cid=b"r", now=5.0) == b"o" * 8
    tokens.rotate()
    assert tokens.validate(newer, address=CLIENT_ADDR, destination_cid=b"r", now=5.0) == b"o" * 8
    with pytest.raises(InvalidRetryToken) as info:
        tokens.validate(old, address=CLIENT_ADDR, destination_cid=b"r", now=5.0)
    assert info.value.rejection is TokenRejection.UNAUTHENTIC
    # Another process holding the same keys (e.g. after a restart) validates both.
    restarted = RetryTokens(bytes(32), previous_key=bytes(16))
    assert restarted.validate(newer, address=CLIENT_ADDR, destination_cid=b"r", now=5.0)


def test_ipv4_mapped_and_scoped_addresses_are_the_same_client() -> None:
    tokens = RetryTokens(KEY)
    token = tokens.issue(
        address=("192.0.2.1", 443), original_destination_cid=b"o" * 8, retry_source_cid=b"", now=1
    )
    mapped = ("::ffff:192.0.2.1", 443, 0, 0)
    assert tokens.validate(token, address=mapped, destination_cid=b"", now=1) == b"o" * 8
    scoped = tokens.issue(
        address=("fe80::1%eth0", 443, 0, 2),
        original_destination_cid=b"",
        retry_source_cid=b"",
        now=1,
    )
    assert tokens.validate(scoped, address=("fe80::1", 443), destination_cid=b"", now=1) == b""
    assert address_key(("192.0.2.1", 1)) == address_key(("::ffff:192.0.2.1", 2, 0, 0))
    assert address_key(("2001:db8::1", 1)) == address_key(("2001:db8::ffff:1", 2))
    assert address_key(("2001:db8::1", 1)) != address_key(("2001:db8:0:1::1", 1))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"key": b"short"}, ConfigurationError),
        ({"previous_key": bytes(15)}, ConfigurationError),
        ({"lifetime": 0.0}, ConfigurationError),
        ({"lifetime": float("nan")}, ConfigurationError),
    ],
)
def test_bad_token_configuration(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        RetryTokens(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("address", "original", "now"),
    [
        (("example.com", 443), b"o" * 8, 1.0),
        (("192.0.2.1", 70000), b"o" * 8, 1.0),
        (CLIENT_ADDR, b"o" * 21, 1.0),
        (CLIENT_ADDR, b"o" * 8, -1.0),
        (CLIENT_ADDR, b"o" * 8, float("inf")),
    ],
)
def test_issue_rejects_bad_arguments(address: NetworkAddress, original: bytes, now: float) -> None:
    with pytest.raises(ValueError):
        RetryTokens(KEY).issue(
            address=address, original_destination_cid=original, retry_source_cid=b"r", now=now
        )


# ---------------------------------------------------------------------- real aioquic peers


def test_retry_then_real_handshake(certificate: CertificateInfo) -> None:
    """Client Initial -> our Retry -> token in the next Initial -> validated -> handshake."""
    screen = gate(retry=RetryMode.ALWAYS)
    client = client_connection()
    first = first_initial(client, now=1.0)
    retry = screen.screen(first, CLIENT_ADDR, now=1.0)
    assert retry.action is GateAction.RETRY and retry.response is not None
    assert len(retry.response) <= AMPLIFICATION_FACTOR * len(first)
    assert header_of(retry.response).packet_type == QuicPacketType.RETRY

    client.receive_datagram(retry.response, SERVER_ADDR, now=1.01)
    second = flight(client, 1.01)
    assert header_of(second[0]).token, "the client did not echo the Retry token"
    accepted = screen.screen(second[0], CLIENT_ADDR, now=1.02)
    assert accepted.action is GateAction.ACCEPT, accepted.reason
    assert accepted.original_destination_cid == client.original_destination_connection_id
    assert accepted.admission is not None and accepted.admission.validated
    assert screen.admission.in_flight == 1

    server = server_connection(certificate, accepted, client)
    for data in second:
        server.receive_datagram(data, CLIENT_ADDR, now=1.02)
    pump(client, server, now=1.03)
    assert any(isinstance(e, qe.HandshakeCompleted) for e in drain(client))
    assert any(isinstance(e, qe.HandshakeCompleted) for e in drain(server))
    screen.admission.release(accepted.admission)
    assert screen.admission.in_flight == 0


def test_retry_connection_ids_are_checked_by_the_client(certificate: CertificateInfo) -> None:
    """Without the validated retry_source_connection_id the real client aborts the handshake."""
    screen = gate(retry=RetryMode.ALWAYS)
    client = client_connection()
    retry = screen.screen(first_initial(client), CLIENT_ADDR, now=1.0)
    assert retry.response is not None
    client.receive_datagram(retry.response, SERVER_ADDR, now=1.0)
    second = flight(client, 1.0)
    accepted = screen.screen(second[0], CLIENT_ADDR, now=1.0)
    assert accepted.action is GateAction.ACCEPT
    forgetful = Screening(action=GateAction.ACCEPT, reason="test")
    server = server_connection(certificate, forgetful, client)
    for data in second:
        server.receive_datagram(data, CLIENT_ADDR, now=1.0)
    pump(client, server, now=1.0)
    assert not any(isinstance(e, qe.HandshakeCompleted) for e in drain(client))


@pytest.mark.parametrize("version", [QuicProtocolVersion.VERSION_1, QuicProtocolVersion.VERSION_2])
def test_refused_at_the_initial(version: int) -> None:
    """A full handshake table refuses the next client with CONNECTION_REFUSED, no TLS."""
    screen = gate(retry=RetryMode.NEVER, max_handshakes=1)
    holder = screen.screen(first_initial(client_connection()), ("192.0.2.1", 1), now=1.0)
    assert holder.action is GateAction.ACCEPT

    client = client_connection(supported=[version])
    first = first_initial(client)
    assert header_of(first).version == version
    refusal = screen.screen(first, CLIENT_ADDR, now=1.0)
    assert refusal.action is GateAction.REFUSE and refusal.response is not None
    assert refusal.reason == "handshake table full"
    assert len(refusal.response) <= AMPLIFICATION_FACTOR * len(first)
    reply = header_of(refusal.response)
    assert reply.packet_type == QuicPacketType.INITIAL and reply.version == version
    assert reply.destination_cid == header_of(first).source_cid
    assert reply.packet_length == len(refusal.response)

    client.receive_datagram(refusal.response, SERVER_ADDR, now=1.01)
    end = terminated(client)
    assert end.error_code == QuicErrorCode.CONNECTION_REFUSED


def test_bad_token_gets_invalid_token() -> None:
    """A Retry token replayed from another address closes the attempt with INVALID_TOKEN."""
    screen = gate(retry=RetryMode.ALWAYS)
    client = client_connection()
    retry = screen.screen(first_initial(client), CLIENT_ADDR, now=1.0)
    assert retry.response is not None
    client.receive_datagram(retry.response, SERVER_ADDR, now=1.0)
    second = flight(client, 1.0)[0]
    refusal = screen.screen(second, ("192.0.2.99", 50123), now=1.0)
    assert refusal.action is GateAction.REFUSE and refusal.response is not None
    assert refusal.reason == "unauthentic token"
    assert screen.admission.in_flight == 0
    client.receive_datagram(refusal.response, SERVER_ADDR, now=1.0)
    assert terminated(client).error_code == QuicErrorCode.INVALID_TOKEN

    late = client_connection()
    retry = screen.screen(first_initial(late), CLIENT_ADDR, now=1.0)
    assert retry.response is not None
    late.receive_datagram(retry.response, SERVER_ADDR, now=1.0)
    expired = screen.screen(flight(late, 1.0)[0], CLIENT_ADDR, now=100.0)
    assert expired.action is GateAction.REFUSE and expired.reason == "expired token"


def test_unknown_version_is_negotiated(certificate: CertificateInfo) -> None:
    """A client starting with an unknown version gets VN, then connects with version 1."""
    screen = gate()
    client = client_connection(
        version=UNKNOWN_VERSION, supported=[UNKNOWN_VERSION, QuicProtocolVersion.VERSION_1]
    )
    first = first_initial(client)
    assert header_of(first).version == UNKNOWN_VERSION
    negotiation = screen.screen(first, CLIENT_ADDR, now=1.0)
    assert negotiation.action is GateAction.NEGOTIATE_VERSION
    assert negotiation.response is not None
    offered = header_of(negotiation.response)
    assert offered.packet_type == QuicPacketType.VERSION_NEGOTIATION
    assert QuicProtocolVersion.VERSION_1 in offered.supported_versions
    assert offered.destination_cid == header_of(first).source_cid
    assert offered.source_cid == header_of(first).destination_cid

    client.receive_datagram(negotiation.response, SERVER_ADDR, now=1.0)
    second = flight(client, 1.0)
    assert header_of(second[0]).version == QuicProtocolVersion.VERSION_1
    accepted = screen.screen(second[0], CLIENT_ADDR, now=1.0)
    assert accepted.action is GateAction.ACCEPT, accepted.reason
    server = server_connection(certificate, accepted, client)
    for data in second:
        server.receive_datagram(data, CLIENT_ADDR, now=1.0)
    pump(client, server, now=1.0)
    assert any(isinstance(e, qe.HandshakeCompleted) for e in drain(client))


# ---------------------------------------------------------------------- the gate


def test_gate_drops_what_cannot_start_a_connection() -> None:
    screen = gate()
    initial = first_initial(client_connection())
    header = header_of(initial)
    handshake = bytearray(initial)
    handshake[0] = (handshake[0] & ~0x30) | 0x20  # long packet type 2: Handshake
    negotiation = build_version_negotiation(
        header_of(
            first_initial(client_connection(version=UNKNOWN_VERSION, supported=[UNKNOWN_VERSION]))
        ),
        datagram_size=1200,
    )
    # A first Initial's Destination Connection ID must be at least 8 bytes (§7.2).
    short_cid = first_initial(client_connection(cid_length=4))
    cases = {
        b"": "not a long header",
        b"\x40" + bytes(1300): "not a long header",
        b"\xc0\x00\x00\x00\x01\x30": "unparsable header",
        initial[:1000]: "datagram too small",
        bytes(handshake): "not an Initial",
        negotiation + bytes(1200): "version negotiation",
        short_cid: "destination CID too short",
    }
    for data, reason in cases.items():
        outcome = screen.screen(data, CLIENT_ADDR, now=1.0)
        assert (outcome.action, outcome.reason) == (GateAction.DROP, reason), data[:8]
        assert outcome.response is None
    assert screen.admission.in_flight == 0
    # Unknown versions only get VN in datagrams large enough for an Initial.
    tiny = screen.screen(
        first_initial(client_connection(version=UNKNOWN_VERSION, supported=[UNKNOWN_VERSION]))[
            :600
        ],
        CLIENT_ADDR,
        now=1.0,
    )
    assert tiny.action is GateAction.DROP
    assert header.packet_type == QuicPacketType.INITIAL


def test_gate_auto_retry_past_the_threshold() -> None:
    screen = gate(retry=RetryMode.AUTO, retry_threshold=2, max_handshakes=10)
    actions = [
        screen.screen(first_initial(client_connection()), (f"192.0.2.{i}", 1), now=1.0).action
        for i in range(4)
    ]
    assert actions == [GateAction.ACCEPT, GateAction.ACCEPT, GateAction.RETRY, GateAction.RETRY]
    assert screen.admission.in_flight == 2


def test_gate_sends_an_address_over_its_quota_to_retry() -> None:
    """Spoofed Initials fill only the victim's unvalidated quota; the victim still gets in."""
    screen = gate(retry=RetryMode.AUTO, max_handshakes_per_address=2, retry_threshold=100)
    victim = ("198.51.100.5", 4000)
    for _ in range(2):
        forged = screen.screen(first_initial(client_connection()), victim, now=1.0)
        assert forged.action is GateAction.ACCEPT
    client = client_connection()
    retry = screen.screen(first_initial(client), victim, now=1.0)
    assert retry.action is GateAction.RETRY and retry.response is not None
    client.receive_datagram(retry.response, SERVER_ADDR, now=1.0)
    proven = screen.screen(flight(client, 1.0)[0], victim, now=1.0)
    assert proven.action is GateAction.ACCEPT and proven.admission is not None
    assert proven.admission.validated


def test_gate_never_mode_refuses_an_address_over_its_quota() -> None:
    screen = gate(retry=RetryMode.NEVER, max_handshakes_per_address=1)
    assert screen.screen(first_initial(client_connection()), CLIENT_ADDR, now=1.0).admission
    refused = screen.screen(first_initial(client_connection()), CLIENT_ADDR, now=1.0)
    assert refused.action is GateAction.REFUSE
    other = screen.screen(first_initial(client_connection()), ("192.0.2.8", 1), now=1.0)
    assert other.action is GateAction.ACCEPT


def test_gate_ignores_tokens_that_are_not_ours() -> None:
    screen = gate(retry=RetryMode.NEVER)
    client = client_connection(token=b"a NEW_TOKEN token from some other server")
    initial = first_initial(client)
    assert header_of(initial).token
    assert screen.screen(initial, CLIENT_ADDR, now=1.0).action is GateAction.ACCEPT


# ---------------------------------------------------------------------- builders


@PROPERTIES
@given(
    dcid=client_cids,
    scid=cids,
    received=st.integers(MIN_INITIAL_DATAGRAM_SIZE, 65527),
    reason=st.text(max_size=100),
    code=st.integers(0, 2**62 - 1),
)
def test_refusal_is_small_and_parsable(
    dcid: bytes, scid: bytes, received: int, reason: str, code: int
) -> None:
    assume(len(reason.encode()) <= 512)
    header = QuicHeader(
        version=QuicProtocolVersion.VERSION_1,
        packet_type=QuicPacketType.INITIAL,
        packet_length=received,
        destination_cid=dcid,
        source_cid=scid,
        token=b"",
        integrity_tag=b"",
        supported_versions=[],
    )
    packet = build_refusal(header, datagram_size=received, error_code=code, reason=reason)
    assert len(packet) <= AMPLIFICATION_FACTOR * received
    # Header protection samples 16 bytes from 4 bytes past the packet number.
    parsed = header_of(packet)
    assert parsed.packet_length == len(packet)
    assert parsed.destination_cid == scid


def test_builders_refuse_what_must_be_dropped() -> None:
    initial = header_of(first_initial(client_connection()))
    with pytest.raises(ValueError, match="dropped"):
        build_refusal(initial, datagram_size=1199)
    with pytest.raises(ValueError, match="dropped"):
        build_retry(initial, source_cid=b"s" * 8, token=b"t", datagram_size=1000)
    with pytest.raises(ValueError, match="differ"):
        build_retry(initial, source_cid=initial.destination_cid, token=b"t", datagram_size=1200)
    with pytest.raises(ValueError, match="token"):
        build_retry(initial, source_cid=b"s" * 8, token=b"", datagram_size=1200)
    with pytest.raises(ValueError, match="supported"):
        build_version_negotiation(initial, datagram_size=1200)
    with pytest.raises(ValueError, match="too long"):
        build_refusal(initial, datagram_size=1200, reason="x" * 600)


# ---------------------------------------------------------------------- admission


def test_address_counter_bounds() -> None:
    counter = AddressCounter(total=3, per_address=2)
    a, b, c = ("192.0.2.1", 1), ("192.0.2.1", 2), ("192.0.2.2", 1)
    assert counter.try_acquire(a) and counter.try_acquire(b)
    assert not counter.try_acquire(a), "per-address bound ignores the port"
    assert counter.try_acquire(c)
    assert not counter.try_acquire(("192.0.2.3", 1)), "global bound"
    assert (counter.used, counter.addresses, counter.count(a)) == (3, 2, 2)
    counter.release(a)
    assert counter.try_acquire(("192.0.2.3", 1))
    for address in (b, c, ("192.0.2.3", 1)):
        counter.release(address)
    assert (counter.used, counter.addresses) == (0, 0)
    with pytest.raises(ValueError, match="release without acquire"):
        counter.release(a)
    with pytest.raises(ConfigurationError):
        AddressCounter(total=0, per_address=1)


def test_should_retry_modes() -> None:
    always = HandshakeAdmission(retry="always")
    never = HandshakeAdmission(retry=RetryMode.NEVER, retry_threshold=0)
    auto = HandshakeAdmission(retry=RetryMode.AUTO, retry_threshold=1)
    assert always.should_retry() and not never.should_retry() and not auto.should_retry()
    slot = auto.try_admit(CLIENT_ADDR, validated=False)
    assert slot is not None and auto.should_retry() and auto.unvalidated == 1
    auto.release(slot)
    assert not auto.should_retry()
    with pytest.raises(ConfigurationError, match="retry mode"):
        HandshakeAdmission(retry="sometimes")
    with pytest.raises(ConfigurationError):
        HandshakeAdmission(retry_threshold=-1)


def test_validated_and_unvalidated_share_the_global_bound() -> None:
    admission = HandshakeAdmission(max_handshakes=2, max_handshakes_per_address=2)
    assert admission.try_admit(CLIENT_ADDR, validated=False)
    assert admission.try_admit(CLIENT_ADDR, validated=True)
    assert admission.try_admit(("192.0.2.8", 1), validated=True) is None
    assert admission.in_flight == 2
