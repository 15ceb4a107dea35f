"""Helpers: self-signed certificates, logging set-up and QUIC variable-length integers.

Example:
    ```python
    from pywebtransport import generate_self_signed_cert

    cert = generate_self_signed_cert("localhost", output_dir="certs")
    print(cert.fingerprint)  # give this to the browser's serverCertificateHashes

    # Unpacks like the reference library's (ca_cert, cert, key) tuple:
    ca_cert, certfile, keyfile = generate_self_signed_cert(hostname="localhost")
    ```
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .exceptions import CertificateError

__all__ = [
    "CertificateInfo",
    "certificate_sha256",
    "decode_varint",
    "encode_varint",
    "format_address",
    "generate_self_signed_cert",
    "init_tracing",
]

# Chromium and Firefox accept `serverCertificateHashes` only for certificates
# whose whole validity period is at most 14 days.
_BROWSER_HASH_MAX_VALIDITY_DAYS = 14

_KEY_TYPES = ("ecdsa-p256", "rsa-2048")
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def format_address(host: str, port: int) -> str:
    """Returns `host:port` as it is written in URLs, IPv6 hosts in brackets.

    Args:
        host: A host name or an IPv4 or IPv6 address, e.g. `"::"`.
        port: The port.

    Returns:
        E.g. `"127.0.0.1:4433"` or `"[::]:4433"`.
    """
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What `generate_self_signed_cert()` wrote.

    It also unpacks like the reference library's return value, a
    `(ca_cert, cert, key)` tuple of paths: `ca_cert, cert, key = info`
    (`info[0]`, `info[1]`, `info[2]` and `len(info) == 3` work too). The
    certificate is self-signed, so it is its own CA file: `ca_cert` and `cert`
    are both `certfile` (pass it as `ClientConfig(ca_certs=...)` to verify the
    server), and no separate `<host>_ca.crt` is written.

    Attributes:
        certfile: Path of the PEM certificate.
        keyfile: Path of the PEM private key (mode 0600).
        sha256: SHA-256 digest of the DER certificate, the value browsers take
            in `serverCertificateHashes` and `ClientConfig` in
            `server_certificate_hashes`.
        fingerprint: `sha256` as lowercase hex without separators.
        not_after: End of the validity period (timezone-aware, UTC).
    """

    certfile: str
    keyfile: str
    sha256: bytes
    fingerprint: str
    not_after: datetime.datetime

    def js_hash(self) -> str:
        """Returns `sha256` as a JavaScript array literal, e.g. `[12, 250, ...]`.

        Handy in a browser page:
        `new WebTransport(url, {serverCertificateHashes: [{algorithm: "sha-256",
        value: new Uint8Array(<js_hash>)}]})`.

        Returns:
            The digest bytes as a JS array literal.
        """
        return "[" + ", ".join(str(byte) for byte in self.sha256) + "]"

    def _as_reference_tuple(self) -> tuple[str, str, str]:
        # The self-signed certificate doubles as the CA file of the reference's tuple.
        return (self.certfile, self.certfile, self.keyfile)

    def __iter__(self) -> Iterator[str]:
        """Yields `certfile` (as the CA file), `certfile` and `keyfile`."""
        return iter(self._as_reference_tuple())

    def __len__(self) -> int:
        """Always 3, the length of the reference library's tuple."""
        return 3

    def __getitem__(self, index: int) -> str:
        """Indexes the `(ca_cert, cert, key)` view: 0 and 1 are `certfile`, 2 is `keyfile`.

        Args:
            index: 0, 1 or 2 (negative indexes count from the end).

        Returns:
            The path.

        Raises:
            IndexError: `index` is out of range.
        """
        return self._as_reference_tuple()[index]


def generate_self_signed_cert(
    hostname: str = "localhost",
    *,
    output_dir: str | Path = ".",
    validity_days: int = 10,
    key_type: str = "ecdsa-p256",
) -> CertificateInfo:
    """Creates a self-signed certificate and key that browsers accept by hash.

    The subject alternative names hold `hostname` (as an IP address if it is
    one, else as a DNS name); for a loopback name (`localhost`, `127.0.0.1`,
    `::1`) all three are included. The certificate is valid from one minute
    ago (to tolerate clock skew) for `validity_days` days.

    Writes `<hostname>.crt` and `<hostname>.key` (PEM; the key with mode
    0600) into `output_dir`, creating it if needed and replacing existing
    files.

    Args:
        hostname: Name or IP address the certificate is for.
        output_dir: Directory for the two files.
        validity_days: Length of the validity period in days. Above 14,
            browsers refuse the certificate's hash (a `UserWarning` says so).
        key_type: `"ecdsa-p256"` (what browsers require for certificate
            hashes) or `"rsa-2048"` (warns: only usable with CA verification).

    Returns:
        The file paths, the SHA-256 digest and fingerprint, and the expiry. It
        also unpacks as the reference library's `(ca_cert, cert, key)`, where
        `ca_cert` is the self-signed certificate itself.

    Raises:
        ValueError: `hostname`, `validity_days` or `key_type` is invalid.
        OSError: The files cannot be written.
    """
    if not isinstance(hostname, str) or not hostname or "/" in hostname or "\0" in hostname:
        raise ValueError(f"hostname must be a non-empty name or IP address, got {hostname!r}")
    if isinstance(validity_days, bool) or not isinstance(validity_days, int) or validity_days < 1:
        raise ValueError(f"validity_days must be an integer >= 1, got {validity_days!r}")
    if key_type not in _KEY_TYPES:
        raise ValueError(f"key_type must be one of {', '.join(_KEY_TYPES)}, got {key_type!r}")
    if validity_days > _BROWSER_HASH_MAX_VALIDITY_DAYS:
        warnings.warn(
            f"validity_days={validity_days}: browsers refuse serverCertificateHashes for "
            f"certificates valid longer than {_BROWSER_HASH_MAX_VALIDITY_DAYS} days",
            UserWarning,
            stacklevel=2,
        )

    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if key_type == "rsa-2048":
        warnings.warn(
            "RSA certificates cannot be used with serverCertificateHashes: browsers "
            "require ECDSA P-256 keys for that",
            UserWarning,
            stacklevel=2,
        )
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        private_key = ec.generate_private_key(ec.SECP256R1())

    not_before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    not_before -= datetime.timedelta(minutes=1)
    not_after = not_before + datetime.timedelta(days=validity_days)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(_san_entries(hostname)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=key_type == "rsa-2048",
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .sign(private_key, hashes.SHA256())
    )

    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    certfile = directory / f"{hostname}.crt"
    keyfile = directory / f"{hostname}.key"
    key_pem = private_key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    # Create the key file 0600 from the start so it is never world-readable,
    # and fchmod in case it already existed with wider permissions.
    fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as key_out:
        os.fchmod(key_out.fileno(), 0o600)
        key_out.write(key_pem)
    certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))

    digest = hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).digest()
    return CertificateInfo(
        certfile=str(certfile),
        keyfile=str(keyfile),
        sha256=digest,
        fingerprint=digest.hex(),
        not_after=not_after,
    )


