"""Models whose names collide: with another module's model, and with a shell name (``text``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from plugin import SQLAlchemyAsyncConfig
from tests.cli.clash_other import Customer as OtherCustomer
from tests.cli.clash_other import OtherBase

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ("Customer", "OtherCustomer", "config", "text_model")


class ClashBase(DeclarativeBase):
    pass


class Customer(ClashBase):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)


class text(ClashBase):
    __tablename__ = "texts"
    id: Mapped[int] = mapped_column(primary_key=True)


text_model = text


def config(tmp_path: Path) -> SQLAlchemyAsyncConfig:
    return SQLAlchemyAsyncConfig(
        binds={"default": f"sqlite+aiosqlite:///{tmp_path}/clash.db"}, base=(ClashBase, OtherBase)
    )
