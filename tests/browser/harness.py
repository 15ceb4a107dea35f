"""Run JavaScript WebTransport scenarios in real headless browsers.

The harness has three parts:

* :class:`PageServer` -- a tiny stdlib HTTP/1.1 server on ``127.0.0.1`` that runs on its
  own event loop in a background thread.  It serves one page per scenario at
  ``/run/<id>`` and receives the page's result at ``POST /result/<id>`` (and console
  lines at ``POST /log/<id>``).
* :class:`Browser` with :class:`ChromiumBrowser` (Playwright driving ``/usr/bin/chromium``,
  one browser process, a fresh context + page per scenario) and :class:`FirefoxBrowser`
  (no WebDriver: one ``firefox-esr --headless`` process with a fresh profile per scenario,
  killed by process group afterwards).
* :func:`run_scenario` -- the coroutine a test awaits.  Everything the browser side needs
  runs on the harness thread, so the caller's event loop (any loop: function, module or
  session scoped) stays free to run the WebTransport server under test.

A scenario is the *body* of an ``async function (ctx)``; ``ctx`` is
``{url, hash, params}`` where ``hash`` is a ``Uint8Array`` holding the SHA-256 of the
server certificate (ready for ``serverCertificateHashes``).  The body returns a
JSON-serialisable value; an exception (or a syntax error in the body) is reported back
with its message, stack and the page's console output.
"""

from __future__ import annotations

import abc
import asyncio
import atexit
import base64
import contextlib
import datetime
import hashlib
import ipaddress
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Coroutine, Mapping, Sequence
from concurrent.futures import Future as ConcurrentFuture
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from playwright.async_api import Browser as PlaywrightBrowser
    from playwright.async_api import BrowserContext, ConsoleMessage, Page, Playwright

__all__ = [
    "CHROMIUM_ARGS",
    "CHROMIUM_EXECUTABLE",
    "FIREFOX_DEFAULT_PREFS",
    "FIREFOX_EXECUTABLE",
    "Browser",
    "ChromiumBrowser",
    "FirefoxBrowser",
    "PageServer",
    "RunningScenario",
    "ScenarioReport",
    "TestCertificate",
    "generate_test_certificate",
    "run_scenario",
    "run_scenario_report",
    "run_scenario_sync",
    "start_scenario",
]

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

T = TypeVar("T")

CHROMIUM_EXECUTABLE = "/usr/bin/chromium"
"""Debian's Chromium; Playwright never downloads its own browsers here."""

FIREFOX_EXECUTABLE = "/usr/bin/firefox-esr"
"""Debian's Firefox ESR."""

