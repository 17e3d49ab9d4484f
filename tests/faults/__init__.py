"""Fault tools for tests and the load suite: a private PostgreSQL cluster and a fault-injecting proxy.

Both use only the loopback ports of ``FAULT_PORTS`` (default ``55432-55439``), leased with file locks so
concurrent test sessions never share one. Neither ever touches the machine's shared servers.
"""

from __future__ import annotations

from tests.faults.cluster import PrivateCluster, StopMode, cluster_problem
from tests.faults.proxy import (
    COMMIT,
    COMMIT_PREPARED,
    INSERT,
    PREPARE_TRANSACTION,
    ROLLBACK_PREPARED,
    XA_COMMIT,
    XA_PREPARE,
    FaultProxy,
    Rule,
)

__all__ = (
    "PrivateCluster",
    "StopMode",
    "cluster_problem",
    "FaultProxy",
    "Rule",
    "COMMIT",
    "COMMIT_PREPARED",
    "INSERT",
    "PREPARE_TRANSACTION",
    "ROLLBACK_PREPARED",
    "XA_COMMIT",
    "XA_PREPARE",
)
