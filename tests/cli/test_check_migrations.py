"""``litestar db check`` reads each bind's Alembic state: three layouts, three servers, five states."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import pytest

from tests.alembic_scripts import LAYOUTS, Scripts, build
from tests.cli.helpers import flat

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.cli.conftest import Invocation
    from tests.databases import Database

KINDS = {"default": "sqlite", "pg": "postgresql", "maria": "mariadb"}
PASSWORD = "m1grations-secret"


def migration_rows(result: Invocation) -> dict[str, str]:
    """Rows of the Migrations table by bind, cells joined by single spaces."""
    _, found, after = result.stdout.partition("\nMigrations")
    assert found, result.stdout
    rows = {}
    for line in after.splitlines():
        if line.startswith("│"):
            cells = " ".join(line.replace("│", " ").split())
            rows[cells.split(" ")[0]] = cells
    return rows


def as_options(scripts: Scripts) -> dict[str, dict[str, str]]:
    return {
        key: {name: value for name, value in dataclasses.asdict(m).items() if value is not None}
        for key, m in scripts.migrations.items()
    }


@pytest.fixture
def databases(new_db: Callable[[str], Database]) -> dict[str, Database]:
    return {key: new_db(kind) for key, kind in KINDS.items()}


def urls(databases: dict[str, Database], *, sync: bool = False) -> dict[str, str]:
    """The app's URLs, as an unprivileged user on MariaDB (per database, with a password): like an app,
    it then sees only its own XA transactions, not those other test runs leave on the shared server."""
    return {
        key: db.url(sync=sync, password=None if db.kind == "sqlite" else PASSWORD).render_as_string(hide_password=False)
        for key, db in databases.items()
    }


def arrange(state: str, scripts: Scripts, databases: dict[str, Database]) -> dict[str, str]:
    """Put every bind's database in ``state``; return what each bind's row must say."""
    shared = scripts.layout == "multidb"  # one chain: a new revision is made once, for every bind
    expected = {}
    newer = {}
    if state == "newer":
        for key in list(databases)[:1] if shared else databases:
            newer[key] = scripts.add_revision(key)
    if state == "two_heads":
        for key in list(databases)[:1] if shared else databases:
            scripts.add_second_head(key)
    for key, db in databases.items():
        chain = scripts.chains[key]
        url = db.url(sync=True)
        if state == "at_head":
            scripts.stamp(key, url, chain[2])
            expected[key] = f"at head ({chain[2]})"
        elif state == "pending":
            scripts.stamp(key, url, chain[0])
            expected[key] = f"2 pending: {chain[1]} (add a column), {chain[2]} (add an index)"
        elif state == "not_migrated":
            expected[key] = "no version table alembic_version (never migrated); 3 revisions to apply"
        elif state == "newer":
            fourth = f"{chain[0][:-1]}4"
            scripts.stamp(key, url, fourth)
            expected[key] = f"unknown revision {fourth} in alembic_version: the database is newer than the code"
        elif state == "two_heads":
            scripts.stamp(key, url, chain[2])
            expected[key] = f"several heads (unmerged): {chain[2]}, {chain[0][:-1]}x; run alembic merge"
    for path in newer.values():
        path.unlink()  # the code is now older than the databases
    return expected


@pytest.mark.postgresql
@pytest.mark.mariadb
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("state", ["at_head", "pending", "not_migrated", "newer", "two_heads"])
def test_migration_state_per_bind(
    layout: str,
    state: str,
    litestar: Callable[..., Invocation],
    databases: dict[str, Database],
    tmp_path: Path,
) -> None:
    scripts = build(tmp_path / "scripts", layout, list(databases))
    expected = arrange(state, scripts, databases)
    options = {"binds": urls(databases), "models": "", "migrations": as_options(scripts)}

    result = litestar("db", "check", **options)
    as_json = litestar("db", "check", "--json", **options)
    document = as_json.json()

    assert result.exit_code == as_json.exit_code == (0 if state == "at_head" else 1), result.output
    rows = migration_rows(result)
    assert set(rows) == set(KINDS)
    for key, chain in scripts.chains.items():
        target = f"{key}@head" if layout == "branches" else "heads"
        assert rows[key].startswith(f"{key} {'ok' if state == 'at_head' else 'FAIL'} {target} alembic_version ")
        assert expected[key] in rows[key]
        migrations = next(b for b in document["binds"] if b["bind"] == key)["migrations"]
        assert migrations["status"] == {"newer": "unknown_revision", "two_heads": "several_heads"}.get(state, state)
        assert migrations["ok"] is (state == "at_head")
        assert migrations["target"] == target
        assert migrations["summary"].startswith(expected[key])
        pending = [p["revision"] for p in migrations["pending"]]
        assert pending == {"pending": chain[1:], "not_migrated": chain}.get(state, [])
        if state == "pending":
            assert [p["message"] for p in migrations["pending"]] == ["add a column", "add an index"]
        assert (
            migrations["current"]
            == {
                "at_head": [chain[2]],
                "pending": [chain[0]],
                "not_migrated": [],
                "newer": [f"{chain[0][:-1]}4"],
                "two_heads": [chain[2]],
            }[state]
        )
        if state == "newer":
            assert migrations["unknown"] == [f"{chain[0][:-1]}4"]
        if state == "two_heads":
            assert migrations["heads"] == [chain[2], f"{chain[0][:-1]}x"]
    assert document["ok"] is (state == "at_head")
    assert PASSWORD not in result.output + as_json.output
    assert result.stdout.strip().endswith("all checks passed" if state == "at_head" else "3 checks failed")


@pytest.mark.postgresql
@pytest.mark.mariadb
def test_one_bind_behind_fails_only_that_bind(
    litestar: Callable[..., Invocation], databases: dict[str, Database], tmp_path: Path
) -> None:
    """Mixed states in one run; a version table in its own schema on PostgreSQL; exit 1 for one bind."""
    scripts = build(tmp_path / "scripts", "per_bind", list(databases))
    databases["pg"].execute("create schema meta")
    scripts.migrations["pg"] = dataclasses.replace(
        scripts.migrations["pg"], version_table="schema_version", version_table_schema="meta"
    )
    scripts.stamp("default", databases["default"].url(sync=True), "default3")
    scripts.stamp("pg", databases["pg"].url(sync=True), "pg3")
    scripts.stamp("maria", databases["maria"].url(sync=True), "maria2")
    options = {"binds": urls(databases), "models": "", "migrations": as_options(scripts)}

    result = litestar("db", "check", **options)
    document = litestar("db", "check", "--json", **options).json()

    assert databases["pg"].fetch("select version_num from meta.schema_version") == [("pg3",)]
    assert result.exit_code == 1
    rows = migration_rows(result)
    assert rows["default"] == "default ok heads alembic_version at head (default3)"
    assert rows["pg"] == "pg ok heads meta.schema_version at head (pg3)"
    assert rows["maria"] == "maria FAIL heads alembic_version 1 pending: maria3 (add an index)"
    assert result.stdout.strip().endswith("1 check failed")
    assert [b["ok"] for b in document["binds"]] == [True, True, False]
    assert document["binds"][1]["migrations"]["version_table"] == "meta.schema_version"


def test_binds_without_migrations_have_none(litestar: Callable[..., Invocation], tmp_path: Path) -> None:
    binds = {"default": f"sqlite+aiosqlite:///{tmp_path}/a.db", "logs": f"sqlite+aiosqlite:///{tmp_path}/b.db"}

    document = litestar("db", "check", "--json", binds=binds, models="").json()
    result = litestar("db", "check", binds=binds, models="")

    assert [b["migrations"] for b in document["binds"]] == [None, None]
    assert result.exit_code == 0
    assert "Migrations" not in result.stdout


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"script_location": "{tmp}/nowhere"},
            "migrations folder '{tmp}/nowhere' does not exist; point script_location",
        ),
        ({"ini": "{tmp}/alembic.ini"}, "alembic ini file '{tmp}/alembic.ini' does not exist; fix Migrations(ini=...)"),
        ({"script_location": "{scripts}", "branch": "nope"}, "no revision has the branch label 'nope'"),
    ],
)
def test_unreadable_migrations_fail_their_bind_in_one_line(
    fields: dict[str, str], message: str, litestar: Callable[..., Invocation], tmp_path: Path
) -> None:
    scripts = build(tmp_path / "scripts", "per_bind", ["default"])
    where = {"tmp": str(tmp_path), "scripts": scripts.migrations["default"].script_location}
    binds = {"default": f"sqlite+aiosqlite:///{tmp_path}/a.db", "other": f"sqlite+aiosqlite:///{tmp_path}/b.db"}
    migrations = {"default": {k: v.format(**where) for k, v in fields.items()}}

    result = litestar("db", "check", binds=binds, models="", migrations=migrations)
    document = litestar("db", "check", "--json", binds=binds, models="", migrations=migrations).json()

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert message.format(**where) in flat(result.stdout)
    assert document["binds"][0]["migrations"]["status"] == "error"
    assert document["binds"][1] == {**document["binds"][1], "ok": True, "migrations": None}


def test_broken_revision_file_is_named(
    litestar: Callable[..., Invocation], new_db: Callable[[str], Database], tmp_path: Path
) -> None:
    scripts = build(tmp_path / "scripts", "per_bind", ["default"])
    broken = tmp_path / "scripts" / "default" / "migrations" / "versions" / "zz_broken.py"
    broken.write_text("revision = 'zz'\ndown_revision = 'nope'\n")
    binds = urls({"default": new_db("sqlite")})

    result = litestar("db", "check", binds=binds, models="", migrations=as_options(scripts))

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert (
        f"a revision file in '{scripts.migrations['default'].script_location}' failed to load (Revision nope "
        "referenced from nope -> zz (head), is not present)"
    ) in flat(result.stdout)


@pytest.mark.postgresql
@pytest.mark.mariadb
def test_sync_config_reads_the_same_state(
    litestar: Callable[..., Invocation], databases: dict[str, Database], tmp_path: Path
) -> None:
    """Sync engines are checked in a thread; the state is read on that thread's connection."""
    scripts = build(tmp_path / "scripts", "branches", list(databases))
    scripts.stamp("default", databases["default"].url(sync=True), "default3")
    scripts.stamp("pg", databases["pg"].url(sync=True), "pg1")
    binds = urls(databases, sync=True)

    result = litestar("db", "check", binds=binds, models="", migrations=as_options(scripts), sync=True)

    assert result.exit_code == 1
    rows = migration_rows(result)
    assert rows["default"] == "default ok default@head alembic_version at head (default3)"
    assert rows["pg"] == "pg FAIL pg@head alembic_version 2 pending: pg2 (add a column), pg3 (add an index)"
    assert rows["maria"] == (
        "maria FAIL maria@head alembic_version no version table alembic_version (never migrated); 3 revisions to apply"
    )
