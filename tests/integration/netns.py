"""Throw-away network namespaces for lossy-path tests (root only, no netem needed).

A namespace has its own loopback, so nftables rules and UDP ports in it touch
nothing outside. `namespace()` creates one, brings `lo` up and always deletes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator

__all__ = ["can_create_namespaces", "namespace", "nft", "nft_counters", "run_in"]


def can_create_namespaces() -> str | None:
    """Return None when namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install iproute2 nftables)"
    name = f"pwt-probe-{secrets.token_hex(3)}"
    probe = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


@contextlib.contextmanager
def namespace() -> Iterator[str]:
    """Create `pwt-<random>` with loopback up; delete it afterwards, whatever happens."""
    name = f"pwt-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        subprocess.run(
            ["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True
        )
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def run_in(ns: str, *argv: str) -> list[str]:
    """Prefix a command line so it runs inside namespace `ns`."""
    return ["ip", "netns", "exec", ns, *argv]


def nft(ns: str, ruleset: str) -> None:
    """Load an nftables ruleset inside the namespace."""
    subprocess.run(run_in(ns, "nft", "-f", "-"), input=ruleset, text=True, check=True)


def nft_counters(ns: str, table: str = "pwtloss") -> dict[str, int]:
    """Packets counted by each named counter of `inet <table>` in the namespace."""
    out = subprocess.run(
        run_in(ns, "nft", "-j", "list", "counters", "table", "inet", table),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    counters: dict[str, int] = {}
    for item in json.loads(out)["nftables"]:
        counter = item.get("counter")
        if counter:
            counters[counter["name"]] = int(counter["packets"])
    return counters
