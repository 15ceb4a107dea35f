"""Fixtures for real-browser tests (headless Chromium and Firefox ESR).

Browsers and the page server live on the harness's own background thread, so the
fixtures here are synchronous and session-scoped, and tests can use any event loop
(pytest-asyncio's default function-scoped loop included) for the server under test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from .harness import (
    Browser,
    ChromiumBrowser,
    FirefoxBrowser,
    PageServer,
)

_HERE = Path(__file__).parent.resolve()

BROWSER_NAMES = ("chromium", "firefox")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test collected from this directory with ``pytest.mark.browser``."""
    for item in items:
        if item.path.resolve().is_relative_to(_HERE):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def page_server() -> Iterator[PageServer]:
    """The HTTP server for scenario pages (``http://127.0.0.1:PORT/run/<id>``)."""
    server = PageServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def chromium(page_server: PageServer) -> Iterator[ChromiumBrowser]:
    """One headless Chromium for the whole session (a fresh context per scenario)."""
    if not ChromiumBrowser.available():
        pytest.skip("Chromium not available: install Debian's `chromium` and `playwright`")
    browser = ChromiumBrowser(page_server)
    try:
        browser.start()
        yield browser
    finally:
        browser.close()


@pytest.fixture(scope="session")
def firefox(page_server: PageServer) -> Iterator[FirefoxBrowser]:
    """Firefox ESR: one fresh headless process and profile per scenario."""
    if not FirefoxBrowser.available():
        pytest.skip("Firefox not available: install Debian's `firefox-esr`")
    browser = FirefoxBrowser(page_server)
    try:
        browser.start()
        yield browser
    finally:
        browser.close()


@pytest.fixture(params=BROWSER_NAMES)
def browser(request: pytest.FixtureRequest) -> Browser:
    """Each test using this runs once in Chromium and once in Firefox."""
    result: Browser = request.getfixturevalue(request.param)
    return result


@pytest.fixture(scope="session")
def launch_chromium(page_server: PageServer) -> Iterator[Callable[..., ChromiumBrowser]]:
    """Factory for extra Chromium instances with additional command-line flags.

    ``launch_chromium(["--enable-features=EnableWebTransportDraft07"])`` returns a
    started browser; instances are cached per flag list and closed at session end.
    """
    if not ChromiumBrowser.available():
        pytest.skip("Chromium not available: install Debian's `chromium` and `playwright`")
    launched: dict[tuple[str, ...], ChromiumBrowser] = {}

    def launch(extra_args: Sequence[str]) -> ChromiumBrowser:
        key = tuple(extra_args)
        if key not in launched:
            instance = ChromiumBrowser(page_server, extra_args=key, name=f"chromium{list(key)}")
            launched[key] = instance
            instance.start()
        return launched[key]

    try:
        yield launch
    finally:
        for instance in launched.values():
            instance.close()
