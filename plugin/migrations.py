"""Where each bind's Alembic migrations live, and how far each database is from their head (read only).

This project inspects; Alembic migrates. The scripts are read through Alembic's own ``ScriptDirectory``
and the version table with one ``SELECT`` on a connection the caller opened: neither ``env.py`` nor any
``upgrade()`` runs. Loading the scripts imports each revision file, as
every Alembic command does.

Three layouts are supported, all configured per bind with :class:`Migrations`:

- Alembic's ``multidb`` template: one revision chain, a version table in each database; every bind
  gets the same ``Migrations(ini="alembic.ini")`` (or the same ``script_location``).
- one script directory per bind: ``Migrations(script_location="migrations/logs")`` for each.
- one directory with a branch label per bind: ``Migrations(script_location="migrations", branch="logs")``
  targets ``logs@head``.

Alembic is imported only here and only when a bind has migrations configured (it is an optional extra:
``pip install 'litestar-alchemy[alembic]'``).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from plugin.exceptions import MigrationsError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import Connection

__all__ = ("MigrationState", "Migrations", "PendingRevision", "ScriptCache", "locate", "read_state")

Status = Literal["at_head", "pending", "not_migrated", "unknown_revision", "several_heads", "error"]


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


@dataclass(frozen=True)
class PendingRevision:
    """A revision the database has not applied yet."""

    revision: str
    message: str


@dataclass(frozen=True)
class MigrationState:
    """How far one bind's database is from its migrations' head."""

    status: Status
    """``at_head``; ``pending`` (revisions to apply); ``not_migrated`` (no version table);
    ``unknown_revision`` (the database names a revision the scripts lack: it is newer than the code);
    ``several_heads`` (the scripts have unmerged heads); ``error`` (the scripts could not be read)."""
    target: str
    version_table: str
    """Schema-qualified when a schema is configured."""
    directory: str | None = None
    """The script directory that was read."""
    current: tuple[str, ...] = ()
    """Revisions in the version table."""
    heads: tuple[str, ...] = ()
    """Head revisions of the scripts (for this bind's branch)."""
    pending: tuple[PendingRevision, ...] = ()
    """Revisions to apply, oldest first."""
    unknown: tuple[str, ...] = ()
    """Revisions in the version table that no script defines."""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "at_head"

    def summary(self) -> str:
        """One line for people: what the state is and, when it is not at head, what to do."""
        if self.status == "at_head":
            return f"at head ({', '.join(self.heads) or 'no revisions'})"
        if self.status == "pending":
            return f"{len(self.pending)} pending: " + ", ".join(f"{p.revision} ({p.message})" for p in self.pending)
        if self.status == "not_migrated":
            return f"no version table {self.version_table} (never migrated); {len(self.pending)} revision(s) to apply"
        if self.status == "unknown_revision":
            return (
                f"unknown revision {', '.join(self.unknown)} in {self.version_table}: the database is newer "
                "than the code (deploy the code that has it)"
            )
        if self.status == "several_heads":
            return f"several heads (unmerged): {', '.join(self.heads)}; run alembic merge"
        return f"cannot read migrations: {self.error}"

    def as_dict(self) -> dict[str, Any]:
        """The ``migrations`` object of ``db check --json`` and of the health route."""
        return {
            "status": self.status,
            "ok": self.ok,
            "summary": self.summary(),
            "directory": self.directory,
            "target": self.target,
            "version_table": self.version_table,
            "current": list(self.current),
            "heads": list(self.heads),
            "pending": [{"revision": p.revision, "message": p.message} for p in self.pending],
            "unknown": list(self.unknown),
            "error": self.error,
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


def failed(migrations: Migrations, error: str) -> MigrationState:
    """The state of a bind whose scripts could not be read."""
    return MigrationState("error", migrations.target, migrations.qualified_version_table, error=error)


def read_state(connection: Connection, migrations: Migrations, script: ScriptDirectory) -> MigrationState:
    """Compare the version table on ``connection`` with the scripts' head (runs on a sync connection)."""
    from sqlalchemy import Column, MetaData, String, Table, inspect, select

    has_table = inspect(connection).has_table(migrations.version_table, schema=migrations.version_table_schema)
    current: tuple[str, ...] = ()
    if has_table:
        # The table as Alembic defines it. Read with one SELECT rather than through MigrationContext, whose
        # constructor logs "Context impl ..." at INFO: a health route would log that on every check.
        version = Table(
            migrations.version_table,
            MetaData(),
            Column("version_num", String(32), primary_key=True),
            schema=migrations.version_table_schema,
        )
        current = tuple(connection.execute(select(version.c.version_num)).scalars())
    return evaluate(migrations, script, has_table=has_table, current=current)


def evaluate(
    migrations: Migrations, script: ScriptDirectory, *, has_table: bool, current: tuple[str, ...]
) -> MigrationState:
    """The state of a database whose version table holds ``current`` (pure: no database access)."""
    heads = script.get_heads()
    if migrations.branch is not None:
        # branch_labels of a revision include those inherited from its ancestors.
        heads = [head for head in heads if migrations.branch in script.get_revision(head).branch_labels]
        if not heads:
            return failed(
                migrations, f"no revision has the branch label {migrations.branch!r}; fix Migrations(branch=...)"
            )
    base = MigrationState(
        "at_head", migrations.target, migrations.qualified_version_table, directory=script.dir, heads=tuple(heads)
    )
    if len(heads) > 1:
        return replace(base, status="several_heads", current=current)
    known = set()
    unknown = []
    for revision in current:
        try:
            found = script.revision_map.get_revision(revision)
        except Exception:  # Alembic raises ResolutionError (or a subclass) for an id it does not know
            unknown.append(revision)
            continue
        # In the branch layout a version table may also carry other branches' revisions: not ours.
        if found is not None and (migrations.branch is None or migrations.branch in found.branch_labels):
            known.add(found.revision)
    if unknown:
        return replace(base, status="unknown_revision", current=current, unknown=tuple(unknown))
    lower = tuple(sorted(known)) or "base"
    pending = (
        [PendingRevision(s.revision, (s.doc or "").strip()) for s in script.iterate_revisions(heads[0], lower)]
        if heads
        else []
    )
    pending.reverse()  # Alembic walks from the head down; people read oldest first
    if not has_table:
        return replace(base, status="not_migrated", pending=tuple(pending))
    return replace(base, status="pending" if pending else "at_head", current=current, pending=tuple(pending))
