"""``litestar db binds``: every bind, what it points at, and which models live there."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.databases import Database

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.cli.conftest import Invocation

PASSWORD = "s3cret-from-the-test"


def test_example_app(litestar: Callable[..., Invocation]) -> None:
    result = litestar("db", "binds", "--models", app="examples.app:app")
    assert result.exit_code == 0, result.output
    lines = [" ".join(line.replace("│", " ").split()) for line in result.stdout.splitlines()]
    app_row = next(line for line in lines if line.startswith("app (default)"))
    logs_row = next(line for line in lines if line.startswith("logs "))
    assert app_row.split(" ")[2] == "sqlite+aiosqlite"
    assert app_row.endswith("app.db async AsyncAdaptedQueuePool 5+10 db_session, db_engine 2 2")
    assert logs_row.endswith("logs.db async AsyncAdaptedQueuePool 5+10 logs_db_session, logs_db_engine 1 1")
    assert "AuditEntry examples.app logs audit_log" in lines
    assert "Note examples.app app notes" in lines
    assert "Tag examples.app app tags" in lines


def test_example_app_as_json(litestar: Callable[..., Invocation]) -> None:
    result = litestar("db", "binds", "--json", app="examples.app:app")
    assert result.exit_code == 0, result.output
    document = result.json()
    assert document["app"] == "examples.app:app"
    assert document["default_bind"] == "app"
    app_bind, logs_bind = document["binds"]
    assert app_bind["url"].endswith("/examples/data/app.db")
    assert {**app_bind, "url": "..."} == {
        "key": "app",
        "default": True,
        "dialect": "sqlite",
        "driver": "aiosqlite",
        "url": "...",
        "async": True,
        "pool": {"class": "AsyncAdaptedQueuePool", "size": 5, "max_overflow": 10},
        "dependencies": {"session": "db_session", "engine": "db_engine"},
        "models": 2,
        "tables": 2,
        "migrations": None,
        "replicas": None,
    }
    assert logs_bind["dependencies"] == {"session": "logs_db_session", "engine": "logs_db_engine"}
    assert document["models"] == [
        {"model": "AuditEntry", "module": "examples.app", "bind": "logs", "table": "audit_log", "error": None},
        {"model": "Note", "module": "examples.app", "bind": "app", "table": "notes", "error": None},
        {"model": "Tag", "module": "examples.app", "bind": "app", "table": "tags", "error": None},
    ]


@pytest.mark.postgresql
@pytest.mark.mariadb
def test_sqlite_postgresql_and_mariadb_binds_never_show_the_password(
    litestar: Callable[..., Invocation], new_db: Callable[[str], Database]
) -> None:
    pg, maria = new_db("postgresql"), new_db("mariadb")
    binds = {
        "default": str(new_db("sqlite").url()),
        "logs": pg.url(password=PASSWORD).render_as_string(hide_password=False),
        "metrics": maria.url(password=PASSWORD).render_as_string(hide_password=False),
    }
    outputs = []
    for args in (["db", "binds"], ["db", "binds", "--models"], ["db", "binds", "--json"]):
        result = litestar(*args, binds=binds, models="shop,logs,metrics")
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    document = litestar("db", "binds", "--json", binds=binds, models="shop,logs,metrics").json()

    assert all(PASSWORD not in output for output in outputs)
    by_key = {bind["key"]: bind for bind in document["binds"]}
    assert (by_key["logs"]["dialect"], by_key["logs"]["driver"]) == ("postgresql", "asyncpg")
    assert (by_key["metrics"]["dialect"], by_key["metrics"]["driver"]) == ("mysql", "asyncmy")
    assert by_key["logs"]["url"] == f"postgresql+asyncpg://postgres:***@127.0.0.1:5432/{pg.name}"
    assert by_key["metrics"]["url"] == f"mysql+asyncmy://{maria.name}:***@127.0.0.1:3306/{maria.name}"
    assert [(m["model"], m["bind"], m["table"]) for m in document["models"]] == [
        ("AuditLog", "logs", "audit_log"),
        ("Customer", "default", "customers"),
        ("Metric", "metrics", "metrics"),
    ]
    assert "Metric tests.cli.apps metrics metrics" in " ".join(outputs[1].replace("│", " ").split())


def test_models_with_an_unconfigured_bind_key_are_marked(litestar: Callable[..., Invocation], tmp_path: Path) -> None:
    binds = {"default": f"sqlite+aiosqlite:///{tmp_path}/a.db"}
    table = litestar("db", "binds", "--models", binds=binds, models="shop,archive")
    document = litestar("db", "binds", "--json", binds=binds, models="shop,archive").json()

    assert table.exit_code == 0
    assert "✗ model 'ArchivedOrder' has __bind_key__ = 'archive', which is not a configured bind" in table.stdout
    assert document["models"][0] == {
        "model": "ArchivedOrder",
        "module": "tests.cli.apps",
        "bind": "archive",
        "table": "archived_orders",
        "error": "model 'ArchivedOrder' has __bind_key__ = 'archive', which is not a configured bind "
        "(configured: 'default'); add 'archive' to binds= or fix the model",
    }


@pytest.mark.anyio
async def test_models_of_the_same_name_are_judged_each_on_its_own(tmp_path: Path) -> None:
    from litestar import Litestar

    from alchemy_cli.inspection import describe
    from alchemy_cli.loader import engines_started
    from plugin import SQLAlchemyPlugin
    from tests.cli import clash

    plugin = SQLAlchemyPlugin(config=clash.config(tmp_path))
    Litestar(plugins=[plugin])
    async with engines_started(plugin):
        _, models = describe(plugin)

    customers = [(m.module, m.bind, m.error is None) for m in models if m.model == "Customer"]
    assert customers == [("tests.cli.clash", "default", True), ("tests.cli.clash_other", "elsewhere", False)]
