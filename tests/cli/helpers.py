"""Helpers shared by the CLI tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import create_engine

if TYPE_CHECKING:
    from sqlalchemy.orm import DeclarativeBase

    from tests.databases import Database


def create_tables(db: Database, *bases: type[DeclarativeBase]) -> str:
    """Create the bases' tables in ``db`` (outside the app) and return the async URL the app should use."""
    engine = create_engine(db.url(sync=True))
    for base in bases:
        base.metadata.create_all(engine)
    engine.dispose()
    return db.url().render_as_string(hide_password=False)


def flat(text: str) -> str:
    """Terminal output as one line of single-spaced words (rich draws panels with │ and wraps lines)."""
    return " ".join(text.replace("│", " ").split())
