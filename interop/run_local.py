"""Run the public WebTransport interop runner's seven test cases locally, without Docker.

Peers (client side; the server is always ``interop/endpoint.py``):

- ``ours``: ``endpoint.py`` as client, both as subprocesses on 127.0.0.1.
- ``chromium`` / ``firefox``: the system's browser (through ``tests/browser/harness.py``)
  runs a page that does what the runner's browser client does (GET/PUSH on
  unidirectional streams, GET + response on bidirectional streams, datagrams), with
  ``serverCertificateHashes`` as the runner's browser images use; Firefox gets the
  runner's pref ``network.http.speculative-parallel-limit = 0``.
- ``lossy``: ``ours`` inside a private network namespace whose loopback drops 5 % of
  the UDP datagrams in each direction (nftables ``numgen random``); needs root.

Each case uses the runner's file sizes and checks: every requested file downloaded
byte-identical (and no other file), and ``negotiated_protocol.txt`` on both sides
equal to the client's first protocol the server supports (Firefox negotiates none,
so its handshake expects an empty protocol).

A cell ends as a test of the public runner does: as soon as either endpoint exits
(the other one is then stopped, the server with SIGTERM), or after 60 s. The browser
pages keep running once their session is closed, as the runner's Firefox client
does, so in the ``-send`` cases only the server, the requester there, can end the
test: it must exit by itself once it holds every file.

    .venv/bin/python interop/run_local.py                     # whole matrix
    .venv/bin/python interop/run_local.py --peer ours --case handshake -v

Exit status: 0 when every cell passed or was unsupported here, 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import hashlib
import importlib.util
import ipaddress
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ENDPOINT = HERE / "endpoint.py"
HARNESS = ROOT / "tests" / "browser" / "harness.py"

KB = 1 << 10
MB = 1 << 20
STREAM_SIZES = [100 * KB, 500 * KB, 250 * KB, 1 * MB, 2 * MB]
DATAGRAM_SIZES = [600 + 2 * i for i in range(200)]

CASES = [
    "handshake",
    "transfer-unidirectional-receive",
    "transfer-unidirectional-send",
    "transfer-bidirectional-receive",
    "transfer-bidirectional-send",
    "transfer-datagram-receive",
    "transfer-datagram-send",
]
PEERS = ["ours", "chromium", "firefox", "lossy"]
LOSS_PERCENT = 5
CLIENT_TIMEOUT = 60.0  # the runner's per-test timeout
RUNNER_FIREFOX_PREFS = {"network.http.speculative-parallel-limit": 0}

_WORDS = [
    "amber",
    "brave",
    "calm",
    "dapper",
    "eager",
    "fancy",
    "gentle",
    "hasty",
    "icy",
    "jolly",
    "keen",
    "lively",
    "mellow",
    "noble",
    "odd",
    "proud",
    "quick",
    "rusty",
    "shiny",
    "tidy",
    "upbeat",
    "vivid",
    "witty",
    "young",
    "zesty",
    "otter",
    "falcon",
    "badger",
    "heron",
    "lynx",
    "marmot",
    "newt",
    "panda",
    "quokka",
    "raven",
    "salmon",
    "tapir",
    "walrus",
    "yak",
    "zebra",
]


def slug(rng: random.Random, used: set[str]) -> str:
    """A unique three-word slug like the runner's ``generate_slug()``."""
    while True:
        candidate = "-".join(rng.choice(_WORDS) for _ in range(3))
        if candidate not in used:
            used.add(candidate)
            return candidate


# ------------------------------------------------------------------------ certificates


