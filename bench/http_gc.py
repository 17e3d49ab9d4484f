"""Why p99 parted ways under uvicorn at concurrency 16: the garbage collector and the pool, read inside the server.

Run (as ``bench/http.py``: ``.[bench]``, wrk, PostgreSQL at ``BENCH_POSTGRES_URL``)::

    .venv-bench/bin/python -m bench.http_gc    # --concurrency 16 --pools 5+5,20+0 --duration 3
                                               # --route insert --variant plugin --variant hand-written

Serves one route of ``bench/http_app.py`` (``GET /read`` unless ``--route`` says otherwise) under uvicorn
(pinned like ``bench/http.py``), in six variants (or those given with ``--variant``): the three of
``bench/http.py`` and the hand-written dependency with one of two things changed, or both. The
hand-written dependency commits in its cleanup, which Litestar runs once the response object is built
and before it is sent, and closes its session by leaving ``async with maker() as session``, whose exit
(SQLAlchemy 2.1) closes the session in a task of its own and waits for it, so the request yields to the
event loop once its connection is back in the pool. The changes:

- ``hand-written, commit in send``: the session committed in a Litestar ``before_send`` hook when
  ``http.response.start`` goes out (where this plugin and advanced-alchemy's ``autocommit`` handler
  commit), then closed there the way ``async with``'s exit closes it;
- ``hand-written, no async with``: committed where it was, but closed with ``await session.close()``
  in a ``finally``;
- ``hand-written, both``: committed in ``before_send`` and closed with ``close()`` once the body is sent.

Each variant runs with each pool (``pool_size+max_overflow`` per bind). The server itself counts, over
one measured wrk run after a warm-up run:

- the collector's young (generation 0) and full (generation 2) collections, the longest one, and their
  time in all (``gc.callbacks``);
- per request, how long it waited for a pooled connection (from the request's start to the pool's
  ``checkout`` event: the median includes reaching the handler) and how long it ran on after giving the
  connection back (``checkin`` to its end), over the requests with one checkout (all, for ``/read``);
- the spread of requests inside the app at once (10th to 90th percentile, sampled at each start and end).

A measured run is bounded by ``--duration`` seconds; nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import contextvars
import gc
import itertools
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator  # noqa: TC003 - Litestar reads the provider's annotations at runtime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from litestar.enums import ScopeType
from litestar.types import Scope  # noqa: TC002 - Litestar reads the providers' annotations at runtime
from sqlalchemy.ext.asyncio import AsyncSession  # noqa: TC002 - likewise

from bench import http_app

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from litestar import Litestar
    from litestar.types import Message, Receive, Send
    from sqlalchemy.ext.asyncio import async_sessionmaker

APP = "bench.http_gc:create_app"
VARIANTS = (
    "plugin",
    "advanced-alchemy",
    "hand-written",
    "hand-written, commit in send",
    "hand-written, no async with",
    "hand-written, both",
)

# -- inside the server ------------------------------------------------------------------------------

_request: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar("bench_http_gc", default=None)


class _Counters:
    """What the server counts between two SIGUSR1s (the second writes them to ``HTTP_GC_OUT``)."""

    def __init__(self) -> None:
        self._now_inside = 0
        self.armed = False
        """Set by the first SIGUSR1 (which starts counting); the next one writes the counts."""
        self.reset()

    def reset(self) -> None:
        self.young = self.full = 0
        self.longest = self.total = 0.0
        self.waits: list[float] = []
        self.after: list[float] = []
        self.inside: list[int] = []
        self.done = 0
        self._started = 0.0

    def collection(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        if not self._started:  # counting began during this collection
            return
        took = time.perf_counter() - self._started
        self.total += took
        self.longest = max(self.longest, took)
        if info["generation"] == 0:
            self.young += 1
        elif info["generation"] == 2:  # the oldest: a full collection
            self.full += 1

    def enter(self) -> None:
        self._now_inside += 1
        self.inside.append(self._now_inside)

    def leave(self, marks: list[float]) -> None:
        self.done += 1
        self._now_inside -= 1
        self.inside.append(self._now_inside)
        if len(marks) == 3:  # start, checkout, checkin
            self.waits.append(marks[1] - marks[0])
            self.after.append(time.perf_counter() - marks[2])

    def dump(self, path: str) -> None:
        def ms(values: list[float]) -> float:
            return statistics.median(values) * 1000 if values else 0.0

        deciles = statistics.quantiles(self.inside, n=10) if len(self.inside) > 1 else [0.0] * 9
        summary = {"young": self.young, "full": self.full, "longest_ms": self.longest * 1000,
                   "gc_ms": self.total * 1000, "wait_ms": ms(self.waits), "after_ms": ms(self.after),
                   "timed": len(self.waits), "requests": self.done,
                   "inside": [deciles[0], deciles[-1]]}  # fmt: skip
        partial = Path(f"{path}.partial")
        partial.write_text(json.dumps(summary))
        partial.replace(path)  # the reader never sees half a file


_COUNTERS = _Counters()


def _mark(*_args: object) -> None:
    """Pool ``checkout`` and ``checkin`` events: the time, in the request's marks."""
    if (marks := _request.get()) is not None:
        marks.append(time.perf_counter())


