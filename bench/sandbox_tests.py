"""What the sandbox fixtures save a test suite: 200 tests, each run in a sandbox or on freshly made tables.

Run (PostgreSQL by default; ``--databases sqlite,postgresql,mariadb``)::

    .venv/bin/python -m bench.sandbox_tests            # --tests 200 --rounds 3 --tables 1,10,25

Writes a small test suite into a temporary directory and runs it with pytest, in a child process per
run. Each of the 200 tests posts three notes through the app (two binds: notes on ``default``, an audit
entry per note on ``logs``) and reads the count back through another request. The app's schema has
``--tables`` tables per bind, one run each: per bind the one the tests use, and the rest like a real
app's (a key, a few columns, an indexed timestamp, a foreign key to the table before) that the tests
never touch but recreating the tables drops and creates too. The ways to isolate:

- ``sandbox``: the shipped fixture as the README shows it: ``alchemy_client`` with a module-scoped
  ``alchemy_app``, so the app is started once for the module and every test runs in ``plugin.sandbox()``,
  rolled back at its end;
- ``per-test``: the same fixture with a function-scoped ``alchemy_app``: the app is started and stopped
  around every test (what a suite that keeps a function-scoped app gets);
- ``recreate``: the app started once (the same module fixture), the same client without a sandbox, after
  dropping and creating every table of the schema on both binds through the app's own engines (what a
  suite does without a sandbox to start each test from empty tables);
- ``bare``: the app started once, the same client, no isolation at all (rows pile up);
- ``empty``: ``bare`` without the requests: pytest, the event loop and the client, the floor of any test.

Per-test time is the sum of pytest's setup, call and teardown durations over the suite, divided by the
number of tests; the runs are interleaved round by round and the medians printed, with the ratio
``recreate / sandbox`` of the medians (target: at least 10x on PostgreSQL) and of each round (the two
runs of a round are close in time, so a load that comes and goes moves both). The sandbox's own cost per test is timed
around ``plugin.sandbox()``'s enter and exit (two pooled connections, BEGIN, ROLLBACK; the BEGIN itself
goes out with the first statement, inside the test), and shown next to ``sandbox - bare``, the whole
difference a sandboxed test makes (each request's commit becomes a savepoint release).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

VARIANTS = ("sandbox", "per-test", "recreate", "bare", "empty")

SUITE = """
from __future__ import annotations

import os
from datetime import datetime

import pytest
from litestar import Litestar, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.testing import AsyncTestClient
from sqlalchemy import ForeignKey, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from plugin import SQLAlchemyAsyncConfig, SQLAlchemyPlugin
from plugin.testing import _same_loop_client

VARIANT = os.environ["BENCH_VARIANT"]
SANDBOXED = VARIANT in ("sandbox", "per-test")
# The app is started once for the module (by alchemy_client itself, or by alchemy_started_app for the
# variants without a sandbox: the same module fixture), except in per-test.
pytestmark = [pytest.mark.anyio] + ([] if SANDBOXED else [pytest.mark.usefixtures("alchemy_started_app")])
BINDS = {"default": os.environ["BENCH_DEFAULT"], "logs": os.environ["BENCH_LOGS"]}


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


# The rest of the app's schema, which these tests never touch but a suite that starts each test from
# empty tables recreates: per bind, a chain of tables like a real app's (a key, a few columns, an indexed
# timestamp, a foreign key to the table before).
TABLES = {"default": [Note.__table__], "logs": [Entry.__table__]}
MODELS = []  # kept: SQLAlchemy's registry holds its classes weakly
for _bind, _prefix in (("default", "app"), ("logs", "log")):
    for _n in range(int(os.environ.get("BENCH_EXTRA_TABLES", "0"))):
        _columns = {
            "__tablename__": f"bench_{_prefix}_{_n}",
            "id": mapped_column(primary_key=True),
            "name": mapped_column(String(80)),
            "note": mapped_column(String(400), nullable=True),
            "created": mapped_column(default=datetime.now, index=True),
            "__annotations__": {"id": Mapped[int], "name": Mapped[str], "note": Mapped[str | None],
                                "created": Mapped[datetime]},
        }
        if _bind == "logs":
            _columns["__bind_key__"] = "logs"
        if _n:
            _columns["parent_id"] = mapped_column(ForeignKey(f"bench_{_prefix}_{_n - 1}.id"), nullable=True)
            _columns["__annotations__"]["parent_id"] = Mapped[int | None]
        MODELS.append(type(f"Extra_{_prefix}_{_n}", (Base,), _columns))
        TABLES[_bind].append(MODELS[-1].__table__)


