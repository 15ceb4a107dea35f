"""The benchmark's A/B tools: variants apply where they say, and lossy.py counts rounds won."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import variants
from benchmarks.lossy import summary

from pywebtransport.transport._aioquic.features import parse_patch_setting
from pywebtransport.transport._engine import ConnectionEngine

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def engine_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    # Recorded by monkeypatch, so whatever a variant installs is undone after the test.
    monkeypatch.setattr(ConnectionEngine, "end_receive", ConnectionEngine.end_receive)


@pytest.mark.usefixtures("engine_restored")
@pytest.mark.parametrize(
    ("name", "role", "patched"),
    [
        ("transmit_now", "client", True),
        ("transmit_now", "server", True),
        ("transmit_now_client", "client", True),
        ("transmit_now_client", "server", False),
        ("transmit_now_server", "client", False),
        ("ack_due", "server", True),
        ("prompt_acks_off", "server", False),  # the library's feature, off by environment
        ("patches_off", "client", False),  # its change is the environment lossy.py sets
    ],
)
def test_a_variant_changes_only_the_processes_it_names(
    monkeypatch: pytest.MonkeyPatch, name: str, role: str, patched: bool
) -> None:
    before = ConnectionEngine.end_receive
    monkeypatch.setenv(variants.ENV, name)
    assert variants.apply_from_environment(role) == name  # recorded even where not applied
    assert (ConnectionEngine.end_receive is not before) is patched


@pytest.mark.usefixtures("engine_restored")
def test_no_variant_changes_nothing_and_an_unknown_one_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = ConnectionEngine.end_receive
    monkeypatch.delenv(variants.ENV, raising=False)
    assert variants.apply_from_environment("client") is None
    monkeypatch.setenv(variants.ENV, "transmit_soon")
    with pytest.raises(ValueError, match="transmit_now"):
        variants.apply_from_environment("client")
    assert ConnectionEngine.end_receive is before


def _record(impl: str, round_: int, mibps: float) -> dict[str, Any]:
    return {
        "impl": impl,
        "cc": "cubic",
        "scenario": "lossy",
        "case": "20ms",
        "round": round_,
        "ok": True,
        "results": {"loss1_MiBps": mibps},
    }


def test_the_summary_counts_rounds_won_pairwise() -> None:
    rounds = [  # (ours, stock, tuned, variant) per round
        (1.0, 2.0, 0.5, 1.5),
        (1.0, 0.5, 0.5, 0.5),
        (1.0, 0.5, 2.0, 3.0),
    ]
    records = []
    for number, figures in enumerate(rounds):
        for impl, mibps in zip(("ours", "rawh3", "rawh3t", "ours+v"), figures, strict=True):
            records.append(_record(impl, number, mibps))
    records.append(_record("rawh3", 3, 9.0))  # a round without ours counts for no one
    text = summary(records)
    assert "- 20ms, loss1_MiBps: 2 of 3 against stock, 2 of 3 against tuned" in text
    assert "rounds won: 2 of 3 against ours, 1 of 3 against stock, 2 of 3 against tuned" in text
    assert "1.50 (0.50-3.00) (1.50x ours)" in text


def test_prompt_acks_off_switches_off_only_that_feature() -> None:
    setting = variants.VARIANTS["prompt_acks_off"].environment["PYWEBTRANSPORT_AIOQUIC_PATCHES"]
    assert parse_patch_setting(setting) == {"prompt_acks"}


def test_patches_off_switches_off_every_optimisation_but_the_pacer() -> None:
    setting = variants.VARIANTS["patches_off"].environment["PYWEBTRANSPORT_AIOQUIC_PATCHES"]
    off = parse_patch_setting(setting)  # the library accepts it: every name is known
    assert "pacer" not in off
    assert off | {"pacer"} == parse_patch_setting("off")
