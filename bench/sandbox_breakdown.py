"""Where a sandboxed test's time goes, measured in one process (no pytest): the companion of sandbox_tests.

Run (PostgreSQL by default, or ``--database sqlite|mariadb``)::

    .venv/bin/python -m bench.sandbox_breakdown --rounds 7 2>/dev/null

The app of bench/sandbox_tests.py (two binds, ``POST /notes`` writes a note and an audit entry, ``GET
/notes/count`` reads) is started once; then, interleaved round by round, each step is run 100 times and
its median wall time and CPU time (of this process: the database server's own CPU is not in it) per
run are printed:

- ``test, client``: one sandboxed test as bench/sandbox_tests.py runs it: ``plugin.sandbox()`` around
  three POSTs and one GET through the client ``alchemy_client`` uses;
- ``test, client, httpx quiet``: the same with the ``httpx`` logger at WARNING: httpx logs every request
  at INFO, and Litestar's default logging config sets the root logger to INFO, so by default each request
  writes a log line (here to stderr: run with ``2>/dev/null``; under pytest into its capture);
- ``test, ASGI``: the same four requests as direct ASGI calls (no httpx, no test client);
- ``test, no sandbox``: the four requests through the client, committed for real (rows pile up);
- ``4 requests, no db``: four requests to a handler without a session, through the client and as ASGI
  calls: what the test client and Litestar cost per request;
- ``sandbox enter+exit``: ``plugin.sandbox()`` around nothing (no statement, so no round trip);
- ``drop+create``: what bench/sandbox_tests.py's ``recreate`` does before each test;
- ``app start+stop``: a fresh app's lifespan (engines, first connections, dispose).

It also lists the statements one sandboxed test sends, by verb.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from litestar import Litestar, get, post
from litestar.di import NamedDependency  # noqa: TC002 - Litestar reads handler annotations at runtime
from litestar.params import JSONBody  # noqa: TC002
from sqlalchemy import String, event, func, select
from sqlalchemy.ext.asyncio import AsyncSession  # noqa: TC002
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bench.sandbox_tests import _drop, _server_urls
from plugin import SQLAlchemyAsyncConfig, SQLAlchemyPlugin
from plugin.testing import _same_loop_client

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "bench_notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(80))


class Entry(Base):
    __tablename__ = "bench_entries"
    __bind_key__ = "logs"
    id: Mapped[int] = mapped_column(primary_key=True)
    action: Mapped[str] = mapped_column(String(80))


@post("/notes")
async def add(data: JSONBody[dict[str, str]], db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add_all([Note(title=data["title"]), Entry(action="added")])


@get("/notes/count")
async def count(db_session: NamedDependency[AsyncSession]) -> int:
    return int(await db_session.scalar(select(func.count()).select_from(Note)) or 0)


@get("/nodb")
async def nodb() -> int:
    return 1


def make_app(binds: dict[str, str]) -> Litestar:
    config = SQLAlchemyAsyncConfig(binds=binds, base=Base, create_all=True)
    return Litestar([add, count, nodb], plugins=[SQLAlchemyPlugin(config)])


async def asgi(app: Litestar, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request as a direct ASGI call."""
    headers = [(b"host", b"testserver"), (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    scope: Any = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "root_path": "",
                  "scheme": "http", "query_string": b"", "headers": headers, "client": ("testclient", 50000),
                  "server": ("testserver", 80), "http_version": "1.1", "extensions": {}}  # fmt: skip
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    answer: dict[str, Any] = {"status": 0, "body": b""}

    async def receive() -> Any:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # a disconnect never comes
        return None

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        else:
            answer["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return answer["status"], answer["body"]


async def measure(binds: dict[str, str], rounds: int) -> None:  # noqa: PLR0915 - the steps are closures on one app
    app = make_app(binds)
    plugin = next(p for p in app.plugins if isinstance(p, SQLAlchemyPlugin))
    starts = []
    for _ in range(5):
        fresh = make_app(binds)
        begin = time.perf_counter()
        async with fresh.lifespan():
            pass
        starts.append(time.perf_counter() - begin)
    async with app.lifespan():
        client = _same_loop_client(app, started=True)
        async with client:

            async def requests_via_client() -> None:
                for i in range(3):
                    assert (await client.post("/notes", json={"title": f"{i}"})).status_code == 201
                assert (await client.get("/notes/count")).json() >= 3

            async def test_client() -> None:
                async with plugin.sandbox():
                    await requests_via_client()

            async def test_client_unlogged() -> None:
                httpx_logger = logging.getLogger("httpx")
                level = httpx_logger.level
                httpx_logger.setLevel(logging.WARNING)
                try:
                    await test_client()
                finally:
                    httpx_logger.setLevel(level)

            async def test_asgi() -> None:
                async with plugin.sandbox():
                    for i in range(3):
                        assert (await asgi(app, "POST", "/notes", b'{"title": "%d"}' % i))[0] == 201
                    assert int((await asgi(app, "GET", "/notes/count"))[1]) >= 3

            async def nodb_client() -> None:
                for _ in range(4):
                    await client.get("/nodb")

            async def nodb_asgi() -> None:
                for _ in range(4):
                    await asgi(app, "GET", "/nodb")

            async def sandbox_only() -> None:
                async with plugin.sandbox():
                    pass

            async def drop_create() -> None:
                for key in binds:
                    tables = [t for t in Base.metadata.sorted_tables if (t.name == "bench_entries") == (key == "logs")]
                    engine: Any = plugin.engines.engine(key)
                    async with engine.begin() as connection:
                        await connection.run_sync(Base.metadata.drop_all, tables=tables)
                        await connection.run_sync(Base.metadata.create_all, tables=tables)

            steps: dict[str, Callable[[], Awaitable[None]]] = {
                "test, client": test_client,
                "test, client, httpx quiet": test_client_unlogged,
                "test, ASGI": test_asgi,
                "test, no sandbox": requests_via_client,
                "4 requests, no db, client": nodb_client,
                "4 requests, no db, ASGI": nodb_asgi,
                "sandbox enter+exit": sandbox_only,
                "drop+create": drop_create,
            }
            seen: Counter[str] = Counter()
            listeners = [
                (plugin.engines.sync_engine(key), lambda *a: seen.update([a[2].split()[0].upper()])) for key in binds
            ]
            for engine, listener in listeners:
                event.listen(engine, "before_cursor_execute", listener)
            await test_client()
            for engine, listener in listeners:
                event.remove(engine, "before_cursor_execute", listener)
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in steps}
            for round_ in range(rounds):
                for name, step in steps.items() if round_ % 2 == 0 else reversed(steps.items()):
                    for _ in range(10):
                        await step()
                    wall, cpu = time.perf_counter(), time.process_time()
                    for _ in range(100):
                        await step()
                    results[name].append(((time.perf_counter() - wall) / 100, (time.process_time() - cpu) / 100))
    print(
        f"statements one sandboxed test sends: {sum(seen.values())} "
        f"({', '.join(f'{verb} {n}' for verb, n in seen.items())})"
    )
    print(f"{'step':<28}{'wall ms':>9}{'cpu ms':>9}")
    for name, values in results.items():
        print(
            f"{name:<28}{statistics.median(v[0] for v in values) * 1000:>9.2f}"
            f"{statistics.median(v[1] for v in values) * 1000:>9.2f}"
        )
    print(f"{'app start+stop':<28}{statistics.median(starts) * 1000:>9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database", default="postgresql", help="sqlite, postgresql or mariadb")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    names: list[str] = []
    if args.database == "sqlite":
        import tempfile

        tmp = tempfile.mkdtemp()
        urls = [f"sqlite+aiosqlite:///{tmp}/default.db", f"sqlite+aiosqlite:///{tmp}/logs.db"]
    else:
        urls, names = _server_urls(args.database)
    try:
        asyncio.run(measure({"default": urls[0], "logs": urls[1]}, args.rounds))
    finally:
        if names:
            _drop(args.database, names)
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
