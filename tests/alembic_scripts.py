"""Real Alembic script directories in a temporary folder, in the three layouts the plugin reads.

Everything is made with Alembic's own commands (``init`` with its templates, ``revision``), and
databases are stamped with Alembic's ``MigrationContext.stamp``, so the files and version tables are
exactly what a project using Alembic has. Each bind gets three revisions: create, add a column, add an
index (ids ``<bind>1`` ... ``<bind>3``; in the multidb layout all binds share ``m1`` ... ``m3``).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from plugin import Migrations

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.engine import URL

LAYOUTS = ("multidb", "per_bind", "branches")
MESSAGES = ("create the tables", "add a column", "add an index")


def _quiet_config(path: Path) -> Config:
    return Config(str(path), stdout=io.StringIO())


@dataclass
class Scripts:
    """The scripts of one layout for some binds, and what each bind's migrations config is."""

    layout: str
    root: Path
    binds: Sequence[str]
    migrations: dict[str, Migrations] = field(default_factory=dict)
    chains: dict[str, list[str]] = field(default_factory=dict)
    """Revision ids of each bind, oldest first."""
    configs: dict[str, Config] = field(default_factory=dict)

    def _revision(self, bind: str, rev_id: str, message: str, head: str, **options: object) -> None:
        with contextlib.redirect_stdout(io.StringIO()):  # "Generating ..." is Alembic talking to a person
            command.revision(self.configs[bind], message=message, rev_id=rev_id, head=head, **options)  # type: ignore[arg-type]

    def stamp(self, bind: str, url: URL, revision: str, migrations: Migrations | None = None) -> None:
        """Write ``revision`` into the bind's version table the way ``alembic stamp`` does."""
        migrations = migrations or self.migrations[bind]
        script = ScriptDirectory.from_config(self.configs[bind])
        engine = create_engine(url)
        try:
            with engine.begin() as connection:
                options = {"version_table": migrations.version_table}
                if migrations.version_table_schema:
                    options["version_table_schema"] = migrations.version_table_schema
                MigrationContext.configure(connection, opts=options).stamp(script, revision)
        finally:
            engine.dispose()

    def add_second_head(self, bind: str) -> str:
        """A revision branching off the bind's second revision: two heads, not merged."""
        rev_id = f"{self.chains[bind][0][:-1]}x"
        self._revision(bind, rev_id, "a parallel change", self.chains[bind][1], splice=True)
        return rev_id

    def add_revision(self, bind: str) -> Path:
        """A fourth revision on top of the bind's head; returns its file (delete it to "downgrade the code")."""
        rev_id = f"{self.chains[bind][0][:-1]}4"
        self._revision(bind, rev_id, "from a newer release", self.chains[bind][-1])
        script = ScriptDirectory.from_config(self.configs[bind])
        return Path(script.get_revision(rev_id).path)


def build(root: Path, layout: str, binds: Sequence[str]) -> Scripts:
    """Create the scripts of ``layout`` under ``root`` for ``binds``."""
    scripts = Scripts(layout, root, binds)
    with contextlib.redirect_stdout(io.StringIO()):
        if layout == "multidb":
            ini = root / "alembic.ini"
            config = _quiet_config(ini)
            command.init(config, str(root / "migrations"), template="multidb")
            config = _quiet_config(ini)
            chain = ["m1", "m2", "m3"]
            for bind in binds:
                scripts.configs[bind] = config
                scripts.chains[bind] = chain
                scripts.migrations[bind] = Migrations(ini=str(ini))
            for number, (rev_id, message) in enumerate(zip(chain, MESSAGES, strict=True)):
                command.revision(config, message=message, rev_id=rev_id, head=chain[number - 1] if number else "base")
        elif layout == "per_bind":
            for bind in binds:
                ini = root / bind / "alembic.ini"
                ini.parent.mkdir(parents=True)
                command.init(_quiet_config(ini), str(root / bind / "migrations"), template="generic")
                scripts.configs[bind] = _quiet_config(ini)
                scripts.chains[bind] = [f"{bind}{n}" for n in (1, 2, 3)]
                scripts.migrations[bind] = Migrations(script_location=str(root / bind / "migrations"))
                for number, (rev_id, message) in enumerate(zip(scripts.chains[bind], MESSAGES, strict=True)):
                    head = scripts.chains[bind][number - 1] if number else "base"
                    scripts._revision(bind, rev_id, message, head)
        elif layout == "branches":
            ini = root / "alembic.ini"
            command.init(_quiet_config(ini), str(root / "migrations"), template="generic")
            config = _quiet_config(ini)
            for bind in binds:
                scripts.configs[bind] = config
                scripts.chains[bind] = [f"{bind}{n}" for n in (1, 2, 3)]
                scripts.migrations[bind] = Migrations(script_location=str(root / "migrations"), branch=bind)
                scripts._revision(bind, f"{bind}1", MESSAGES[0], "base", branch_label=bind)
                scripts._revision(bind, f"{bind}2", MESSAGES[1], f"{bind}@head")
                scripts._revision(bind, f"{bind}3", MESSAGES[2], f"{bind}@head")
        else:
            raise ValueError(layout)
    return scripts
