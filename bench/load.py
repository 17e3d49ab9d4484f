"""Load and fault suite over real HTTP: no lost writes, no phantom writes, no leaked connections.

Run the full suite (this plugin, then advanced-alchemy, side by side; needs ``.[bench]``)::

    .venv-bench/bin/python -m bench.load        # --requests 10000 --concurrency 100

and the fault runs (this plugin, without and with ``two_phase``, on a private cluster; see
``bench/faults.py``)::

    .venv/bin/python -m bench.load --plugins plugin --faults restart,terminate

Each plugin serves ``bench/load_app.py`` under uvicorn on 127.0.0.1, on two fresh PostgreSQL databases,
and a bounded async HTTP client sends the same seeded mix of requests: successful writes, handlers that
raise, handlers that return a 400, writes whose commit fails on a duplicate key, slow handlers, and
clients that give up (disconnect) before a slow handler answers. Requests stop at ``--requests`` or
``--max-seconds``, whichever comes first; a request with no answer after ``--request-timeout`` counts as
hung. Afterwards every outcome is checked against the rows actually in the databases, the pools, the
server's sessions and its prepared transactions are inspected, and the server's memory growth between the
first and last fifth of the run is reported. The exit code is 1 when a run of this plugin lost or invented
a write, answered a wrong status, left a connection, a transaction or a prepared transaction behind, or
let a request hang (see :attr:`Report.clean` for what a fault run allows).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from bench.faults import FAULTS, FaultLog, inject
from bench.load_setup import Databases, Server

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.faults import PrivateCluster

MIX = {"ok": 45, "slow": 10, "raise": 10, "reject": 10, "duplicate": 10, "abandon": 15}
"""Share of each kind of request, in percent."""
EXPECTED = {"ok": 201, "slow": 201, "raise": 500, "reject": 400, "duplicate": 409}
ABANDON_AFTER = 0.05
"""Seconds a giving-up client waits for a slow (200 ms) handler before it disconnects."""


@dataclass
class Outcome:
    rid: str
    kind: str
    status: int | None = None
    abandoned: bool = False
    hung: bool = False
    transport_error: str | None = None
    started: float = 0.0
    finished: float = 0.0
    body: str = ""
    """The start of an error answer's body (to explain it in the report)."""


@dataclass
class Report:
    """What one run showed; every count but throughput and memory should be explainable."""

    plugin: str
    fault: str | None = None
    two_phase: bool = False
    requests: int = 0
    seconds: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    faults: str = "-"
    fault_events: int = 0
    lost_writes: int = 0
    """2xx answered, but the order or its audit row is not in the database."""
    failed_commit_2xx: int = 0
    """A duplicate-key write (its commit must fail) answered with a 2xx."""
    phantom_writes: int = 0
    """An error answered, but the request's rows are in both databases."""
    partial_writes: int = 0
    """A request with a row in one database but not the other (whatever it was answered)."""
    partial_error: int = 0
    """Of those, answered with an error (or the client had left): one bind committed, the other not, and
    the client was not told it succeeded (allowed without two-phase commit when a server fails between
    the binds' commits)."""
    fault_errors: int = 0
    """Answered 5xx where the kind expects another status: the database failed under the request."""
    errors_between_faults: int = 0
    """Of those, requests that ran entirely while no fault was under way (the server was up, no backend
    was being terminated): failures left over from an earlier fault, e.g. a dead pooled connection."""
    wrong_status: int = 0
    abandoned_committed: int = 0
    """The client left while its handler ran; the handler finished and committed (docs/reliability.md)."""
    abandoned_unwritten: int = 0
    """The client left before its request was handled: nothing was written."""
    hung: int = 0
    """Requests with no answer within the request timeout."""
    transport_errors: int = 0
    transport_error_samples: list[str] = field(default_factory=list)
    phantom_samples: list[str] = field(default_factory=list)
    checked_out_after: int = -1
    idle_in_transaction_after: int = -1
    prepared_after: int = -1
    """Prepared transactions left in the two databases once the run has settled."""
    shutdown: str = "-"
    log: Counter[str] = field(default_factory=Counter)
    """The server's stderr: this plugin's ERROR and WARNING lines, and Python warnings."""
    log_samples: list[str] = field(default_factory=list)
    rss_first_mib: float = 0.0
    rss_last_mib: float = 0.0

    @property
    def name(self) -> str:
        parts = [self.plugin, *([self.fault] if self.fault else []), *(["two-phase"] if self.two_phase else [])]
        return ", ".join(parts)

    @property
    def clean(self) -> bool:
        """No lost or invented write, no wrong status, nothing left open, no hung request.

        Under faults a request may be answered 5xx when the database failed under it, and without
        two-phase commit a multi-bind write may be half committed if it was answered with an error; a
        write whose COMMIT reply was lost may be stored though its answer was an error (reported as a
        phantom, and shown). Nothing else is allowed.
        """
        allowed_partial = self.partial_error if self.fault and not self.two_phase else 0
        return not (
            self.lost_writes or self.failed_commit_2xx or (self.phantom_writes and not self.fault)
            or self.partial_writes - allowed_partial or self.wrong_status or self.transport_errors or self.hung
            or self.checked_out_after or self.idle_in_transaction_after or self.prepared_after
        )  # fmt: skip