def _in_scope(maker: async_sessionmaker[AsyncSession]) -> Any:
    """A provider that hands out a session and leaves it to ``_commit_in_send`` (kept in the scope)."""

    async def provide_session(scope: Scope) -> AsyncSession:
        session = maker()
        scope.setdefault("bench_sessions", []).append(session)  # type: ignore[typeddict-item]
        return session

    return provide_session


def _commit_in_send(close_as_async_with: bool) -> Callable[[Message, Scope], Awaitable[None]]:
    """A ``before_send`` hook that commits the scope's sessions when ``http.response.start`` goes out (where
    this plugin and advanced-alchemy's ``autocommit`` handler commit), then closes them: right away the way
    ``async with``'s exit does, or with a plain ``close()`` once the body was sent."""

    async def before_send(message: Message, scope: Scope) -> None:
        sessions: list[AsyncSession] = scope.get("bench_sessions", [])  # type: ignore[assignment]
        if message["type"] == "http.response.start":
            for session in sessions:
                await session.commit()
                if close_as_async_with:
                    await session.__aexit__(None, None, None)
        elif message["type"] == "http.response.body" and not message.get("more_body") and not close_as_async_with:
            for session in sessions:
                await session.close()

    return before_send


def _closed_without_async_with(maker: async_sessionmaker[AsyncSession]) -> Any:
    """The hand-written provider, its session closed by a plain ``await`` rather than ``async with``."""

    async def provide_session() -> AsyncIterator[AsyncSession]:
        session = maker()
        try:
            yield session
            await session.commit()
        finally:
            await session.close()

    return provide_session


HAND_WRITTEN_CHANGES: dict[str, Callable[[str, str], Litestar]] = {
    "hand-written, commit in send": lambda default, logs: http_app.hand_written_app(
        default, logs, _in_scope, before_send=[_commit_in_send(close_as_async_with=True)]
    ),
    "hand-written, no async with": lambda default, logs: http_app.hand_written_app(
        default, logs, _closed_without_async_with
    ),
    "hand-written, both": lambda default, logs: http_app.hand_written_app(
        default, logs, _in_scope, before_send=[_commit_in_send(close_as_async_with=False)]
    ),
}
"""The hand-written dependency with one thing changed, or both (``bench/http_gc.py``'s docstring)."""


