"""Read replica routing benchmark: what a bind with replicas costs a request, against the same app without.

Run (as root, on a machine with the PostgreSQL 15 server binaries: it uses the tests' private primary and
hot standby, tests/faults/standby.py, built on first use)::

    .venv/bin/python -m bench.replicas            # --rounds 7 --requests 1000

Three apps of this plugin on the same private primary, identical handlers, interleaved round by round
in one process and driven through the ASGI interface (no network, one request at a time):

- ``none``: the bind has no replicas (the plain session factory and transaction middleware);
- ``routing``: the bind has one replica whose URL is the primary's own: every replica decision, connection
  and fallback check is made, and the reads land on the same server, so the ratio is the routing's cost;
- ``standby``: the bind's replica is the hot standby (on this machine too): GETs read there.

Handlers: ``GET /read`` reads one row by primary key (on the replica, for ``routing`` and ``standby``);
``POST /insert`` inserts one row (always on the primary; the routing only decides so). Each ratio is the
median of the per-round ratios to ``none``, with the lowest and highest round in brackets.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from contextlib import AsyncExitStack
from typing import Any

from litestar import Litestar, get, post
from litestar.di import NamedDependency
from sqlalchemy import String
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bench.request_path import drive
from plugin import BindConfig, SQLAlchemyAsyncConfig, SQLAlchemyPlugin

VARIANTS = ("none", "routing", "standby")
HANDLERS = {"GET one row": ("GET", "/read"), "POST insert": ("POST", "/insert")}
ROWS = 1000


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "bench_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40))


def handlers() -> list[Any]:
    counter = iter(range(10**9))

    @get("/read")
    async def read(db_session: NamedDependency[AsyncSession]) -> str:
        item = await db_session.get(Item, next(counter) % ROWS + 1)
        assert item is not None
        return item.name

    @post("/insert")
    async def create(db_session: NamedDependency[AsyncSession]) -> None:
        db_session.add(Item(name=f"new-{next(counter)}"))

    return [read, create]


def build_app(variant: str, primary: str, standby: str) -> Litestar:
    replicas = {"none": [], "routing": [primary], "standby": [standby]}[variant]
    config = SQLAlchemyAsyncConfig(binds={"default": BindConfig(url=primary, replicas=replicas)}, base=Base)
    return Litestar(handlers(), plugins=[SQLAlchemyPlugin(config=config)], logging_config=None, openapi_config=None)


async def run(primary: str, standby: str, rounds: int, requests: int) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {v: {h: [] for h in HANDLERS} for v in VARIANTS}
    apps = {variant: build_app(variant, primary, standby) for variant in VARIANTS}
    async with AsyncExitStack() as stack:
        for app in apps.values():
            await stack.enter_async_context(app.lifespan())
        for number in range(rounds + 1):  # round 0 warms every app up and is not counted
            order = list(apps.items()) if number % 2 else list(reversed(apps.items()))
            for handler, (method, path) in HANDLERS.items():
                for variant, app in order:
                    rate = await drive(app, method, path, requests if number else requests // 4)
                    if number:
                        results[variant][handler].append(rate)
            if number:
                print(f"  round {number}/{rounds} done", file=sys.stderr)
    return results


def report(results: dict[str, dict[str, list[float]]]) -> list[str]:
    def ratio(handler: str, variant: str) -> str:
        ratios = [m / t for m, t in zip(results[variant][handler], results["none"][handler], strict=True)]
        return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"

    lines = [
        f"| handler | {' | '.join(VARIANTS)} | routing / none | standby / none |",
        f"|---|{'---:|' * (len(VARIANTS) + 2)}",
    ]
    for handler in HANDLERS:
        rates = " | ".join(f"{statistics.median(results[v][handler]):,.0f}" for v in VARIANTS)
        lines.append(f"| {handler} | {rates} | {ratio(handler, 'routing')} | {ratio(handler, 'standby')} |")
    return lines


def prepare(primary: Any, standby: Any) -> str:
    """A database with ``ROWS`` rows on the primary, replayed by the standby; its name."""
    name = primary.create_database()
    primary.execute("create table bench_items (id serial primary key, name varchar(40))", database=name)
    primary.execute(
        f"insert into bench_items (name) select 'item-' || n from generate_series(1, {ROWS}) n", database=name
    )
    standby.wait_caught_up()
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="measured rounds (plus one warm-up round)")
    parser.add_argument("--requests", type=int, default=1000, help="requests per app, handler and round")
    args = parser.parse_args()

    from tests.faults.standby import leased_pair, standby_problem

    if problem := standby_problem():
        raise SystemExit(f"bench.replicas needs a private primary and standby: {problem}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    print(f"{args.rounds} rounds x {args.requests} requests, requests per second (medians over rounds)\n")
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
