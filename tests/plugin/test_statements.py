"""SQL classification: statements split where the database would split them, words outside strings and
comments, and the sandbox's refusal rule per dialect."""

from __future__ import annotations

import pytest

from plugin.statements import sandbox_refusal, split


def refusals(sql: str, dialect: str) -> list[str | None]:
    return [sandbox_refusal(statement, dialect) for statement in split(sql, dialect)]


def test_strings_comments_and_quoting_hide_nothing_and_invent_nothing() -> None:
    sql = "select 'COMMIT; DROP' -- COMMIT\n, \"end\" /* ROLLBACK */; delete from t where a = 'it''s'"
    statements = split(sql, "postgresql")

    assert [s.words for s in statements] == [("SELECT",), ("DELETE", "FROM", "T", "WHERE", "A")]
    assert statements[1].has_word("WHERE", top_level=True)
    assert not split("delete from t where id in (select id from u where x)", "")[0].has_word("USING")
    assert split("delete from t where id in (select 1)", "")[0].tokens[-2].depth == 1


def test_dialect_quoting() -> None:
    assert [s.words for s in split("select $$ ; commit $$; select $x$;$x$", "postgresql")] == [("SELECT",)] * 2
    assert [s.words for s in split(r"select 'a\';commit' # commit", "mysql")] == [("SELECT",)]
    assert [s.words for s in split("select [a;b] from t", "sqlite")] == [("SELECT", "FROM", "T")]
    assert split("/* a /* nested */ commit */ select 1", "postgresql")[0].words == ("SELECT",)


def test_a_trigger_body_is_one_statement() -> None:
    sql = "create trigger t after insert on a begin insert into b values (1); update c set x = 1; end; commit"
    assert [s.words[0] for s in split(sql, "sqlite")] == ["CREATE", "COMMIT"]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
@pytest.mark.parametrize(
    "sql",
    ["COMMIT", "commit work", "END", "ROLLBACK", "rollback work", "BEGIN", "begin transaction", "START TRANSACTION",
     "SET autocommit = 1", "set @@autocommit=0", "set session autocommit = 1", "XA START 'x'", "PRAGMA query_only = 1",
     "PREPARE TRANSACTION 'x'", "COMMIT PREPARED 'x'", "ROLLBACK PREPARED 'x'", "select 1; commit"],
)  # fmt: skip
def test_transaction_control_is_refused_everywhere(dialect: str, sql: str) -> None:
    assert refusals(sql, dialect)[-1] is not None


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
@pytest.mark.parametrize(
    "sql",
    ["select 1", "insert into t values (1)", "update t set a = 1 where b = 2", "delete from t", "SAVEPOINT a",
     "RELEASE SAVEPOINT a", "ROLLBACK TO SAVEPOINT a", "rollback to a", "with x as (select 1) select * from x",
     "select 'commit'", "set @x = 'autocommit'"],
)  # fmt: skip
def test_what_stays_in_the_transaction_passes(dialect: str, sql: str) -> None:
    assert refusals(sql, dialect) == [None]


@pytest.mark.parametrize(
    "sql",
    ["create table t (a int)", "create temporary table t (a int)", "drop table t", "alter table t add b int",
     "truncate t",
     "rename table a to b", "lock tables t write", "unlock tables", "create user u", "grant all on t to u",
     "revoke all on t from u", "set password = 'x'", "analyze table t", "optimize table t", "flush privileges",
     "create index i on t (a)", "call p()", "prepare s from 'drop table t'", "load index into cache t",
     "/*!50000 drop table t */", "install plugin x soname 'y'", "create sequence s", "handler t open"],
)  # fmt: skip
def test_mariadb_refuses_every_implicit_commit(sql: str) -> None:
    assert refusals(sql, "mysql") != [None]
    assert refusals(sql, "mariadb") != [None]


@pytest.mark.parametrize("sql", ["create table t (a int)", "drop table t", "alter table t add b int", "truncate t"])
def test_transactional_ddl_passes_on_postgresql(sql: str) -> None:
    assert refusals(sql, "postgresql") == [None]
