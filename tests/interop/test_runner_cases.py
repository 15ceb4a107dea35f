"""The public WebTransport interop runner's seven test cases, reproduced here.

Each (peer, case) cell of ``interop/run_local.py`` is one test: our endpoint as
server against our endpoint as client (``ours``), headless Chromium and Firefox
ESR as clients (``browser``), and ours over a 5 %-loss loopback in a network
namespace (``lossy``, ``slow``, needs root). The runner's checks apply: files
byte-identical, negotiated protocol as expected.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

RUN_LOCAL = Path(__file__).resolve().parents[2] / "interop" / "run_local.py"


def _load_run_local() -> ModuleType:
    # Loaded by path: the top-level `interop/` directory is not a package, and the
    # name `interop` is this test directory's package under pytest.
    name = "pwt_interop_run_local"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, RUN_LOCAL)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


run_local = _load_run_local()

MARKS = {
    "ours": (),
    "chromium": (pytest.mark.browser,),
    "firefox": (pytest.mark.browser,),
    "lossy": (pytest.mark.slow,),
}
CELLS = [
    pytest.param(peer, case, id=f"{peer}-{case}", marks=MARKS[peer])
    for peer in run_local.PEERS
    for case in run_local.CASES
]


@pytest.fixture(scope="module")
def browsers() -> Iterator[object]:
    """run_local's own launcher (the harness's page server, Chromium, Firefox)."""
    launcher = run_local.Browsers()
    try:
        yield launcher
    finally:
        launcher.close()


@pytest.mark.timeout(150)
@pytest.mark.parametrize(("peer", "case"), CELLS)
def test_runner_case(peer: str, case: str, browsers: object, tmp_path: Path) -> None:
    cell = run_local.run_cell(peer, case, browsers=browsers, workdir=tmp_path)
    if cell.status == "unsupported":
        pytest.skip(f"{peer}: {cell.detail}")
    assert cell.status == "pass", cell.detail
