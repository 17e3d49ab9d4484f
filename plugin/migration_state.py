"""How far one bind's database is from its migrations' head: read, never changed.

The scripts come from :class:`plugin.migrations.ScriptCache`; the version table is read with one
``SELECT`` on a connection the caller opened (``db check`` and the health route pass the check's own).
Neither ``env.py`` nor any ``upgrade()`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import Connection

    from plugin.migrations import Migrations

__all__ = ("MigrationState", "PendingRevision", "evaluate", "failed", "read_state")

Status = Literal["at_head", "pending", "not_migrated", "unknown_revision", "several_heads", "error"]


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
        """Only "at head" passes; every other state fails ``db check`` and the health route."""
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
    # Exact ids: Alembic's own lookup also accepts a unique prefix, which would take an unknown id for a
    # known one that happens to start with it.
    scripts = {s.revision: s for s in script.walk_revisions()}
    unknown = [revision for revision in current if revision not in scripts]
    # In the branch layout a version table may also carry other branches' revisions: not ours.
    known = {
        revision
        for revision in current
        if revision in scripts and (migrations.branch is None or migrations.branch in scripts[revision].branch_labels)
    }
    if unknown:
        return replace(base, status="unknown_revision", current=current, unknown=tuple(unknown))
    lower = tuple(sorted(known)) or "base"
    pending = (
        [PendingRevision(s.revision, (s.doc or "").strip()) for s in script.iterate_revisions(heads[0], lower)]
        if heads
        else []
    )
    pending.reverse()  # Alembic walks from the head down; people read oldest first
    if not has_table and heads:  # with no revision at all there is nothing to migrate yet
        return replace(base, status="not_migrated", pending=tuple(pending))
    return replace(base, status="pending" if pending else "at_head", current=current, pending=tuple(pending))
