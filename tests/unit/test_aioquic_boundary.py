"""The fence around aioquic's internals: each feature verified, switchable, documented."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pywebtransport.transport import _aioquic

ROOT = Path(__file__).resolve().parents[2]
_REPORT = (
    "import json, pywebtransport.transport._aioquic as a; "
    "print(json.dumps({n: [f.enabled, f.reason] for n, f in a.FEATURES.items()}))"
)


def _features(env: dict[str, str], prelude: str = "") -> tuple[dict[str, list[object]], str]:
    result = subprocess.run(
        [sys.executable, "-W", "always", "-c", prelude + _REPORT],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
        timeout=60,
    )
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def test_every_feature_is_on_with_the_tested_aioquic() -> None:
    off = {name: f.reason for name, f in _aioquic.FEATURES.items() if not f.enabled}
    if os.environ.get("PYWEBTRANSPORT_AIOQUIC_PATCHES", "").lower() == "off":
        pytest.skip("patches switched off for this run")
    assert off == {}


def test_off_switches_every_optimisation_but_not_pinning() -> None:
    features, stderr = _features({"PYWEBTRANSPORT_AIOQUIC_PATCHES": "off"})
    assert features["peer_certificate"][0] is True
    assert [name for name, (on, _) in features.items() if on] == ["peer_certificate"]
    assert "RuntimeWarning" not in stderr  # switched off on purpose: no warning


def test_naming_features_switches_just_those() -> None:
    features, _ = _features({"PYWEBTRANSPORT_AIOQUIC_PATCHES": "pacer, peer_certificate"})
    assert sorted(name for name, (on, _) in features.items() if not on) == [
        "pacer",
        "peer_certificate",
    ]


def test_a_changed_internal_switches_its_feature_off_with_one_warning() -> None:
    # What a future aioquic could do: rename a method the library overrides.
    prelude = (
        "import aioquic.quic.connection as c; "
        "c.QuicConnection._renamed = c.QuicConnection._replenish_connection_ids; "
        "del c.QuicConnection._replenish_connection_ids; "
    )
    features, stderr = _features({"PYWEBTRANSPORT_AIOQUIC_PATCHES": ""}, prelude)
    assert features["connection_ids"][0] is False
    assert "_replenish_connection_ids" in str(features["connection_ids"][1])
    assert stderr.count("RuntimeWarning") == 1
    assert "connection_ids" in stderr
    assert all(on for name, (on, _) in features.items() if name != "connection_ids")


def test_an_unreadable_write_loop_switches_stream_scheduling_off() -> None:
    # The scheduler replaces aioquic's packet-building method; one it cannot
    # compare with the version it follows (here: no source) is left alone.
    prelude = (
        "import aioquic.quic.connection as c; ns = {}; "
        "exec('def _write_application(self, builder, network_path, now): pass', ns); "
        "c.QuicConnection._write_application = ns['_write_application']; "
    )
    features, stderr = _features({"PYWEBTRANSPORT_AIOQUIC_PATCHES": ""}, prelude)
    assert features["stream_scheduling"][0] is False
    assert "_write_application" in str(features["stream_scheduling"][1])
    assert stderr.count("RuntimeWarning") == 1
    assert all(on for name, (on, _) in features.items() if name != "stream_scheduling")


def test_the_architecture_page_lists_every_feature() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    for name in _aioquic.FEATURES:
        assert f"| `{name}` |" in page, name


def _loop_a(self, items: list[int]) -> int:
    """One docstring."""
    total: int = 0
    for item in items:  # a comment
        total += item
    return total


def _loop_b(self, items):  # type: ignore[no-untyped-def]
    total = 0
    for item in items:
        total += item

    return total


def _loop_c(self, items: list[int]) -> int:
    total: int = 0
    for item in items:
        total -= item
    return total


def test_logic_digest_ignores_hints_docstrings_and_layout_but_not_logic() -> None:
    assert _aioquic.logic_digest(_loop_a) == _aioquic.logic_digest(_loop_b)
    assert _aioquic.logic_digest(_loop_a) != _aioquic.logic_digest(_loop_c)