CHROMIUM_ARGS: tuple[str, ...] = (
    "--no-sandbox",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""Flags from PROTOCOL.md.  Never add ``--disable-quic``: WebTransport needs QUIC."""

FIREFOX_DEFAULT_PREFS: dict[str, bool | int | str] = {
    # First-run pages, default-browser nags, session restore.
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.startup.page": 0,
    "startup.homepage_welcome_url": "",
    "startup.homepage_welcome_url.additional": "",
    "browser.aboutwelcome.enabled": False,
    "browser.newtabpage.enabled": False,
    "browser.sessionstore.resume_from_crash": False,
    "toolkit.startup.max_resumed_crashes": -1,
    "browser.tabs.warnOnClose": False,
    "browser.warnOnQuit": False,
    "browser.uitour.enabled": False,
    "datareporting.policy.dataSubmissionPolicyBypassNotification": True,
    # Telemetry and health reports.
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.archive.enabled": False,
    "toolkit.telemetry.server": "",
    "browser.ping-centre.telemetry": False,
    "app.normandy.enabled": False,
    "app.shield.optoutstudies.enabled": False,
    # Updates of the browser, add-ons, search engines, remote settings.
    "app.update.auto": False,
    "app.update.checkInstallTime": False,
    "app.update.disabledForTesting": True,
    "extensions.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.blocklist.enabled": False,
    "browser.search.update": False,
    "browser.region.update.enabled": False,
    "browser.region.network.url": "",
    "media.gmp-manager.updateEnabled": False,
    "security.remote_settings.crlite_filters.enabled": False,
    "security.remote_settings.intermediates.enabled": False,
    # Background network noise.
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
    "network.trr.mode": 5,
    "security.OCSP.enabled": 0,
    "browser.topsites.contile.enabled": False,
    "services.settings.server": "data:,#remote-settings-dummy/v1",
    "messaging-system.rsexperimentloader.enabled": False,
    "app.normandy.api_url": "",
    "extensions.systemAddon.update.enabled": False,
    "extensions.systemAddon.update.url": "",
    "extensions.getAddons.discovery.api_url": "",
    "media.gmp-manager.url": "",
    "dom.push.connection.enabled": False,
    "identity.fxaccounts.enabled": False,
    "browser.backup.scheduled.enabled": False,
    "browser.translations.enable": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "toolkit.coverage.endpoint.base": "",
    "browser.discovery.enabled": False,
    "geo.provider.network.url": "",
    # Page console on stdout (ends up in the failure message).
    "devtools.console.stdout.content": True,
    "browser.dom.window.dump.enabled": True,
    # NB: network.http.speculative-parallel-limit is deliberately left at its default,
    # as users' browsers keep it (Firefox then opens a second, idle QUIC connection).
}
"""Prefs written to every fresh Firefox profile's ``user.js``."""

_PAGE_TEMPLATE = """<!doctype html>
<html><head><meta charset="utf-8"><title>scenario %(id)s</title></head>
<body><pre id="status">running</pre>
<script>
"use strict";
(() => {
  const cfg = %(cfg)s;
  const logs = [];
  let seq = 0;
  const fmt = (v) => {
    if (typeof v === "string") return v;
    if (v instanceof Error) return String(v);
    try { return JSON.stringify(v); } catch (e) { return String(v); }
  };
  const send = (path, obj) => fetch(path, {
    method: "POST", keepalive: true,
    headers: {"content-type": "application/json"}, body: JSON.stringify(obj),
  }).catch(() => {});
  const record = (level, args) => {
    const line = level + ": " + Array.from(args, fmt).join(" ");
    logs.push(line);
    send("/log/" + cfg.id, {seq: seq++, line});
  };
  for (const level of ["log", "info", "warn", "error", "debug"]) {
    const orig = console[level].bind(console);
    console[level] = (...args) => { record(level, args); orig(...args); };
  }
  window.addEventListener("error", (e) => record("uncaught", [e.message]));
  window.addEventListener("unhandledrejection", (e) => record("unhandledrejection", [e.reason]));
  const done = (payload) => {
    payload.logs = logs;
    let body;
    try { body = JSON.stringify(payload); } catch (e) {
      body = JSON.stringify({ok: false, error: "result is not JSON-serialisable: " + e,
                             stack: "", logs});
    }
    document.getElementById("status").textContent = payload.ok ? "ok" : "failed";
    return fetch("/result/" + cfg.id, {
      method: "POST", headers: {"content-type": "application/json"}, body,
    });
  };
  const hash = Uint8Array.from(atob(cfg.hash), (c) => c.charCodeAt(0));
  const ctx = {url: cfg.url, hash, params: cfg.params};
  const AsyncFunction = (async () => {}).constructor;
  (async () => {
    const fn = new AsyncFunction("ctx", cfg.body);
    const result = await fn(ctx);
    return {ok: true, result: result === undefined ? null : result};
  })().catch((e) => ({
    ok: false,
    error: String(e),
    name: (e && e.name) || "",
    stack: (e && e.stack) || "",
  })).then(done);
})();
</script></body></html>
"""


# --------------------------------------------------------------------------- results


@dataclass
class ScenarioReport:
    """Everything known about one finished (or failed) scenario run."""

    browser: str
    ok: bool
    result: Any = None
    error: str = ""
    stack: str = ""
    page_logs: list[str] = field(default_factory=list)
    browser_logs: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    def describe(self) -> str:
        """Return a multi-line human-readable description for failure messages."""
        lines = [f"[{self.browser}] scenario failed after {self.elapsed:.2f}s: {self.error}"]
        if self.stack:
            lines += ["stack:", self.stack.rstrip()]
        if self.page_logs:
            lines += ["page console:", *(f"  {line}" for line in self.page_logs)]
        if self.browser_logs:
            lines += ["browser output:", *(f"  {line}" for line in self.browser_logs[-60:])]
        return "\n".join(lines)


@dataclass
class _Scenario:
    """A registered scenario page and the future its result resolves."""

    id: str
    body: str
    url: str
    cert_hash: bytes
    params: Any
    result: asyncio.Future[dict[str, Any]]
    logs: dict[int, str] = field(default_factory=dict)
    loaded: asyncio.Event = field(default_factory=asyncio.Event)

    def page(self) -> bytes:
        cfg = {
            "id": self.id,
            "body": self.body,
            "url": self.url,
            "hash": base64.b64encode(self.cert_hash).decode("ascii"),
            "params": self.params,
        }
        # "<" escaped so that nothing in the body can close the <script> element.
        cfg_js = json.dumps(cfg).replace("<", "\\u003c")
        return (_PAGE_TEMPLATE % {"id": self.id, "cfg": cfg_js}).encode("utf-8")

    def ordered_logs(self) -> list[str]:
        return [self.logs[k] for k in sorted(self.logs)]


# --------------------------------------------------------------------------- page server


class PageServer:
    """HTTP server for scenario pages, running on a private event loop in a thread.

    Use :meth:`start` / :meth:`close` (or ``with PageServer() as server:``).  Browsers
    also run their asynchronous machinery on this server's loop (:meth:`submit`), so a
    single background thread hosts all harness I/O.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        """Create a stopped server bound to ``host`` (keep ``127.0.0.1``) on a free port."""
        self.host = host
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._scenarios: dict[str, _Scenario] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Start the loop thread and listen; idempotent."""
        if self._thread is not None:
            return
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run_loop, args=(loop,), name="browser-harness", daemon=True
        )
        self._thread.start()
        self.call(self._listen(), timeout=timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Stop listening, cancel handlers, stop the loop and join the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            self.call(self._shutdown(), timeout=timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._loop = None
        self._thread = None

    def __enter__(self) -> PageServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.sleep(0))
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        for scenario in self._scenarios.values():
            if not scenario.result.done():
                scenario.result.cancel()
        self._scenarios.clear()

    # -- running coroutines on the harness loop -----------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The harness event loop (only valid between :meth:`start` and :meth:`close`)."""
        if self._loop is None:
            raise RuntimeError("PageServer is not started")
        return self._loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> ConcurrentFuture[T]:
        """Schedule ``coro`` on the harness loop from any thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` on the harness loop and block (not from the harness thread)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("PageServer.call() would deadlock on the harness thread")
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    async def acall(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` on the harness loop and await it from another event loop."""
        wrapped = asyncio.wrap_future(self.submit(coro))
        return await asyncio.wait_for(wrapped, timeout)

    # -- scenarios ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    def _register(self, body: str, url: str, cert_hash: bytes, params: Any) -> _Scenario:
        """Register a scenario (harness thread only) and return it."""
        scenario_id = f"s{next(self._ids)}"
        scenario = _Scenario(
            id=scenario_id,
            body=body,
            url=url,
            cert_hash=cert_hash,
            params=params,
            result=self.loop.create_future(),
        )
        self._scenarios[scenario_id] = scenario
        return scenario

    def _forget(self, scenario: _Scenario) -> None:
        self._scenarios.pop(scenario.id, None)

    def page_url(self, scenario_id: str) -> str:
        """URL of a scenario's page."""
        return f"{self.base_url}/run/{scenario_id}"

    # -- HTTP ---------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            async with asyncio.timeout(15):
                request_line = await reader.readline()
                headers: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                parts = request_line.decode("latin-1").split()
                if len(parts) < 2:
                    return
                method, target = parts[0], parts[1]
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if 0 < length <= 16 << 20 else b""
                status, ctype, content = self._route(method, target.split("?")[0], body)
                head = (
                    f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(content)}\r\nCache-Control: no-store\r\n"
                    "Connection: close\r\n\r\n"
                )
                writer.write(head.encode("latin-1") + content)
                await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _route(self, method: str, path: str, body: bytes) -> tuple[str, str, bytes]:
        parts = path.strip("/").split("/")
        scenario = self._scenarios.get(parts[1]) if len(parts) == 2 else None
        if scenario is None:
            return "404 Not Found", "text/plain", b"not found"
        if method == "GET" and parts[0] == "run":
            scenario.loaded.set()
            return "200 OK", "text/html; charset=utf-8", scenario.page()
        if method == "POST" and parts[0] in ("result", "log"):
            try:
                payload = json.loads(body)
            except ValueError:
                return "400 Bad Request", "text/plain", b"bad json"
            if not isinstance(payload, dict):
                return "400 Bad Request", "text/plain", b"bad json"
            if parts[0] == "log":
                scenario.logs[int(payload.get("seq", len(scenario.logs)))] = str(
                    payload.get("line", "")
                )
            elif not scenario.result.done():
                scenario.result.set_result(payload)
            return "204 No Content", "text/plain", b""
        return "405 Method Not Allowed", "text/plain", b"method not allowed"