def make_certs(directory: Path, *, validity_days: int = 10) -> bytes:
    """Write ``ca.pem``, ``cert.pem`` and ``priv.key`` as the runner's certs.sh does.

    A P-256 root CA and a P-256 leaf signed by it, both valid 10 days; the leaf names
    ``server``, ``server4``, ``server6``, ``server46`` and (for local runs) 127.0.0.1
    and ``localhost``. Returns the SHA-256 of the leaf's DER encoding (what browsers'
    ``serverCertificateHashes`` take).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    start = now - datetime.timedelta(minutes=5)
    # Stay strictly under the browsers' 14-day limit counted from not-before.
    end = now + datetime.timedelta(days=validity_days) - datetime.timedelta(hours=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "interop runner Root Certificate Authority")]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=100), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.DNSName(n) for n in ("server", "server4", "server6", "server46", "localhost")
    ]
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    leaf = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "interop runner leaf")])
        )
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (directory / "cert.pem").write_bytes(leaf.public_bytes(pem))
    (directory / "priv.key").write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).digest()


# ------------------------------------------------------------------------ test cases


@dataclass
class Prepared:
    """One case's directories, environment and expectations."""

    case: str
    root: Path
    port: int
    server_testcase: str
    client_testcase: str
    client_requests: list[str]
    server_requests: list[str]
    client_protocols: list[str]
    server_protocols: list[str]
    endpoint: str
    files: list[str] = field(default_factory=list)
    source: Path | None = None  # where the files come from
    target: Path | None = None  # where they must arrive
    mode: str | None = None
    direction: str | None = None

    @property
    def expected_protocol(self) -> str:
        for proto in self.client_protocols:
            if proto in self.server_protocols:
                return proto
        return ""

    def dir(self, name: str) -> Path:
        return self.root / name


def prepare(case: str, root: Path, port: int, rng: random.Random) -> Prepared:
    """Lay out www/downloads/certs and random files for ``case`` like the runner does."""
    for name in ("server_www", "server_downloads", "client_www", "client_downloads"):
        (root / name).mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    prefix = f"https://127.0.0.1:{port}/"
    endpoint = slug(rng, used)
    if case == "handshake":
        (root / "server_www" / endpoint).mkdir()
        server_only = [slug(rng, used) for _ in range(5)]
        client_only = [slug(rng, used) for _ in range(5)]
        a, b = sorted(rng.sample(range(5), 2))
        shared = [slug(rng, used), slug(rng, used)]
        client_only[a], client_only[b] = shared[0], shared[1]
        server_only[a], server_only[b] = shared[1], shared[0]
        return Prepared(
            case=case,
            root=root,
            port=port,
            server_testcase="handshake",
            client_testcase="handshake",
            client_requests=[prefix + endpoint],
            server_requests=[],
            client_protocols=client_only,
            server_protocols=server_only,
            endpoint=endpoint,
        )
    _, mode, direction = case.split("-")
    sizes = DATAGRAM_SIZES if mode == "datagram" else STREAM_SIZES
    side_src = "server_www" if direction == "receive" else "client_www"
    side_dst = "client_downloads" if direction == "receive" else "server_downloads"
    source = root / side_src / endpoint
    source.mkdir(parents=True)
    (root / ("client_www" if direction == "receive" else "server_www") / endpoint).mkdir()
    files = []
    for size in sizes:
        name = slug(rng, used)
        (source / name).write_bytes(rng.randbytes(size))
        files.append(name)
    protocol = slug(rng, used)
    requests = [f"{endpoint}/{name}" for name in files]
    return Prepared(
        case=case,
        root=root,
        port=port,
        server_testcase="transfer" if direction == "receive" else case,
        client_testcase=case if direction == "receive" else "transfer",
        client_requests=[prefix + r for r in requests]
        if direction == "receive"
        else [prefix + endpoint],
        server_requests=requests if direction == "send" else [],
        client_protocols=[protocol],
        server_protocols=[protocol],
        endpoint=endpoint,
        files=files,
        source=source,
        target=root / side_dst / endpoint,
        mode=mode,
        direction=direction,
    )


