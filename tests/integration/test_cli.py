"""The command line and the examples, run as real processes on free loopback ports."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import pytest

from pywebtransport import ClientConfig, WebTransportClient
from pywebtransport.shared.exceptions import HandshakeError
from pywebtransport.shared.utils import CertificateInfo

from .processes import connect_when_ready, spawn, stop, until_logged

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

APP_MODULE = """
import os
from pywebtransport.framework import ServerApp

app = ServerApp()

@app.route("/pid")
async def pid(session):
    stream = await session.create_unidirectional_stream()
    await stream.write(str(os.getpid()).encode(), end_stream=True)
    await session.receive_datagram()
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run(*args: str, cwd: Path = ROOT) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def cert_args(certificate: CertificateInfo) -> list[str]:
    return ["--cert", certificate.certfile, "--key", certificate.keyfile]


# ---------------------------------------------------------------- CLI


@pytest.mark.timeout(30)
async def test_help() -> None:
    code, out, _ = await run("-m", "pywebtransport", "--help")
    assert code == 0 and "serve" in out and "gen-cert" in out
    code, out, _ = await run("-m", "pywebtransport", "serve", "--help")
    assert code == 0 and "--workers" in out


@pytest.mark.timeout(30)
async def test_gen_cert(tmp_path: Path) -> None:
    code, out, err = await run(
        "-m", "pywebtransport", "gen-cert", "--out", str(tmp_path), "--days", "5"
    )
    assert code == 0, err
    assert (tmp_path / "127.0.0.1.crt").exists() and (tmp_path / "127.0.0.1.key").exists()
    assert "sha256:" in out and "serverCertificateHashes" in out
    code, _, err = await run("-m", "pywebtransport", "gen-cert", "--days", "0")
    assert code == 2 and "validity_days" in err


@pytest.mark.timeout(30)
async def test_app_not_found(tmp_path: Path) -> None:
    code, _, err = await run("-m", "pywebtransport", "serve", "nosuchmodule:app", cwd=tmp_path)
    assert code == 2 and "nosuchmodule" in err
    (tmp_path / "mod.py").write_text("x = 1\n")
    code, _, err = await run("-m", "pywebtransport", "serve", "mod:app", cwd=tmp_path)
    assert code == 2 and "no attribute 'app'" in err
    code, _, err = await run("-m", "pywebtransport", "serve", "mod:x", cwd=tmp_path)
    assert code == 2 and "not a ServerApp" in err
    code, _, err = await run("-m", "pywebtransport", "serve", "mod", cwd=tmp_path)
    assert code == 2 and "MODULE:APP" in err


