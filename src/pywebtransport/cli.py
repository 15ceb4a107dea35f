"""Command line: `python -m pywebtransport serve|gen-cert|client`.

```
python -m pywebtransport serve myapp:app --port 4433 --cert cert.pem --key key.pem
python -m pywebtransport serve myapp:asgi_app --asgi --port 4433 --cert cert.pem --key key.pem
python -m pywebtransport gen-cert --host 127.0.0.1 --out certs --days 10
python -m pywebtransport client https://127.0.0.1:4433/echo --cert-hash 5f3a...
python -m pywebtransport --version
```
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import ssl
import sys
import threading
import warnings
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar, cast

from .client import WebTransportClient
from .framework.app import ServerApp
from .framework.asgi import ASGIApp
from .shared.config import ClientConfig, ServerConfig
from .shared.exceptions import (
    ConfigurationError,
    HandshakeError,
    WebTransportError,
)
from .shared.utils import generate_self_signed_cert
from .shared.version import __version__
from .transport.session import SessionCloseInfo, WebTransportSession
from .transport.stream import WebTransportReceiveStream

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_FAILURE = 1


_CONGESTION_CONTROL = ("cubic", "reno", "bbr")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pywebtransport", description="pywebtransport command line tools."
    )
    parser.add_argument("--version", action="version", version=f"pywebtransport {__version__}")
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
    serve.add_argument(
        "--congestion-control",
        choices=_CONGESTION_CONTROL,
        default=None,
        help="QUIC congestion control (default: the config's, cubic); bbr suits lossy paths",
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

    _add_client_command(commands)
    return parser


def _cert_hash(text: str) -> str:
    # ClientConfig's own check, so the option and the config accept the same forms.
    try:
        ClientConfig(server_certificate_hashes=cast(Any, (text,)))
    except ConfigurationError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a SHA-256: 64 hex digits, colons allowed (gen-cert prints it "
            "as sha256; in Python, certificate_sha256(path).hex())"
        ) from None
    return text


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
        hint = ""
        if callable(target) and not isinstance(target, type):
            hint = "; if it is an ASGI application, serve it with --asgi"
        raise LookupError(f"{spec!r} is a {type(target).__name__}, not a ServerApp{hint}")
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
        if args.congestion_control is not None and app.config is not None:
            app.config = app.config.update(congestion_control_algorithm=args.congestion_control)
        app.run(args.host, args.port, workers=args.workers)
    except (ConfigurationError, ValueError) as exc:
        _error(str(exc))
        return EXIT_FAILURE
    except SystemExit as exc:  # app.run() ends a failed start with its one-line message
        if not isinstance(exc.code, str):
            raise
        print(exc.code, file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        pass
    return 0


def _gen_cert(args: argparse.Namespace) -> int:
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            info = generate_self_signed_cert(
                args.host, output_dir=args.out, validity_days=args.days
            )
        for warning in caught:
            print(f"warning: {warning.message}", file=sys.stderr)
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
        bad certificate) or a client could not connect, 2 on usage errors (app
        not found, bad options); `client` exits with the session's close code.
    """
    args = _build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "client":
        return _client(args)
    return _gen_cert(args)


# ---------------------------------------------------------------------- client

_REPLY_LIMIT = 16 * 1024 * 1024
_T = TypeVar("_T")


def _add_client_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    client = commands.add_parser(
        "client",
        help="talk to a WebTransport URL over stdin/stdout",
        description=(
            "Connect to URL, send each line of stdin on a new bidirectional stream "
            "(or as a datagram with --datagram) and print what comes back: the reply on "
            "each stream, datagrams, and streams the server opens. At the end of input, "
            "wait up to --wait seconds for outstanding replies, then close the session. "
            "The exit status is the session's close code (1 if above 255 or the "
            "connection was lost)."
        ),
    )
    client.add_argument("url", metavar="URL", help="https://host[:port]/path")
    client.add_argument(
        "--datagram", action="store_true", help="send each line as a datagram instead"
    )
    client.add_argument(
        "--cert-hash",
        action="append",
        default=[],
        type=_cert_hash,
        metavar="HEX",
        help="accept the server certificate with this SHA-256 (hex, colons allowed; repeatable)",
    )
    client.add_argument("--ca", metavar="FILE", help="verify the server against this CA file")
    client.add_argument(
        "--insecure", action="store_true", help="do not verify the server certificate"
    )
    client.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="connect timeout (default: ClientConfig's, 10 s)",
    )
    client.add_argument(
        "--wait",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="after the end of input, wait this long at most for replies (default: 2)",
    )
    client.add_argument(
        "--congestion-control",
        choices=_CONGESTION_CONTROL,
        default="cubic",
        help="QUIC congestion control (default: cubic); bbr suits lossy paths",
    )
    client.add_argument(
        "--log-level",
        default="ERROR",
        help="logging level of the library and aioquic (default: ERROR; DEBUG to trace)",
    )


