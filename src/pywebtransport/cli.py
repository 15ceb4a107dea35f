"""Command line: `python -m pywebtransport serve|gen-cert`.

```
python -m pywebtransport serve myapp:app --port 4433 --cert cert.pem --key key.pem
python -m pywebtransport serve myapp:asgi_app --asgi --port 4433 --cert cert.pem --key key.pem
python -m pywebtransport gen-cert --host 127.0.0.1 --out certs --days 10
```
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import cast

from .framework.app import ServerApp
from .framework.asgi import ASGIApp
from .shared.config import ServerConfig
from .shared.exceptions import CertificateError, ConfigurationError, ServerError
from .shared.utils import generate_self_signed_cert

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_FAILURE = 1


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pywebtransport", description="pywebtransport command line tools."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="serve a ServerApp or an ASGI app",
        description=(
            "Import MODULE:APP (a ServerApp, or with --asgi an ASGI application) and "
            "serve it until SIGINT/SIGTERM."
        ),
    )
    serve.add_argument("app", metavar="MODULE:APP", help="e.g. myproject.server:app")
    serve.add_argument(
        "--asgi",
        action="store_true",
        help="APP is an ASGI application: run it for every WebTransport session "
        "(the webtransport scope; needs --cert and --key)",
    )
    serve.add_argument("--host", default=None, help="bind address (default: the config's)")
    serve.add_argument("--port", type=int, default=None, help="UDP port (default: the config's)")
    serve.add_argument("--cert", default=None, help="PEM certificate file")
    serve.add_argument("--key", default=None, help="PEM private key file")
    serve.add_argument(
        "--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)"
    )
    serve.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")

    gen = commands.add_parser(
        "gen-cert",
        help="generate a self-signed certificate",
        description=(
            "Write <host>.crt and <host>.key (ECDSA P-256) and print the SHA-256 "
            "hash browsers take in serverCertificateHashes (validity must be <= 14 days)."
        ),
    )
    gen.add_argument("--host", default="127.0.0.1", help="host name or IP (default: 127.0.0.1)")
    gen.add_argument("--out", default=".", help="output directory (default: .)")
    gen.add_argument("--days", type=int, default=10, help="validity in days (default: 10)")
    return parser


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def load_app(spec: str) -> ServerApp:
    """Import `module:attribute` and return the `ServerApp` it names.

    The current directory is put on `sys.path` first.

    Args:
        spec: `"package.module:app"` (`attribute` may be dotted).

    Returns:
        The app.

    Raises:
        LookupError: The module or attribute is missing, or is not a ServerApp.
    """
    target = _load_object(spec)
    if not isinstance(target, ServerApp):
        raise LookupError(f"{spec!r} is a {type(target).__name__}, not a ServerApp")
    return target


def load_asgi_app(spec: str) -> ASGIApp:
    """Import `module:attribute` and return the ASGI application it names.

    Args:
        spec: `"package.module:app"` (`attribute` may be dotted).

    Returns:
        The ASGI application.

    Raises:
        LookupError: The module or attribute is missing, is a ServerApp, or
            is not callable.
    """
    target = _load_object(spec)
    if isinstance(target, ServerApp):
        raise LookupError(f"{spec!r} is a ServerApp: serve it without --asgi")
    if not callable(target):
        raise LookupError(f"{spec!r} is a {type(target).__name__}, not an ASGI application")
    return cast(ASGIApp, target)


def _load_object(spec: str) -> object:
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise LookupError(f"app must be given as MODULE:APP, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise LookupError(f"module {module_name!r} not found") from exc
        raise
    target: object = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise LookupError(f"module {module_name!r} has no attribute {attribute!r}") from exc
    return target


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.asgi:
            app = ServerApp()
            app.mount_asgi("/", load_asgi_app(args.app))
        else:
            app = load_app(args.app)
    except LookupError as exc:
        _error(str(exc))
        return EXIT_USAGE
    if (args.cert is None) != (args.key is None):
        _error("--cert and --key go together")
        return EXIT_USAGE
    try:
        if args.cert is not None:
            for path in (args.cert, args.key):
                if not os.access(path, os.R_OK):
                    _error(f"cannot read {path!r}")
                    return EXIT_USAGE
            if app.config is None:
                app.config = ServerConfig(certfile=args.cert, keyfile=args.key)
            else:
                app.config = app.config.update(certfile=args.cert, keyfile=args.key)
        elif args.asgi:
            _error("--asgi needs --cert and --key")
            return EXIT_USAGE
        elif app.config is None:
            _error(f"{args.app} has no ServerConfig: pass --cert and --key")
            return EXIT_USAGE
        app.run(args.host, args.port, workers=args.workers)
    except (CertificateError, ServerError, ConfigurationError, ValueError) as exc:
        _error(str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        pass
    return 0


def _gen_cert(args: argparse.Namespace) -> int:
    try:
        info = generate_self_signed_cert(args.host, output_dir=args.out, validity_days=args.days)
    except ValueError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except OSError as exc:
        _error(f"cannot write into {args.out!r}: {exc.strerror or exc}")
        return EXIT_FAILURE
    print(f"certificate: {info.certfile}")
    print(f"key:         {info.keyfile}")
    print(f"expires:     {info.not_after:%Y-%m-%d %H:%M} UTC")
    print(f"sha256:      {info.fingerprint}")
    value = f"new Uint8Array({info.js_hash()})"
    print(f"serverCertificateHashes: [{{algorithm: 'sha-256', value: {value}}}]")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments without the program name (default: `sys.argv[1:]`).

    Returns:
        The exit status: 0 on success, 1 when serving failed (port in use,
        bad certificate), 2 on usage errors (app not found, bad options).
    """
    args = _build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    return _gen_cert(args)