@pytest.mark.timeout(30)
async def test_bad_certificate_and_port_in_use(
    tmp_path: Path, certificate: CertificateInfo
) -> None:
    (tmp_path / "app_module.py").write_text(APP_MODULE)
    missing = str(tmp_path / "missing.pem")
    code, _, err = await run(
        "-m", "pywebtransport", "serve", "app_module:app", "--cert", missing, "--key", missing,
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 2 and missing in err
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = str(busy.getsockname()[1])
        code, _, err = await run(
            "-m", "pywebtransport", "serve", "app_module:app", "--host", "127.0.0.1",
            "--port", port, *cert_args(certificate), cwd=tmp_path,
        )  # fmt: skip
    assert code == 1 and "cannot bind" in err


@pytest.mark.timeout(60)
async def test_serve_with_workers(
    tmp_path: Path,
    certificate: CertificateInfo,
    client_config: ClientConfig,
    processes: list[asyncio.subprocess.Process],
) -> None:
    (tmp_path / "app_module.py").write_text(APP_MODULE)
    port = free_port()
    process = await spawn(
        processes, "-m", "pywebtransport", "serve", "app_module:app", "--host", "127.0.0.1",
        "--port", str(port), "--workers", "2", *cert_args(certificate), cwd=tmp_path,
    )  # fmt: skip
    url = f"https://127.0.0.1:{port}/pid"
    pids: set[int] = set()
    for _ in range(16):
        async with WebTransportClient(client_config) as client:
            session = await connect_when_ready(client, url, process, workers=2)
            stream = await session.accept_unidirectional_stream()
            pids.add(int(await stream.read_all()))
        if len(pids) == 2:
            break
    assert len(pids) == 2, f"all connections reached one worker: {pids}"
    assert await stop(process) == 0


# ---------------------------------------------------------------- examples


@pytest.mark.timeout(40)
async def test_echo_example(
    certificate: CertificateInfo,
    client_config: ClientConfig,
    processes: list[asyncio.subprocess.Process],
) -> None:
    port = free_port()
    process = await spawn(
        processes, str(EXAMPLES / "echo_server.py"), "--port", str(port), *cert_args(certificate)
    )
    async with WebTransportClient(client_config) as client:
        session = await connect_when_ready(client, f"https://127.0.0.1:{port}/echo", process)
        stream = await session.create_bidirectional_stream()
        await stream.write(b"hello " * 1000, end_stream=True)
        assert await stream.read_all() == b"hello " * 1000
        await session.send_datagram(b"dgram")
        assert await session.receive_datagram(timeout=5) == b"dgram"
        await session.close()
    assert await stop(process) == 0


@pytest.mark.timeout(40)
async def test_echo_example_generates_certificate(
    client_config: ClientConfig, processes: list[asyncio.subprocess.Process]
) -> None:
    import ssl

    port = free_port()
    process = await spawn(processes, str(EXAMPLES / "echo_server.py"), "--port", str(port))
    insecure = ClientConfig(verify_mode=ssl.CERT_NONE, connect_timeout=5.0)
    async with WebTransportClient(insecure) as client:
        session = await connect_when_ready(client, f"https://127.0.0.1:{port}/echo", process)
        stream = await session.create_bidirectional_stream()
        await stream.write(b"x", end_stream=True)
        assert await stream.read_all() == b"x"
    assert await stop(process) == 0


@pytest.mark.timeout(40)
async def test_chat_example(
    certificate: CertificateInfo,
    client_config: ClientConfig,
    processes: list[asyncio.subprocess.Process],
) -> None:
    port = free_port()
    process = await spawn(
        processes, str(EXAMPLES / "chat_server.py"), "--port", str(port), *cert_args(certificate)
    )
    base = f"https://127.0.0.1:{port}/chat"
    async with WebTransportClient(client_config) as client:
        alice = await connect_when_ready(client, f"{base}/lobby", process)
        bob = await client.connect(f"{base}/lobby")
        eve = await client.connect(f"{base}/other")
        # Both joined the room before the first message (the server logs each join).
        await until_logged(process, "joined 'lobby'", 2)
        out = await alice.create_unidirectional_stream()
        await out.write(b"hi from alice", end_stream=True)
        for member in (alice, bob):
            incoming = await asyncio.wait_for(member.accept_unidirectional_stream(), 5)
            assert await incoming.read_all() == b"hi from alice"
        bidi = await bob.create_bidirectional_stream()
        await bidi.write(b"hi from bob", end_stream=True)
        await bidi.read_all()
        incoming = await asyncio.wait_for(alice.accept_unidirectional_stream(), 5)
        assert await incoming.read_all() == b"hi from bob"
        await bob.send_datagram(b"quick")
        assert await alice.receive_datagram(timeout=5) == b"quick"
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(eve.accept_unidirectional_stream(), 0.3)
    assert await stop(process) == 0


@pytest.mark.timeout(40)
async def test_auth_example(
    certificate: CertificateInfo,
    client_config: ClientConfig,
    processes: list[asyncio.subprocess.Process],
) -> None:
    port = free_port()
    process = await spawn(
        processes, str(EXAMPLES / "auth_server.py"), "--port", str(port), "--token", "t0k",
        "--origin", "https://*.example.com", *cert_args(certificate),
    )  # fmt: skip
    url = f"https://127.0.0.1:{port}/secure"
    async with WebTransportClient(client_config) as client:
        with pytest.raises(HandshakeError) as info:
            await connect_when_ready(client, url, process)
        assert info.value.status_code == 401
        with pytest.raises(HandshakeError) as info:
            await client.connect(f"{url}?token=wrong")
        assert info.value.status_code == 401
        for session in (
            await client.connect(f"{url}?token=t0k"),
            await client.connect(url, headers={"authorization": "Bearer t0k"}),
        ):
            greeting = await session.accept_unidirectional_stream()
            assert await greeting.read_all() == b"welcome"
        with pytest.raises(HandshakeError) as info:
            await client.connect(f"{url}?token=t0k", headers={"origin": "https://evil.example"})
        assert info.value.status_code == 403
        session = await client.connect(
            f"{url}?token=t0k", headers={"origin": "https://app.example.com"}
        )
        await session.close()
    assert await stop(process) == 0


@pytest.mark.timeout(40)
async def test_upload_example(
    tmp_path: Path,
    certificate: CertificateInfo,
    client_config: ClientConfig,
    processes: list[asyncio.subprocess.Process],
) -> None:
    port = free_port()
    upload = str(EXAMPLES / "upload.py")
    process = await spawn(processes, upload, "serve", "--port", str(port), *cert_args(certificate))
    url = f"https://127.0.0.1:{port}/upload"
    async with WebTransportClient(client_config) as client:
        await connect_when_ready(client, url, process)
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(300_000))
    code, out, err = await run(
        upload, "send", str(payload), "--url", url, "--ca", certificate.certfile
    )
    assert code == 0, err
    assert "300000/300000" in out and "OK" in out
    # Verified by default: the self-signed certificate is in no system store.
    code, out, err = await run(upload, "send", str(payload), "--url", url)
    assert code == 1 and "certificate" in err.lower(), (out, err)
    code, out, err = await run(
        upload, "send", str(payload), "--url", url, "--cert-hash", certificate.fingerprint
    )
    assert code == 0 and "OK" in out, err
    code, _, err = await run(upload, "send", str(payload), "--url", url, "--cert-hash", "00")
    assert code == 2 and "server_certificate_hashes" in err
    assert await stop(process) == 0


