"""A notes service on two SQLite databases: ``app`` (the default bind) and ``logs``.

Run it::

    litestar --app examples.app:app run            # serves on http://127.0.0.1:8000
    litestar --app examples.app:app db binds       # what points where

``NoteController`` works through the routed ``db_session``: ``Note`` rows land in ``app.db``, and
``AuditEntry`` rows (``__bind_key__ = "logs"``) would land in ``logs.db``. The ``audit`` provider writes
them through ``logs_db_session``, the session pinned to the ``logs`` bind. The plugin settles a
request's sessions together: both commit, in bind order, or neither does when the status says roll
back. Data lives in ``examples/data/`` unless ``EXAMPLE_DATA_DIR`` says otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from litestar import Controller, Litestar, delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, JSONBody
from sqlalchemy import DateTime, ForeignKey, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from plugin import Migrations, SQLAlchemyAsyncConfig, SQLAlchemyPlugin

DATA_DIR = Path(os.environ.get("EXAMPLE_DATA_DIR", Path(__file__).parent / "data"))


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Note(Base):
    """A note; no ``__bind_key__``, so it lives on the default bind (``app``)."""

    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200), unique=True)
    body: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Tag(Base):
    """A tag on a note; same bind as notes, so a foreign key works."""

    __tablename__ = "tags"
    id: Mapped[int] = mapped_column(primary_key=True)
    note_id: Mapped[int] = mapped_column(ForeignKey("notes.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(40))


class AuditEntry(Base):
    """What happened to which note; lives on the ``logs`` bind."""

    __tablename__ = "audit_log"
    __bind_key__ = "logs"
    id: Mapped[int] = mapped_column(primary_key=True)
    action: Mapped[str] = mapped_column(String(20))
    note_title: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


@dataclass
class NoteIn:
    title: str
    body: str = ""
    tags: tuple[str, ...] = ()


@dataclass
class NoteOut:
    id: int
    title: str
    body: str
    tags: list[str]


@dataclass
class AuditOut:
    action: str
    note_title: str


class Audit:
    """Writes audit entries through the ``logs`` bind's own session (``logs_db_session``)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    def record(self, action: str, note_title: str) -> None:
        self._session.add(AuditEntry(action=action, note_title=note_title))


async def provide_audit(logs_db_session: NamedDependency[AsyncSession]) -> Audit:
    return Audit(logs_db_session)


async def _note_out(session: AsyncSession, note: Note) -> NoteOut:
    tags = (await session.scalars(select(Tag.name).where(Tag.note_id == note.id).order_by(Tag.id))).all()
    return NoteOut(id=note.id, title=note.title, body=note.body, tags=list(tags))


class NoteController(Controller):
    path = "/notes"
    dependencies = {"audit": Provide(provide_audit)}  # noqa: RUF012  (Litestar reads it as a class attribute)

    @get()
    async def list_notes(self, db_session: NamedDependency[AsyncSession]) -> list[NoteOut]:
        notes = (await db_session.scalars(select(Note).order_by(Note.id))).all()
        return [await _note_out(db_session, note) for note in notes]

    @post()
    async def create_note(
        self, data: JSONBody[NoteIn], db_session: NamedDependency[AsyncSession], audit: NamedDependency[Audit]
    ) -> NoteOut:
        note = Note(title=data.title, body=data.body)
        db_session.add(note)
        await db_session.flush()  # assigns note.id; a duplicate title fails here: 409 Conflict
        db_session.add_all([Tag(note_id=note.id, name=name) for name in data.tags])
        audit.record("created", note.title)
        return await _note_out(db_session, note)

    @get("/{note_id:int}")
    async def get_note(self, note_id: FromPath[int], db_session: NamedDependency[AsyncSession]) -> NoteOut:
        note = await db_session.get(Note, note_id)
        if note is None:
            raise NotFoundException(f"note {note_id} does not exist")
        return await _note_out(db_session, note)

    @delete("/{note_id:int}")
    async def delete_note(
        self, note_id: FromPath[int], db_session: NamedDependency[AsyncSession], audit: NamedDependency[Audit]
    ) -> None:
        note = await db_session.get(Note, note_id)
        if note is None:
            raise NotFoundException(f"note {note_id} does not exist")
        await db_session.delete(note)
        audit.record("deleted", note.title)


@get("/audit")
async def list_audit(db_session: NamedDependency[AsyncSession]) -> list[AuditOut]:
    """Reads the logs database through the routed session: AuditEntry routes itself there."""
    entries = (await db_session.scalars(select(AuditEntry).order_by(AuditEntry.id))).all()
    return [AuditOut(action=e.action, note_title=e.note_title) for e in entries]


@get("/stats")
async def stats(db_session: NamedDependency[AsyncSession]) -> dict[str, int]:
    return {
        "notes": await db_session.scalar(select(func.count()).select_from(Note)) or 0,
        "audit_entries": await db_session.scalar(select(func.count()).select_from(AuditEntry)) or 0,
    }


def create_app(data_dir: Path = DATA_DIR, *, migrations: Mapping[str, Migrations] | None = None) -> Litestar:
    """The example app, with its databases in ``data_dir``.

    With ``migrations`` (see ``examples/migrating.py``), ``db check`` reports each bind's Alembic state
    and the app serves the health routes at ``/health/db`` and ``/health/db/live``.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    config = SQLAlchemyAsyncConfig(
        binds={
            "app": f"sqlite+aiosqlite:///{data_dir / 'app.db'}",
            "logs": f"sqlite+aiosqlite:///{data_dir / 'logs.db'}",
        },
        default_bind="app",
        base=Base,
        create_all=True,
        migrations=migrations,
    )
    plugin = SQLAlchemyPlugin(config=config)
    health = [plugin.health_route("/health/db", migrations=True)] if migrations else []
    return Litestar(route_handlers=[NoteController, list_audit, stats, *health], plugins=[plugin])


app = create_app()