def check(prep: Prepared, *, expected_protocol: str | None = None) -> str | None:
    """The runner's checks; None when they pass, else what failed."""
    if prep.case == "handshake":
        expected = prep.expected_protocol if expected_protocol is None else expected_protocol
        for side in ("client", "server"):
            path = prep.dir(f"{side}_downloads") / "negotiated_protocol.txt"
            if not path.exists():
                return f"{side} wrote no negotiated_protocol.txt"
            got = path.read_text().strip()
            if got != expected:
                return f"{side} negotiated {got!r}, expected {expected!r}"
        return None
    assert prep.target is not None and prep.source is not None
    if not prep.target.is_dir():
        return f"no download directory {prep.target.name}/"
    got = sorted(p.name for p in prep.target.iterdir() if p.is_file())
    missing = sorted(set(prep.files) - set(got))
    extra = sorted(set(got) - set(prep.files))
    if missing or extra:
        return f"{len(missing)} file(s) missing, {len(extra)} unexpected"
    for name in prep.files:
        if (prep.source / name).read_bytes() != (prep.target / name).read_bytes():
            return f"{name} differs"
    return None


# ------------------------------------------------------------------------ processes


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def endpoint_env(prep: Prepared, role: str) -> dict[str, str]:
    env = {
        **os.environ,
        "ROLE": role,
        "TESTCASE": prep.server_testcase if role == "server" else prep.client_testcase,
        "REQUESTS": " ".join(prep.server_requests if role == "server" else prep.client_requests),
        "PROTOCOLS": " ".join(prep.server_protocols if role == "server" else prep.client_protocols),
        "WWW": str(prep.dir(f"{role}_www")),
        "DOWNLOADS": str(prep.dir(f"{role}_downloads")),
        "CERTS": str(prep.dir("certs")),
        "PORT": str(prep.port),
        "HOST": "127.0.0.1",
        "SSLKEYLOGFILE": str(prep.dir("logs") / f"{role}-keys.log"),
        "QLOGDIR": "",
    }
    env.pop("PYTHONPATH", None)
    return env


class ServerProcess:
    """``endpoint.py`` as server, started and stopped (SIGTERM) like the runner does."""

    def __init__(self, prep: Prepared, wrap: list[str]) -> None:
        self.log_path = prep.dir("logs") / "server.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [*wrap, sys.executable, str(ENDPOINT)],
            env=endpoint_env(prep, "server"),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_listening(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b"listening on" in self.log_path.read_bytes():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log()}")
            time.sleep(0.05)
        raise RuntimeError(f"server not listening after {timeout}s: {self.log()}")

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def log(self, tail: int = 3000) -> str:
        return self.log_path.read_bytes()[-tail:].decode(errors="replace")


class ClientProcess:
    """``endpoint.py`` as client (``ours`` and ``lossy``)."""

    def __init__(self, prep: Prepared, wrap: list[str]) -> None:
        self.log_path = prep.dir("logs") / "client.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [*wrap, sys.executable, str(ENDPOINT)],
            env=endpoint_env(prep, "client"),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def exited(self) -> bool:
        return self.proc.poll() is not None

    def finish(self) -> str | None:
        """After it exited by itself: None when it succeeded, else what failed."""
        self._log.close()
        if self.proc.returncode == 0:
            return None
        tail = self.log_path.read_bytes()[-800:].decode(errors="replace")
        return f"client exited {self.proc.returncode}: {tail}"

    def stop(self, timeout: float = 10.0) -> None:
        """Stopped because the server exited first: its exit status does not count."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# ------------------------------------------------------------------------ lossy namespace


class LossyNamespace:
    """A network namespace whose loopback drops ``percent`` % of the case's UDP datagrams."""

    def __init__(self, port: int, percent: int = LOSS_PERCENT) -> None:
        self.name = f"pwt-interop-{os.getpid()}-{port}"
        self.port = port
        self.percent = percent

    @staticmethod
    def available() -> str | None:
        """None when usable, else why not."""
        if os.geteuid() != 0:
            return "needs root (network namespace + nftables)"
        for tool in ("ip", "nft"):
            if shutil.which(tool) is None:
                return f"`{tool}` not installed"
        return None

    def __enter__(self) -> list[str]:
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        try:
            subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)
            drop = f"numgen random mod 100 < {self.percent} counter drop"
            ruleset = (
                "table inet pwtloss {\n"
                " chain input {\n"
                "  type filter hook input priority 0; policy accept;\n"
                f"  udp dport {self.port} counter\n"
                f"  udp sport {self.port} counter\n"
                f"  udp dport {self.port} {drop}\n"
                f"  udp sport {self.port} {drop}\n"
                " }\n"
                "}\n"
            )
            subprocess.run(
                ["ip", "netns", "exec", self.name, "nft", "-f", "-"],
                input=ruleset.encode(),
                check=True,
            )
        except BaseException:
            self.__exit__()
            raise
        return ["ip", "netns", "exec", self.name]

    def counts(self) -> tuple[int, int]:
        """(datagrams seen, datagrams dropped) so far, both directions."""
        listing = subprocess.run(
            ["ip", "netns", "exec", self.name, "nft", "list", "table", "inet", "pwtloss"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        packets = [int(n) for n in re.findall(r"counter packets (\d+)", listing)]
        if len(packets) != 4:
            return 0, 0
        return packets[0] + packets[1], packets[2] + packets[3]

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], check=False)


