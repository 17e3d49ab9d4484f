"""The private SQLAlchemy names plugin/_sqlalchemy.py relies on still behave as it assumes.

If SQLAlchemy changes them, these fail first and say which assumption broke.
"""

from __future__ import annotations

from sqlalchemy import Column, Integer, MetaData, Table, select
from sqlalchemy.orm import DeclarativeBase

from plugin._sqlalchemy import registries, structure_key


class PrivateBase(DeclarativeBase):
    pass


def test_registries_lists_live_registries() -> None:
    assert PrivateBase.registry in registries()


def test_structure_key_ignores_values_and_tells_same_named_tables_apart() -> None:
    first = Table("t", MetaData(), Column("id", Integer, primary_key=True))
    second = Table("t", MetaData(), Column("id", Integer, primary_key=True))
    one, two = select(first).where(first.c.id == 1), select(first).where(first.c.id == 2)
    assert structure_key(one) == structure_key(two)  # parameter values are not part of the structure
    assert structure_key(select(first)) != structure_key(select(second))  # tables by identity, not name
    assert hash(structure_key(one)) == hash(structure_key(two))


def test_the_cache_key_is_memoized_on_the_statement() -> None:
    """Routing computes the key before SQLAlchemy does; it must then cost SQLAlchemy nothing."""
    table = Table("m", MetaData(), Column("id", Integer, primary_key=True))
    statement = select(table)
    assert statement._generate_cache_key() is statement._generate_cache_key()
