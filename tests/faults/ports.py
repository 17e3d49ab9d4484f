"""Loopback ports for the fault tools: a fixed range, shared between concurrent test runs by file locks.

Private clusters and proxies may only use the ports in ``FAULT_PORTS`` (default ``55432-55439``). Several
test sessions can run at once on this machine (other worktrees), so a port is leased: an exclusive,
non-blocking ``flock`` on ``/tmp/litestar-alchemy-port-<port>.lock``, held until the lease is released or
the process exits. A session that finds every port leased fails with a message naming the range.
"""

from __future__ import annotations

import fcntl
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


def port_range() -> list[int]:
    """The ports the fault tools may use, from ``FAULT_PORTS`` (``first-last``)."""
    first, _, last = os.environ.get("FAULT_PORTS", "55432-55439").partition("-")
    return list(range(int(first), int(last or first) + 1))


def port_is_free(port: int) -> bool:
    """Whether nothing listens on ``127.0.0.1:port`` (a bind succeeds)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class PortLease:
    """One leased port; :meth:`release` (or process exit) gives it back."""

    port: int
    _lock: IO[bytes] | None = field(default=None, repr=False)

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file drops the flock
            self._lock = None


def lease_port(usable: Callable[[int], bool], *, highest_first: bool = False) -> PortLease:
    """Lease the first port of the range that no other session holds and that ``usable`` accepts.

    Clusters lease from the bottom of the range and proxies from the top, so a cluster keeps finding its
    own port (its name is derived from it) run after run.
    """
    ports = port_range()
    for port in reversed(ports) if highest_first else ports:
        lock = Path(f"/tmp/litestar-alchemy-port-{port}.lock").open("ab")  # noqa: SIM115  (held by the lease)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        if usable(port):
            return PortLease(port, lock)
        lock.close()
    raise RuntimeError(
        f"no usable port left in FAULT_PORTS={ports[0]}-{ports[-1]}: each is leased by another test session "
        "or taken by another program; wait for the other sessions or set FAULT_PORTS"
    )