# ------------------------------------------------------------------------ browsers

# The page does what the runner's browser client does (script.js in
# quic-interop/browser-webtransport-interop-runner); written here from its docs.
BROWSER_JS = r"""
const p = ctx.params;
const enc = new TextEncoder(), dec = new TextDecoder();
const opts = {serverCertificateHashes: [{algorithm: "sha-256", value: ctx.hash}]};
if (p.protocols.length) opts.protocols = p.protocols;
// Firefox ESR stops handing incoming datagrams to an idle page (no timer pending):
// keep one timer running for the page's lifetime.
setInterval(() => {}, 50);
const wt = new WebTransport(ctx.url, opts);
await wt.ready;
const protocol = wt.protocol ?? "";
const toB64 = (u8) => {
    let s = "";
    for (let i = 0; i < u8.length; i += 0x8000)
        s += String.fromCharCode.apply(null, u8.subarray(i, i + 0x8000));
    return btoa(s);
};
const fromB64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
const concat = (chunks) => {
    const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const c of chunks) { out.set(c, at); at += c.length; }
    return out;
};
const readAll = async (readable) => {
    const reader = readable.getReader(), chunks = [];
    for (;;) {
        const {value, done} = await reader.read();
        if (done) return concat(chunks);
        chunks.push(value);
    }
};
const sendAll = async (writable, parts) => {
    const writer = writable.getWriter();
    for (const part of parts) await writer.write(part);
    await writer.close();
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const ignoreClose = (e) => { console.log("loop ended: " + e); };
const files = {};

if (p.mode === "handshake") {
    wt.close({closeCode: 0, reason: "done"});
    return {protocol, files};
}

if (p.mode === "serve") {
    // "transfer": answer the server's GETs until it closes the session.
    const serve = Object.fromEntries(Object.entries(p.serve).map(([k, v]) => [k, fromB64(v)]));
    const work = [];
    const uni = (async () => {
        const reader = wt.incomingUnidirectionalStreams.getReader();
        for (;;) {
            const {value, done} = await reader.read();
            if (done) return;
            work.push((async () => {
                const name = dec.decode(await readAll(value)).replace(/^GET /, "").trim();
                const out = await wt.createUnidirectionalStream();
                await sendAll(out, [enc.encode(`PUSH ${name}\n`), serve[name]]);
            })().catch(ignoreClose));
        }
    })().catch(ignoreClose);
    const bidi = (async () => {
        const reader = wt.incomingBidirectionalStreams.getReader();
        for (;;) {
            const {value, done} = await reader.read();
            if (done) return;
            work.push((async () => {
                const name = dec.decode(await readAll(value.readable)).replace(/^GET /, "").trim();
                await sendAll(value.writable, [serve[name]]);
            })().catch(ignoreClose));
        }
    })().catch(ignoreClose);
    const dgram = (async () => {
        const reader = wt.datagrams.readable.getReader();
        const writer = wt.datagrams.writable.getWriter();
        for (;;) {
            const {value, done} = await reader.read();
            if (done) return;
            const name = dec.decode(value).replace(/^GET /, "").trim();
            if (!(name in serve)) { console.log(`unknown file ${name}`); continue; }
            // Firefox ESR may leave a datagram write pending forever, and stops sending
            // once many are left pending: wait for each write, but not for long.
            const written = writer.write(concat([enc.encode(`PUSH ${name}\n`), serve[name]]));
            await Promise.race([written.catch(ignoreClose), sleep(20)]);
        }
    })().catch(ignoreClose);
    const closed = await wt.closed.catch((e) => ({error: String(e)}));
    await Promise.allSettled(work);
    // Like the runner's Firefox client, the page stays open once the session is
    // closed: the requester (the server) has to end the test by exiting.
    console.log("session closed: " + JSON.stringify(closed) + "; the page stays open");
    await new Promise(() => {});
}

if (p.mode === "unidirectional") {
    const want = new Set(p.files);
    const pushes = (async () => {
        const reader = wt.incomingUnidirectionalStreams.getReader();
        const reads = [];
        for (let i = 0; i < p.files.length; i++) {
            const {value, done} = await reader.read();
            if (done) break;
            reads.push((async () => {
                const data = await readAll(value);
                const nl = data.indexOf(10);
                const name = dec.decode(data.subarray(0, nl)).replace(/^PUSH /, "").trim();
                if (want.has(name)) files[name] = toB64(data.subarray(nl + 1));
            })());
        }
        await Promise.all(reads);
    })();
    await Promise.all(p.files.map(async (name) =>
        sendAll(await wt.createUnidirectionalStream(), [enc.encode(`GET ${name}`)])));
    await pushes;
} else if (p.mode === "bidirectional") {
    await Promise.all(p.files.map(async (name) => {
        const stream = await wt.createBidirectionalStream();
        await sendAll(stream.writable, [enc.encode(`GET ${name}`)]);
        files[name] = toB64(await readAll(stream.readable));
    }));
} else if (p.mode === "datagram") {
    const reader = wt.datagrams.readable.getReader();
    const writer = wt.datagrams.writable.getWriter();
    let got = 0;
    const receiving = (async () => {
        while (got < p.files.length) {
            const {value, done} = await reader.read();
            if (done) return;
            const nl = value.indexOf(10);
            const name = dec.decode(value.subarray(0, nl)).replace(/^PUSH /, "").trim();
            if (nl > 0 && !(name in files)) { files[name] = toB64(value.subarray(nl + 1)); got++; }
        }
    })();
    // Datagrams may be lost: re-request what is still missing once a second.
    for (let round = 0; got < p.files.length && round < 20; round++) {
        for (const name of p.files) {
            if (!(name in files)) await writer.write(enc.encode(`GET ${name}`));
        }
        await Promise.race([receiving, new Promise((r) => setTimeout(r, 1000))]);
    }
}
wt.close({closeCode: 0, reason: "done"});
return {protocol, files};
"""


