"""Placeholder demo: makes a certificate and prints what a browser needs.

The full demo (a server and a client exchanging data) replaces this file.
"""

from __future__ import annotations

import tempfile

from pywebtransport.shared.config import ServerConfig
from pywebtransport.shared.utils import generate_self_signed_cert


def main() -> None:
    """Generates a certificate, builds a server config and prints both."""
    with tempfile.TemporaryDirectory() as directory:
        cert = generate_self_signed_cert("localhost", output_dir=directory)
        config = ServerConfig(certfile=cert.certfile, keyfile=cert.keyfile, bind_port=0)
        print(f"certificate: {cert.certfile} (valid until {cert.not_after:%Y-%m-%d %H:%M} UTC)")
        print(f"SHA-256 fingerprint: {cert.fingerprint}")
        print(f"serverCertificateHashes value: new Uint8Array({cert.js_hash()})")
        print(f"server config: {config}")


if __name__ == "__main__":
    main()
