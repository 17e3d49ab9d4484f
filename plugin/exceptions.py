"""One error tree for the plugin.

::

    AlchemyError                      base of everything this package raises on purpose
    ├── ConfigurationError            the config cannot work; raised at app creation or startup
    │   ├── BindKeyError              a bind key that is not configured (model, table, lookup)
    │   ├── BindConflictError         a table whose bind cannot be told (hierarchy or MetaData spans binds)
    │   ├── DuplicateKeyError         two binds or dependencies would share one key
    │   ├── DriverNotInstalledError   the URL names a driver whose package is missing
    │   ├── DriverMismatchError       an async driver in a sync config, or the reverse
    │   └── MigrationsError           a bind's Alembic migrations cannot be read (db check, health)
    ├── LifecycleError                engines used before startup or after shutdown; a write after
    │                                 the request's transaction was settled
    ├── CrossBindError                one statement reads or writes tables of different binds
    ├── SandboxError                  a sandbox could not be opened or rolled back (see plugin.sandbox)
    │   └── StatementRefusedError     a statement that would escape a sandbox, refused before it ran
    └── CommitError                   a commit failed; the request gets an error response
        └── CommitConflictError       ... because of an integrity error (HTTP 409)

Every message says what happened, to what, and what to do. None contains a password: URLs are
rendered with :func:`mask_url` (see :mod:`plugin.secrets`) before they reach a message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from litestar.exceptions import HTTPException
from litestar.status_codes import HTTP_409_CONFLICT, HTTP_500_INTERNAL_SERVER_ERROR

from plugin.secrets import mask_url

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from sqlalchemy.engine import Engine, ExceptionContext

__all__ = (
    "AlchemyError",
    "BindConflictError",
    "BindKeyError",
    "CommitConflictError",
    "CommitError",
    "ConfigurationError",
    "CrossBindError",
    "DriverMismatchError",
    "DriverNotInstalledError",
    "DuplicateKeyError",
    "LifecycleError",
    "MigrationsError",
    "SandboxError",
    "StatementRefusedError",
    "mask_url",
)


def describe_error(exc: BaseException) -> str:
    """``IntegrityError (UniqueViolationError): <the driver's words>`` on one line.

    SQLAlchemy's own text (the statement and its parameters, which may hold user data) is left out.
    """
    orig = getattr(exc, "orig", None) or exc
    name = type(exc).__name__
    if type(orig).__name__ != name:
        name += f" ({type(orig).__name__})"
    words = " ".join(str(orig).split())
    return f"{name}: {words}" if words else name


_FAILED_ON = "_plugin_failed_on_engine"
"""The attribute :func:`note_failing_engine` sets on a database error."""


def note_failing_engine(context: ExceptionContext) -> None:
    """``handle_error`` listener of every bind's engine: record on the error the engine that raised it, so a
    commit's report names the bind the failing statement ran on, whichever binds the request used. Each plugin
    reads the engine through its own binds (two apps may share an engine under different keys). Stateless, so
    left on an engine given to the plugin after it stopped."""
    if context.sqlalchemy_exception is not None and context.engine is not None:
        setattr(context.sqlalchemy_exception, _FAILED_ON, context.engine)


def failing_engine(exc: BaseException) -> Engine | None:
    """The engine :func:`note_failing_engine` recorded on ``exc`` itself (not on an error it was raised from:
    that one may be another unit of work's)."""
    engine: Engine | None = getattr(exc, _FAILED_ON, None)
    return engine


def quote_keys(keys: Iterable[str]) -> str:
    """``'a', 'b'`` for messages; ``(none)`` when empty."""
    return ", ".join(repr(k) for k in keys) or "(none)"


class AlchemyError(Exception):
    """Base class of every error the plugin raises deliberately."""


class ConfigurationError(AlchemyError):
    """The configuration cannot work. Raised when the app is created or when it starts."""


class BindKeyError(ConfigurationError, KeyError):
    """A bind key that is not among the configured binds."""

    def __init__(self, message: str) -> None:
        super().__init__(message)

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def unknown_binds(keys: Sequence[str], configured: Iterable[str]) -> BindKeyError:
    """The one error for bind keys that are not configured: names them and the configured ones."""
    subject = f"bind {keys[0]!r} is" if len(keys) == 1 else f"binds {quote_keys(keys)} are"
    return BindKeyError(f"{subject} not configured (configured: {quote_keys(configured)})")


class BindConflictError(ConfigurationError):
    """A table whose bind cannot be told: a class hierarchy whose tables would span binds, or an unmapped
    table on a ``MetaData`` shared by models of different binds. Raised at startup and when routing."""


class DuplicateKeyError(ConfigurationError):
    """Two binds, or two dependencies, would be registered under the same key."""


class DriverNotInstalledError(ConfigurationError):
    """The URL names a database driver whose package is not installed."""


class DriverMismatchError(ConfigurationError):
    """An async driver in a sync config, or a sync driver in an async config."""


class MigrationsError(ConfigurationError):
    """A bind's migrations cannot be read: Alembic missing, no such folder or ini, a broken revision file."""


class LifecycleError(AlchemyError):
    """Engines were used before startup, after shutdown, or started twice; or a session wrote after its
    request's transaction was settled."""


class CrossBindError(AlchemyError):
    """One statement reads or writes tables that live on different binds; no database has them all.

    Raised by the routed session before anything is sent. Split the statement per bind, or name the bind
    with ``bind_arguments={"bind_key": ...}`` (or use that bind's session) if its database has every table.
    """


class SandboxError(AlchemyError):
    """A sandbox could not be opened, or could not be rolled back on every bind (the message says which)."""


class StatementRefusedError(SandboxError):
    """A statement that would end or escape a sandbox's transaction; it was not sent to the database."""

    def __init__(self, bind: str, statement: str, reason: str) -> None:
        super().__init__(f"bind {bind!r}: refused {statement!r} in the sandbox: {reason}")
        self.bind = bind
        self.statement = statement
        self.reason = reason


class CommitError(AlchemyError, HTTPException):
    """Committing the request's transaction failed; nothing more of it will be committed.

    Raised through Litestar's exception handling, so an app can map it (by this class, or by its status
    code) like any other exception. ``committed`` lists the binds whose commit is known to have gone
    through, ``failed`` the bind whose commit failed, and ``unknown`` the binds whose outcome could not be
    learnt (the connection died before the server's answer arrived; with two-phase commit: a prepared
    transaction that could not be resolved, named with its statement in the ERROR log). Writes through
    engines outside the binds appear in ``committed`` and ``unknown`` as ``"(an engine outside the binds)"``.
    """

    status_code = HTTP_500_INTERNAL_SERVER_ERROR

    def __init__(
        self,
        message: str,
        *,
        committed: tuple[str, ...] = (),
        failed: str | None = None,
        unknown: tuple[str, ...] = (),
    ) -> None:
        HTTPException.__init__(self, detail=self.public_detail())
        self.message = message
        self.committed = committed
        self.failed = failed
        self.unknown = unknown

    @classmethod
    def public_detail(cls) -> str:
        """What the HTTP client is told; the full message goes to the log only."""
        return "The request's changes could not be saved."

    def __str__(self) -> str:
        return self.message


class CommitConflictError(CommitError):
    """The commit violated a constraint (unique key, foreign key, ...): HTTP 409."""

    status_code = HTTP_409_CONFLICT

    @classmethod
    def public_detail(cls) -> str:
        return "The request's changes conflict with data already stored."
