"""Request-path benchmark: this plugin against advanced-alchemy and hand-written code, in process.

Run (SQLite always; PostgreSQL when reachable)::

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python -m bench.request_path                 # --databases sqlite,postgresql --rounds 7

The same three handlers run on four apps, interleaved round by round in one process, driven through
the ASGI interface with no network:

- ``plugin``: this project's ``SQLAlchemyPlugin``;
- ``advanced-alchemy``: advanced-alchemy's ``SQLAlchemyPlugin`` with ``before_send_handler="autocommit"``;
- ``hand-written``: a yield dependency that opens a session, yields it, commits and closes it;
- ``plain``: a yield dependency that yields a plain object (the floor for handler ``a``);
- ``no plugin``: the same Litestar app with no plugin and no dependency (the floor for handler ``n``).

Handlers: ``n`` declares no dependency at all and returns a small dict (most routes of a real app; the
"no-session tax" is its rate on each app against the app without the plugin, measured first, on its own,
in many short interleaved passes); ``a`` declares
``db_session`` and never uses it; ``b`` reads one row by primary key; ``c`` inserts one row. Each round
measures every (app, handler) pair, in alternating order; the printed rates are medians over rounds, and
each ratio is the median of the per-round ratios (robust to the machine drifting), with the lowest and
highest per-round ratio in brackets.
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
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from litestar import Litestar, get, post
from litestar.di import NamedDependency, Provide
from sqlalchemy import String, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from plugin import SQLAlchemyAsyncConfig, SQLAlchemyPlugin

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

VARIANTS = ("plugin", "advanced-alchemy", "hand-written", "plain", "no plugin")
HANDLERS = {"n": ("GET", "/nothing"), "a": ("GET", "/unused"), "b": ("GET", "/read"), "c": ("POST", "/insert")}
SERVES = {"plain": ("n", "a"), "no plugin": ("n",)}
"""The handlers an app serves when not all of them (the floors have no database)."""
ROWS = 1000


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "bench_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40))


def handlers() -> list[Any]:
    """Fresh handler objects (one set per app); identical code for every variant."""
    counter = iter(range(10**9))

    @get("/nothing")
    async def nothing() -> dict[str, str]:
        return {"status": "ok"}

    @get("/unused")
    async def unused(db_session: NamedDependency[Any]) -> None:
        return None

    @get("/read")
    async def read(db_session: NamedDependency[AsyncSession]) -> str:
        item = await db_session.get(Item, next(counter) % ROWS + 1)
        assert item is not None
        return item.name

    @post("/insert")
    async def create(db_session: NamedDependency[AsyncSession]) -> None:
        db_session.add(Item(name=f"new-{next(counter)}"))

    return [nothing, unused, read, create]


def build_app(variant: str, url: str) -> Litestar:
    quiet: dict[str, Any] = {"logging_config": None, "openapi_config": None}
    if variant == "plugin":
        config = SQLAlchemyAsyncConfig(binds={"default": url}, base=Base)
        return Litestar(route_handlers=handlers(), plugins=[SQLAlchemyPlugin(config=config)], **quiet)
    if variant == "advanced-alchemy":
        from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig as AAConfig
        from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin as AAPlugin

        aa_config = AAConfig(
            connection_string=url, before_send_handler="autocommit", session_dependency_key="db_session"
        )
        return Litestar(route_handlers=handlers(), plugins=[AAPlugin(config=aa_config)], **quiet)
    if variant == "hand-written":
        engine = create_async_engine(url)
        maker = async_sessionmaker(engine, expire_on_commit=False)

        async def provide_session() -> AsyncIterator[AsyncSession]:
            async with maker() as session:
                yield session
                await session.commit()

        return Litestar(
            route_handlers=handlers(),
            dependencies={"db_session": Provide(provide_session)},
            on_shutdown=[engine.dispose],
            **quiet,
        )

    if variant == "no plugin":
        return Litestar(route_handlers=handlers()[:1], **quiet)

    async def provide_object() -> AsyncIterator[object]:
        yield object()

    return Litestar(route_handlers=handlers()[:2], dependencies={"db_session": Provide(provide_object)}, **quiet)


async def drive(
    app: Litestar,
    method: str,
    path: str,
    requests: int,
    clock: Callable[[], float] = time.perf_counter,
    *,
    concurrency: int = 1,
) -> float:
    """Requests per second of ``clock`` for ``requests`` calls of one route through raw ASGI, ``concurrency``
    at a time (each of that many tasks makes its share of the calls one after the other)."""
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

    async def calls(n: int) -> None:
        for _ in range(n):
            await app(dict(template), receive, send)  # type: ignore[arg-type]

    gc.collect()
    started = clock()
    if concurrency == 1:
        await calls(requests)
    else:
        share, left = divmod(requests, concurrency)
        await asyncio.gather(*(calls(share + (task < left)) for task in range(concurrency)))
    elapsed = clock() - started
    if len(statuses) != requests:
        raise RuntimeError(f"{method} {path}: {len(statuses)} responses to {requests} requests; the run is invalid")
    if bad := [s for s in statuses if s >= 300]:
        raise RuntimeError(f"{method} {path} answered {bad[0]} ({len(bad)} failures); the benchmark is invalid")
    return requests / elapsed


async def prepare(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.drop_all)
        await connection.run_sync(Base.metadata.create_all)
        await connection.execute(insert(Item), [{"name": f"item-{n}"} for n in range(ROWS)])
    await engine.dispose()


async def run_database(
    url: str, rounds: int, requests: int, clock: Callable[[], float] = time.perf_counter
) -> dict[str, dict[str, list[float]]]:
    await prepare(url)
    results: dict[str, dict[str, list[float]]] = {v: {h: [] for h in HANDLERS} for v in VARIANTS}
    apps = {variant: build_app(variant, url) for variant in VARIANTS}
    async with AsyncExitStack() as stack:
        for app in apps.values():
            await stack.enter_async_context(app.lifespan())
        for round_number in range(rounds + 1):  # round 0 warms every app up and is not counted
            # alternate the order each round so no variant always runs right after another's writes
            order = list(apps.items()) if round_number % 2 else list(reversed(apps.items()))
            for handler, (method, path) in HANDLERS.items():
                for variant, app in order:
                    if handler not in SERVES.get(variant, HANDLERS):
                        continue
                    rate = await drive(app, method, path, requests if round_number else requests // 4, clock)
                    if round_number:
                        results[variant][handler].append(rate)
            print(f"  round {round_number}/{rounds} done", file=sys.stderr) if round_number else None
    return results


def report(title: str, results: dict[str, dict[str, list[float]]]) -> list[str]:
    def ratio(handler: str, other: str, mine: str = "plugin") -> str:
        ours, theirs = results[mine][handler], results[other][handler]
        if not (ours and theirs):
            return "-"
        ratios = [m / t for m, t in zip(ours, theirs, strict=True)]
        return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"

    others = VARIANTS[1:]
    lines = [
        f"### {title}",
        "",
        f"| handler | {' | '.join(VARIANTS)} | {' | '.join(f'vs {v}' for v in others)} |",
        f"|---|{'---:|' * (len(VARIANTS) + len(others))}",
    ]
    names = {
        "n": "n: no dependency at all",
        "a": "a: declares db_session, unused",
        "b": "b: primary-key read",
        "c": "c: insert",
    }
    for handler in HANDLERS:
        rates = [f"{statistics.median(results[v][handler]):,.0f}" if results[v][handler] else "-" for v in VARIANTS]
        lines.append(f"| {names[handler]} | {' | '.join(rates)} | {' | '.join(ratio(handler, v) for v in others)} |")
    return [*lines, ""]


async def overhead(passes: int, requests: int) -> list[str]:
    """The plugin's own cost, on its own: many short interleaved runs of handlers ``n`` and ``a`` on every app.

    Neither handler touches a database (``a``'s session is never used, so no app opens a connection), so
    the apps stand on an unused SQLite file, and the rate is per second of this thread's CPU time: on a
    shared machine, wall-clock rates of the same app swing by +-30 % from one pass to the next (other
    processes take the core), while the CPU a request costs does not. Each ratio is taken within one pass
    (the runs follow each other, in alternating order); the median over passes is printed with its
    quartiles.
    """
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite+aiosqlite:///{Path(directory) / 'unused.db'}"
        apps = {v: build_app(v, url) for v in VARIANTS}
        cells = [(h, v) for h in ("n", "a") for v in VARIANTS if h in SERVES.get(v, HANDLERS)]
        rates: dict[tuple[str, str], list[float]] = {cell: [] for cell in cells}
        async with AsyncExitStack() as stack:
            for app in apps.values():
                await stack.enter_async_context(app.lifespan())
            for number in range(passes + 1):  # pass 0 warms up
                for handler, variant in cells if number % 2 else reversed(cells):
                    method, path = HANDLERS[handler]
                    rate = await drive(apps[variant], method, path, requests, time.thread_time)
                    if number:
                        rates[handler, variant].append(rate)

    def ratio(handler: str, mine: str, other: str) -> str:
        values = [m / t for m, t in zip(rates[handler, mine], rates[handler, other], strict=True)]
        low, median, high = statistics.quantiles(values, n=4)
        return f"{median:.3f}x ({low:.3f}-{high:.3f})"

    medians = {cell: f"{statistics.median(values):,.0f}" for cell, values in rates.items()}
    return [
        f"### Overhead ({passes} interleaved passes of {requests} requests; requests per CPU second)",
        "",
        f"| handler | {' | '.join(VARIANTS)} |",
        f"|---|{'---:|' * len(VARIANTS)}",
        *(f"| {h} | {' | '.join(medians.get((h, v), '-') for v in VARIANTS)} |" for h in ("n", "a")),
        "",
        "Ratios within a pass (median, quartiles in brackets):",
        "",
        f"- no-session tax, n / the app without the plugin: plugin {ratio('n', 'plugin', 'no plugin')}, "
        f"advanced-alchemy {ratio('n', 'advanced-alchemy', 'no plugin')}, hand-written "
        f"{ratio('n', 'hand-written', 'no plugin')} (the hand-written app builds n exactly as the app without "
        "a plugin does: its ratio is the method's own noise)",
        f"- unused session, a, plugin / advanced-alchemy: {ratio('a', 'plugin', 'advanced-alchemy')}; "
        f"/ hand-written: {ratio('a', 'plugin', 'hand-written')}; / plain: {ratio('a', 'plugin', 'plain')}",
        "",
    ]


def postgres_database() -> tuple[str, Callable[[], None]] | None:
    """A fresh PostgreSQL database for the run (dropped afterwards), or None when unreachable."""
    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin: dict[str, Any] = {
        "host": server.host,
        "port": server.port or 5432,
        "user": server.username,
        "dbname": server.database,
    }
    try:
        with psycopg.connect(**admin, autocommit=True, connect_timeout=3) as connection:
            connection.execute(f"create database {name}")
    except psycopg.Error as exc:
        print(f"PostgreSQL skipped: {exc}", file=sys.stderr)
        return None

    def drop() -> None:
        with psycopg.connect(**admin, autocommit=True) as connection:
            connection.execute(f"drop database if exists {name} with (force)")

    return server.set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False), drop


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--rounds", type=int, default=7, help="measured rounds (plus one warm-up round)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per app, handler and round")
    parser.add_argument("--passes", type=int, default=101, help="interleaved passes of the overhead (CPU) runs")
    parser.add_argument("--pass-requests", type=int, default=1000, help="requests per app, handler and pass")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="rounds on a database: wall-clock time, or this process's CPU time (the client's own cost: a "
        "PostgreSQL server's work is left out, but SQLite runs in this process, in aiosqlite's threads, so its "
        "query work is counted)",
    )
    args = parser.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    unit = " (requests per CPU second of this process)" if args.clock == "cpu" else ""
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; {args.rounds} rounds x {args.requests} requests\n")
    if args.passes:
        print("\n".join(await overhead(args.passes, args.pass_requests)))
    for kind in args.databases.split(","):
        if kind == "sqlite":
            with tempfile.TemporaryDirectory() as directory:
                url = f"sqlite+aiosqlite:///{Path(directory) / 'bench.db'}"
                results = await run_database(url, args.rounds, args.requests, clock)
                print("\n".join(report(f"SQLite (aiosqlite, file){unit}", results)))
        elif kind == "postgresql" and (database := postgres_database()):
            url, drop = database
            try:
                results = await run_database(url, args.rounds, args.requests, clock)
                print("\n".join(report(f"PostgreSQL (asyncpg){unit}", results)))
            finally:
                drop()


if __name__ == "__main__":
    asyncio.run(main())
