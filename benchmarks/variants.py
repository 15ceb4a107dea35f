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
- `transmit_now_client`, `transmit_now_server`: the same in one process only (in the
  lossy upload the client sends the data and the server the ACKs).
- `ack_due`: the engine transmits at the end of a receive batch at once only when an
  ACK is due by then (aioquic's `ack_at`, 1 ms after the first unacknowledged packet),
  and defers as now otherwise: raw aioquic's ACK rate, keeping the answers-with-the-ACK
  of the deferral for everything else.
- `prompt_acks_off`: the library's `prompt_acks` switched off (the engine then keeps
  aioquic's ACK delay and its deferred transmit after a loss too). The feature was
  tried here first as the variant `ack_gap` (`lossy-bursty-gap.jsonl`: 27 of 40
  rounds against ours, where `ack_due` won 24 of 40 but costs 9-12 % of loopback bulk
  on uvloop, as `ack_gap` does not).
- `patches_off`: every optimisation of `transport/_aioquic` switched off but the pacer
  (`PYWEBTRANSPORT_AIOQUIC_PATCHES`, set in the processes' environment before they
  import the library), so ours runs aioquic as the tuned baseline does, under its own
  layer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pywebtransport.transport._aioquic.features import FEATURES

ENV = "PWT_BENCH_VARIANT"


def _after_receive_batch(then: Callable[[Any], None]) -> Callable[[], None]:
    """A change that runs `then(engine)` after `ConnectionEngine.end_receive`."""

    def change() -> None:
        from pywebtransport.transport._engine import ConnectionEngine

        deferred: Callable[[Any], None] = ConnectionEngine.end_receive

        def end_receive(self: Any) -> None:
            deferred(self)
            then(self)

        ConnectionEngine.end_receive = end_receive  # type: ignore[method-assign]

    return change


def _transmit(engine: Any) -> None:
    engine.transmit()  # cancels the deferred transmit and sends its datagrams now


def _transmit_if_ack_due(engine: Any) -> None:
    # aioquic's packet spaces are private; should this become the library's, the
    # question belongs with the fence's queries (transport/_aioquic/queries.py).
    now = engine.loop.time()
    if any(s.ack_at is not None and s.ack_at <= now for s in engine.quic._spaces.values()):
        engine.transmit()


_transmit_now = _after_receive_batch(_transmit)
_ack_due = _after_receive_batch(_transmit_if_ack_due)


BOTH = frozenset({"client", "server"})


@dataclass(frozen=True)
class Variant:
    """A candidate change: code to run at start-up, and variables for the environment."""

    change: Callable[[], None] | None = None
    roles: frozenset[str] = BOTH
    """The processes `change` applies in (`"client"`, `"server"`)."""
    environment: Mapping[str, str] = field(default_factory=dict)
    """Set for both processes before they start (`benchmarks/lossy.py` does it)."""


_OPTIMISATIONS_BUT_PACER = ",".join(
    sorted(name for name, feature in FEATURES.items() if not feature.essential and name != "pacer")
)

VARIANTS: dict[str, Variant] = {
    "transmit_now": Variant(_transmit_now),
    "transmit_now_client": Variant(_transmit_now, frozenset({"client"})),
    "transmit_now_server": Variant(_transmit_now, frozenset({"server"})),
    "ack_due": Variant(_ack_due),
    "prompt_acks_off": Variant(environment={"PYWEBTRANSPORT_AIOQUIC_PATCHES": "prompt_acks"}),
    "patches_off": Variant(
        environment={"PYWEBTRANSPORT_AIOQUIC_PATCHES": _OPTIMISATIONS_BUT_PACER}
    ),
}


def apply_from_environment(role: str) -> str | None:
    """Apply the variant `PWT_BENCH_VARIANT` names, if any.

    Args:
        role: `"client"` or `"server"`: which process this is.

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
    variant = VARIANTS[name]
    if variant.change is not None and role in variant.roles:
        variant.change()
    return name