def _load_harness() -> ModuleType:
    name = "pwt_interop_browser_harness"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HARNESS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Browsers:
    """The harness's page server and browsers, started on first use."""

    def __init__(self) -> None:
        self._harness: ModuleType | None = None
        self._server: Any = None
        self._browsers: dict[str, Any] = {}

    def unavailable(self, name: str) -> str | None:
        try:
            harness = self.harness
        except ImportError as exc:
            return f"browser harness unavailable: {exc}"
        cls = harness.ChromiumBrowser if name == "chromium" else harness.FirefoxBrowser
        if not cls.available():
            return f"{name} not installed"
        return None

    @property
    def harness(self) -> ModuleType:
        if self._harness is None:
            self._harness = _load_harness()
        return self._harness

    def get(self, name: str) -> Any:
        if name not in self._browsers:
            harness = self.harness
            if self._server is None:
                self._server = harness.PageServer()
                self._server.start()
            if name == "chromium":
                browser = harness.ChromiumBrowser(self._server)
            else:
                browser = harness.FirefoxBrowser(self._server, prefs=RUNNER_FIREFOX_PREFS)
            browser.start()
            self._browsers[name] = browser
        return self._browsers[name]

    def close(self) -> None:
        for browser in self._browsers.values():
            with contextlib.suppress(Exception):
                browser.close()
        self._browsers.clear()
        if self._server is not None:
            with contextlib.suppress(Exception):
                self._server.close()
            self._server = None


