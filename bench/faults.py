"""Faults for the load suite: the database server stopped and restarted, or backends terminated, mid-run.

A fault run's databases live in a private PostgreSQL cluster the suite owns (``tests/faults/cluster.py``,
on a port of 55432-55439), never on the machine's shared server. While the client sends its requests,
:func:`inject` fires a fixed number of fault events, evenly spread over the run's requests:

- ``restart``: stop the server (alternately ``fast``: clients are disconnected, and ``immediate``: a
  crash, with WAL recovery at start), keep it down for ``down_seconds``, start it again;
- ``terminate``: ``pg_terminate_backend`` every session of the two databases that is inside a
  transaction (``active`` or ``idle in transaction``), i.e. in the middle of some request's work or commit.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from tests.faults import PrivateCluster

FAULTS = ("restart", "terminate")
MID_TRANSACTION = ("active", "idle in transaction", "idle in transaction (aborted)")


@dataclass
class FaultLog:
    """What was done to the server during a run."""

    kind: str
    events: int = 0
    terminated: int = 0
    """Backends terminated (``terminate``)."""
    seconds_down: float = 0.0
    """Time the server was not accepting connections (``restart``), start-up and recovery included."""
    windows: list[tuple[float, float]] = field(default_factory=list)
    """(start, end) of each event, in ``time.monotonic()`` seconds."""

    def during(self, start: float, end: float) -> bool:
        """Whether a request that ran from ``start`` to ``end`` overlapped a fault event."""
        return any(start <= fault_end and fault_start <= end for fault_start, fault_end in self.windows)

    def describe(self) -> str:
        if self.kind == "restart":
            return f"{self.events} restarts, {self.seconds_down:.1f} s down in all"
        return f"{self.terminated} backends terminated in {self.events} rounds"


def _restart(cluster: PrivateCluster, event: int, down_seconds: float) -> float:
    started = time.monotonic()
    cluster.restart("immediate" if event % 2 else "fast", down_seconds)
    return time.monotonic() - started


def _terminate(cluster: PrivateCluster, databases: Sequence[str]) -> int:
    return sum(cluster.terminate_backends(name, states=MID_TRANSACTION) for name in databases)


async def inject(
    kind: str,
    cluster: PrivateCluster,
    databases: Sequence[str],
    *,
    progress: Callable[[], int],
    total: int,
    events: int,
    finished: asyncio.Event,
    down_seconds: float = 1.0,
) -> FaultLog:
    """Fire ``events`` faults of ``kind``, the n-th once ``progress()`` (requests sent) reaches n/(events+1)
    of ``total``; stop early once ``finished`` is set. The server calls run in a worker thread, so the
    client's requests keep flowing (and failing) while the server is down; an event under way always runs
    to its end (the server is up again when this returns)."""
    log = FaultLog(kind)
    for event in range(events):
        threshold = total * (event + 1) // (events + 1)
        while progress() < threshold:
            if finished.is_set():
                return log
            await asyncio.sleep(0.01)
        started = time.monotonic()
        if kind == "restart":
            log.seconds_down += await asyncio.to_thread(_restart, cluster, event, down_seconds)
        else:
            log.terminated += await asyncio.to_thread(_terminate, cluster, databases)
        log.events += 1
        log.windows.append((started, time.monotonic()))
    return log