# --------------------------------------------------------------------------- browsers


class _OpenPage(abc.ABC):
    """A scenario page open in some browser."""

    @abc.abstractmethod
    def logs(self) -> list[str]:
        """Browser-side output captured so far (console, stdout/stderr)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the page and release everything it holds."""


class Browser(abc.ABC):
    """A browser that can open scenario pages served by a :class:`PageServer`.

    :meth:`start` and :meth:`close` are synchronous (use them from fixtures);
    :meth:`_open` runs on the page server's loop.
    """

    name: str = "browser"

    def __init__(self, server: PageServer) -> None:
        """Bind the browser to a started ``server``."""
        self.server = server
        self.launch_time: float | None = None

    @staticmethod
    @abc.abstractmethod
    def available() -> bool:
        """Whether the browser's executable exists on this machine."""

    @abc.abstractmethod
    def start(self) -> None:
        """Launch (or prepare) the browser; idempotent."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop every process the browser started; idempotent, never raises."""

    @abc.abstractmethod
    async def _open(self, url: str, timeout: float) -> _OpenPage:
        """Open ``url`` in the browser (harness loop only)."""

    def __enter__(self) -> Browser:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class _ChromiumPage(_OpenPage):
    def __init__(self, context: BrowserContext) -> None:
        self.context = context
        self.messages: list[str] = []

    def on_console(self, message: ConsoleMessage) -> None:
        self.messages.append(f"{message.type}: {message.text}")

    def on_page_error(self, error: Exception) -> None:
        self.messages.append(f"pageerror: {error}")

    def logs(self) -> list[str]:
        return list(self.messages)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.context.close(), 10)


