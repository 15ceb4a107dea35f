"""``python -m benchmarks.handshake_memory``: server memory per QUIC handshake in flight.

A default server (Retry off, so every Initial creates a handshake) runs in a child
process; real aioquic clients send their first Initial from many loopback addresses
and never continue. The server's RSS growth divided by the handshakes it holds is
the cost of one handshake in flight: what `max_handshakes` (default 1024) bounds.
With the default `retry="auto"`, handshakes beyond the Retry threshold cost nothing
until their client proves its address.

Writes one JSON record (git revision, machine, figures) to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

from pywebtransport.shared.utils import generate_self_signed_cert

from .common import git_info, machine_info

# The crowd helpers of the flood tests (real aioquic clients, the server child).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.integration.crowd import (
    ServerProcess,
    close_all,
    crowd_hosts,
    half_open_flood,
)

MIB = 1024 * 1024


async def measure(count: int, settle: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as directory:
        cert = generate_self_signed_cert("127.0.0.1", output_dir=directory)
        server = await ServerProcess.start(
            cert.certfile,
            cert.keyfile,
            retry="never",
            max_handshakes=count + 100,
            max_handshakes_per_address=count,
            handshake_timeout=60.0,
        )
        held = []
        try:
            await asyncio.sleep(settle)
            before = (await server.stats())["rss"]
            held = await half_open_flood(server.address, count, hosts=crowd_hosts(64))
            await asyncio.sleep(settle)
            after = await server.stats()
        finally:
            close_all(held)
            await server.stop()
    growth = after["rss"] - before
    return {
        "scenario": "handshake_memory",
        "handshakes": count,
        "server_rss_before_mib": round(before / MIB, 2),
        "server_rss_after_mib": round(after["rss"] / MIB, 2),
        "kib_per_handshake": round(growth / count / 1024, 1),
        "connections_established": after["connections"].get("active", None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--handshakes", type=int, default=500)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    record = asyncio.run(measure(args.handshakes, args.settle))
    record["git"] = git_info()
    record["machine"] = machine_info()
    args.out.write_text(json.dumps(record) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
