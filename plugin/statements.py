"""Reading SQL text: split it into statements, drop comments, and say what each statement is.

:func:`split` turns a string into :class:`Statement` objects made of :class:`Token` objects (words,
strings, quoted names, punctuation, each with its parenthesis depth), so rules can look at the leading
keywords, or at a keyword outside any string or comment, without a regular expression tripping over
``'COMMIT'`` in a string literal or ``-- DROP`` in a comment. :func:`sandbox_refusal` is the rule the
sandbox (:mod:`plugin.sandbox`) applies to every statement before it reaches the driver.

The tokenizer knows the quoting of the three supported databases: ``'...'`` (``''`` and, on
MariaDB/MySQL, backslash escapes), ``"..."``, backquotes, ``[...]`` (SQLite), PostgreSQL dollar quoting
and nested block comments, ``#`` comments and executable ``/*! ... */`` comments (MariaDB/MySQL run
their contents, so they are flagged, never skipped). It does not validate SQL; the database does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ("Statement", "Token", "is_plain_read", "sandbox_refusal", "shorten", "split")

TokenKind = Literal["word", "string", "name", "punct"]

_WORD = re.compile(r"[A-Za-z_@][A-Za-z0-9_$@]*")
_ROUTINES = frozenset({"TRIGGER", "PROCEDURE", "FUNCTION", "EVENT"})
_AFTER_WITH = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE"})
_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


@dataclass(frozen=True)
class Token:
    """One lexical piece of a statement. ``value`` of a word is upper-cased; ``depth`` counts open ``(``."""

    kind: TokenKind
    value: str
    depth: int


@dataclass(frozen=True)
class Statement:
    """One statement: its text (without the ``;``) and its tokens, comments left out."""

    text: str
    tokens: tuple[Token, ...]
    executable_comment: bool = False
    """It holds a MariaDB/MySQL ``/*! ... */`` comment, whose contents those servers run."""

    @property
    def words(self) -> tuple[str, ...]:
        """The upper-cased words outside strings and comments, in order."""
        return tuple(token.value for token in self.tokens if token.kind == "word")

    def starts_with(self, *words: str) -> bool:
        """Whether the statement's first words are ``words`` (upper case)."""
        return self.words[: len(words)] == words

    def has_word(self, word: str, *, top_level: bool = False) -> bool:
        """Whether ``word`` appears outside strings and comments (only outside parentheses if ``top_level``)."""
        return any(t.kind == "word" and t.value == word and not (top_level and t.depth) for t in self.tokens)

    @property
    def verb(self) -> str | None:
        """What the statement does: its first word, or after a ``WITH`` clause the first top-level
        ``SELECT``/``INSERT``/``UPDATE``/``DELETE``/``MERGE``/``REPLACE`` (``None`` when it has no words)."""
        words = [token.value for token in self.tokens if token.kind == "word" and not token.depth]
        if not words:
            return None
        if words[0] == "WITH":
            return next((word for word in words[1:] if word in _AFTER_WITH), None)
        return words[0]

    @property
    def label(self) -> str:
        """The statement for messages, on one line and shortened."""
        return shorten(self.text)


def shorten(sql: str, width: int = 60) -> str:
    """``sql`` on one line, cut to ``width`` characters for messages."""
    text = " ".join(sql.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _is_mysql(dialect: str) -> bool:
    return dialect in ("mysql", "mariadb")


class _Scanner:
    def __init__(self, sql: str, dialect: str) -> None:
        self.sql, self.dialect = sql, dialect
        self.statements: list[Statement] = []
        self.tokens: list[Token] = []
        self.start = 0
        self.depth = 0
        self.blocks = 0  # BEGIN ... END bodies of CREATE TRIGGER/PROCEDURE/FUNCTION: their ';' do not split
        self.executable = False

    def add(self, kind: TokenKind, value: str) -> None:
        if kind == "word":
            self._track_block(value)
        self.tokens.append(Token(kind, value, self.depth))

    def _track_block(self, word: str) -> None:
        words = [t.value for t in self.tokens if t.kind == "word"]
        routine = (
            bool(words) and words[0] == "CREATE" and bool({"TRIGGER", "PROCEDURE", "FUNCTION", "EVENT"} & set(words))
        )
        if not routine:
            return
        if word in ("BEGIN", "CASE"):
            self.blocks += 1
        elif word in ("IF", "LOOP", "WHILE", "REPEAT", "FOR") and words[-1] == "END":
            self.blocks += 1  # `END IF` closes what `END` alone would have: undo that
        elif word == "END" and self.blocks:
            self.blocks -= 1

    def finish(self, end: int) -> None:
        if self.tokens or self.executable:  # a lone /*! ... */ "comment" is a statement on MariaDB/MySQL
            text = self.sql[self.start : end].strip()
            self.statements.append(Statement(text, tuple(self.tokens), self.executable))
        self.tokens, self.depth, self.blocks, self.executable = [], 0, 0, False
        self.start = end + 1

    def _quoted(self, i: int, quote: str, *, backslash: bool) -> int:
        """Index after the closing ``quote`` (a doubled quote is part of the text)."""
        sql, n = self.sql, len(self.sql)
        j = i + 1
        while j < n:
            if backslash and sql[j] == "\\":
                j += 2
                continue
            if sql[j] == quote:
                if j + 1 < n and sql[j + 1] == quote:
                    j += 2
                    continue
                return j + 1
            j += 1
        return n

    def _block_comment(self, i: int) -> int:
        sql, n = self.sql, len(self.sql)
        nests = self.dialect == "postgresql"
        level, j = 1, i + 2
        while j < n and level:
            if sql.startswith("*/", j):
                level, j = level - 1, j + 2
            elif nests and sql.startswith("/*", j):
                level, j = level + 1, j + 2
            else:
                j += 1
        return j

    def scan(self) -> list[Statement]:  # noqa: PLR0912 - one branch per lexical form reads best flat
        sql, n, mysql = self.sql, len(self.sql), _is_mysql(self.dialect)
        i = 0
        while i < n:
            c = sql[i]
            if c.isspace():
                i += 1
            elif sql.startswith("--", i) or (mysql and c == "#"):
                end = sql.find("\n", i)
                i = n if end < 0 else end + 1
            elif sql.startswith("/*", i):
                if sql.startswith(("/*!", "/*M!"), i):
                    self.executable = True  # MariaDB/MySQL run this "comment"
                i = self._block_comment(i)
            elif c == "'":
                # PostgreSQL's E'...' strings take backslash escapes (the E was read as a word just before).
                escape_string = bool(self.tokens) and self.tokens[-1].value == "E" and sql[i - 1] in "eE"
                backslash = mysql or escape_string
                end = self._quoted(i, "'", backslash=backslash)
                self.add("string", sql[i:end])
                i = end
            elif c in '"`':
                end = self._quoted(i, c, backslash=mysql)
                self.add("string" if (mysql and c == '"') else "name", sql[i:end])
                i = end
            elif c == "[" and self.dialect == "sqlite":
                end = sql.find("]", i)
                end = n if end < 0 else end + 1
                self.add("name", sql[i:end])
                i = end
            elif c == "$" and self.dialect == "postgresql" and (m := _DOLLAR.match(sql, i)):
                end = sql.find(m.group(0), m.end())
                end = n if end < 0 else end + len(m.group(0))
                self.add("string", sql[i:end])
                i = end
            elif m := _WORD.match(sql, i):
                self.add("word", m.group(0).upper())
                i = m.end()
            elif c == ";" and not self.blocks:
                self.finish(i)
                i += 1
            else:
                if c == "(":
                    self.depth += 1
                elif c == ")":
                    self.depth = max(0, self.depth - 1)
                self.add("punct", c)
                i += 1
        self.finish(n)
        return self.statements


def split(sql: str, dialect: str = "") -> list[Statement]:
    """The statements in ``sql`` (empty ones dropped), tokenized for ``dialect`` (``sqlite``, ``postgresql``,
    ``mysql``/``mariadb``; empty: the quoting common to all)."""
    return _Scanner(sql, dialect).scan()


# -- the sandbox's rule -------------------------------------------------------------------------------

_ENDS = "it would end the sandbox's transaction and make what was done in it permanent"
_STARTS = "transaction control belongs to the sandbox (on MariaDB/MySQL it also commits the open transaction)"

# MariaDB's documented list of statements that commit implicitly ("SQL statements that cause an implicit
# commit"), by leading keywords; MySQL's list is a subset. Only used to say *why*: on MariaDB/MySQL the
# sandbox lets through only the statements in _MYSQL_SAFE and refuses everything else.
_MYSQL_IMPLICIT_COMMIT = (
    "ALTER", "ANALYZE TABLE", "CACHE INDEX", "CHANGE MASTER", "CHANGE REPLICATION", "CHECK TABLE", "CREATE",
    "DROP", "FLUSH", "GRANT", "INSTALL", "LOAD INDEX", "LOCK", "OPTIMIZE", "RENAME", "REPAIR", "RESET", "REVOKE",
    "SHUTDOWN", "START SLAVE", "START REPLICA", "STOP", "TRUNCATE", "UNINSTALL", "UNLOCK",
)  # fmt: skip
# Statements that stay inside the transaction on MariaDB/MySQL (reads, DML, savepoints, session variables).
_MYSQL_SAFE = frozenset(
    {"SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "WITH", "VALUES", "TABLE", "SHOW", "DESCRIBE", "DESC",
     "EXPLAIN", "SAVEPOINT", "RELEASE", "ROLLBACK", "SET", "DO", "USE", "HELP", "LOAD", "ANALYZE"}
)  # fmt: skip


def _transaction_control(statement: Statement) -> str | None:  # noqa: PLR0911 - one return per rule
    words = statement.words
    first = words[0] if words else ""
    if first in ("COMMIT", "END") or statement.starts_with("ABORT"):
        return _ENDS
    if first == "ROLLBACK":
        if len(words) > 1 and words[1] == "PREPARED":
            return "it would settle another prepared transaction, outside the sandbox"
        if "TO" in words[1:4]:  # ROLLBACK [WORK|TRANSACTION] TO [SAVEPOINT] name: stays inside
            return None
        return "it would end the sandbox's transaction; use session.rollback() (it rolls back to a savepoint)"
    if first == "BEGIN" or statement.starts_with("START", "TRANSACTION"):
        return _STARTS
    if statement.starts_with("PREPARE", "TRANSACTION"):
        return _ENDS
    if first == "XA":
        return "XA transactions would run outside the sandbox's transaction"
    if first == "SET" and ("AUTOCOMMIT" in words or "@@AUTOCOMMIT" in words):
        return "switching autocommit would commit the sandbox's transaction"
    if statement.starts_with("PRAGMA", "QUERY_ONLY"):
        return "PRAGMA query_only changes what the connection may do after the sandbox"
    return None


def _mysql_refusal(statement: Statement) -> str | None:  # noqa: PLR0911 - one return per rule
    words = statement.words
    first = words[0] if words else ""
    if statement.executable_comment:
        return "MariaDB/MySQL run the contents of /*! ... */ comments, which cannot be checked; remove the comment"
    if statement.starts_with("CREATE", "TEMPORARY") or statement.starts_with("DROP", "TEMPORARY"):
        return "a temporary table is not rolled back and would outlive the sandbox on its pooled connection"
    for prefix in _MYSQL_IMPLICIT_COMMIT:
        if statement.starts_with(*prefix.split()):
            return "MariaDB/MySQL commit the open transaction before (and after) this statement"
    if statement.starts_with("SET", "PASSWORD") or statement.starts_with("SET", "DEFAULT", "ROLE"):
        return "MariaDB/MySQL commit the open transaction before this statement"
    if first == "LOAD" and not statement.starts_with("LOAD", "DATA") and not statement.starts_with("LOAD", "XML"):
        return "MariaDB/MySQL commit the open transaction before this statement"
    if first == "ANALYZE" and not (len(words) > 1 and words[1] in ("SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE")):
        return "MariaDB/MySQL commit the open transaction before this statement"
    if first == "CALL":
        return "a stored procedure may commit on MariaDB/MySQL; run its statements instead"
    if first in ("PREPARE", "EXECUTE", "DEALLOCATE"):
        return "the text of a prepared statement cannot be checked; run the statement itself"
    if first and first not in _MYSQL_SAFE:
        return f"{first} is not known to stay inside a transaction on MariaDB/MySQL"
    return None


def sandbox_refusal(statement: Statement, dialect: str) -> str | None:
    """Why a sandbox must not run ``statement`` on ``dialect`` (``None``: it stays inside the transaction).

    Refused everywhere: transaction control in SQL (``COMMIT``, ``ROLLBACK`` other than to a savepoint,
    ``BEGIN``, ``START TRANSACTION``, ``SET autocommit``, ``XA``, two-phase statements, ``PRAGMA
    query_only``). On MariaDB/MySQL also every statement that commits implicitly (DDL, ``TRUNCATE``,
    ``LOCK``, ``RENAME``, users and grants, ...): there, only reads, DML, savepoints and ``SET`` pass.
    """
    reason = _transaction_control(statement)
    if reason is None and _is_mysql(dialect):
        reason = _mysql_refusal(statement)
    return reason


_READ_VERBS = frozenset({"SELECT", "SHOW", "EXPLAIN", "VALUES", "TABLE", "DESCRIBE", "DESC"})


def is_plain_read(statement: Statement) -> bool:
    """Whether a read replica can run ``statement``: a query that neither writes nor locks rows.

    ``SELECT``, ``SHOW``, ``EXPLAIN``, ``VALUES``, ``TABLE``, ``DESCRIBE`` (or ``WITH ... SELECT``), without
    ``FOR UPDATE``/``FOR SHARE``/``LOCK IN SHARE MODE``, without ``SELECT ... INTO`` (which makes a table on
    PostgreSQL) and without a data-modifying ``WITH``. Anything else, unknown verbs included, is not: the
    primary runs it. ``EXPLAIN ANALYZE`` of a write counts as a read; it fails on a standby.
    """
    if statement.executable_comment or statement.verb not in _READ_VERBS:
        return False
    words = statement.words
    if "INTO" in words and statement.verb == "SELECT":
        return False
    if words[0] == "WITH" and {"INSERT", "UPDATE", "DELETE", "MERGE"} & set(words):  # a data-modifying WITH
        return False
    return not any(
        (word == "FOR" and words[i + 1 : i + 2] in (("UPDATE",), ("SHARE",), ("NO",), ("KEY",)))
        or (word == "LOCK" and words[i + 1 : i + 3] == ("IN", "SHARE"))
        for i, word in enumerate(words)
    )