class ChromiumBrowser(Browser):
    """Headless Chromium driven by Playwright; one process, a fresh context per scenario."""

    def __init__(
        self,
        server: PageServer,
        *,
        extra_args: Sequence[str] = (),
        executable: str = CHROMIUM_EXECUTABLE,
        name: str = "chromium",
        launch_timeout: float = 60.0,
    ) -> None:
        """Configure; ``extra_args`` are appended to :data:`CHROMIUM_ARGS`.

        For instance ``extra_args=["--enable-features=EnableWebTransportDraft07"]``.
        """
        super().__init__(server)
        self.extra_args = tuple(extra_args)
        self.executable = executable
        self.name = name
        self.launch_timeout = launch_timeout
        self._playwright: Playwright | None = None
        self._browser: PlaywrightBrowser | None = None

    @staticmethod
    def available() -> bool:
        """True when ``/usr/bin/chromium`` and the playwright package are present."""
        try:
            import playwright.async_api  # noqa: F401
        except ImportError:
            return False
        return os.access(CHROMIUM_EXECUTABLE, os.X_OK)

    def start(self) -> None:
        """Launch Chromium (blocking; about 1-2 s)."""
        if self._browser is not None:
            return
        began = time.monotonic()
        try:
            self.server.call(self._launch(), timeout=self.launch_timeout)
        except BaseException:
            self.close()
            raise
        self.launch_time = time.monotonic() - began

    async def _launch(self) -> None:
        from playwright.async_api import async_playwright

        self._playwright = await async_playwright().start()
        self._browser = await self._playwright.chromium.launch(
            executable_path=self.executable,
            headless=True,
            args=[*CHROMIUM_ARGS, *self.extra_args],
            timeout=self.launch_timeout * 1000,
        )

    def close(self) -> None:
        """Close the browser and the Playwright driver."""
        if self._playwright is None:
            return
        with contextlib.suppress(Exception):
            self.server.call(self._shutdown(), timeout=20)
        self._playwright = None
        self._browser = None

    async def _shutdown(self) -> None:
        if self._browser is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._browser.close(), 10)
        if self._playwright is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._playwright.stop(), 10)

    async def open_page(self, url: str, timeout: float = 30.0) -> Page:
        """Open any ``url`` in a fresh context (harness loop only: use ``server.acall``).

        For pages that are not scenarios, e.g. an example app's own page; drive
        it with Playwright's ``Page`` API and close it with ``page.context.close()``.
        """
        if self._browser is None:
            raise RuntimeError(f"{self!r} is not started")
        context = await self._browser.new_context()
        try:
            page = await context.new_page()
            await page.goto(url, wait_until="load", timeout=timeout * 1000)
        except BaseException:
            await _ChromiumPage(context).close()
            raise
        return page

    async def _open(self, url: str, timeout: float) -> _OpenPage:
        if self._browser is None:
            raise RuntimeError(f"{self!r} is not started")
        context = await self._browser.new_context()
        opened = _ChromiumPage(context)
        try:
            page = await context.new_page()
            page.on("console", opened.on_console)
            page.on("pageerror", opened.on_page_error)
            await page.goto(url, wait_until="commit", timeout=timeout * 1000)
        except BaseException:
            await opened.close()
            raise
        return opened