class BrowserClient:
    """Plays the client with a browser page; writes its downloads like the runner's image."""

    def __init__(self, prep: Prepared, browser: Any, harness: ModuleType, cert_hash: bytes) -> None:
        self.prep = prep
        names: list[str] = []
        if prep.case == "handshake":
            mode = "handshake"
        elif prep.direction == "send":
            mode = "serve"
        else:
            assert prep.mode is not None
            mode, names = prep.mode, prep.files
        serve: dict[str, str] = {}
        if mode == "serve":
            www = prep.dir("client_www") / prep.endpoint
            serve = {f.name: base64.b64encode(f.read_bytes()).decode() for f in www.iterdir()}
        params = {
            "mode": mode,
            "files": names,
            "serve": serve,
            # As the runner's browser client: protocols only in the handshake case.
            "protocols": prep.client_protocols if prep.case == "handshake" else [],
        }
        self.scenario = harness.start_scenario(
            browser,
            BROWSER_JS,
            url=f"https://127.0.0.1:{prep.port}/{prep.endpoint}",
            cert_hash=cert_hash,
            params=params,
            # The cell's own deadline ends it first; this only bounds a lost page.
            timeout=CLIENT_TIMEOUT + 30,
        )

    def exited(self) -> bool:
        return bool(self.scenario.done())

    def finish(self) -> str | None:
        """After the page returned: None when it succeeded, else what failed."""
        report = self.scenario.report(30)
        if not report.ok:
            return f"browser: {report.describe()[:6000]}"
        result = report.result
        prep = self.prep
        downloads = prep.dir("client_downloads")
        downloads.mkdir(parents=True, exist_ok=True)
        (downloads / "negotiated_protocol.txt").write_text(result.get("protocol") or "")
        if result.get("files"):
            target = downloads / prep.endpoint
            target.mkdir(parents=True, exist_ok=True)
            for name, data in result["files"].items():
                (target / name).write_bytes(base64.b64decode(data))
        return None

    def stop(self) -> None:
        """Close the page (the server exited first)."""
        self.scenario.stop()


# ------------------------------------------------------------------------ cells


@dataclass
class Cell:
    peer: str
    case: str
    status: str  # pass | fail | unsupported
    detail: str = ""
    seconds: float = 0.0


