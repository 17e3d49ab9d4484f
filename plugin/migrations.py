"""Where each bind's Alembic migrations live, and loading their scripts (read only).

This project inspects; Alembic migrates. The scripts are read through Alembic's own ``ScriptDirectory``;
loading them imports each revision file, as every Alembic command does, but neither ``env.py`` nor any
``upgrade()`` runs.

Three layouts are supported, all configured per bind with :class:`Migrations`:

- Alembic's ``multidb`` template: one revision chain, a version table in each database; every bind
  gets the same ``Migrations(ini="alembic.ini")`` (or the same ``script_location``).
- one script directory per bind: ``Migrations(script_location="migrations/logs")`` for each.
- one directory with a branch label per bind: ``Migrations(script_location="migrations", branch="logs")``
  targets ``logs@head``.

Alembic is imported only when a bind has migrations configured (it is an optional extra:
``pip install 'litestar-alchemy[alembic]'``). How far a database is from the head:
:mod:`plugin.migration_state`.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugin.exceptions import MigrationsError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

__all__ = ("Migrations", "ScriptCache", "locate")


@dataclass(frozen=True)
class Migrations:
    """Where one bind's Alembic migrations live.

    Example::

        Migrations(script_location="migrations/logs")              # a directory per bind
        Migrations(script_location="migrations", branch="logs")     # one directory, branch label per bind
        Migrations(ini="alembic.ini")                               # read script_location from alembic.ini
    """

    script_location: str | None = None
    """The folder holding ``env.py`` and ``versions/`` (or Alembic's ``package:folder`` form). Relative
    paths are relative to the working directory, as for the ``alembic`` command. Give this or ``ini``."""
    ini: str | None = None
    """An ``alembic.ini`` to read ``script_location`` (and ``version_locations``) from, ``%(here)s``
    included. Give this or ``script_location``."""
    ini_section: str = "alembic"
    """The section of ``ini`` to read (``alembic --name <section>``)."""
    branch: str | None = None
    """A branch label: the bind's target is ``<branch>@head`` instead of ``heads``."""
    version_table: str = "alembic_version"
    """The version table in this bind's database (``context.configure(version_table=...)`` in env.py)."""
    version_table_schema: str | None = None
    """Its schema, when it is not the connection's default schema."""

    def __post_init__(self) -> None:
        if (self.script_location is None) == (self.ini is None):
            raise MigrationsError(
                "Migrations(...) needs exactly one of script_location= (the folder with env.py and versions/) "
                f"or ini= (an alembic.ini); it was given {'both' if self.ini else 'neither'}"
            )
        if not self.version_table:
            raise MigrationsError(
                "Migrations(version_table=...) cannot be empty; Alembic's default is 'alembic_version'"
            )

    @property
    def target(self) -> str:
        """The revision this bind should be at, in Alembic's words (``heads`` or ``<branch>@head``)."""
        return f"{self.branch}@head" if self.branch else "heads"

    @property
    def qualified_version_table(self) -> str:
        """``schema.table`` when a schema is configured, else the table's name."""
        return f"{self.version_table_schema}.{self.version_table}" if self.version_table_schema else self.version_table

    def describe(self) -> dict[str, Any]:
        """Where the migrations live, for listings (``db binds --json``). Reads no file."""
        return {
            "script_location": self.script_location,
            "ini": self.ini,
            "ini_section": self.ini_section if self.ini else None,
            "branch": self.branch,
            "target": self.target,
            "version_table": self.version_table,
            "version_table_schema": self.version_table_schema,
        }


def _import_alembic() -> None:
    """Import Alembic quietly: its import logs "setup plugin ..." at INFO seven times, which an app (or the
    CLI) logging at INFO would print the first time migrations are read."""
    logger = logging.getLogger("alembic")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        import alembic  # noqa: F401
    except ImportError:
        raise MigrationsError(
            "migrations are configured but Alembic is not installed; pip install 'litestar-alchemy[alembic]'"
        ) from None
    finally:
        logger.setLevel(level)


def _located(migrations: Migrations) -> tuple[Config, str, str]:
    """The Alembic config, the script location as written, and the folder it names (absolute)."""
    _import_alembic()
    from alembic.config import Config
    from alembic.util import coerce_resource_to_filename

    if migrations.ini is not None:
        if not Path(migrations.ini).is_file():
            raise MigrationsError(f"alembic ini file {migrations.ini!r} does not exist; fix Migrations(ini=...)")
        config = Config(migrations.ini, ini_section=migrations.ini_section)
        location = config.get_alembic_option("script_location")
        if not location:
            raise MigrationsError(
                f"{migrations.ini!r} has no script_location in section [{migrations.ini_section}]; "
                "add it or set Migrations(ini_section=...)"
            )
    else:
        config, location = Config(), migrations.script_location
    directory = Path(coerce_resource_to_filename(str(location))).absolute()
    if not directory.is_dir():
        raise MigrationsError(
            f"migrations folder {str(location)!r} does not exist; point script_location at the folder "
            "that holds env.py and versions/"
        )
    return config, str(location), str(directory)


def locate(migrations: Migrations) -> dict[str, Any]:
    """Where the migrations live, the folder resolved (``db binds``); reads no revision file."""
    try:
        _, _, directory = _located(migrations)
    except MigrationsError as exc:
        return {**migrations.describe(), "directory": None, "error": str(exc)}
    return {**migrations.describe(), "directory": directory, "error": None}


def _load(migrations: Migrations) -> ScriptDirectory:
    """Read the revision files of ``migrations`` (every file now, so that a broken one fails here)."""
    config, location, directory = _located(migrations)
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    warned: list[warnings.WarningMessage] = []
    try:
        # Built directly rather than with ScriptDirectory.from_config, which would also prepend the ini's
        # prepend_sys_path to sys.path: reading the state must not change the process.
        script = ScriptDirectory(
            directory,
            version_locations=config.get_version_locations_list(),
            recursive_version_locations=config.get_alembic_boolean_option("recursive_version_locations"),
            sourceless=config.get_alembic_boolean_option("sourceless"),
        )
        # Alembic reports a dangling down_revision as a warning and then fails with a bare KeyError: keep
        # the warning's words for the message.
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            script.get_heads()
    except CommandError as exc:
        raise MigrationsError(f"the scripts in {location!r} cannot be read: {exc}") from None
    except Exception as exc:  # a revision file that does not import
        reason = " ".join(str(warned[0].message).split()) if warned else f"{type(exc).__name__}: {exc}"
        raise MigrationsError(f"a revision file in {location!r} failed to load ({reason})") from None
    return script


class ScriptCache:
    """Loaded script directories by :class:`Migrations`, so each folder is read once per cache.

    The CLI uses a fresh cache per command; the health route keeps one for the app's lifetime (the
    revision files of a running app do not change under it).
    """

    def __init__(self) -> None:
        self._scripts: dict[Migrations, ScriptDirectory | MigrationsError] = {}

    def get(self, migrations: Migrations) -> ScriptDirectory:
        """The script directory of ``migrations``.

        Raises:
            MigrationsError: Alembic is missing, the folder or ini does not exist, or a file is broken.
        """
        if migrations not in self._scripts:
            try:
                self._scripts[migrations] = _load(migrations)
            except MigrationsError as exc:
                self._scripts[migrations] = exc
        found = self._scripts[migrations]
        if isinstance(found, MigrationsError):
            raise found
        return found
