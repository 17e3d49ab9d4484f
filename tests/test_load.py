"""The short load run CI makes: real HTTP under uvicorn, two PostgreSQL binds, faults mixed in.

The full run (10,000 requests, side by side with advanced-alchemy) is ``python -m bench.load``;
docs/reliability.md has its figures.
"""

from __future__ import annotations

import asyncio

import pytest

from bench import load
from tests.databases import require_server


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
    assert report.checked_out_after == 0
    assert report.idle_in_transaction_after == 0
    every_kind = {key.split(" ")[0] for key in report.statuses}
    assert every_kind == set(load.MIX)
