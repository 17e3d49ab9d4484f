"""Read replica routing benchmark: what a bind with replicas costs a request, against the same app without.

Run (as root, on a machine with the PostgreSQL 15 server binaries: it uses the tests' private primary and
hot standby, tests/faults/standby.py, built on first use)::

    .venv/bin/python -m bench.replicas            # --rounds 31 --requests 300
    .venv/bin/python -m bench.replicas --sqlite   # none and routing only, on one SQLite file, no root needed

Three apps of this plugin on the same private primary, identical handlers, interleaved round by round
in one process and driven through the ASGI interface (no network, one request at a time):

- ``none``: the bind has no replicas (the plain session factory and transaction middleware);
- ``routing``: the bind has one replica whose URL is the primary's own: every replica decision, connection
  and fallback check is made, and the reads land on the same server, so the ratio is the routing's cost;
- ``standby``: the bind's replica is the hot standby (on this machine too): GETs read there.

Handlers: ``GET /read`` reads one row by primary key (on the replica, for ``routing`` and ``standby``);
``POST /insert`` inserts one row (always on the primary; the routing only decides so). Each run is timed
twice: by the wall clock, and by this process's CPU time (``time.process_time``: the app, the plugin
and the driver, not the database servers). On a shared machine the wall-clock rate of one app swings
widely from one run to the next (other processes take the two cores, and the server processes compete
with the app); the CPU time a request costs the app's process is steadier, and it is where the routing's
own cost shows. Each ratio is the median of the per-round ratios to ``none``, with the quartiles in
brackets.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from litestar import Litestar
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import create_async_engine

from bench.request_path import ROWS, Base, Item
from bench.request_path import handlers as request_path_handlers
from plugin import BindConfig, SQLAlchemyAsyncConfig, SQLAlchemyPlugin

VARIANTS = ("none", "routing", "standby")
HANDLERS = {"GET one row": ("GET", "/read"), "POST insert": ("POST", "/insert")}


def handlers() -> list[Any]:
    """The read and insert handlers of ``bench/request_path.py``: the same code as every other benchmark."""
    return request_path_handlers()[2:]


def build_app(variant: str, primary: str, standby: str) -> Litestar:
    replicas = {"none": [], "routing": [primary], "standby": [standby]}[variant]
    config = SQLAlchemyAsyncConfig(binds={"default": BindConfig(url=primary, replicas=replicas)}, base=Base)
    return Litestar(handlers(), plugins=[SQLAlchemyPlugin(config=config)], logging_config=None, openapi_config=None)


async def drive(app: Litestar, method: str, path: str, requests: int) -> tuple[float, float]:
    """Requests per wall-clock second and per CPU second of this process, for sequential requests."""
    template = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"", "headers": [],
        "client": ("127.0.0.1", 1), "server": ("bench", 80), "state": {},
    }  # fmt: skip
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(requests):
        await app(dict(template), receive, send)  # type: ignore[arg-type]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if bad := [s for s in statuses if s >= 300]:
        raise RuntimeError(f"{method} {path} answered {bad[0]} ({len(bad)} failures); the benchmark is invalid")
    return requests / wall, requests / cpu


Results = dict[str, dict[str, dict[str, list[float]]]]
"""clock -> variant -> handler -> rate of each round."""


async def run(primary: str, standby: str | None, rounds: int, requests: int) -> Results:
    variants = VARIANTS if standby is not None else VARIANTS[:2]
    results: Results = {c: {v: {h: [] for h in HANDLERS} for v in variants} for c in ("wall", "cpu")}
    apps = {variant: build_app(variant, primary, standby or primary) for variant in variants}
    async with AsyncExitStack() as stack:
        for app in apps.values():
            await stack.enter_async_context(app.lifespan())
        for number in range(rounds + 1):  # round 0 warms every app up and is not counted
            order = list(apps.items()) if number % 2 else list(reversed(apps.items()))
            for handler, (method, path) in HANDLERS.items():
                for variant, app in order:
                    wall, cpu = await drive(app, method, path, requests if number else requests // 4)
                    if number:
                        results["wall"][variant][handler].append(wall)
                        results["cpu"][variant][handler].append(cpu)
            if number and number % 10 == 0:
                print(f"  round {number}/{rounds} done", file=sys.stderr)
    return results


def report(results: Results) -> list[str]:
    variants = list(results["wall"])
    lines = [
        f"| handler | clock | {' | '.join(variants)} | {' | '.join(f'{v} / none' for v in variants[1:])} |",
        f"|---|---|{'---:|' * (2 * len(variants) - 1)}",
    ]
    for handler in HANDLERS:
        for clock, by_variant in results.items():
            rates = " | ".join(f"{statistics.median(by_variant[v][handler]):,.0f}" for v in variants)
            ratios = " | ".join(_ratio(by_variant[v][handler], by_variant["none"][handler]) for v in variants[1:])
            lines.append(f"| {handler} | {clock} | {rates} | {ratios} |")
    return lines


def _ratio(ours: list[float], theirs: list[float]) -> str:
    """Median of the per-round ratios, quartiles in brackets."""
    low, median, high = statistics.quantiles([m / t for m, t in zip(ours, theirs, strict=True)], n=4)
    return f"{median:.2f}x ({low:.2f}-{high:.2f})"


async def prepare_sqlite(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
        await connection.execute(insert(Item), [{"name": f"item-{n}"} for n in range(ROWS)])
    await engine.dispose()


def prepare(primary: Any, standby: Any) -> str:
    """A database with ``ROWS`` rows on the primary, replayed by the standby; its name."""
    name: str = primary.create_database()
    primary.execute("create table bench_items (id serial primary key, name varchar(40))", database=name)
    primary.execute(
        f"insert into bench_items (name) select 'item-' || n from generate_series(1, {ROWS}) n", database=name
    )
    standby.wait_caught_up()
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=31, help="measured rounds (plus one warm-up round)")
    parser.add_argument("--requests", type=int, default=300, help="requests per app, handler and round")
    parser.add_argument(
        "--sqlite",
        action="store_true",
        help="none and routing on one SQLite file (no server: the routing's share is largest)",
    )
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    print(f"{args.rounds} rounds x {args.requests} requests; requests per second of each clock, medians over rounds\n")
    if args.sqlite:
        with tempfile.TemporaryDirectory() as directory:
            url = f"sqlite+aiosqlite:///{Path(directory) / 'bench.db'}"
            asyncio.run(prepare_sqlite(url))
            print("\n".join(report(asyncio.run(run(url, None, args.rounds, args.requests)))))
        print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
        return

    from tests.faults.standby import leased_pair, standby_problem

    if problem := standby_problem():
        raise SystemExit(f"bench.replicas needs a private primary and standby: {problem}")
    with leased_pair() as (primary, standby):
        name = prepare(primary, standby)
        try:
            results = asyncio.run(run(primary.url(name), standby.url(name), args.rounds, args.requests))
        finally:
            primary.drop_database(name)
    print("\n".join(report(results)))
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