# -- the client --------------------------------------------------------------------------------------


def plan(requests: int, seed: int) -> list[tuple[str, str]]:
    """The same (rid, kind) sequence for every plugin: a seeded shuffle of the mix."""
    kinds = [kind for kind, share in MIX.items() for _ in range(share)]
    chooser = random.Random(seed)
    return [(f"r{n}-{uuid.UUID(int=chooser.getrandbits(128)).hex[:8]}", chooser.choice(kinds)) for n in range(requests)]


async def drive(
    base_url: str,
    requests: list[tuple[str, str]],
    concurrency: int,
    max_seconds: float,
    *,
    outcomes: list[Outcome] | None = None,
    timeout: float = 30.0,
) -> list[Outcome]:
    """Send every request with at most ``concurrency`` in flight; stop early at ``max_seconds``.

    ``outcomes`` (appended to as requests start) lets a fault injector follow the progress.
    """
    outcomes = [] if outcomes is None else outcomes
    pending: Iterator[tuple[str, str]] = iter(requests)
    deadline = time.monotonic() + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def send(client: httpx.AsyncClient, outcome: Outcome) -> None:
        path = f"/orders/{outcome.rid}/{'slow' if outcome.kind == 'abandon' else outcome.kind}"
        try:
            if outcome.kind == "abandon":  # give up before the slow handler answers: the connection is closed
                try:
                    response = await asyncio.wait_for(client.post(path), ABANDON_AFTER)
                except asyncio.TimeoutError:  # TimeoutError itself only from Python 3.11
                    outcome.abandoned = True
                    return
            else:
                response = await client.post(path)
            outcome.status = response.status_code
            if response.status_code >= 500:
                outcome.body = response.text[:300]
        except httpx.TimeoutException:
            outcome.hung = True
        except httpx.TransportError as exc:
            outcome.transport_error = f"{type(exc).__name__}: {exc}"

    async def worker(client: httpx.AsyncClient) -> None:
        for rid, kind in pending:
            if time.monotonic() > deadline:
                return
            outcomes.append(outcome := Outcome(rid, kind, started=time.monotonic()))
            await send(client, outcome)
            outcome.finished = time.monotonic()

    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return outcomes


def _answered(report: Report, outcome: Outcome, present: bool, complete: bool, log: FaultLog | None) -> None:
    status = outcome.status or 0
    if 200 <= status < 300 and not complete:
        report.lost_writes += 1
    if status >= 400 and complete:
        report.phantom_writes += 1
        if len(report.phantom_samples) < 5:
            report.phantom_samples.append(f"{outcome.kind} {outcome.rid} answered {status}: {outcome.body!r}")
    if status >= 400 and present and not complete:
        report.partial_error += 1
    if outcome.kind == "duplicate" and 200 <= status < 300:
        report.failed_commit_2xx += 1
    expected = EXPECTED.get(outcome.kind, 201)
    if report.fault and status >= 500 and status != expected:
        report.fault_errors += 1
        report.errors_between_faults += log is not None and not log.during(outcome.started, outcome.finished)
    elif status != expected:
        report.wrong_status += 1


def verify(report: Report, outcomes: list[Outcome], databases: Databases, log: FaultLog | None = None) -> None:
    orders, audit = databases.rids("default"), databases.rids("logs")
    for outcome in outcomes:
        present = outcome.rid in orders or outcome.rid in audit
        complete = outcome.rid in orders and outcome.rid in audit
        answer = "abandoned" if outcome.abandoned else "hung" if outcome.hung else outcome.status
        report.statuses[f"{outcome.kind} {answer}"] += 1
        if present and not complete:
            report.partial_writes += 1
            report.partial_error += outcome.abandoned
        if outcome.transport_error:
            report.transport_errors += 1
            if len(report.transport_error_samples) < 5:
                report.transport_error_samples.append(f"{outcome.kind} {outcome.rid}: {outcome.transport_error}")
        elif outcome.hung:
            report.hung += 1
        elif outcome.abandoned:
            if complete:
                report.abandoned_committed += 1
            elif not present:
                report.abandoned_unwritten += 1
        else:
            _answered(report, outcome, present, complete, log)


