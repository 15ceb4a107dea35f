"""Tests for pywebtransport.shared.utils (and the shared package's exports)."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import logging
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st

import pywebtransport.shared as shared
from pywebtransport.shared import config, constants, events, exceptions, types, utils
from pywebtransport.shared.exceptions import CertificateError
from pywebtransport.shared.utils import (
    CertificateInfo,
    certificate_sha256,
    decode_varint,
    encode_varint,
    generate_self_signed_cert,
    init_tracing,
)

VARINT_MAX = 2**62 - 1


def load(info: CertificateInfo) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(info.certfile).read_bytes())


def san(cert: x509.Certificate) -> tuple[set[str], set[object]]:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(names.get_values_for_type(x509.DNSName)), set(
        names.get_values_for_type(x509.IPAddress)
    )


def test_shared_all_is_union_of_submodules() -> None:
    modules = (config, constants, events, exceptions, types, utils)
    expected = {name for module in modules for name in module.__all__}
    assert set(shared.__all__) == expected
    assert len(shared.__all__) == len(expected)
    for name in expected:
        assert hasattr(shared, name), name


def test_certificate_defaults(tmp_path: Path) -> None:
    before = datetime.datetime.now(datetime.UTC)
    info = generate_self_signed_cert(output_dir=tmp_path / "new")
    after = datetime.datetime.now(datetime.UTC)
    assert info.certfile == str(tmp_path / "new" / "localhost.crt")
    assert info.keyfile == str(tmp_path / "new" / "localhost.key")
    cert = load(info)

    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert isinstance(public_key.curve, ec.SECP256R1)
    key = serialization.load_pem_private_key(Path(info.keyfile).read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key().public_numbers() == public_key.public_numbers()

    assert cert.issuer == cert.subject
    dns, ips = san(cert)
    assert dns == {"localhost"}
    assert ips == {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}

    not_before = cert.not_valid_before_utc
    assert before - datetime.timedelta(minutes=1, seconds=1) <= not_before
    assert not_before <= after - datetime.timedelta(seconds=59)
    assert cert.not_valid_after_utc - not_before == datetime.timedelta(days=10)
    assert info.not_after == cert.not_valid_after_utc
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False

    der = cert.public_bytes(serialization.Encoding.DER)
    assert info.sha256 == hashlib.sha256(der).digest()
    assert info.fingerprint == hashlib.sha256(der).hexdigest()
    assert certificate_sha256(info.certfile) == info.sha256
    assert stat.S_IMODE(Path(info.keyfile).stat().st_mode) == 0o600


def test_certificate_for_dns_name_and_ip(tmp_path: Path) -> None:
    info = generate_self_signed_cert(hostname="example.test", output_dir=tmp_path)
    assert san(load(info)) == ({"example.test"}, set())
    info = generate_self_signed_cert("192.0.2.7", output_dir=str(tmp_path))
    assert info.certfile.endswith("192.0.2.7.crt")
    assert san(load(info)) == (set(), {ipaddress.ip_address("192.0.2.7")})


def test_certificate_validity_and_browser_warning(tmp_path: Path) -> None:
    info = generate_self_signed_cert(output_dir=tmp_path, validity_days=14)
    cert = load(info)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(days=14)
    with pytest.warns(UserWarning, match="14 days"):
        info = generate_self_signed_cert(output_dir=tmp_path, validity_days=15)
    cert = load(info)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(days=15)


def test_certificate_rsa_warns(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="ECDSA"):
        info = generate_self_signed_cert(output_dir=tmp_path, key_type="rsa-2048")
    public_key = load(info).public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert public_key.key_size == 2048


def test_certificates_differ_and_overwrite(tmp_path: Path) -> None:
    first = generate_self_signed_cert(output_dir=tmp_path)
    Path(first.keyfile).chmod(0o644)
    second = generate_self_signed_cert(output_dir=tmp_path)
    assert first.sha256 != second.sha256
    assert certificate_sha256(second.certfile) == second.sha256
    assert stat.S_IMODE(Path(second.keyfile).stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hostname": ""},
        {"hostname": "a/b"},
        {"validity_days": 0},
        {"validity_days": True},
        {"key_type": "ed25519"},
    ],
)
def test_certificate_bad_arguments(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        generate_self_signed_cert(output_dir=tmp_path, **kwargs)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_js_hash() -> None:
    info = CertificateInfo(
        certfile="c",
        keyfile="k",
        sha256=bytes([0, 1, 255]),
        fingerprint="0001ff",
        not_after=datetime.datetime.now(datetime.UTC),
    )
    assert info.js_hash() == "[0, 1, 255]"


def test_certificate_sha256_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(CertificateError) as info:
        certificate_sha256(missing)
    assert str(missing) in str(info.value)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(CertificateError):
        certificate_sha256(garbage)


def test_certificate_sha256_uses_first_certificate(tmp_path: Path) -> None:
    first = generate_self_signed_cert("one.test", output_dir=tmp_path)
    second = generate_self_signed_cert("two.test", output_dir=tmp_path)
    chain = tmp_path / "chain.pem"
    chain.write_bytes(Path(first.certfile).read_bytes() + Path(second.certfile).read_bytes())
    assert certificate_sha256(chain) == first.sha256


def test_init_tracing_is_idempotent() -> None:
    library_logger = logging.getLogger("pywebtransport")
    saved_handlers = list(library_logger.handlers)
    saved_level = library_logger.level
    try:
        init_tracing("debug")
        init_tracing(level=logging.WARNING)
        ours = [h for h in library_logger.handlers if h not in saved_handlers]
        assert len(ours) == 1
        assert library_logger.level == logging.WARNING
        assert ours[0].level == logging.WARNING
        with pytest.raises(ValueError):
            init_tracing("LOUD")
    finally:
        library_logger.handlers[:] = saved_handlers
        library_logger.setLevel(saved_level)


# RFC 9000 Appendix A.1 examples.
@pytest.mark.parametrize(
    ("encoded", "value"),
    [
        ("c2197c5eff14e88c", 151288809941952652),
        ("9d7f3e7d", 494878333),
        ("7bbd", 15293),
        ("25", 37),
        ("4025", 37),
    ],
)
def test_varint_rfc_examples(encoded: str, value: int) -> None:
    data = bytes.fromhex(encoded)
    assert decode_varint(data) == (value, len(data))
    assert decode_varint(b"\xff" + data, 1) == (value, len(data) + 1)


@pytest.mark.parametrize(
    ("value", "length"),
    [
        (0, 1),
        (63, 1),
        (64, 2),
        (16383, 2),
        (16384, 4),
        (2**30 - 1, 4),
        (2**30, 8),
        (VARINT_MAX, 8),
    ],
)
def test_varint_length_class_boundaries(value: int, length: int) -> None:
    encoded = encode_varint(value)
    assert len(encoded) == length
    assert encoded[0] >> 6 == length.bit_length() - 1
    assert decode_varint(encoded) == (value, length)


@pytest.mark.parametrize("value", [-1, 2**62, 2**64])
def test_varint_out_of_range(value: int) -> None:
    with pytest.raises(ValueError):
        encode_varint(value)


@given(st.integers(min_value=0, max_value=VARINT_MAX), st.binary(max_size=4), st.binary(max_size=4))
def test_varint_round_trip(value: int, prefix: bytes, suffix: bytes) -> None:
    encoded = encode_varint(value)
    for data in (
        prefix + encoded + suffix,
        bytearray(prefix + encoded),
        memoryview(prefix + encoded),
    ):
        assert decode_varint(data, len(prefix)) == (value, len(prefix) + len(encoded))


@given(st.sampled_from([(0, 63), (64, 16383), (16384, 2**30 - 1), (2**30, VARINT_MAX)]), st.data())
def test_varint_every_length_class(bounds: tuple[int, int], data: st.DataObject) -> None:
    value = data.draw(st.integers(min_value=bounds[0], max_value=bounds[1]))
    encoded = encode_varint(value)
    assert len(encoded) == 1 << (encoded[0] >> 6)
    assert 1 << (encoded[0] >> 6) == {63: 1, 16383: 2, 2**30 - 1: 4, VARINT_MAX: 8}[bounds[1]]
    assert decode_varint(encoded) == (value, len(encoded))


@given(st.integers(min_value=0, max_value=VARINT_MAX), st.data())
def test_varint_truncated_returns_none(value: int, data: st.DataObject) -> None:
    encoded = encode_varint(value)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    assert decode_varint(encoded[:cut]) is None
    assert decode_varint(memoryview(encoded)[:cut]) is None


@given(st.binary(min_size=1, max_size=8))
def test_varint_decode_accepts_non_minimal(data: bytes) -> None:
    length = 1 << (data[0] >> 6)
    result = decode_varint(data)
    if len(data) < length:
        assert result is None
    else:
        assert result is not None
        value, end = result
        assert end == length
        assert value == int.from_bytes(data[:length], "big") & ((1 << (8 * length - 2)) - 1)


def test_certificate_info_unpacks_like_the_reference_tuple(tmp_path: Path) -> None:
    info = generate_self_signed_cert(hostname="localhost", output_dir=str(tmp_path))
    ca_cert, cert, key = info
    assert (ca_cert, cert, key) == (info.certfile, info.certfile, info.keyfile)
    assert len(info) == 3
    assert (info[0], info[1], info[2], info[-1]) == (ca_cert, cert, key, key)
    assert list(info) == [ca_cert, cert, key]
    with pytest.raises(IndexError):
        info[3]
    # The attributes stay.
    assert len(info.sha256) == 32 and info.fingerprint == info.sha256.hex()
    assert info.js_hash().startswith("[")


@pytest.mark.timeout(5)
def test_format_address_brackets_ipv6() -> None:
    from pywebtransport.shared.utils import format_address

    assert format_address("127.0.0.1", 4433) == "127.0.0.1:4433"
    assert format_address("::", 4433) == "[::]:4433"
    assert format_address("example.com", 443) == "example.com:443"