def create_app() -> Any:
    """The variant named by ``HTTP_VARIANT`` with the pool ``HTTP_POOL``, counting as the module says."""
    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    size, overflow = (int(n) for n in os.environ["HTTP_POOL"].split("+"))
    http_app.POOL.update(pool_size=size, max_overflow=overflow)
    variants = {**http_app.VARIANTS, **HAND_WRITTEN_CHANGES}
    app = variants[os.environ["HTTP_VARIANT"]](os.environ["HTTP_DEFAULT_URL"], os.environ["HTTP_LOGS_URL"])
    counters = _COUNTERS
    if counters.collection not in gc.callbacks:  # once per process, however many apps are made
        gc.callbacks.append(counters.collection)
    for name in ("checkout", "checkin"):
        if not event.contains(Pool, name, _mark):
            event.listen(Pool, name, _mark)

    def on_signal(*_args: object) -> None:
        if counters.armed:
            counters.dump(os.environ["HTTP_GC_OUT"])
        counters.armed = True
        counters.reset()

    signal.signal(signal.SIGUSR1, on_signal)
    path = os.environ["HTTP_GC_PATH"]

    async def counted(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["path"] != path:
            await app(scope, receive, send)
            return
        marks = [time.perf_counter()]
        _request.set(marks)
        counters.enter()
        try:
            await app(scope, receive, send)
        finally:
            counters.leave(marks)

    return counted


# -- the run ----------------------------------------------------------------------------------------


def main() -> int:
    from bench.http import ROUTES, Server, _postgres_databases, load, prepare

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--route", default="primary-key read", choices=[r for r in ROUTES if r != "no session"])
    parser.add_argument("--variant", action="append", choices=VARIANTS, help="one to run (repeatable); all by default")
    parser.add_argument("--pools", default="5+5,20+0", help="comma-separated pool_size+max_overflow per bind")
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    two_cores = (os.cpu_count() or 1) >= 2
    parser.add_argument("--server-cpus", default="0" if two_cores else None)
    parser.add_argument("--client-cpus", default="1" if two_cores else None)
    args = parser.parse_args()
    args.max_requests = 1_000_000
    variants = args.variant or VARIANTS
    print(f"{' '.join(ROUTES[args.route])} under uvicorn at concurrency {args.concurrency}, {args.duration} s per run; "
          f"servers on CPU "
          f"{args.server_cpus}, wrk on CPU {args.client_cpus}; load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"{'variant':<32}{'pool':>6}{'req/s':>7}{'p50':>6}{'p99':>7}{'young':>7}{'full':>6}{'longest':>9}"
          f"{'gc ms':>7}{'to checkout':>15}{'after checkin':>15}{'in app p10-p90':>16}{'timed':>12}")  # fmt: skip
    databases = list(_postgres_databases())
    try:
        urls = dict(zip(("default", "logs"), (url for url, _ in databases), strict=True))
        prepare(urls)
        for pool, variant in itertools.product(args.pools.split(","), variants):
            out = Path(f"/tmp/bench-http-gc-{os.getpid()}.json")
            out.unlink(missing_ok=True)
            os.environ.update(HTTP_POOL=pool, HTTP_GC_OUT=str(out), HTTP_GC_PATH=ROUTES[args.route][1])
            server = Server("uvicorn", variant, urls, args.server_cpus, app=APP)
            try:
                server.ready()
                load(server, args.route, args.concurrency, args)  # warm-up
                server.process.send_signal(signal.SIGUSR1)  # start counting
                time.sleep(0.2)
                run = load(server, args.route, args.concurrency, args)
                server.process.send_signal(signal.SIGUSR1)  # write the counts
                for _ in range(50):
                    if out.exists():
                        break
                    time.sleep(0.1)
                else:
                    raise SystemExit(f"the {variant} server wrote no counts to {out} within 5 s")
                got = json.loads(out.read_text())
            finally:
                server.stop()
                out.unlink(missing_ok=True)
            print(f"{variant:<32}{pool:>6}{run.rate:>7.0f}{run.p50_ms:>6.1f}{run.p99_ms:>7.1f}{got['young']:>7}"
                  f"{got['full']:>6}{got['longest_ms']:>7.1f}ms{got['gc_ms']:>7.0f}{got['wait_ms']:>12.2f} ms"
                  f"{got['after_ms']:>12.2f} ms{got['inside'][0]:>9.0f}-{got['inside'][1]:<6.0f}"
                  f"{got['timed']:>6}/{got['requests']}")  # fmt: skip
    finally:
        for _, drop in databases:
            drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