@pytest.mark.timeout(40)
async def test_asgi_echo_example_with_cli(
    certificate: CertificateInfo,
    client_config: ClientConfig,
    processes: list[asyncio.subprocess.Process],
) -> None:
    port = free_port()
    process = await spawn(
        processes, "-m", "pywebtransport", "serve", "examples.asgi_echo:app", "--asgi",
        "--host", "127.0.0.1", "--port", str(port), *cert_args(certificate),
    )  # fmt: skip
    async with WebTransportClient(client_config) as client:
        session = await connect_when_ready(client, f"https://127.0.0.1:{port}/echo", process)
        stream = await session.create_bidirectional_stream()
        await stream.write(b"asgi " * 1000, end_stream=True)
        assert await stream.read_all() == b"asgi " * 1000
        uni = await session.create_unidirectional_stream()
        await uni.write(b"one way", end_stream=True)
        back = await session.accept_unidirectional_stream(timeout=5)
        assert await back.read_all() == b"one way"
        await session.send_datagram(b"dgram")
        assert await session.receive_datagram(timeout=5) == b"dgram"
        await session.close()
        with pytest.raises(HandshakeError) as refused:
            await client.connect(f"https://127.0.0.1:{port}/elsewhere")
        assert refused.value.status_code == 404
    assert await stop(process) == 0


@pytest.mark.timeout(30)
async def test_asgi_flag_errors(tmp_path: Path, certificate: CertificateInfo) -> None:
    (tmp_path / "app_module.py").write_text(APP_MODULE + "\nnot_callable = 3\n")
    serve = ("-m", "pywebtransport", "serve")
    code, _, err = await run(
        *serve, "app_module:app", "--asgi", *cert_args(certificate), cwd=tmp_path
    )
    assert code == 2 and "is a ServerApp: serve it without --asgi" in err
    code, _, err = await run(
        *serve, "app_module:not_callable", "--asgi", *cert_args(certificate), cwd=tmp_path
    )
    assert code == 2 and "not an ASGI application" in err
    code, _, err = await run(*serve, "examples.asgi_echo:app", "--asgi")
    assert code == 2 and "--asgi needs --cert and --key" in err


