"""Repository-style services that ask the session for its dialect, as the README shows.

Such services (advanced-alchemy's repositories among them) call ``session.get_bind()`` with no
arguments once, to learn the dialect, and then write dialect-specific SQL. The documented rule:
``get_bind()`` with no arguments answers for the session's own bind (the default bind on
``db_session``, the pinned bind on ``<bind>_db_session``), so a service for a model on a bind of another
dialect is built on ``<bind>_db_session``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from litestar import Litestar, delete, get
from litestar.di import NamedDependency
from litestar.params import FromQuery
from sqlalchemy import String, any_, select
from sqlalchemy import delete as sql_delete
from sqlalchemy.dialects.postgresql import array
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from plugin import SQLAlchemyAsyncConfig, SQLAlchemyPlugin

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sqlalchemy.ext.asyncio import AsyncSession

    from tests.databases import Database

pytestmark = [pytest.mark.anyio, pytest.mark.postgresql]


class ServiceBase(DeclarativeBase):
    pass


class Order(ServiceBase):
    """On the default bind (PostgreSQL)."""

    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)


class Visit(ServiceBase):
    """On the ``logs`` bind (SQLite): another dialect than the default bind's."""

    __tablename__ = "visits"
    __bind_key__ = "logs"
    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(String(40))


class Repository:
    """The README's example: learns the dialect once, from ``get_bind()`` without arguments."""

    def __init__(self, session: AsyncSession, model: Any) -> None:
        self.session = session
        self.model = model
        self.dialect = session.get_bind().dialect.name

    async def delete_many(self, ids: Sequence[int]) -> None:
        one_array = self.dialect == "postgresql"  # PostgreSQL: one array parameter, not one per id
        condition = self.model.id == any_(array(ids)) if one_array else self.model.id.in_(ids)
        await self.session.execute(sql_delete(self.model).where(condition))


@delete("/visits", status_code=200)
async def delete_visits(ids: FromQuery[list[int]], logs_db_session: NamedDependency[AsyncSession]) -> str:
    visits = Repository(logs_db_session, Visit)  # Visit lives on "logs": build its service there
    await visits.delete_many(ids)
    return visits.dialect


@delete("/orders", status_code=200)
async def delete_orders(ids: FromQuery[list[int]], db_session: NamedDependency[AsyncSession]) -> str:
    orders = Repository(db_session, Order)  # Order lives on the default bind: db_session is right
    await orders.delete_many(ids)
    return orders.dialect


@get("/dialects")
async def dialects(db_session: NamedDependency[AsyncSession], logs_db_session: NamedDependency[AsyncSession]) -> Any:
    # The routed session still routes every statement by its tables; only the no-argument question
    # "which bind are you?" answers with the default bind.
    paths = (await db_session.scalars(select(Visit.path).order_by(Visit.id))).all()
    return {
        "db_session": db_session.get_bind().dialect.name,
        "logs_db_session": logs_db_session.get_bind().dialect.name,
        "visits_via_db_session": paths,
    }


async def test_services_built_on_the_models_bind_session_use_its_dialect(new_db: Callable[[str], Database]) -> None:
    from litestar.testing import AsyncTestClient

    default, logs = new_db("postgresql"), new_db("sqlite")
    config = SQLAlchemyAsyncConfig(
        binds={"default": default.url(), "logs": logs.url()}, base=ServiceBase, create_all=True
    )
    app = Litestar([delete_visits, delete_orders, dialects], plugins=[SQLAlchemyPlugin(config=config)])
    async with AsyncTestClient(app) as client:
        logs.execute("insert into visits (id, path) values (1, '/a'), (2, '/b'), (3, '/c')")
        default.execute("insert into orders (id) values (1), (2), (3)")
        visits = await client.delete("/visits", params={"ids": [1, 3]})
        orders = await client.delete("/orders", params={"ids": [2]})
        answers = (await client.get("/dialects")).json()

    assert (visits.status_code, visits.text) == (200, "sqlite")
    assert (orders.status_code, orders.text) == (200, "postgresql")
    assert logs.fetch("select id, path from visits") == [(2, "/b")]
    assert default.fetch("select id from orders order by id") == [(1,), (3,)]
    assert answers == {"db_session": "postgresql", "logs_db_session": "sqlite", "visits_via_db_session": ["/b"]}
