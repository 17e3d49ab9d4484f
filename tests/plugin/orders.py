"""An order on the default bind and its audit row on ``logs``: the app the commit-fault tests break."""

from __future__ import annotations

from typing import TYPE_CHECKING

from litestar import post
from litestar.di import NamedDependency
from litestar.params import FromPath
from sqlalchemy import String
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

if TYPE_CHECKING:
    from tests.faults import PrivateCluster


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(20))


class Audit(Base):
    __tablename__ = "audits"
    __bind_key__ = "logs"
    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(20))


@post("/orders/{ref:str}")
async def place(ref: FromPath[str], db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add_all([Order(ref=ref), Audit(ref=ref)])


def refs(cluster: PrivateCluster, database: str, table: str) -> list[str]:
    """The ``ref`` column of ``table`` in a database of the private cluster, in insertion order."""
    return [ref for (ref,) in cluster.execute(f"select ref from {table} order by id", database=database)]
