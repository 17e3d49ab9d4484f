"""Models for the routing matrix: one identical schema on a PostgreSQL bind and a MariaDB bind.

Each bind's models share one ``MetaData`` without a bind key (advanced-alchemy's per-bind
``metadata_registry`` structure), and each has an association table ``author_tags`` on it that no model
maps. The default bind (SQLite) maps ``accounts`` only, but the test also creates ``authors``,
``books``, ``tags`` and ``author_tags`` there with rows of its own, so a statement that reaches the wrong
database returns wrong rows instead of failing.
"""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table
from sqlalchemy.orm import DeclarativeBase, Mapped, foreign, mapped_column, relationship


class DefaultBase(DeclarativeBase):
    pass


class PgBase(DeclarativeBase):
    metadata = MetaData()  # one MetaData per bind, no bind key of its own


class MyBase(DeclarativeBase):
    metadata = MetaData()


def _association(metadata: MetaData) -> Table:
    return Table(
        "author_tags",
        metadata,
        Column("author_id", ForeignKey("authors.id"), primary_key=True),
        Column("tag_id", ForeignKey("tags.id"), primary_key=True),
    )


pg_author_tags = _association(PgBase.metadata)
my_author_tags = _association(MyBase.metadata)


class PgAuthor(PgBase):
    __tablename__ = "authors"
    __bind_key__ = "pg"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40))
    books: Mapped[list[PgBook]] = relationship(back_populates="author", order_by="PgBook.id")
    tags: Mapped[list[PgTag]] = relationship(secondary=pg_author_tags)


class PgBook(PgBase):
    __tablename__ = "books"
    __bind_key__ = "pg"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    title: Mapped[str] = mapped_column(String(40))
    author: Mapped[PgAuthor] = relationship(back_populates="books")


class PgTag(PgBase):
    __tablename__ = "tags"
    __bind_key__ = "pg"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(40))


class MyAuthor(MyBase):
    __tablename__ = "authors"
    __bind_key__ = "maria"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40))
    books: Mapped[list[MyBook]] = relationship(back_populates="author", order_by="MyBook.id")
    tags: Mapped[list[MyTag]] = relationship(secondary=my_author_tags)


class MyBook(MyBase):
    __tablename__ = "books"
    __bind_key__ = "maria"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    title: Mapped[str] = mapped_column(String(40))
    author: Mapped[MyAuthor] = relationship(back_populates="books")


class MyTag(MyBase):
    __tablename__ = "tags"
    __bind_key__ = "maria"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(40))


class Account(DefaultBase):
    """On the default bind, with a relationship to an author on the PostgreSQL bind (no foreign key)."""

    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40))
    author_id: Mapped[int] = mapped_column(Integer)
    author: Mapped[PgAuthor] = relationship(PgAuthor, primaryjoin=lambda: foreign(Account.author_id) == PgAuthor.id)


SCHEMAS = {"pg": (PgAuthor, PgBook, PgTag), "maria": (MyAuthor, MyBook, MyTag)}
"""Bind key -> (author, book, tag) models of that bind."""
