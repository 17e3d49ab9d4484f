"""Notes on PostgreSQL, read from streaming replicas: the README's "Read replicas" app.

Run it against your primary and its replicas::

    DATABASE_URL=postgresql+asyncpg://app:secret@primary/notes \
    REPLICA_URLS=postgresql+asyncpg://app:secret@replica1/notes,postgresql+asyncpg://app:secret@replica2/notes \
    DB_STICKY_SECRET=$(python -c 'import secrets; print(secrets.token_hex(32))') \
    litestar --app examples.replicas:app run

``GET /notes/{id}`` reads from the request's replica; ``POST /notes`` writes on the primary, and for five
seconds afterwards that client's reads go to the primary too (the sticky cookie).
"""

from __future__ import annotations

import os

from litestar import Litestar, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, JSONBody
from sqlalchemy import String
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from plugin import BindConfig, SQLAlchemyAsyncConfig, SQLAlchemyPlugin


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(String(2000), default="")


@get("/notes/{note_id:int}")
async def read_note(note_id: FromPath[int], db_session: NamedDependency[AsyncSession]) -> dict[str, str]:
    note = await db_session.get(Note, note_id)
    if note is None:
        raise NotFoundException(f"no note {note_id}")
    return {"title": note.title, "body": note.body}


@post("/notes")
async def add_note(data: JSONBody[dict[str, str]], db_session: NamedDependency[AsyncSession]) -> dict[str, int]:
    note = Note(title=data["title"], body=data.get("body", ""))
    db_session.add(note)
    await db_session.flush()  # the write pins this request to the primary; its id is known now
    return {"id": note.id}


replicas = [url for url in os.environ.get("REPLICA_URLS", "").split(",") if url]
default = BindConfig(url=os.environ["DATABASE_URL"], replicas=replicas, sticky_seconds=5 if replicas else None)
plugin = SQLAlchemyPlugin(
    config=SQLAlchemyAsyncConfig(
        binds={"default": default}, base=Base, sticky_secret=os.environ["DB_STICKY_SECRET"], create_all=True
    )
)
app = Litestar(route_handlers=[read_note, add_note], plugins=[plugin])
