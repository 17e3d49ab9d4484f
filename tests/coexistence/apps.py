"""One app with both plugins: advanced-alchemy's (its ``litestar database`` group, alias ``db``) and ours.

``COEXIST_DIR`` holds the SQLite files; ``COEXIST_ORDER=ours-first`` registers our plugin first (the
default registers advanced-alchemy's first).
"""

from __future__ import annotations

import os

from advanced_alchemy.base import BigIntBase
from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig as AAConfig
from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin as AAPlugin
from litestar import Litestar
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from plugin import SQLAlchemyAsyncConfig, SQLAlchemyPlugin


class Gadget(BigIntBase):
    """A model advanced-alchemy's migrations manage."""

    __tablename__ = "gadget"
    name: Mapped[str] = mapped_column(String(40))


class OurBase(DeclarativeBase):
    pass


class Widget(OurBase):
    __tablename__ = "widgets"
    id: Mapped[int] = mapped_column(primary_key=True)


def create_app() -> Litestar:
    directory = os.environ["COEXIST_DIR"]
    theirs = AAPlugin(config=AAConfig(connection_string=f"sqlite+aiosqlite:///{directory}/aa.db"))
    ours = SQLAlchemyPlugin(
        config=SQLAlchemyAsyncConfig(binds={"default": f"sqlite+aiosqlite:///{directory}/ours.db"}, base=OurBase)
    )
    plugins = [ours, theirs] if os.environ.get("COEXIST_ORDER") == "ours-first" else [theirs, ours]
    return Litestar(plugins=plugins)
