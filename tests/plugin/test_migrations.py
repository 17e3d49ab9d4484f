"""Configuring migrations: one clear error per mistake; reading them changes nothing in the process."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

import pytest

from plugin import ConfigurationError, Migrations, MigrationsError, SQLAlchemyAsyncConfig
from plugin.migration_state import evaluate
from plugin.migrations import ScriptCache
from tests.alembic_scripts import build

if TYPE_CHECKING:
    from pathlib import Path

BINDS = {"default": "sqlite+aiosqlite://", "logs": "sqlite+aiosqlite://"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "Migrations(...) needs exactly one of script_location= (the folder with env.py and versions/) or "
             "ini= (an alembic.ini); it was given neither"),
        ({"script_location": "m", "ini": "alembic.ini"}, "needs exactly one of script_location= "),
        ({"script_location": "m", "version_table": ""}, "Migrations(version_table=...) cannot be empty"),
    ],
)  # fmt: skip
def test_bad_migrations_are_one_clear_error(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(MigrationsError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        Migrations(**fields)


def test_one_migrations_applies_to_every_bind() -> None:
    shared = Migrations(ini="alembic.ini")
    config = SQLAlchemyAsyncConfig(binds=BINDS, migrations=shared)
    assert dict(config.migration_configs) == {"default": shared, "logs": shared}
    assert dict(SQLAlchemyAsyncConfig(binds=BINDS).migration_configs) == {}


@pytest.mark.parametrize(
    ("migrations", "message"),
    [
        ({"archive": Migrations("m")}, "migrations=: bind 'archive' is not configured (configured: 'default', "
                                       "'logs'); fix the key or add the bind"),
        ({"logs": "migrations/logs"}, "migrations= takes a Migrations(...) for every bind, or a mapping of bind "
                                      "key to Migrations(...)"),
    ],
)  # fmt: skip
def test_migrations_for_unknown_binds_are_refused(migrations: Any, message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        SQLAlchemyAsyncConfig(binds=BINDS, migrations=migrations)
    assert str(raised.value) == message


def test_reading_scripts_leaves_sys_path_and_logging_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The multidb template's ini says prepend_sys_path = .; Alembic's import logs at INFO."""
    scripts = build(tmp_path, "multidb", ["default"])
    assert "prepend_sys_path = ." in (tmp_path / "alembic.ini").read_text()
    path = list(sys.path)
    alembic_modules = {name: module for name, module in sys.modules.items() if name.split(".")[0] == "alembic"}
    for name in alembic_modules:  # so that the import (and its logging) happens in this test
        del sys.modules[name]
    try:
        with caplog.at_level(logging.INFO):
            script = ScriptCache().get(scripts.migrations["default"])
    finally:
        sys.modules.update(alembic_modules)
    assert script.get_heads() == ["m3"]
    assert sys.path == path
    assert [r.getMessage() for r in caplog.records if r.name.startswith("alembic")] == []


def test_scripts_are_read_once_per_cache(tmp_path: Path) -> None:
    scripts = build(tmp_path, "per_bind", ["default"])
    cache = ScriptCache()
    first = cache.get(scripts.migrations["default"])
    scripts.add_second_head("default")
    assert cache.get(scripts.migrations["default"]) is first
    assert len(ScriptCache().get(scripts.migrations["default"]).get_heads()) == 2


def test_a_script_folder_without_revisions_is_at_head(tmp_path: Path) -> None:
    """``alembic init`` done, no revision written yet: nothing to apply, with or without a version table."""
    scripts = build(tmp_path, "per_bind", ["default"])
    for revision in (tmp_path / "default" / "migrations" / "versions").glob("*.py"):
        revision.unlink()
    script = ScriptCache().get(scripts.migrations["default"])
    for has_table in (False, True):
        state = evaluate(scripts.migrations["default"], script, has_table=has_table, current=())
        assert (state.status, state.summary()) == ("at_head", "at head (no revisions)")


def test_an_unknown_id_that_prefixes_a_known_one_is_unknown(tmp_path: Path) -> None:
    scripts = build(tmp_path, "per_bind", ["default"])
    scripts._revision("default", "c0ffee", "a fourth change", "default3")
    script = ScriptCache().get(scripts.migrations["default"])
    state = evaluate(scripts.migrations["default"], script, has_table=True, current=("c0ff",))
    assert (state.status, state.unknown) == ("unknown_revision", ("c0ff",))


def test_without_alembic_the_message_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "alembic", None)  # what a missing package looks like to `import`
    with pytest.raises(MigrationsError) as raised:
        ScriptCache().get(Migrations(script_location=str(tmp_path)))
    assert str(raised.value) == (
        "migrations are configured but Alembic is not installed; pip install 'litestar-alchemy[alembic]'"
    )


def test_version_locations_come_from_the_ini(tmp_path: Path) -> None:
    """A revision kept in a second folder named by the ini's version_locations is found through ini=."""
    scripts = build(tmp_path, "per_bind", ["default"])
    extra = tmp_path / "extra"
    extra.mkdir()
    newest = next((tmp_path / "default" / "migrations" / "versions").glob("default3_*.py"))
    newest.rename(extra / newest.name)
    ini = tmp_path / "default" / "alembic.ini"
    ini.write_text(
        ini.read_text().replace(
            "[alembic]\n", f"[alembic]\nversion_locations = %(here)s/migrations/versions:{extra}\n", 1
        )
    )

    from_ini = ScriptCache().get(Migrations(ini=str(ini)))
    folder_only = ScriptCache().get(scripts.migrations["default"])

    assert from_ini.get_heads() == ["default3"]
    assert folder_only.get_heads() == ["default2"]
