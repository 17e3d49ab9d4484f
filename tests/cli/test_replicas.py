"""``db binds``, ``db check``, ``db shell --replica`` and ``db run --replica`` on a bind with read replicas:
a real PostgreSQL hot standby (tests/faults/standby.py) that applies the primary's commits 2 s late."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from tests.cli.helpers import flat
from tests.faults.standby import APPLY_DELAY

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.cli.conftest import Invocation
    from tests.databases import Database
    from tests.faults import PrivateCluster
    from tests.faults.standby import PrivateStandby

pytestmark = pytest.mark.postgresql

T = TypeVar("T")

PASSWORD = "r3plica-pw"  # trust authentication: accepted, and never printed


@pytest.fixture(scope="module")
def standby_db(replica_pair: tuple[PrivateCluster, PrivateStandby]) -> Iterator[str]:
    primary, standby = replica_pair
    name = primary.create_database()
    primary.execute(
        "create table customers (id integer primary key, name varchar(40), email varchar(80))", database=name
    )
    standby.wait_caught_up()
    yield name
    primary.drop_database(name)


def url(cluster: PrivateCluster, database: str) -> str:
    return f"postgresql+asyncpg://postgres:{PASSWORD}@127.0.0.1:{cluster.port}/{database}"


def binds_for(replica_pair: tuple[PrivateCluster, PrivateStandby], database: str, **options: Any) -> dict[str, Any]:
    primary, standby = replica_pair
    replicas = options.pop("replicas", [url(standby, database), url(standby, database)])
    return {"default": {"url": url(primary, database), "replicas": replicas, **options}}


def rows(result: Invocation, title: str) -> list[str]:
    """The rows of the table printed under ``title``, cells joined by single spaces."""
    lines = result.stdout.splitlines()
    start = lines.index(title)
    found = []
    for line in lines[start + 1 :]:
        if not line.startswith(("│", "┏", "┃", "┡", "└", "╭", "├")):
            break
        if line.startswith("│"):
            found.append(" ".join(line.replace("│", " ").split()))
    return found


def test_binds_lists_each_replica_masked(
    litestar: Callable[..., Invocation], replica_pair: tuple[PrivateCluster, PrivateStandby], standby_db: str
) -> None:
    _, standby = replica_pair
    binds = binds_for(replica_pair, standby_db, sticky_seconds=5)
    result = litestar("db", "binds", binds=binds)
    document = litestar("db", "binds", "--json", binds=binds).json()

    assert result.exit_code == 0, result.output
    masked = f"postgresql+asyncpg://postgres:***@127.0.0.1:{standby.port}/{standby_db}"
    assert rows(result, "Replicas") == [
        f"default 1 {masked} AsyncAdaptedQueuePool 5+10 round robin, cool-down 30 s 5 s",
        f"default 2 {masked} AsyncAdaptedQueuePool 5+10 round robin, cool-down 30 s 5 s",
    ]
    pool = {"class": "AsyncAdaptedQueuePool", "size": 5, "max_overflow": 10}
    assert document["binds"][0]["replicas"] == {
        "selection": "round_robin",
        "cooldown_s": 30.0,
        "sticky_seconds": 5,
        "engines": [{"url": masked, "pool": pool}, {"url": masked, "pool": pool}],
    }
    assert PASSWORD not in result.output + str(document)


def test_check_reports_each_replica_caught_up(
    litestar: Callable[..., Invocation], replica_pair: tuple[PrivateCluster, PrivateStandby], standby_db: str
) -> None:
    _, standby = replica_pair
    standby.wait_caught_up()
    binds = binds_for(replica_pair, standby_db)
    result = litestar("db", "check", binds=binds)
    document = litestar("db", "check", "--json", "--max-lag", "5", binds=binds).json()

    assert result.exit_code == 0, result.output
    replica_rows = rows(result, "Replicas")
    masked = f"postgresql+asyncpg://postgres:***@127.0.0.1:{standby.port}/{standby_db}"
    assert [r.split(" ok ")[0] for r in replica_rows] == [f"default 1 {masked}", f"default 2 {masked}"]
    assert all(" PostgreSQL 15." in r and r.endswith(" 0.0 s (caught up)") for r in replica_rows)
    assert result.stdout.strip().endswith("all checks passed")
    assert document["ok"] is True
    assert document["max_lag_s"] == 5
    assert [(r["bind"], r["replica"], r["ok"], r["lag_s"], r["state"], r["error"]) for r in document["replicas"]] == [
        ("default", 1, True, 0.0, "caught up", None),
        ("default", 2, True, 0.0, "caught up", None),
    ]
    assert all(r["server"].startswith("PostgreSQL 15.") and r["url"] == masked for r in document["replicas"])
    assert PASSWORD not in result.output


def test_max_lag_fails_a_lagging_replica(
    litestar: Callable[..., Invocation], replica_pair: tuple[PrivateCluster, PrivateStandby], standby_db: str
) -> None:
    primary, standby = replica_pair
    binds = binds_for(replica_pair, standby_db, replicas=[url(standby, standby_db)])
    keys = iter(range(100, 200))

    def insert() -> None:
        key = next(keys)
        primary.execute(f"insert into customers values ({key}, 'c', '{key}@example.com')", database=standby_db)

    def while_behind(check: Callable[[], T]) -> T:
        """``check()`` while the standby replays over a second behind: each check gets a window of its own,
        and up to three tries at finishing within it (a loaded machine may be slower than the apply delay)."""
        for _ in range(3):
            insert()
            standby.wait_caught_up()
            time.sleep(1.2)  # the standby's last applied commit is now over a second old
            insert()  # replayed APPLY_DELAY from now
            result = check()
            if not standby.caught_up():  # it ran while the standby was still behind
                return result
        pytest.fail(f"three times, the standby caught up ({APPLY_DELAY} s apply delay) before the check had run")

    lagging = while_behind(lambda: litestar("db", "check", "--max-lag", "0.5", binds=binds))
    document = while_behind(lambda: litestar("db", "check", "--json", "--max-lag", "0.5", binds=binds).json())
    tolerant = while_behind(lambda: litestar("db", "check", "--json", "--max-lag", "60", binds=binds).json())

    assert lagging.exit_code == 1
    assert "FAIL" in flat(lagging.stdout)
    assert "s behind the primary, more than --max-lag 0.5 s" in flat(lagging.stdout)
    assert lagging.stdout.strip().endswith("1 check failed")
    (replica,) = document["replicas"]
    assert replica["ok"] is False
    assert replica["state"] == "replaying"
    assert replica["lag_s"] > 1.0
    assert replica["error"] == f"{replica['lag_s']:.1f} s behind the primary, more than --max-lag 0.5 s"
    assert document["ok"] is False
    assert tolerant["ok"] is True
    assert tolerant["replicas"][0]["state"] == "replaying"


def test_a_replica_that_is_not_a_standby_fails_the_check(
    litestar: Callable[..., Invocation], replica_pair: tuple[PrivateCluster, PrivateStandby], standby_db: str
) -> None:
    primary, _ = replica_pair
    binds = binds_for(replica_pair, standby_db, replicas=[url(primary, standby_db)])
    result = litestar("db", "check", "--json", binds=binds)

    assert result.exit_code == 1
    assert result.json()["replicas"][0]["error"] == (
        "not a standby: pg_is_in_recovery() is false (is this the primary's URL?)"
    )


@pytest.mark.mariadb
def test_a_mariadb_replica_that_does_not_replicate_fails_the_check(
    litestar: Callable[..., Invocation], new_db: Callable[[str], Database]
) -> None:
    db = new_db("mariadb")
    same_server = db.url().render_as_string(hide_password=False)
    result = litestar("db", "check", "--json", binds={"default": {"url": same_server, "replicas": [same_server]}})

    assert result.exit_code == 1
    (replica,) = result.json()["replicas"]
    assert replica["server"].startswith("MariaDB 10.")
    assert replica["error"] == "not a replica: SHOW REPLICA STATUS returned nothing"


def test_shell_and_run_read_from_a_replica_and_cannot_write(
    litestar: Callable[..., Invocation], replica_pair: tuple[PrivateCluster, PrivateStandby], standby_db: str
) -> None:
    binds = binds_for(replica_pair, standby_db)
    where = "select pg_is_in_recovery()"
    shell = litestar(
        "db", "shell", "--replica", "-c", f"print((await session.execute(text({where!r}))).scalar())", binds=binds
    )
    normal = litestar("db", "shell", "-c", f"print((await session.execute(text({where!r}))).scalar())", binds=binds)
    run = litestar("db", "run", "--replica", "--json", "--sql", where, binds=binds)
    write = litestar("db", "run", "--replica", "--sql", "insert into customers values (9, 'x', 'x')", binds=binds)
    refused = litestar("db", "run", "--replica", "--dry-run", "--sql", where, binds=binds)

    assert (shell.exit_code, shell.stdout) == (0, "True\n"), shell.output
    assert normal.stdout == "False\n"
    assert run.exit_code == 0, run.output
    assert run.json()["result"] == {"columns": ["pg_is_in_recovery"], "rows": [[True]]}
    assert write.exit_code == 1
    assert "read-only transaction" in write.stderr
    assert refused.exit_code == 2
    assert "--replica and --dry-run cannot be combined; pick one" in refused.stderr


def test_replica_options_on_an_app_without_replicas(
    litestar: Callable[..., Invocation], new_db: Callable[[str], Database]
) -> None:
    binds = {"default": str(new_db("sqlite").url())}
    result = litestar("db", "run", "--replica", "--sql", "select 1", binds=binds)

    assert result.exit_code == 1
    assert result.stderr == "Error: --replica: no bind has read replicas; configure BindConfig(replicas=[...])\n"


def test_max_lag_fails_a_replica_whose_lag_cannot_be_told(litestar: Callable[..., Invocation], tmp_path: Any) -> None:
    # SQLite has no replication to ask about; a PostgreSQL standby that has applied nothing since it
    # started has no replay time either. A bound that cannot be checked is not reported as met.
    database = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    binds = {"default": {"url": database, "replicas": [database]}}
    unbounded = litestar("db", "check", "--json", binds=binds, models="").json()
    bounded = litestar("db", "check", "--max-lag", "5", binds=binds, models="")
    document = litestar("db", "check", "--json", "--max-lag", "5", binds=binds, models="").json()

    assert unbounded["ok"] is True
    assert bounded.exit_code == 1
    assert "lag unknown (not measured for sqlite), so --max-lag 5 s cannot be checked" in flat(bounded.stdout)
    assert document["ok"] is False
    assert [(r["ok"], r["lag_s"], r["error"]) for r in document["replicas"]] == [
        (False, None, "lag unknown (not measured for sqlite), so --max-lag 5 s cannot be checked")
    ]