def _memory(report: Report, samples: list[tuple[float, int]]) -> None:
    if len(samples) < 10:
        return
    fifth = max(1, len(samples) // 5)
    report.rss_first_mib = statistics.median(rss for _, rss in samples[:fifth]) / 2**20
    report.rss_last_mib = statistics.median(rss for _, rss in samples[-fifth:]) / 2**20


async def _settled(databases: Databases, seconds: float = 10.0) -> int:
    """Prepared transactions left, once the app has had ``seconds`` to resolve any it is still retrying."""
    deadline = time.monotonic() + seconds
    while (prepared := await asyncio.to_thread(databases.prepared)) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return prepared


async def run(
    plugin: str,
    requests: int = 10_000,
    concurrency: int = 100,
    seed: int = 1,
    max_seconds: float = 600,
    *,
    fault: str | None = None,
    two_phase: bool = False,
    cluster: PrivateCluster | None = None,
    fault_events: int = 4,
    request_timeout: float = 30.0,
) -> Report:
    """One full run against one plugin, on its own fresh databases and server.

    With ``fault`` (``restart`` or ``terminate``) the databases are made on ``cluster``, a private
    PostgreSQL cluster (one is leased for the run when none is given), and ``fault_events`` faults are
    injected while the requests are sent.
    """
    if fault is not None and cluster is None:
        from tests.faults import PrivateCluster

        with PrivateCluster.leased() as leased:
            leased.start()
            return await run(plugin, requests, concurrency, seed, max_seconds, fault=fault, two_phase=two_phase,
                             cluster=leased, fault_events=fault_events, request_timeout=request_timeout)  # fmt: skip
    report = Report(plugin, fault, two_phase)
    if cluster is not None:
        from sqlalchemy.engine import make_url

        cluster.start()
        databases = Databases(make_url(cluster.url(driver="postgresql")))
    else:
        databases = Databases()
    server = Server(plugin, databases, two_phase=two_phase)
    try:
        await server.ready()
        stop, finished = asyncio.Event(), asyncio.Event()
        sampler = asyncio.create_task(server.sample_memory(stop))
        outcomes: list[Outcome] = []
        injector = None
        if fault is not None and cluster is not None:
            injector = asyncio.create_task(inject(fault, cluster, list(databases.names.values()),
                                                  progress=lambda: len(outcomes), total=requests,
                                                  events=fault_events, finished=finished))  # fmt: skip
        started = time.monotonic()
        try:
            await drive(
                server.base_url,
                plan(requests, seed),
                concurrency,
                max_seconds,
                outcomes=outcomes,
                timeout=request_timeout,
            )
        finally:
            finished.set()
            log: FaultLog | None = await injector if injector is not None else None
        report.seconds = time.monotonic() - started
        report.requests = len(outcomes)
        if log is not None:
            report.faults, report.fault_events = log.describe(), log.events
        stop.set()
        await sampler
        report.checked_out_after = await server.checked_out()
        report.prepared_after = await _settled(databases)
        report.idle_in_transaction_after = databases.idle_in_transaction()
        server.stop()
        report.shutdown = f"{'killed after' if server.killed else 'exited in'} {server.shutdown_seconds:.1f} s"
        report.log, report.log_samples = server.log()
        verify(report, outcomes, databases, log)
        _memory(report, server.rss)
        return report
    finally:
        if server.process.poll() is None:
            server.stop()
        with contextlib.suppress(Exception):  # the cleanup must not hide the run's own error
            databases.drop()


def table(reports: list[Report]) -> str:
    faulty = any(r.fault for r in reports)
    rows: list[tuple[str, Callable[[Report], object]]] = [
        ("requests sent", lambda r: f"{r.requests:,}"),
        ("throughput", lambda r: f"{r.requests / r.seconds:,.0f} req/s" if r.seconds else "-"),
        *([("faults injected", lambda r: r.faults)] if faulty else []),
        ("lost writes (2xx, row missing)", lambda r: r.lost_writes),
        ("2xx for a failed commit", lambda r: r.failed_commit_2xx),
        ("phantom writes (error status, rows present)", lambda r: r.phantom_writes),
        ("partial writes (a row in one database only)", lambda r: r.partial_writes),
        *([("of which answered with an error", lambda r: r.partial_error),
           ("5xx because the database failed", lambda r: r.fault_errors),
           ("of which with no fault under way", lambda r: r.errors_between_faults)] if faulty else []),
        ("wrong status", lambda r: r.wrong_status),
        ("client left mid-handler, handler committed", lambda r: r.abandoned_committed),
        ("client left before its request was handled", lambda r: r.abandoned_unwritten),
        ("hung requests (no answer in time)", lambda r: r.hung),
        ("transport errors", lambda r: r.transport_errors),
        ("connections checked out after the run", lambda r: r.checked_out_after),
        ("server sessions idle in transaction", lambda r: r.idle_in_transaction_after),
        ("prepared transactions left", lambda r: r.prepared_after),
        ("server shutdown (SIGINT)", lambda r: r.shutdown),
        ("server log: ERROR / WARNING / Python warnings",
         lambda r: f"{r.log['ERROR']} / {r.log['WARNING']} / {r.log['python warning']}"),
        ("server RSS, first fifth -> last fifth", lambda r: f"{r.rss_first_mib:.1f} -> {r.rss_last_mib:.1f} MiB "
                                                              f"({r.rss_last_mib - r.rss_first_mib:+.1f})"),
    ]  # fmt: skip
    lines = ["| | " + " | ".join(r.name for r in reports) + " |", "|---|" + "---:|" * len(reports)]
    lines += [f"| {name} | " + " | ".join(str(cell(r)) for r in reports) + " |" for name, cell in rows]
    statuses = sorted({key for r in reports for key in r.statuses})
    lines += [
        "",
        "| kind and status | " + " | ".join(r.name for r in reports) + " |",
        "|---|" + "---:|" * len(reports),
    ]
    lines += [f"| {key} | " + " | ".join(str(r.statuses.get(key, 0)) for r in reports) + " |" for key in statuses]
    return "\n".join(lines)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument(
        "--plugins", default="plugin,advanced-alchemy", help="comma-separated: plugin, advanced-alchemy"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=600, help="stop sending after this long")
    parser.add_argument("--request-timeout", type=float, default=30, help="a request unanswered this long hung")
    parser.add_argument("--faults", default="", help=f"comma-separated fault runs instead: {', '.join(FAULTS)}")
    parser.add_argument("--fault-events", type=int, default=6, help="faults injected per fault run")
    args = parser.parse_args()
    faults = [fault for fault in args.faults.split(",") if fault]
    if unknown := sorted(set(faults) - set(FAULTS)):
        parser.error(f"unknown fault {', '.join(unknown)}: choose from {', '.join(FAULTS)}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; {args.requests:,} requests, "
          f"concurrency {args.concurrency}, mix {MIX}\n")  # fmt: skip
    scenarios = [(plugin, None, False) for plugin in args.plugins.split(",")] if not faults else [
        (plugin, fault, two_phase) for fault in faults for plugin in args.plugins.split(",")
        for two_phase in ((False, True) if plugin == "plugin" else (False,))
    ]  # fmt: skip
    reports = []
    with contextlib.ExitStack() as stack:
        cluster = None
        if faults:  # one private cluster for every fault run
            from tests.faults import PrivateCluster

            cluster = stack.enter_context(PrivateCluster.leased())
            print(f"fault runs on {cluster!r} ({args.fault_events} faults each)\n")
        for plugin, fault, two_phase in scenarios:
            report = await run(plugin, args.requests, args.concurrency, args.seed, args.max_seconds, fault=fault,
                               two_phase=two_phase, cluster=cluster, fault_events=args.fault_events,
                               request_timeout=args.request_timeout)  # fmt: skip
            reports.append(report)
            print(f"  {report.name}: done in {report.seconds:.1f} s", file=sys.stderr)
    print(table(reports))
    for report in reports:
        for sample in report.transport_error_samples:
            print(f"transport error ({report.name}): {sample}")
        for sample in report.phantom_samples:
            print(f"phantom write ({report.name}): {sample}")
        for sample in report.log_samples:
            print(f"server log ({report.name}): {sample}")
    ours = [r for r in reports if r.plugin == "plugin"]
    return 0 if all(r.clean for r in ours) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
