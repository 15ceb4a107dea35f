"""Security defaults: certificate verification, TLS 1.3, auth, origin and rate limits."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pywebtransport import ClientConfig, WebTransportClient, WebTransportServer
from pywebtransport.framework import (
    ServerApp,
    create_cors_middleware,
    create_rate_limit_middleware,
    create_token_auth_middleware,
)
from pywebtransport.shared.exceptions import CertificateError, HandshakeError
from pywebtransport.shared.utils import CertificateInfo, generate_self_signed_cert

from .conftest import ServerFactory, echo_handler, url_of

TLS13_SUITES = {0x1301, 0x1302, 0x1303}


def _write_cert(
    directory: Path,
    *,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    san_ip: str = "127.0.0.1",
    issuer_key: ec.EllipticCurvePrivateKey | None = None,
    issuer_name: x509.Name | None = None,
    name: str = "leaf",
) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, san_ip)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name or subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(san_ip))]),
            critical=False,
        )
        .sign(issuer_key or key, hashes.SHA256())
    )
    certfile = directory / f"{name}.crt"
    keyfile = directory / f"{name}.key"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(certfile), str(keyfile)


async def _expect_certificate_error(config: ClientConfig, url: str) -> None:
    async with WebTransportClient(config) as client:
        with pytest.raises(CertificateError):
            await client.connect(url)
        assert len(client.connection_manager) == 0


@pytest.mark.timeout(15)
async def test_wrong_host_name_rejected(start_server: ServerFactory, tmp_path: Path) -> None:
    # A certificate for another name, trusted as a CA: the name check alone must fail.
    other = generate_self_signed_cert("pwt-other.example", output_dir=tmp_path)
    server = await start_server(echo_handler, certfile=other.certfile, keyfile=other.keyfile)
    await _expect_certificate_error(
        ClientConfig(ca_certs=other.certfile, connect_timeout=5.0), url_of(server)
    )


@pytest.mark.timeout(15)
async def test_expired_certificate_rejected(start_server: ServerFactory, tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    certfile, keyfile = _write_cert(
        tmp_path,
        not_before=now - datetime.timedelta(days=20),
        not_after=now - datetime.timedelta(days=1),
    )
    server = await start_server(echo_handler, certfile=certfile, keyfile=keyfile)
    await _expect_certificate_error(
        ClientConfig(ca_certs=certfile, connect_timeout=5.0), url_of(server)
    )


@pytest.mark.timeout(15)
async def test_self_signed_without_pinning_rejected(
    echo_server: WebTransportServer,
) -> None:
    # Default config: system CAs only, verification on.
    assert ClientConfig().verify_mode.name == "CERT_REQUIRED"
    await _expect_certificate_error(ClientConfig(connect_timeout=5.0), url_of(echo_server))


@pytest.mark.timeout(15)
async def test_pinned_hash_works_and_tls13(
    echo_server: WebTransportServer, certificate: CertificateInfo
) -> None:
    config = ClientConfig(server_certificate_hashes=[certificate.fingerprint], connect_timeout=5.0)
    async with WebTransportClient(config) as client:
        session = await client.connect(url_of(echo_server))
        stream = await session.create_bidirectional_stream()
        await stream.write(b"pinned", end_stream=True)
        assert await stream.read_all() == b"pinned"
        # QUIC is TLS 1.3 only; aioquic exposes the negotiated suite on its TLS context.
        tls = session.connection._engine.quic.tls
        suite = getattr(tls, "key_schedule", None) and tls.key_schedule.cipher_suite
        assert int(suite) in TLS13_SUITES, suite
        await session.close()


# --------------------------------------------------------------------------- middleware


@pytest.fixture
async def app_factory(
    certificate: CertificateInfo,
) -> AsyncIterator[list[ServerApp]]:
    started: list[ServerApp] = []
    yield started
    for app in started:
        await app.shutdown()


async def _start_app(app: ServerApp, started: list[ServerApp]) -> str:
    started.append(app)
    await app.listen("127.0.0.1", 0)
    address = app.local_address
    assert address is not None
    return f"https://127.0.0.1:{address[1]}"


def _app(server_config: object) -> ServerApp:
    app = ServerApp(config=server_config)  # type: ignore[arg-type]

    @app.route("/")
    async def root(session: object) -> None:
        await echo_handler(session)  # type: ignore[arg-type]

    return app


@pytest.mark.timeout(20)
async def test_token_auth_blocks_missing_and_wrong_tokens(
    server_config: object, client_config: ClientConfig, app_factory: list[ServerApp]
) -> None:
    app = _app(server_config)
    app.add_middleware(create_token_auth_middleware(["s3cret"]))
    base = await _start_app(app, app_factory)
    async with WebTransportClient(client_config) as client:
        for url, headers in (
            (f"{base}/", None),
            (f"{base}/?token=wrong", None),
            (f"{base}/", {"authorization": "Bearer wrong"}),
            (f"{base}/?token=", None),
        ):
            with pytest.raises(HandshakeError) as info:
                await client.connect(url, headers=headers)
            assert info.value.status_code == 401
        good = await client.connect(f"{base}/?token=s3cret")
        await good.close()
        good = await client.connect(f"{base}/", headers={"authorization": "Bearer s3cret"})
        await good.close()


@pytest.mark.timeout(20)
async def test_origin_allow_list_python_client(
    server_config: object, client_config: ClientConfig, app_factory: list[ServerApp]
) -> None:
    app = _app(server_config)
    app.add_middleware(create_cors_middleware(["https://good.example"]))
    base = await _start_app(app, app_factory)
    async with WebTransportClient(client_config) as client:
        for headers in (None, {"origin": "https://evil.example"}):
            with pytest.raises(HandshakeError) as info:
                await client.connect(f"{base}/", headers=headers)
            assert info.value.status_code == 403
        ok = await client.connect(f"{base}/", headers={"origin": "https://good.example"})
        await ok.close()


@pytest.mark.timeout(20)
async def test_rate_limit_holds_its_bound(
    server_config: object, client_config: ClientConfig, app_factory: list[ServerApp]
) -> None:
    limit = 5
    app = _app(server_config)
    app.add_middleware(create_rate_limit_middleware(max_requests=limit, window_seconds=30))
    base = await _start_app(app, app_factory)
    async with WebTransportClient(client_config) as client:
        for _ in range(limit):
            session = await client.connect(f"{base}/")
            await session.close()
        with pytest.raises(HandshakeError) as info:
            await client.connect(f"{base}/")
        assert info.value.status_code == 429
