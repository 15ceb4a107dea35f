"""examples/browser/chat.html against examples/chat_server.py in headless Chromium.

The chat server runs as a subprocess (as a user would run it).  chat.html is served
by a small static HTTP server (with CORS); the scenario fetches it and loads it into
two same-origin ``srcdoc`` iframes (two users in one room), passing the query string
through ``window.CHAT_QUERY`` since a srcdoc document has no query string of its own.
Same origin lets the scenario call ``chatSend`` in one frame and read ``chatMessages``
in the other.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pywebtransport.shared.utils import CertificateInfo

from .harness import ChromiumBrowser, run_scenario

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

SCENARIO = """
    const html = await (await fetch(ctx.params.page)).text();
    const open = (name) => new Promise((resolve, reject) => {
        const query = new URLSearchParams({
            url: ctx.url, hash: ctx.params.hash, room: ctx.params.room, name,
        });
        const inject = "<script>window.CHAT_QUERY = " +
            JSON.stringify("?" + query) + ";<" + "/script>";
        const frame = document.createElement("iframe");
        frame.onload = () => resolve(frame.contentWindow);
        frame.onerror = reject;
        frame.srcdoc = html.replace("<head>", "<head>" + inject);
        document.body.appendChild(frame);
    });
    const alice = await open("alice");
    const bob = await open("bob");
    await Promise.all([alice.chatReady, bob.chatReady]);
    const waitFor = async (win, text) => {
        for (let i = 0; i < 200; i++) {
            if (win.chatMessages.includes(text)) return;
            await new Promise((r) => setTimeout(r, 50));
        }
        throw new Error("not received: " + text + " got " + JSON.stringify(win.chatMessages));
    };
    // Both sessions must be in the room before the message: each greets and
    // waits for its own echo (the server relays to the sender too).
    await bob.chatSend("hi");
    await waitFor(bob, "bob: hi");
    await alice.chatSend("hello bob");
    await waitFor(bob, "alice: hello bob");
    await waitFor(alice, "alice: hello bob");
    return {alice: Array.from(alice.chatMessages), bob: Array.from(bob.chatMessages)};
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _CorsHandler(http.server.SimpleHTTPRequestHandler):
    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def static_server(directory: Path) -> Iterator[str]:
    handler = functools.partial(_CorsHandler, directory=str(directory))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextlib.contextmanager
def chat_server(certificate: CertificateInfo, port: int) -> Iterator[list[str]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLES / "chat_server.py"),
            "--port",
            str(port),
            "--cert",
            str(certificate.certfile),
            "--key",
            str(certificate.keyfile),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    ready: queue.Queue[bool] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            if "listening on" in line:
                ready.put(True)
        ready.put(False)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        try:
            ok = ready.get(timeout=20)
        except queue.Empty:
            ok = False
        assert ok, "chat server did not start:\n" + "\n".join(lines)
        yield lines
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        reader.join(5)
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.mark.timeout(60)
async def test_chat_page_two_users(chromium: ChromiumBrowser, certificate: CertificateInfo) -> None:
    port = free_udp_port()
    with static_server(EXAMPLES / "browser") as base, chat_server(certificate, port) as lines:
        try:
            result = await run_scenario(
                chromium,
                SCENARIO,
                url=f"https://127.0.0.1:{port}/chat/",
                cert_hash=certificate.sha256,
                params={
                    "page": f"{base}/chat.html",
                    "hash": certificate.sha256.hex(),
                    "room": "lobby",
                },
                timeout=30,
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nchat server output:\n" + "\n".join(lines)) from None
    assert f"sha256 {certificate.sha256.hex()}" in "\n".join(lines)
    assert "alice: hello bob" in result["bob"]
    assert "alice: hello bob" in result["alice"]
    assert result["bob"][0] == "bob: hi"
