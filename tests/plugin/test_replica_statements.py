"""Which statements a read replica may run (plugin.replicas.is_read): everything else goes to the primary."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, delete, func, insert, select, text, update

from plugin.replicas import is_read

table = Table("r", MetaData(), Column("id", Integer, primary_key=True))


@pytest.mark.parametrize(
    ("statement", "read"),
    [
        (select(table), True),
        (select(func.count()).select_from(table), True),
        (select(table).union_all(select(table)), True),
        (select(table).with_for_update(), False),
        (select(table).with_for_update(read=True), False),
        (insert(table).values(id=1), False),
        (update(table).values(id=2), False),
        (delete(table), False),
        (text("select 1"), True),
        (text("  -- a comment\n SELECT * FROM r WHERE note = 'for update'"), True),
        (text("with x as (select 1) select * from x"), True),
        (text("show server_version"), True),
        (text("explain select 1"), True),
        (text("select * from r for update"), False),
        (text("select * from r for no key update"), False),
        (text("select * from r for share"), False),
        (text("select * from r lock in share mode"), False),
        (text("select * into r2 from r"), False),
        (text("insert into r values (1)"), False),
        (text("with x as (delete from r returning id) select * from x"), False),
        (text("select 1; delete from r"), False),
        (text("call refresh()"), False),
        (text("set search_path to x"), False),
        (select(delete(table).returning(table.c.id).cte("gone")), False),  # a data-modifying CTE
        (select(table).where(table.c.id.in_(select(insert(table).values(id=1).returning(table.c.id).cte()))), False),
        (select(select(table).with_for_update().subquery()), False),  # a subquery that locks rows
        (select(select(table).cte("plain")), True),
        (text("select 1").columns(), True),
        (text("insert into r values (1) returning id").columns(), False),
    ],
)
def test_is_read(statement: object, read: bool) -> None:
    assert is_read(statement) is read
