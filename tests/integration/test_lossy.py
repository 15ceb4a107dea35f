"""Lossy, slow and reordering paths: real processes in a throw-away network namespace.

No netem here (PROTOCOL.md): random loss comes from nftables inside the namespace,
delay / reordering / duplication from a userspace UDP relay (udp_relay.py). A server
and a client process (lossy_peer.py) move several 1-2 MiB streams both ways, checked
by sha-256, and datagrams, counted against what the path dropped.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pywebtransport.shared.utils import CertificateInfo

from .netns import can_create_namespaces, namespace, nft, nft_counters, run_in

HERE = Path(__file__).parent
PYTHON = sys.executable
WHY_NOT = can_create_namespaces()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(WHY_NOT is not None, reason=f"lossy paths skipped: {WHY_NOT}"),
]


def _start(ns: str, *argv: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        run_in(ns, PYTHON, *argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "READY":
        proc.kill()
        raise AssertionError(f"{argv[0]} did not start: {line!r} {proc.stderr.read()}")  # type: ignore[union-attr]
    return proc


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    if proc.poll() is None:
        proc.terminate()
    try:
        out, err = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return out, err


@pytest.fixture
def ns() -> Iterator[str]:
    with namespace() as name:
        yield name


def _run_case(
    ns: str,
    certificate: CertificateInfo,
    *,
    loss: int = 0,
    relay: list[str] | None = None,
    sizes: str = "1048576,1572864,2097152",
    congestion_control: str = "cubic",
) -> dict[str, Any]:
    port = random.randint(20000, 40000)
    if loss:
        nft(
            ns,
            f"""
            table inet pwtloss {{
                counter to_server {{ }}
                counter to_client {{ }}
                chain input {{
                    type filter hook input priority 0;
                    udp dport {port} numgen random mod 100 < {loss} counter name "to_server" drop
                    udp sport {port} numgen random mod 100 < {loss} counter name "to_client" drop
                }}
            }}
            """,
        )
    procs: list[subprocess.Popen[str]] = []
    server_out = ""
    relay_out = ""
    try:
        server = _start(
            ns,
            str(HERE / "lossy_peer.py"),
            "server",
            "--port",
            str(port),
            "--cert",
            certificate.certfile,
            "--key",
            certificate.keyfile,
            "--congestion-control",
            congestion_control,
        )
        procs.append(server)
        client_port = port
        relay_proc = None
        if relay is not None:
            client_port = port + 1
            relay_proc = _start(
                ns,
                str(HERE / "udp_relay.py"),
                "--listen",
                str(client_port),
                "--target",
                str(port),
                *relay,
            )
            procs.append(relay_proc)
        client = subprocess.run(
            run_in(
                ns,
                PYTHON,
                str(HERE / "lossy_peer.py"),
                "client",
                "--port",
                str(client_port),
                "--ca",
                certificate.certfile,
                "--sizes",
                sizes,
                "--congestion-control",
                congestion_control,
                *(["--nft-ns", ns] if loss else []),
            ),
            capture_output=True,
            text=True,
            timeout=55,
        )
        assert client.returncode == 0, client.stderr[-3000:]
        result: dict[str, Any] = json.loads(client.stdout.strip().splitlines()[-1])
        if relay_proc is not None:
            relay_out, _ = _stop(relay_proc)
            result["relay"] = json.loads(relay_out.strip().splitlines()[-1])
        if loss:
            result["nft"] = nft_counters(ns)
    finally:
        for proc in procs:
            out, err = _stop(proc)
            if proc is procs[0]:
                server_out = out + err[-3000:]
    result["server"] = server_out
    print(json.dumps({k: v for k, v in result.items() if k != "server"}))
    return result


def _check(result: dict[str, Any]) -> None:
    assert result["ok"], result
    assert all(result["streams_ok"])
    # Datagrams: we lose at most what the path lost (one datagram per packet, 10 ms apart).
    sent, received = result["datagrams_sent"], result["datagrams_received"]
    assert received <= sent
    assert sent - received <= result["packets_dropped_during_datagrams"] + (
        result.get("relay", {}).get("dropped", 0)
    ), result
    # The session closed cleanly on both ends.
    assert result["close"] == [0, True]
    assert "CLOSED 0 True" in result["server"], result["server"]
    assert result["seconds"] < 55


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("loss", "congestion_control"), [(5, "cubic"), (10, "cubic"), (5, "bbr"), (10, "bbr")]
)
def test_random_loss(
    ns: str, certificate: CertificateInfo, loss: int, congestion_control: str
) -> None:
    result = _run_case(ns, certificate, loss=loss, congestion_control=congestion_control)
    _check(result)
    assert result["nft"]["to_server"] > 0 and result["nft"]["to_client"] > 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("congestion_control", ["cubic", "bbr"])
def test_delay_reorder_duplicate(
    ns: str, certificate: CertificateInfo, congestion_control: str
) -> None:
    # 1.1 MiB in all: CUBIC takes each reordering past aioquic's thresholds for a loss and
    # halves its window, so the 4.5 MiB of the loss cases took it 43 s of the 55 s bound.
    result = _run_case(
        ns,
        certificate,
        relay=["--delay", "10-20", "--reorder", "25", "--dup", "5"],
        sizes="262144,393216,524288",
        congestion_control=congestion_control,
    )
    _check(result)
    counts = result["relay"]
    assert counts["reordered"] > 0 and counts["duplicated"] > 0