@post("/notes")
async def add(data: JSONBody[dict[str, str]], db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add_all([Note(title=data["title"]), Entry(action="added")])


@get("/notes/count")
async def count(db_session: NamedDependency[AsyncSession]) -> int:
    return int(await db_session.scalar(select(func.count()).select_from(Note)) or 0)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="function" if VARIANT == "per-test" else "module")
def alchemy_app() -> Litestar:
    return Litestar([add, count], plugins=[SQLAlchemyPlugin(SQLAlchemyAsyncConfig(binds=BINDS, base=Base))])


if SANDBOXED:

    @pytest.fixture
    def client(alchemy_client: AsyncTestClient) -> AsyncTestClient:
        return alchemy_client

else:

    @pytest.fixture
    async def client(alchemy_app: Litestar, alchemy_plugin: SQLAlchemyPlugin):
        # The same client as the sandbox fixture's (app and test on one loop), without the sandbox.
        async with _same_loop_client(alchemy_app, started=True) as test_client:
            if VARIANT == "recreate":  # through the app's own engines: the cheapest way to start empty
                for key in BINDS:
                    tables = TABLES[key]
                    async with alchemy_plugin.engines.engine(key).begin() as connection:
                        await connection.run_sync(Base.metadata.drop_all, tables=tables)
                        await connection.run_sync(Base.metadata.create_all, tables=tables)
            yield test_client


@pytest.mark.parametrize("n", range(int(os.environ["BENCH_TESTS"])))
async def test_notes(client, n: int) -> None:
    if VARIANT == "empty":
        return
    for i in range(3):
        assert (await client.post("/notes", json={"title": f"{n}-{i}"})).status_code == 201
    assert (await client.get("/notes/count")).json() >= 3
"""

# Makes the suite's tables once, up front (the sandbox and bare runs need them to exist).
CREATE_TABLES = """
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from test_suite import Base, BINDS, TABLES
from sqlalchemy.ext.asyncio import create_async_engine

async def main():
    for key, url in BINDS.items():
        tables = TABLES[key]
        engine = create_async_engine(url)
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all, tables=tables)
        await engine.dispose()

asyncio.run(main())
"""

CONFTEST = """
import json
import os
import time

from plugin.sandbox import Sandbox

DURATIONS = {"setup": 0.0, "call": 0.0, "teardown": 0.0, "sandbox": 0.0}


def _timed(method):
    async def timed(self, *args):
        start = time.perf_counter()
        try:
            return await method(self, *args)
        finally:
            DURATIONS["sandbox"] += time.perf_counter() - start

    return timed


Sandbox.__aenter__, Sandbox.__aexit__ = _timed(Sandbox.__aenter__), _timed(Sandbox.__aexit__)


def pytest_runtest_logreport(report):
    DURATIONS[report.when] += report.duration


def pytest_sessionfinish(session, exitstatus):
    with open(os.environ["BENCH_OUT"], "w") as out:
        json.dump({**DURATIONS, "exit": int(exitstatus)}, out)