# ---------------------------------------------------------------- one line per mistake


def script_server(tmp_path: Path, run: str) -> Path:
    """A script serving APP_MODULE's app with the certificate and key given as its first
    two arguments, ending with `run` (how the script starts it)."""
    script = tmp_path / "server.py"
    script.write_text(
        APP_MODULE
        + "\nimport logging, sys\nfrom pywebtransport import ServerConfig\n"
        + "app.config = ServerConfig(certfile=sys.argv[1], keyfile=sys.argv[2])\n"
        + run
        + "\n"
    )
    return script


@pytest.mark.timeout(30)
async def test_asgi_callable_served_without_the_flag_gets_a_hint(
    certificate: CertificateInfo,
) -> None:
    code, _, err = await run(
        "-m", "pywebtransport", "serve", "examples.asgi_echo:app", *cert_args(certificate)
    )
    assert code == 2 and "not a ServerApp" in err and "--asgi" in err
    assert "Traceback" not in err


@pytest.mark.timeout(30)
async def test_gen_cert_long_validity_warns_in_one_line(tmp_path: Path) -> None:
    code, _, err = await run(
        "-m", "pywebtransport", "gen-cert", "--out", str(tmp_path), "--days", "30"
    )
    assert code == 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "14 days" in lines[0]


@pytest.mark.timeout(30)
async def test_malformed_cert_hash_names_the_option() -> None:
    code, _, err = await run(
        "-m", "pywebtransport", "client", "https://127.0.0.1:9/x", "--cert-hash", "abc"
    )
    assert code == 2 and "--cert-hash" in err and "64 hex digits" in err


@pytest.mark.timeout(30)
async def test_script_app_run_on_a_port_in_use_says_so_in_one_line(
    tmp_path: Path, certificate: CertificateInfo
) -> None:
    script = script_server(tmp_path, "app.run('127.0.0.1', int(sys.argv[3]))")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = str(busy.getsockname()[1])
        code, _, err = await run(str(script), certificate.certfile, certificate.keyfile, port)
    assert code == 1 and "Traceback" not in err
    assert err.strip() == f"error: cannot bind 127.0.0.1:{port}: Address already in use " + (
        "(another server listens there; pick another port)"
    )


@pytest.mark.timeout(30)
async def test_examples_refuse_what_they_cannot_do(tmp_path: Path) -> None:
    code, _, err = await run(str(EXAMPLES / "upload.py"), "send", str(tmp_path / "nope"))
    assert code == 2 and "cannot read" in err and "Traceback" not in err
    env_token = os.environ.pop("WT_TOKEN", None)
    try:
        code, _, err = await run(str(EXAMPLES / "auth_server.py"))
    finally:
        if env_token is not None:
            os.environ["WT_TOKEN"] = env_token
    assert code == 2 and "--token" in err


@pytest.mark.timeout(30)
async def test_ctrl_c_stops_a_script_server_quietly(
    tmp_path: Path, certificate: CertificateInfo
) -> None:
    script = script_server(tmp_path, "logging.basicConfig(level=logging.INFO)\napp.run('::1', 0)")
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), certificate.certfile, certificate.keyfile,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None

    # The bound address is logged as URLs write it, IPv6 in brackets.
    async def listening() -> str:
        assert process.stderr is not None
        while b"listening on" not in (line := await process.stderr.readline()):
            assert line, "the server exited before listening"
        return line.decode()

    assert "listening on [::1]:" in await asyncio.wait_for(listening(), 20)
    process.send_signal(2)  # SIGINT, as Ctrl-C sends
    _out, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, err.decode()
    assert b"Traceback" not in err and b"KeyboardInterrupt" not in err
