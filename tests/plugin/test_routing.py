"""The routing matrix: every kind of statement reaches the database that owns its tables, or is refused.

One app, three binds: ``default`` on SQLite, ``pg`` on PostgreSQL, ``maria`` on MariaDB. ``pg`` and
``maria`` hold the same schema (tests/plugin/routing_models.py); the default database holds tables of
the same names with rows of its own. Every row's text names its database, so a statement sent to the
wrong one returns visibly wrong data. Writes are read back with the raw drivers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import (
    create_engine,
    delete,
    except_,
    exists,
    func,
    insert,
    intersect,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.orm import aliased, joinedload, selectinload

from plugin import CrossBindError, SQLAlchemyAsyncConfig, SQLAlchemyPlugin, SQLAlchemySyncConfig
from tests.plugin.routing_models import SCHEMAS, Account, DefaultBase, MyBase, PgBase

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

    from tests.databases import Database

    Case = Callable[[AsyncSession, tuple[Any, Any, Any]], Awaitable[Any]]

pytestmark = [pytest.mark.anyio, pytest.mark.postgresql, pytest.mark.mariadb]


def _seed(db: Database, label: str) -> None:
    for sql in (
        f"insert into authors (id, name) values (1, '{label} ada'), (2, '{label} bob')",
        f"insert into books (id, author_id, title) values (1, 1, '{label} b1'), (2, 1, '{label} b2'), "
        f"(3, 2, '{label} b3')",
        f"insert into tags (id, label) values (1, '{label} t1'), (2, '{label} t2')",
        "insert into author_tags (author_id, tag_id) values (1, 1), (2, 2)",
    ):
        db.execute(sql)


# -- reads: each returns what it saw -------------------------------------------------------------------


async def orm_select(s: AsyncSession, m: tuple[Any, Any, Any]) -> Any:
    author, _, _ = m
    return [a.name for a in await s.scalars(select(author).order_by(author.id))]


async def core_select(s: AsyncSession, m: tuple[Any, Any, Any]) -> Any:
    table = m[0].__table__
    return (await s.scalars(select(table.c.name).order_by(table.c.id))).all()


async def orm_union_all(s: AsyncSession, m: tuple[Any, Any, Any]) -> Any:
    author = m[0]
    both = select(author).where(author.id == 1).union_all(select(author).where(author.id == 2))
    return [a.name for a in await s.scalars(select(author).from_statement(both.order_by("id")))]


async def orm_union_columns(s: AsyncSession, m: tuple[Any, Any, Any]) -> Any:
    author = m[0]
    return sorted((await s.scalars(select(author.name).union(select(author.name)))).all())


async def orm_except(s: AsyncSession, m: tuple[Any, Any, Any]) -> Any:
    author = m[0]
    return (await s.scalars(select(author.name).except_(select(author.name).where(author.id == 2)))).all()


async def orm_intersect(s: AsyncSession, m: tuple[Any, Any, Any]) -> Any:
    author = m[0]
    return (await s.scalars(select(author.name).intersect(select(author.name).where(author.id == 2)))).all()


async def core_compound(s: AsyncSession, m: tuple[Any, Any, Any]) -> Any:
    authors, tags = m[0].__table__, m[2].__table__
    statement = union_all(select(authors.c.name), select(tags.c.label))
    other = intersect(select(authors.c.name), select(authors.c.name).where(authors.c.id == 1))
    rest = except_(select(tags.c.label), select(tags.c.label).where(tags.c.id == 1))
    return [sorted((await s.scalars(statement)).all()), (await s.scalars(other)).all(), (await s.scalars(rest)).all()]


async def cte(s: AsyncSession, m: tuple[Any, Any, Any]) -> Any:
    author, book, _ = m
    prolific = select(book.author_id, func.count().label("n")).group_by(book.author_id).cte("prolific")
    statement = select(author.name, prolific.c.n).join(prolific, prolific.c.author_id == author.id)
    return [tuple(row) for row in await s.execute(statement.order_by(author.id))]


async def orm_from_cte(s: AsyncSession, m: tuple[Any, Any, Any]) -> Any:
    author = m[0]
    named = aliased(author, select(author).where(author.id == 2).cte())
    return [a.name for a in await s.scalars(select(named))]


async def subquery_in(s: AsyncSession, m: tuple[Any, Any, Any]) -> Any:
    author, book, _ = m
    statement = select(author.name).where(author.id.in_(select(book.author_id).where(book.id == 3)))
    return (await s.scalars(statement)).all()


async def scalar_subquery(s: AsyncSession, m: tuple[Any, Any, Any]) -> Any:
    author, book, _ = m
    titles = select(func.max(book.title)).where(book.author_id == author.id).scalar_subquery()
    return [tuple(row) for row in await s.execute(select(author.id, titles).order_by(author.id))]


async def from_subquery(s: AsyncSession, m: tuple[Any, Any, Any]) -> Any:
    author = m[0]
    first = aliased(author, select(author).where(author.id == 1).subquery())
    return [a.name for a in await s.scalars(select(first))]


async def exists_only(s: AsyncSession, m: tuple[Any, Any, Any]) -> Any:
    book = m[1]
    return (await s.execute(select(exists().where(book.title.like("% b3"), book.id == 3)))).scalar()


async def exists_correlated(s: AsyncSession, m: tuple[Any, Any, Any]) -> Any:
    author, book, _ = m
    has_two = select(book.id).where(book.author_id == author.id, book.id == 2).exists()
    return (await s.scalars(select(author.name).where(has_two))).all()


async def relationship_join(s: AsyncSession, m: tuple[Any, Any, Any]) -> Any:
    author, book, _ = m
    statement = select(author.name, book.title).join(author.books).order_by(book.id)
    return [tuple(row) for row in await s.execute(statement)]


async def session_get(s: AsyncSession, m: tuple[Any, Any, Any]) -> Any:
    found = await s.get(m[0], 2)
    return found.name if found is not None else None


async def lazy_load(s: AsyncSession, m: tuple[Any, Any, Any]) -> Any:
    def load(sync: Session) -> list[str]:
        found = sync.get(m[0], 1)
        assert found is not None
        return [b.title for b in found.books] + [t.label for t in found.tags]  # two lazy loads

    return await s.run_sync(load)


async def selectin_load(s: AsyncSession, m: tuple[Any, Any, Any]) -> Any:
    author = m[0]
    statement = select(author).options(selectinload(author.books), selectinload(author.tags)).order_by(author.id)
    return [(a.name, [b.title for b in a.books], [t.label for t in a.tags]) for a in await s.scalars(statement)]


async def joined_load(s: AsyncSession, m: tuple[Any, Any, Any]) -> Any:
    author = m[0]
    statement = select(author).options(joinedload(author.books), joinedload(author.tags)).order_by(author.id)
    result = (await s.scalars(statement)).unique()
    return [(a.name, [b.title for b in a.books], [t.label for t in a.tags]) for a in result]


async def text_with_bind_key(s: AsyncSession, m: tuple[Any, Any, Any]) -> Any:
    key = m[0].__bind_key__
    return (await s.execute(text("select name from authors where id = 1"), bind_arguments={"bind_key": key})).scalar()


READS: dict[str, Case] = {
    f.__name__: f
    for f in (
        orm_select, core_select, orm_union_all, orm_union_columns, orm_except, orm_intersect, core_compound, cte,
        orm_from_cte, subquery_in, scalar_subquery, from_subquery, exists_only, exists_correlated,
        relationship_join, session_get, lazy_load, selectin_load, joined_load, text_with_bind_key,
    )
}  # fmt: skip


def expected_reads(label: str) -> dict[str, Any]:
    ada, bob = f"{label} ada", f"{label} bob"
    b1, b2, b3, t1, t2 = (f"{label} {x}" for x in ("b1", "b2", "b3", "t1", "t2"))
    return {
        "orm_select": [ada, bob],
        "core_select": [ada, bob],
        "orm_union_all": [ada, bob],
        "orm_union_columns": [ada, bob],
        "orm_except": [ada],
        "orm_intersect": [bob],
        "core_compound": [[ada, bob, t1, t2], [ada], [t2]],
        "cte": [(ada, 2), (bob, 1)],
        "orm_from_cte": [bob],
        "subquery_in": [bob],
        "scalar_subquery": [(1, b2), (2, b3)],
        "from_subquery": [ada],
        "exists_only": True,
        "exists_correlated": [ada],
        "relationship_join": [(ada, b1), (ada, b2), (bob, b3)],
        "session_get": bob,
        "lazy_load": [b1, b2, t1],
        "selectin_load": [(ada, [b1, b2], [t1]), (bob, [b3], [t2])],
        "joined_load": [(ada, [b1, b2], [t1]), (bob, [b3], [t2])],
        "text_with_bind_key": ada,
    }


@pytest.fixture
def matrix(new_db: Callable[[str], Database]) -> tuple[SQLAlchemyPlugin[Any], dict[str, Database]]:
    databases = {"default": new_db("sqlite"), "pg": new_db("postgresql"), "maria": new_db("mariadb")}
    # The default database gets the same tables, with rows of its own: a misrouted read returns these.
    engine = create_engine(databases["default"].url(sync=True))
    PgBase.metadata.create_all(engine)
    engine.dispose()
    _seed(databases["default"], "default")
    config = SQLAlchemyAsyncConfig(
        binds={key: db.url() for key, db in databases.items()},
        base=(DefaultBase, PgBase, MyBase),
        create_all=True,
    )
    return SQLAlchemyPlugin(config=config), databases


async def test_every_read_reaches_the_database_that_owns_its_tables(
    matrix: tuple[SQLAlchemyPlugin[Any], dict[str, Database]],
) -> None:
    plugin, databases = matrix
    seen: dict[str, dict[str, Any]] = {}
    async with plugin.lifespan():
        for key in SCHEMAS:
            _seed(databases[key], key)
        for key, models in SCHEMAS.items():
            seen[key] = {}
            for name, case in READS.items():
                async with plugin.session() as session:  # a fresh identity map for every case
                    seen[key][name] = await case(session, models)
        async with plugin.session() as session:
            default_text = (await session.execute(text("select name from authors where id = 1"))).scalar()

    assert seen == {key: expected_reads(key) for key in SCHEMAS}
    assert default_text == "default ada"  # text() without a bind key: the default bind, as documented


async def test_every_write_lands_in_the_database_that_owns_its_tables(
    matrix: tuple[SQLAlchemyPlugin[Any], dict[str, Database]],
) -> None:
    plugin, databases = matrix
    returned: dict[str, Any] = {}
    async with plugin.lifespan():
        for key, (author, book, _) in SCHEMAS.items():
            _seed(databases[key], key)
            async with plugin.transaction() as session:
                await session.execute(update(author).where(author.id == 2).values(name=f"{key} robert"))
                await session.execute(delete(book).where(book.id == 3))
                await session.execute(insert(book), [{"id": 4, "author_id": 1, "title": f"{key} b4"}])
                await session.merge(author(id=3, name=f"{key} cy"))
                await session.merge(author(id=1, name=f"{key} ada l."))
                if plugin.engines.engine(key).dialect.insert_returning:
                    statement = insert(author).values(id=4, name=f"{key} dee").returning(author.id, author.name)
                    returned[key] = tuple((await session.execute(statement)).one())

    for key in SCHEMAS:
        db = databases[key]
        with_returning = [(4, f"{key} dee")] if key in returned else []
        assert db.fetch("select id, name from authors order by id") == [
            (1, f"{key} ada l."), (2, f"{key} robert"), (3, f"{key} cy"), *with_returning,
        ]  # fmt: skip
        assert db.fetch("select id, title from books order by id") == [
            (1, f"{key} b1"),
            (2, f"{key} b2"),
            (4, f"{key} b4"),
        ]
        assert returned.get(key, (4, f"{key} dee")) == (4, f"{key} dee")
    assert set(returned) == {"pg", "maria"}  # both servers support INSERT ... RETURNING (MariaDB >= 10.5)
    default = databases["default"]
    assert default.fetch("select id, name from authors order by id") == [(1, "default ada"), (2, "default bob")]
    assert [row[0] for row in default.fetch("select id from books order by id")] == [1, 2, 3]


async def test_a_statement_over_tables_of_two_binds_is_refused_before_it_is_sent(
    matrix: tuple[SQLAlchemyPlugin[Any], dict[str, Database]],
) -> None:
    plugin, databases = matrix
    pg_author, my_author = SCHEMAS["pg"][0], SCHEMAS["maria"][0]
    refused = {
        "union": select(pg_author.name).union_all(select(my_author.name)),
        "subquery": select(Account.name).where(Account.author_id.in_(select(pg_author.id))),
        "join": select(Account.name, pg_author.name).join(pg_author, Account.author_id == pg_author.id),
        "joined eager load": select(Account).options(joinedload(Account.author)),
        "cte": select(select(my_author.id).cte().c.id, pg_author.name),
        "update": update(Account).where(Account.author_id == pg_author.id).values(name="x"),
    }
    messages: dict[str, str] = {}
    async with plugin.lifespan(), plugin.session() as session:
        _seed(databases["pg"], "pg")
        for name, statement in refused.items():
            with pytest.raises(CrossBindError) as raised:
                await session.execute(statement)
            messages[name] = str(raised.value)
        session.add(Account(id=1, name="ann", author_id=1))
        await session.flush()
        # A relationship across binds still loads when each load is its own statement.
        loaded = await session.scalar(select(Account).options(selectinload(Account.author)))
        session.expire(loaded, ["author"])
        lazily = await session.run_sync(lambda _: loaded.author.name)  # a lazy load, in the session's greenlet

    assert loaded is not None
    assert loaded.author.name == "pg ada"
    assert lazily == "pg ada"
    assert messages["union"] == (
        "one statement uses tables of different binds ('authors' on bind 'pg'; 'authors' on bind 'maria'), and a "
        "statement runs on one database: split it into one statement per bind, or pass "
        "bind_arguments={'bind_key': ...} if that bind's database has every table"
    )
    assert messages["joined eager load"].startswith(
        "one statement uses tables of different binds ('accounts' on bind 'default'; 'authors' on bind 'pg')"
    )


def test_a_sync_app_routes_compound_selects_by_their_tables(new_db: Callable[[str], Database]) -> None:
    """The same routing on a sync config: a union of a logs model reads the logs database."""
    from tests.plugin.models import Account, AuditEntry, Base, logs_metadata

    default, logs = new_db("sqlite"), new_db("sqlite")
    default.execute("create table audit_entries (id integer primary key, message varchar(80))")
    default.execute("insert into audit_entries values (1, 'default row')")
    config = SQLAlchemySyncConfig(
        binds={"default": default.url(sync=True), "logs": logs.url(sync=True)},
        base=(Base, logs_metadata),
        create_all=True,
    )
    plugin = SQLAlchemyPlugin(config=config)
    with plugin.lifespan():
        logs.execute("insert into audit_entries values (1, 'logs row')")
        with plugin.session() as session:
            both = select(AuditEntry.message).union_all(select(AuditEntry.message))
            assert session.scalars(both).all() == ["logs row", "logs row"]
            with pytest.raises(CrossBindError):
                session.execute(select(AuditEntry.message).union_all(select(Account.name)))
