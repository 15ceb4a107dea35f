"""Candidate library changes, applied at run time for an A/B in the benchmark.

    PWT_BENCH_VARIANT=transmit_now python -m benchmarks.lossy --runs ours:cubic,...

`benchmarks/lossy.py --variants` sets the variable for extra runs of ours; the worker
applies the variant in the client and the server process before anything runs and
names it in each record (`variant`). A variant is a question, not a setting: the
library's own figures never run with one. Once a variant wins, the change goes into
the library and the variant goes.

- `transmit_now`: the engine transmits at the end of every receive batch instead of
  two loop turns later (`ConnectionEngine.end_receive` defers it so that what readers
  woken by the batch write leaves with the ACK). On uvloop, which hands each datagram
  to the protocol on its own, a batch is one datagram, so this sends after every
  datagram, as raw aioquic's protocol does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

ENV = "PWT_BENCH_VARIANT"


def _transmit_now() -> None:
    from pywebtransport.transport._engine import ConnectionEngine

    deferred: Callable[[Any], None] = ConnectionEngine.end_receive

    def end_receive(self: Any) -> None:
        deferred(self)
        self.transmit()  # cancels the deferred transmit and sends its datagrams now

    ConnectionEngine.end_receive = end_receive  # type: ignore[method-assign]


VARIANTS: dict[str, Callable[[], None]] = {"transmit_now": _transmit_now}


def apply_from_environment() -> str | None:
    """Apply the variant `PWT_BENCH_VARIANT` names, if any.

    Returns:
        Its name, or None.

    Raises:
        ValueError: An unknown name (the message lists the known ones).
    """
    name = os.environ.get(ENV) or None
    if name is None:
        return None
    if name not in VARIANTS:
        raise ValueError(f"{ENV}={name!r}: unknown variant; known: {', '.join(VARIANTS)}")
    VARIANTS[name]()
    return name