class _FirefoxProcess(_OpenPage):
    def __init__(self, proc: subprocess.Popen[bytes], profile: Path, log_path: Path) -> None:
        self.proc = proc
        self.profile = profile
        self.log_path = log_path

    def logs(self) -> list[str]:
        try:
            text = self.log_path.read_text("utf-8", errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if line.strip()]

    async def close(self) -> None:
        await _kill_group(self.proc)
        shutil.rmtree(self.profile, ignore_errors=True)


_LIVE_GROUPS: set[int] = set()
"""Process groups of Firefox processes not yet reaped (killed at interpreter exit)."""


@atexit.register
def _kill_live_groups() -> None:
    """Last resort if a test run is interrupted before the fixtures' finalizers ran."""
    for pgid in list(_LIVE_GROUPS):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    _LIVE_GROUPS.clear()


async def _kill_group(proc: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    """SIGTERM the process group, SIGKILL after ``grace`` seconds, reap the leader."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        deadline = time.monotonic() + wait
        # Popen has no awaitable wait(); poll briefly instead of blocking the loop.
        while proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if proc.poll() is not None:
            break
    # Stragglers that outlived the leader (content processes) share its group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(1)
    _LIVE_GROUPS.discard(proc.pid)


def _pref_js(name: str, value: bool | int | str) -> str:
    return f"user_pref({json.dumps(name)}, {json.dumps(value)});\n"


class FirefoxBrowser(Browser):
    """Headless Firefox ESR without WebDriver: one process + fresh profile per scenario.

    Each scenario starts ``firefox-esr --headless --no-remote --profile <tmp>`` on the
    scenario page in its own process group (``start_new_session``) and kills the whole
    group when the result arrived or the timeout passed.  ``prefs`` are added to
    :data:`FIREFOX_DEFAULT_PREFS` in the profile's ``user.js``.
    """

    def __init__(
        self,
        server: PageServer,
        *,
        prefs: Mapping[str, bool | int | str] | None = None,
        executable: str = FIREFOX_EXECUTABLE,
        name: str = "firefox",
    ) -> None:
        """Configure; nothing is started until a scenario runs."""
        super().__init__(server)
        self.prefs: dict[str, bool | int | str] = {**FIREFOX_DEFAULT_PREFS, **(prefs or {})}
        self.executable = executable
        self.name = name
        self._open_pages: set[_FirefoxProcess] = set()

    @staticmethod
    def available() -> bool:
        """True when ``firefox-esr`` is installed."""
        return os.access(FIREFOX_EXECUTABLE, os.X_OK)

    def with_prefs(self, prefs: Mapping[str, bool | int | str]) -> FirefoxBrowser:
        """Return a sibling browser whose profiles get ``prefs`` on top of this one's."""
        return FirefoxBrowser(
            self.server, prefs={**self.prefs, **prefs}, executable=self.executable, name=self.name
        )

    def start(self) -> None:
        """Nothing to launch up front (a process is started per scenario)."""
        if not self.available():
            raise RuntimeError(f"{FIREFOX_EXECUTABLE} is not installed")

    def close(self) -> None:
        """Kill any scenario process still alive (normally none)."""
        pages = list(self._open_pages)
        if not pages:
            return

        async def kill_all() -> None:
            await asyncio.gather(*(p.close() for p in pages), return_exceptions=True)

        with contextlib.suppress(Exception):
            self.server.call(kill_all(), timeout=20)
        self._open_pages.clear()

    def make_profile(self) -> Path:
        """Create a fresh profile directory holding ``user.js``."""
        profile = Path(tempfile.mkdtemp(prefix="harness-firefox-"))
        (profile / "user.js").write_text("".join(_pref_js(k, v) for k, v in self.prefs.items()))
        return profile

    async def _open(self, url: str, timeout: float) -> _OpenPage:
        profile = self.make_profile()
        log_path = profile / "firefox-output.log"
        env = {
            **os.environ,
            "MOZ_HEADLESS": "1",
            "MOZ_CRASHREPORTER_DISABLE": "1",
            "MOZ_DISABLE_AUTO_SAFE_MODE": "1",
        }
        # Opening a local file and fork/exec are quick; no need for a thread.
        with open(log_path, "wb") as log:  # noqa: ASYNC230
            proc = subprocess.Popen(  # noqa: ASYNC220
                [self.executable, "--headless", "--no-remote", "--profile", str(profile), url],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        _LIVE_GROUPS.add(proc.pid)
        opened = _FirefoxProcess(proc, profile, log_path)
        self._open_pages.add(opened)
        original_close = opened.close

        async def close_and_forget() -> None:
            try:
                await original_close()
            finally:
                self._open_pages.discard(opened)

        opened.close = close_and_forget  # type: ignore[method-assign]
        return opened


# --------------------------------------------------------------------------- running


async def _run_on_harness(
    browser: Browser,
    body: str,
    url: str,
    cert_hash: bytes,
    params: Any,
    timeout: float,
    load_timeout: float,
) -> ScenarioReport:
    server = browser.server
    began = time.monotonic()
    scenario = server._register(body, url, cert_hash, params)
    report = ScenarioReport(browser=browser.name, ok=False)
    opened: _OpenPage | None = None
    loading = True
    try:
        # Browser start-up (Firefox) and page load have their own bound, so that a busy
        # machine does not eat into the scenario's own time.
        async with asyncio.timeout(load_timeout):
            opened = await browser._open(server.page_url(scenario.id), load_timeout)
            await scenario.loaded.wait()
        loading = False
        async with asyncio.timeout(timeout):
            payload = await asyncio.shield(scenario.result)
        report.ok = bool(payload.get("ok"))
        report.result = payload.get("result")
        report.error = str(payload.get("error", ""))
        report.stack = str(payload.get("stack", ""))
        report.page_logs = [str(line) for line in payload.get("logs") or []]
    except TimeoutError:
        if loading:
            report.error = f"page not loaded within {load_timeout}s (browser start-up/load)"
        else:
            report.error = f"timed out after {timeout}s (no result posted by the page)"
        report.page_logs = scenario.ordered_logs()
    except Exception as exc:
        report.error = f"harness error: {type(exc).__name__}: {exc}"
        report.page_logs = scenario.ordered_logs()
    finally:
        server._forget(scenario)
        if opened is not None:
            await opened.close()
            report.browser_logs = opened.logs()
        report.elapsed = time.monotonic() - began
    return report


async def run_scenario_report(
    browser: Browser,
    js_body: str,
    *,
    url: str,
    cert_hash: bytes,
    params: Mapping[str, Any] | None = None,
    timeout: float = 30,
    load_timeout: float = 30,
) -> ScenarioReport:
    """Run a scenario and return its :class:`ScenarioReport` (never raises on page errors)."""
    coro = _run_on_harness(
        browser, js_body, url, bytes(cert_hash), dict(params or {}), timeout, load_timeout
    )
    # The harness side bounds itself; the margin covers closing the page.
    return await browser.server.acall(coro, load_timeout + timeout + 30)


async def run_scenario(
    browser: Browser,
    js_body: str,
    *,
    url: str,
    cert_hash: bytes,
    params: Mapping[str, Any] | None = None,
    timeout: float = 30,
    load_timeout: float = 30,
) -> Any:
    """Run ``js_body`` in ``browser`` and return what it returned.

    ``js_body`` is the body of ``async function (ctx)`` with ``ctx.url`` (= ``url``),
    ``ctx.hash`` (``Uint8Array`` of ``cert_hash``, the SHA-256 of the server's DER
    certificate) and ``ctx.params`` (= ``params``, JSON).  Raises ``AssertionError``
    with the page's error, stack and console output if the body throws, its result is
    not JSON-serialisable, the page is not loaded within ``load_timeout`` seconds
    (browser start-up included), or no result arrives ``timeout`` seconds after that.
    """
    report = await run_scenario_report(
        browser,
        js_body,
        url=url,
        cert_hash=cert_hash,
        params=params,
        timeout=timeout,
        load_timeout=load_timeout,
    )
    if not report.ok:
        raise AssertionError(report.describe())
    return report.result


def run_scenario_sync(
    browser: Browser,
    js_body: str,
    *,
    url: str,
    cert_hash: bytes,
    params: Mapping[str, Any] | None = None,
    timeout: float = 30,
    load_timeout: float = 30,
) -> Any:
    """Blocking :func:`run_scenario` for synchronous tests (server in another thread)."""
    coro = _run_on_harness(
        browser, js_body, url, bytes(cert_hash), dict(params or {}), timeout, load_timeout
    )
    report = browser.server.call(coro, load_timeout + timeout + 30)
    if not report.ok:
        raise AssertionError(report.describe())
    return report.result


class RunningScenario:
    """A scenario started by :func:`start_scenario`, running on the harness loop.

    Poll it with :meth:`done`, collect its report with :meth:`report`, or end it early
    with :meth:`stop` (its page is closed either way).
    """

    def __init__(self, server: PageServer, task: asyncio.Task[ScenarioReport]) -> None:
        self._server = server
        self._task = task

    def done(self) -> bool:
        """True once the page posted its result, failed or timed out."""
        return self._task.done()

    def report(self, timeout: float) -> ScenarioReport:
        """Wait (blocking, at most ``timeout`` seconds) for the report."""

        async def wait() -> ScenarioReport:
            return await asyncio.shield(self._task)

        return self._server.call(wait(), timeout)

    def stop(self, timeout: float = 30) -> None:
        """Cancel the scenario if it still runs and wait until its page is closed."""

        async def cancel() -> None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

        self._server.call(cancel(), timeout)


def start_scenario(
    browser: Browser,
    js_body: str,
    *,
    url: str,
    cert_hash: bytes,
    params: Mapping[str, Any] | None = None,
    timeout: float = 30,
    load_timeout: float = 30,
) -> RunningScenario:
    """Start a scenario without waiting for it (for callers that watch other processes)."""
    coro = _run_on_harness(
        browser, js_body, url, bytes(cert_hash), dict(params or {}), timeout, load_timeout
    )

    async def spawn() -> asyncio.Task[ScenarioReport]:
        return asyncio.ensure_future(coro)

    return RunningScenario(browser.server, browser.server.call(spawn(), 10))


# --------------------------------------------------------------------------- certificate


@dataclass(frozen=True)
class TestCertificate:
    """A certificate/key pair on disk and the SHA-256 of the DER certificate."""

    __test__ = False  # not a pytest test class

    cert_path: Path
    key_path: Path
    sha256: bytes


def generate_test_certificate(
    directory: Path, *, host: str = "127.0.0.1", validity_days: int = 10
) -> TestCertificate:
    """Write an ECDSA P-256 self-signed certificate for ``host`` usable with browser hashes.

    Browsers accept ``serverCertificateHashes`` only for ECDSA certificates valid for
    at most 14 days.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=validity_days) - datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
    return TestCertificate(cert_path=cert_path, key_path=key_path, sha256=digest)