def run_cell(
    peer: str,
    case: str,
    *,
    browsers: Browsers | None = None,
    workdir: Path | None = None,
    seed: int | None = None,
    keep: bool = False,
) -> Cell:
    """Run one (peer, case) cell and return its outcome."""
    began = time.monotonic()
    if peer == "lossy" and (why := LossyNamespace.available()):
        return Cell(peer, case, "unsupported", why)
    if peer in ("chromium", "firefox"):
        if browsers is None:
            return Cell(peer, case, "unsupported", "no browsers given")
        if why := browsers.unavailable(peer):
            return Cell(peer, case, "unsupported", why)
    root = Path(tempfile.mkdtemp(prefix=f"interop-{peer}-{case}-", dir=workdir))
    rng = random.Random(seed)
    port = free_udp_port()
    prep = prepare(case, root, port, rng)
    prep.dir("logs").mkdir()
    cert_hash = make_certs(prep.dir("certs"))
    stack = contextlib.ExitStack()
    failure: str | None = None
    note = ""
    server: ServerProcess | None = None
    client: ClientProcess | BrowserClient | None = None
    try:
        wrap: list[str] = []
        lossy: LossyNamespace | None = None
        if peer == "lossy":
            lossy = LossyNamespace(port)
            wrap = stack.enter_context(lossy)
        server = ServerProcess(prep, wrap)
        server.wait_listening()
        if peer in ("ours", "lossy"):
            client = ClientProcess(prep, wrap)
        else:
            assert browsers is not None
            client = BrowserClient(prep, browsers.get(peer), browsers.harness, cert_hash)
        # As the public runner: the test ends when either endpoint exits.
        deadline = time.monotonic() + CLIENT_TIMEOUT
        while not client.exited() and server.proc.poll() is None:
            if time.monotonic() > deadline:
                failure = f"neither endpoint exited within {CLIENT_TIMEOUT:.0f}s"
                if prep.direction == "send":
                    failure += " (the server must exit once it holds every file)"
                break
            time.sleep(0.05)
        server_exited = server.proc.poll() is not None
        if client.exited():
            failure = failure or client.finish()
        else:
            client.stop()
        code = server.stop()
        if lossy is not None:
            seen, dropped = lossy.counts()
            note = f"{dropped} of {seen} datagrams dropped ({100 * dropped / max(seen, 1):.1f} %)"
        if failure is None and code != 0:
            failure = f"server exited {code}" + ("" if server_exited else " on SIGTERM")
        if failure is None:
            expected = "" if peer == "firefox" and case == "handshake" else None
            failure = check(prep, expected_protocol=expected)
        if failure is not None:
            failure += f"\n--- server log tail ---\n{server.log(1500)}"
    except Exception as exc:
        failure = f"{type(exc).__name__}: {exc}"
    finally:
        if client is not None and not client.exited():
            client.stop()
        if server is not None:
            server.stop()
        stack.close()
        if not keep and failure is None:
            shutil.rmtree(root, ignore_errors=True)
    detail = "" if failure is None else f"{failure}\n(files kept in {root})"
    if failure is None and note:
        detail = note
    if failure is None and peer == "firefox" and case == "handshake":
        detail = "no subprotocol (Firefox has no negotiation)"
    return Cell(peer, case, "pass" if failure is None else "fail", detail, time.monotonic() - began)


def print_matrix(cells: list[Cell], out: Any = sys.stdout) -> None:
    peers = [p for p in PEERS if any(c.peer == p for c in cells)]
    cases = [c for c in CASES if any(cell.case == c for cell in cells)]
    by = {(c.peer, c.case): c for c in cells}
    width = max(len(c) for c in cases)
    print(f"{'case':<{width}}  " + "  ".join(f"{p:<18}" for p in peers), file=out)
    for case in cases:
        row = []
        for peer in peers:
            cell = by.get((peer, case))
            text = "-" if cell is None else f"{cell.status} ({cell.seconds:.1f}s)"
            row.append(f"{text:<18}")
        print(f"{case:<{width}}  " + "  ".join(row), file=out)
    for cell in cells:
        if cell.detail:
            print(f"\n[{cell.peer} x {cell.case}] {cell.status}: {cell.detail}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peer", action="append", choices=PEERS, help="peer(s) to run")
    parser.add_argument("--case", action="append", choices=CASES, help="case(s) to run")
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("-v", "--verbose", action="store_true", help="print each cell as it ends")
    args = parser.parse_args(argv)
    peers = args.peer or PEERS
    cases = args.case or CASES
    browsers = Browsers()
    cells: list[Cell] = []
    began = time.monotonic()
    try:
        for peer in peers:
            for case in cases:
                cell = run_cell(peer, case, browsers=browsers, seed=args.seed, keep=args.keep)
                cells.append(cell)
                if args.verbose:
                    print(f"{peer:<9} {case:<32} {cell.status} ({cell.seconds:.1f}s)", flush=True)
    finally:
        browsers.close()
    print_matrix(cells)
    print(f"\n{len(cells)} cells in {time.monotonic() - began:.0f}s")
    return 1 if any(c.status == "fail" for c in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