def _client(args: argparse.Namespace) -> int:
    # Errors are reported by this command itself: library warnings (such as
    # aioquic's about a rejected certificate) would only repeat them.
    try:
        logging.basicConfig(
            level=args.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    except ValueError as exc:
        _error(f"--log-level: {exc}")
        return EXIT_USAGE
    try:
        cc = args.congestion_control
        if args.insecure:
            config = ClientConfig(verify_mode=ssl.CERT_NONE, congestion_control_algorithm=cc)
        else:
            config = ClientConfig(
                ca_certs=args.ca,
                server_certificate_hashes=args.cert_hash,
                congestion_control_algorithm=cc,
            )
    except ConfigurationError as exc:
        _error(str(exc))
        return EXIT_USAGE
    try:
        return asyncio.run(_run_client(args, config))
    except KeyboardInterrupt:
        return 130


def _status(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _emit(data: bytes) -> None:
    """Print one received message, ending it with a newline if it has none."""
    out = sys.stdout.buffer
    out.write(data if data.endswith(b"\n") else data + b"\n")
    out.flush()


def _read_stdin(loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[bytes | None]) -> None:
    """Feed stdin's lines (then None at EOF) to the loop; runs in a daemon thread.

    Reads the file descriptor directly: a daemon thread blocked inside
    `sys.stdin.buffer` would hold its lock and abort the interpreter at exit.
    """
    pending = b""
    try:
        try:
            fd = sys.stdin.fileno()
            while chunk := os.read(fd, 65536):
                *complete, pending = (pending + chunk).split(b"\n")
                for line in complete:
                    loop.call_soon_threadsafe(lines.put_nowait, line.removesuffix(b"\r"))
        except (OSError, ValueError) as exc:  # no usable stdin: treat as its end
            loop.call_soon_threadsafe(_error, f"cannot read stdin: {exc}")
        if pending:
            loop.call_soon_threadsafe(lines.put_nowait, pending.removesuffix(b"\r"))
        loop.call_soon_threadsafe(lines.put_nowait, None)
    except RuntimeError:  # the loop is closed: the client has already exited
        pass


async def _run_client(args: argparse.Namespace, config: ClientConfig) -> int:
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[bytes | None] = asyncio.Queue()
    # A daemon thread, not to_thread(): a read blocked on a terminal must not keep
    # the process alive once the server has closed the session.
    threading.Thread(target=_read_stdin, args=(loop, lines), daemon=True).start()
    async with WebTransportClient(config) as client:
        try:
            session = await client.connect(args.url, timeout=args.timeout)
        except HandshakeError as exc:
            _error(f"{args.url} refused the session with HTTP status {exc.status_code}")
            return EXIT_FAILURE
        except WebTransportError as exc:
            _error(f"cannot connect to {args.url}: {exc}")
            return EXIT_FAILURE
        protocol = f" (protocol {session.wt_protocol})" if session.wt_protocol else ""
        _status(f"connected to {args.url}{protocol}")
        info = await _ClientTalk(session, args.datagram, args.wait).run(lines)
    who = "the server" if info.remote else "this client"
    reason = f", reason {info.reason!r}" if info.reason else ""
    lost = "" if info.clean else " (not cleanly: reset or connection lost)"
    _status(f"session closed by {who}: code {info.error_code}{reason}{lost}")
    if not info.clean and not info.error_code:
        return EXIT_FAILURE
    return info.error_code if 0 <= info.error_code <= 255 else EXIT_FAILURE


class _ClientTalk:
    """One session of `client`: stdin lines out, replies and pushes printed."""

    def __init__(self, session: WebTransportSession, datagram: bool, wait: float) -> None:
        self.session = session
        self.datagram = datagram
        self.wait = wait
        self.datagrams_sent = 0
        self.datagrams_received = 0
        self.progress = asyncio.Event()
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def run(self, lines: asyncio.Queue[bytes | None]) -> SessionCloseInfo:
        session = self.session
        self.spawn(self.print_datagrams())
        self.spawn(self.print_pushed_streams())
        closed = asyncio.ensure_future(session.wait_closed())
        sending = asyncio.ensure_future(self.send_lines(lines))
        try:
            await asyncio.wait({closed, sending}, return_when=asyncio.FIRST_COMPLETED)
            if sending.done() and not sending.cancelled():
                error = sending.exception()
                if error is not None and not session.is_closed:
                    _error(f"sending failed: {error}")
                await session.close()
            return await closed
        finally:
            sending.cancel()
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(sending, *self.tasks, return_exceptions=True)

    async def send_lines(self, lines: asyncio.Queue[bytes | None]) -> None:
        replies: asyncio.Queue[asyncio.Task[bytes] | None] = asyncio.Queue()
        printer = self.spawn(self.print_replies(replies))
        while (line := await lines.get()) is not None:
            if self.datagram:
                try:
                    await self.session.send_datagram(line)
                except WebTransportError as exc:
                    _error(str(exc))
                    continue
                self.datagrams_sent += 1
            else:
                stream = await self.session.create_bidirectional_stream()
                await stream.write(line, end_stream=True)
                replies.put_nowait(self.spawn(stream.read_all(_REPLY_LIMIT)))
        replies.put_nowait(None)
        try:
            async with asyncio.timeout(self.wait):
                await printer
                while self.datagrams_received < self.datagrams_sent:
                    self.progress.clear()
                    await self.progress.wait()
        except TimeoutError:
            pass

    async def print_replies(self, replies: asyncio.Queue[asyncio.Task[bytes] | None]) -> None:
        # In the order the lines were sent, whatever order the replies finish in.
        while (reply := await replies.get()) is not None:
            try:
                _emit(await reply)
            except WebTransportError as exc:
                _error(f"no reply: {exc}")

    async def print_datagrams(self) -> None:
        async for data in self.session.incoming_datagrams():
            _emit(data)
            self.datagrams_received += 1
            self.progress.set()

    async def print_pushed_streams(self) -> None:
        async for stream in self.session.incoming_streams():
            self.spawn(self.print_stream(stream))

    async def print_stream(self, stream: WebTransportReceiveStream) -> None:
        try:
            _emit(await stream.read_all(_REPLY_LIMIT))
        except WebTransportError as exc:
            _error(f"stream {stream.stream_id}: {exc}")
