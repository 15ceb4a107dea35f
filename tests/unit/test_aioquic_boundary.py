"""The fence around aioquic's internals: each feature verified, switchable, documented."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pywebtransport.transport import _aioquic
from pywebtransport.transport._aioquic import checks, verify

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
    # Security and correctness features stay on; every optimisation is off.
    assert sorted(name for name, (on, _) in features.items() if on) == [
        "cid_routing",
        "h3_settings",
        "peer_certificate",
        "stream_credit",
        "stream_limits",
        "stream_state",
    ]
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
        "c.QuicConnection._renamed = c.QuicConnection._write_stream_limits; "
        "del c.QuicConnection._write_stream_limits; "
    )
    features, stderr = _features({"PYWEBTRANSPORT_AIOQUIC_PATCHES": ""}, prelude)
    assert features["stream_window"][0] is False
    assert "_write_stream_limits" in str(features["stream_window"][1])
    assert stderr.count("RuntimeWarning") == 1
    assert "stream_window" in stderr
    assert all(on for name, (on, _) in features.items() if name != "stream_window")


def test_an_unreadable_write_loop_switches_stream_scheduling_off() -> None:
    # The scheduler replaces aioquic's packet-building method; one it cannot
    # compare with the version it follows (here: no source) is left alone.
    prelude = (
        "import aioquic.quic.connection as c; ns = {}; "
        "exec('def _write_application(self, builder, network_path, now): pass', ns); "
        "c.QuicConnection._write_application = ns['_write_application']; "
    )
    features, stderr = _features({"PYWEBTRANSPORT_AIOQUIC_PATCHES": ""}, prelude)
    relying = {
        name
        for name, feature in _aioquic.FEATURES.items()
        if "QuicConnection._write_application" in feature.relies_on
    }
    assert relying == {"stream_scheduling", "prompt_acks"}
    for name in relying:  # prompt_acks counts on the ACK it writes once due
        assert features[name][0] is False
        assert "_write_application" in str(features[name][1])
    assert stderr.count("RuntimeWarning") == 1
    assert all(on for name, (on, _) in features.items() if name not in relying)


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


def _edited_aioquic(tmp_path: Path, module: str, function: str) -> Path:
    """Copy the installed aioquic into `tmp_path` with one line added to `function`."""
    import aioquic

    copy = tmp_path / "aioquic"
    shutil.copytree(Path(aioquic.__file__).parent, copy)
    source = copy / module
    lines = source.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if f"def {function}(" in line)
    # The first line of the body after the signature (which may span lines).
    body = next(i for i in range(start, len(lines)) if lines[i].rstrip().endswith(":")) + 1
    indent = lines[body][: len(lines[body]) - len(lines[body].lstrip())]
    lines.insert(body, f"{indent}_edited = 1\n")
    source.write_text("".join(lines))
    return tmp_path


@pytest.mark.parametrize(
    ("module", "function", "feature"),
    [
        ("quic/connection.py", "_write_stream_frame", "stream_scheduling"),
        ("quic/connection.py", "_write_reset_stream_frame", "stream_scheduling"),
        ("quic/connection.py", "_write_stop_sending_frame", "stream_scheduling"),
        ("quic/connection.py", "_write_stream_limits", "stream_window"),
        ("quic/connection.py", "_replenish_connection_ids", "connection_ids"),
        ("quic/connection.py", "_replenish_connection_ids", "cid_routing"),
        ("quic/stream.py", "on_reset_delivery", "stream_state"),
        ("quic/connection.py", "_write_connection_limits", "stream_limits"),
        ("h3/connection.py", "_receive_request_or_push_data", "malformed_request"),
    ],
)
def test_an_edited_aioquic_function_switches_its_feature_off(
    tmp_path: Path, module: str, function: str, feature: str
) -> None:
    # A future aioquic that changes the logic of a function the boundary copies,
    # replaces or relies on: the same names and signatures, one more statement.
    path = _edited_aioquic(tmp_path, module, function)
    env = {"PYWEBTRANSPORT_AIOQUIC_PATCHES": "", "PYTHONPATH": str(path)}
    prelude = f"import aioquic; assert aioquic.__file__.startswith({str(path)!r}); "
    features, stderr = _features(env, prelude)
    assert features[feature][0] is False, features[feature]
    assert function in str(features[feature][1])
    assert "RuntimeWarning" in stderr
    # Every essential feature relying on the edited function is reported loudly.
    essential = [
        name
        for name, other in _aioquic.FEATURES.items()
        if other.essential and any(r.endswith(f".{function}") for r in other.relies_on)
    ]
    if essential:
        assert "SECURITY" in stderr and all(name in stderr for name in essential)
    else:
        assert "SECURITY" not in stderr


def test_a_lost_security_feature_is_reported_from_the_users_import(tmp_path: Path) -> None:
    path = _edited_aioquic(tmp_path, "quic/connection.py", "_write_connection_limits")
    script = tmp_path / "my_server.py"
    script.write_text("import pywebtransport\n")
    result = subprocess.run(
        [sys.executable, "-W", "always", str(script)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(path), "PYWEBTRANSPORT_AIOQUIC_PATCHES": ""},
        timeout=60,
        check=True,
    )
    security = [line for line in result.stderr.splitlines() if "SECURITY" in line]
    assert security and security[0].startswith(f"{script}:1: RuntimeWarning"), result.stderr
    assert "stream_limits" in security[0] and "128" in security[0]


@pytest.mark.parametrize("value", ["pacerr", "false", "pacer,nope", ","])
def test_an_unknown_patch_setting_is_an_error_listing_the_valid_ones(value: str) -> None:
    with pytest.raises(ValueError, match="comma-separated list of: batch_reads") as info:
        _aioquic.parse_patch_setting(value)
    assert "stream_scheduling" in str(info.value)
    result = subprocess.run(
        [sys.executable, "-c", "import pywebtransport"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYWEBTRANSPORT_AIOQUIC_PATCHES": value},
        timeout=60,
    )
    assert result.returncode != 0
    assert "PYWEBTRANSPORT_AIOQUIC_PATCHES" in result.stderr


@pytest.mark.parametrize("value", ["", "on", "ALL", "1", "off", "None", "0", "pacer, stats"])
def test_the_valid_patch_settings(value: str) -> None:
    names = _aioquic.parse_patch_setting(value)
    assert names <= set(_aioquic.FEATURES)


def test_a_signature_check_without_names_requires_no_parameters() -> None:
    def no_parameters(self: object) -> None: ...

    def one_parameter(self: object, extra: int) -> None: ...

    checks.params(no_parameters)
    with pytest.raises(checks.Mismatch):
        checks.params(one_parameter)
    with pytest.raises(checks.Mismatch):
        checks.params(one_parameter, "extra", "more")


def test_every_function_a_feature_relies_on_has_recorded_digests() -> None:
    for feature in _aioquic.FEATURES.values():
        for name in feature.relies_on:
            assert name in verify.DIGESTS, name
            assert _aioquic.logic_digest(verify.aioquic_function(name)) in (verify.DIGESTS[name])
