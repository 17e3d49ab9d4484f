"""The short load runs CI makes: real HTTP under uvicorn, two PostgreSQL binds, faults mixed in.

The full runs (10,000 requests, side by side with advanced-alchemy; and the fault runs) are
``python -m bench.load``; docs/reliability.md has their figures. Timings are reported there, never
asserted here: these tests assert counts only.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from bench import load
from tests.databases import require_server

if TYPE_CHECKING:
    from tests.faults import PrivateCluster


@pytest.mark.postgresql
def test_a_thousand_requests_lose_nothing_and_leak_nothing() -> None:
    require_server("postgresql")
    report = asyncio.run(load.run("plugin", requests=1000, concurrency=50, max_seconds=120))

    assert report.requests == 1000
    assert report.lost_writes == 0
    assert report.failed_commit_2xx == 0
    assert report.phantom_writes == 0
    assert report.partial_writes == 0
    assert report.wrong_status == 0
    assert report.transport_errors == 0
    assert report.hung == 0
    assert report.checked_out_after == 0
    assert report.idle_in_transaction_after == 0
    every_kind = {key.split(" ")[0] for key in report.statuses}
    assert every_kind == set(load.MIX)


@pytest.mark.postgresql
@pytest.mark.parametrize("two_phase", [False, True], ids=["one-by-one", "two-phase"])
@pytest.mark.parametrize(("fault", "events"), [("restart", 2), ("terminate", 4)])
def test_a_server_that_restarts_or_loses_backends_loses_no_write_and_leaks_nothing(
    private_cluster: PrivateCluster, fault: str, events: int, two_phase: bool
) -> None:
    run = load.run("plugin", requests=300, concurrency=20, fault=fault, two_phase=two_phase, cluster=private_cluster,
                   fault_events=events, request_timeout=30)  # fmt: skip
    report = asyncio.run(run)
    print(load.table([report]))  # the figures, for a failing run's output

    assert report.requests == 300
    assert report.fault_events == events
    assert report.lost_writes == 0
    assert report.failed_commit_2xx == 0
    assert report.wrong_status == 0  # an answer is the expected one, or a 5xx when the database failed
    assert report.transport_errors == 0
    assert report.hung == 0
    assert report.checked_out_after == 0
    assert report.idle_in_transaction_after == 0
    assert report.prepared_after == 0
    if two_phase:
        assert report.partial_writes == 0
    else:  # allowed without two-phase commit, but never behind a 2xx
        assert report.partial_writes == report.partial_error
    assert report.clean