"""


def _server_urls(kind: str) -> tuple[list[str], list[str]]:
    """Two fresh databases of ``kind``: (async URLs for the app, names to drop)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    if kind == "postgresql":
        server = make_url(os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
        admin, drivername = server.set(drivername="postgresql+psycopg"), "postgresql+asyncpg"
    else:
        server = make_url(os.environ.get("TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/test"))
        admin, drivername = server.set(drivername="mysql+pymysql"), "mysql+asyncmy"
    names = [f"bench_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        for name in names:
            connection.execute(text(f"create database {name}"))
    engine.dispose()
    urls = [server.set(drivername=drivername, database=name).render_as_string(hide_password=False) for name in names]
    return urls, names


def _drop(kind: str, names: list[str]) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    if kind == "postgresql":
        admin = make_url(os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
        admin, force = admin.set(drivername="postgresql+psycopg"), " with (force)"
    else:
        admin = make_url(os.environ.get("TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/test"))
        admin, force = admin.set(drivername="mysql+pymysql"), ""
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        for name in names:
            connection.execute(text(f"drop database if exists {name}{force}"))
    engine.dispose()


def run_suite(directory: Path, variant: str, urls: list[str], tests: int, extra: int) -> tuple[float, float, float]:
    """Run the suite once; per test, in seconds: the whole test, its fixtures (setup, teardown), and the time
    spent entering and leaving ``plugin.sandbox()``."""
    out = directory / f"{variant}.json"
    path = os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, BENCH_VARIANT=variant, BENCH_DEFAULT=urls[0], BENCH_LOGS=urls[1], BENCH_TESTS=str(tests),
               BENCH_OUT=str(out), BENCH_EXTRA_TABLES=str(extra), PYTHONPATH=path)  # fmt: skip
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", str(directory)]
    done = subprocess.run(command, env=env, cwd=directory, capture_output=True, text=True, check=False)
    result = json.loads(out.read_text()) if out.exists() else {"exit": -1}
    if result["exit"] != 0:
        raise SystemExit(f"the {variant} run failed:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    fixtures = float(result["setup"]) + float(result["teardown"])
    return (fixtures + float(result["call"])) / tests, fixtures / tests, float(result["sandbox"]) / tests


def measure(
    kind: str, tests: int, rounds: int, extra: int
) -> tuple[dict[str, tuple[float, float, float]], list[float]]:
    """Medians per variant (test, fixtures, sandbox enter+exit), and ``recreate / sandbox`` of each round."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "test_suite.py").write_text(SUITE)
        (directory / "conftest.py").write_text(CONFTEST)
        (directory / "pytest.ini").write_text("[pytest]\nfilterwarnings = error\n")
        names: list[str] = []
        if kind == "sqlite":
            urls = [f"sqlite+aiosqlite:///{directory / 'default.db'}", f"sqlite+aiosqlite:///{directory / 'logs.db'}"]
        else:
            urls, names = _server_urls(kind)
        try:
            env = dict(os.environ, BENCH_DEFAULT=urls[0], BENCH_LOGS=urls[1], BENCH_VARIANT="bare", BENCH_TESTS="0",
                       BENCH_EXTRA_TABLES=str(extra))  # fmt: skip
            subprocess.run([sys.executable, "-c", CREATE_TABLES, str(directory)], env=env, check=True)
            times: dict[str, list[tuple[float, float, float]]] = {variant: [] for variant in VARIANTS}
            for round_ in range(rounds):
                order = VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]
                for variant in order:
                    times[variant].append(run_suite(directory, variant, urls, tests, extra))
        finally:
            if names:
                _drop(kind, names)
    medians = {
        variant: (
            statistics.median(v[0] for v in values),
            statistics.median(v[1] for v in values),
            statistics.median(v[2] for v in values),
        )
        for variant, values in times.items()
    }
    return medians, [r[0] / s[0] for r, s in zip(times["recreate"], times["sandbox"], strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--databases", default="postgresql", help="comma-separated: sqlite, postgresql, mariadb")
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--tables",
        default="1,10,25",
        help="comma-separated: tables per bind in the app's schema, one run each (the tests use one of them)",
    )
    args = parser.parse_args()
    try:
        sizes = [int(n) for n in args.tables.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        parser.error(f"--tables {args.tables}: give whole numbers of 1 or more, e.g. --tables 1,10,25")
    print(f"{args.tests} tests per run, median of {args.rounds} rounds; milliseconds per test; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the start")  # fmt: skip
    print("  test: setup + call + teardown; fixtures: setup + teardown only (client, app start, isolation)")
    head = ("database", "tables", *VARIANTS, "recreate/sandbox", "fixtures:", *VARIANTS)
    print("{:<11}{:>7}{:>9}{:>9}{:>9}{:>7}{:>7}{:>18}{:>11}{:>9}{:>9}{:>9}{:>7}{:>7}".format(*head))
    for kind, tables in itertools.product(args.databases.split(","), sizes):
        t, per_round = measure(kind, args.tests, args.rounds, tables - 1)
        test = [t[variant][0] * 1000 for variant in VARIANTS]
        fixtures = [t[variant][1] * 1000 for variant in VARIANTS]
        sandbox, _, recreate, bare, empty = test
        print(
            "{:<11}{:>7}{:>9.1f}{:>9.1f}{:>9.1f}{:>7.1f}{:>7.1f}".format(kind, f"{tables}x2", *test)
            + f"{recreate / sandbox:>17.1f}x"
            + "{:>11}{:>9.1f}{:>9.1f}{:>9.1f}{:>7.1f}{:>7.1f}".format("", *fixtures)
        )
        print(
            f"{'':<11}the sandbox's own cost per test: {t['sandbox'][2] * 1000:.2f} ms entering and leaving it; "
            f"a sandboxed test against the same test without isolation (sandbox - bare): {sandbox - bare:+.1f} ms"
        )
        print(f"{'':<11}recreate / sandbox in each round: {', '.join(f'{r:.1f}x' for r in per_round)}")
        print(
            f"{'':<11}recreating the tables: {recreate - bare:.1f} ms per test (recreate - bare); "
            f"the four requests: {bare - empty:.1f} ms (bare - empty); pytest, loop and client: {empty:.1f} ms"
        )
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