def _san_entries(hostname: str) -> list[x509.GeneralName]:
    names = [hostname]
    if hostname in _LOOPBACK_NAMES:
        names = ["localhost", "127.0.0.1", "::1"]
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


def certificate_sha256(certfile: str | Path) -> bytes:
    """Returns the SHA-256 digest of the DER form of the first certificate in a PEM file.

    This is the value a browser's `serverCertificateHashes` (or
    `ClientConfig.server_certificate_hashes`) must contain.

    Args:
        certfile: Path of a PEM file holding one or more certificates.

    Returns:
        The 32-byte digest.

    Raises:
        CertificateError: The file cannot be read or holds no valid PEM
            certificate.
    """
    try:
        pem = Path(certfile).read_bytes()
    except OSError as exc:
        raise CertificateError(
            f"Cannot read certificate file {str(certfile)!r}: {exc.strerror or exc}",
            path=str(certfile),
        ) from exc
    try:
        certificate = x509.load_pem_x509_certificates(pem)[0]
    except ValueError as exc:
        raise CertificateError(
            f"No valid PEM certificate in {str(certfile)!r}", path=str(certfile)
        ) from exc
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).digest()


_TRACING_HANDLER_NAME = "pywebtransport-tracing"


def init_tracing(level: int | str = "INFO") -> None:
    """Sends the library's logs (`pywebtransport.*` loggers) to stderr, readably formatted.

    Calling it again only changes the level: there is never more than one
    handler.

    Args:
        level: A `logging` level number or name such as `"DEBUG"`.

    Raises:
        ValueError: `level` is not a known logging level.
    """
    if isinstance(level, str):
        levels = logging.getLevelNamesMapping()
        if level.upper() not in levels:
            raise ValueError(f"Unknown log level {level!r}; use one of {', '.join(sorted(levels))}")
        level = levels[level.upper()]
    elif isinstance(level, bool) or not isinstance(level, int):
        raise ValueError(f"Unknown log level {level!r}")
    library_logger = logging.getLogger("pywebtransport")
    library_logger.setLevel(level)
    for handler in library_logger.handlers:
        if handler.get_name() == _TRACING_HANDLER_NAME:
            handler.setLevel(level)
            return
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_TRACING_HANDLER_NAME)
    handler.setLevel(level)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-8s %(name)s: %(message)s", "%H:%M:%S")
    )
    library_logger.addHandler(handler)


# QUIC variable-length integers (RFC 9000 §16): the two high bits of the first
# byte give the length (1, 2, 4 or 8 bytes), the rest is the big-endian value.
_VARINT_MAX = (1 << 62) - 1
_VARINT_MASKS = (0x3F, 0x3FFF, 0x3FFFFFFF, 0x3FFFFFFFFFFFFFFF)


def encode_varint(value: int) -> bytes:
    """Encodes a QUIC variable-length integer in the shortest form.

    Args:
        value: An integer in 0..2**62-1.

    Returns:
        1, 2, 4 or 8 bytes.

    Raises:
        ValueError: `value` is out of range.
    """
    if value < 0x40:
        if value < 0:
            raise ValueError(f"varint value must be in 0..2**62-1, got {value}")
        return bytes((value,))
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 0x40000000:
        return (value | 0x80000000).to_bytes(4, "big")
    if value <= _VARINT_MAX:
        return (value | 0xC000000000000000).to_bytes(8, "big")
    raise ValueError(f"varint value must be in 0..2**62-1, got {value}")


def decode_varint(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int] | None:
    """Decodes a QUIC variable-length integer.

    Non-minimal encodings are accepted, as RFC 9000 requires.

    Args:
        data: The buffer.
        offset: Where the integer starts (>= 0).

    Returns:
        `(value, offset_after)`, or None when `data` ends before the integer
        does (wait for more bytes and retry).
    """
    if offset >= len(data):
        return None
    first = data[offset]
    prefix = first >> 6
    if prefix == 0:
        return first, offset + 1
    end = offset + (1 << prefix)
    if end > len(data):
        return None
    return int.from_bytes(data[offset:end], "big") & _VARINT_MASKS[prefix], end


def wake(future: asyncio.Future[None] | None) -> None:
    """Resolve a waiter's future, if there is one and it is still pending.

    The one way the asyncio layer wakes a parked reader, writer or acceptor.

    Args:
        future: The waiter's future, or None when nobody waits.
    """
    if future is not None and not future.done():
        future.set_result(None)
