"""Frozen configuration: binds, session options, dependency keys and the transaction policy.

Everything here is data and checks that need no database and no driver: key syntax, the default bind,
URL parsing, dependency-key clashes, engine kind. Checks that need a driver or the mapped models run
when the engines start (see :mod:`plugin.engines`).
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Union

from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase, Session, registry
from sqlalchemy.sql.schema import MetaData

from plugin.exceptions import ConfigurationError, DuplicateKeyError, unknown_binds
from plugin.migrations import Migrations
from plugin.policy import TransactionPolicy
from plugin.secrets import mask_url, masked_options, secret_values

if TYPE_CHECKING:
    from typing import TypeAlias

__all__ = (
    "BindConfig",
    "BindTarget",
    "ModelSource",
    "ReplicaTarget",
    "SQLAlchemyAsyncConfig",
    "SQLAlchemySyncConfig",
    "ShellContext",
)

ModelSource: TypeAlias = Union[type[DeclarativeBase], registry, MetaData]
"""Where models and tables come from: a declarative base, a ``registry`` or a ``MetaData``."""

ShellContext: TypeAlias = Callable[[Mapping[str, Any]], Union[Mapping[str, Any], Awaitable[Mapping[str, Any]]]]
"""``shell_context=``: preloaded names in, your extra names out (see ``_SQLAlchemyConfig.shell_context``)."""

BindTarget: TypeAlias = Union[str, URL, "BindConfig", AsyncEngine, Engine]
"""What a bind may be given as: a URL (string or ``URL``), a :class:`BindConfig`, or a ready engine."""

ReplicaTarget: TypeAlias = Union[str, URL, AsyncEngine, Engine]
"""What a read replica may be given as: a URL (string or ``URL``) or a ready engine."""


def parse_url(text: str) -> URL:
    """``make_url`` with errors that say what to fix and never echo the string (it holds the password)."""
    authority = text.partition("://")[2].partition("/")[0]
    if authority.count("@") > 1:
        raise ConfigurationError(
            "the URL's password contains an unencoded '@'; percent-encode the password "
            "(@ is %40; urllib.parse.quote(password, safe='') does it)"
        )
    try:
        return make_url(text)
    except ArgumentError:
        # SQLAlchemy's message does not echo the string, so no password can leak from here.
        raise ConfigurationError(
            "the URL could not be parsed; write it as dialect+driver://user:password@host:port/database"
        ) from None
    except ValueError:  # int(port) failed; its message would echo the text after the colon
        raise ConfigurationError(
            "the URL's port is not a number; write host:port with digits only, and percent-encode "
            "':' and '@' in the password (%3A, %40)"
        ) from None


_WHERE_TO_BIND = (
    "its sessions route each statement to its bind; give the database as the bind's url= or engine= instead"
)
_PLUGIN_OPTIONS = {
    "bind": _WHERE_TO_BIND,
    "binds": _WHERE_TO_BIND,
    "sync_session_class": "an async session's sync session is its routing session; remove it",
    "twophase": "set two_phase= on the config, for every bind (checked against the binds' databases at start)",
    "autobegin": "a request's transaction begins with its first statement and the plugin settles it; remove it",
}
"""Session arguments the plugin sets itself (``sync_session_class``: ``AsyncSession``'s), and what to do instead."""
SESSION_OPTIONS = frozenset(inspect.signature(Session.__init__).parameters) - {"self", *_PLUGIN_OPTIONS}
"""What a bind's ``session_options`` may hold: the keyword arguments of SQLAlchemy's ``Session``, less the
plugin's own."""
_LEGACY = frozenset({"autocommit", "future"})
"""Accepted by ``Session`` with their default value only; not offered in messages."""


def check_session_options(options: Mapping[str, Any]) -> None:
    """Refuse what ``Session`` would refuse at a request's first use of a session (a name it does not take,
    a value it rejects: the request then failed with a ``TypeError``), and the options the plugin sets itself.

    Values are checked by SQLAlchemy itself: a ``Session`` is made with the options and closed (no
    connection is opened)."""
    for name in options:
        if name in SESSION_OPTIONS:
            continue
        if name in _PLUGIN_OPTIONS:
            reason = _PLUGIN_OPTIONS[name]
            raise ConfigurationError(f"BindConfig(session_options=...): {name!r} is the plugin's: {reason}")
        offered = sorted(SESSION_OPTIONS - _LEGACY)
        close = difflib.get_close_matches(str(name), offered, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigurationError(
            f"BindConfig(session_options=...): {name!r} is not an option of SQLAlchemy's Session{hint}; "
            f"use one of {', '.join(offered)}"
        )
    try:
        Session(**options).close()
    except Exception as exc:  # SQLAlchemy's ArgumentError names the option; a TypeError of a bad value may not
        raise ConfigurationError(
            f"BindConfig(session_options=...): SQLAlchemy's Session refused {', '.join(map(repr, options))}: {exc}"
        ) from None


@dataclass(frozen=True)
class BindConfig:
    """One database: where it is and how to talk to it."""

    url: str | URL | None = None
    """SQLAlchemy URL, e.g. ``"postgresql+asyncpg://app@db/app"``. Give this or ``engine``."""
    engine: AsyncEngine | Engine | None = None
    """A ready engine to use instead of ``url``. The plugin disposes it at shutdown like its own."""
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments for ``create_engine`` / ``create_async_engine`` (``pool_size``, ``echo``, ...)."""
    session_options: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments for sessions on this bind (``expire_on_commit``, ...). The default bind's
    options also apply to the routed ``db_session``."""
    replicas: Sequence[ReplicaTarget] = ()
    """Read replicas of this database: URLs (engines made with this bind's ``engine_options``) or ready
    engines, disposed at shutdown like the bind's own. A request with a safe method (GET, HEAD, OPTIONS)
    reads from one of them until it writes on this bind; see the README's "Read replicas"."""
    replica_selection: Literal["round_robin", "random"] = "round_robin"
    """How each request picks its replica among those not cooling down."""
    replica_cooldown: float = 30.0
    """Seconds a replica that failed to connect is skipped (reads go to the next replica, then the primary)."""
    sticky_seconds: float | None = None
    """After a request wrote on this bind, the same client reads from the primary for this many seconds
    (a signed cookie; needs ``sticky_secret=`` on the config). ``None``: only the writing request does."""

    def __post_init__(self) -> None:
        if (self.url is None) == (self.engine is None):
            raise ConfigurationError(
                "a bind needs exactly one of url= or engine=; it was given "
                f"{'both' if self.url is not None else 'neither'}"
            )
        if isinstance(self.url, str):
            try:
                object.__setattr__(self, "url", parse_url(self.url))
            except ConfigurationError as exc:
                # Made directly by the app, before any bind key is known: point at the BindConfig instead.
                raise ConfigurationError(f"BindConfig(url=...): {exc}") from None
        object.__setattr__(self, "engine_options", MappingProxyType(dict(self.engine_options)))
        object.__setattr__(self, "session_options", MappingProxyType(dict(self.session_options)))
        check_session_options(self.session_options)
        object.__setattr__(self, "replicas", self._replicas())
        if self.replica_selection not in ("round_robin", "random"):
            raise ConfigurationError(
                f"BindConfig(replica_selection={self.replica_selection!r}): use 'round_robin' or 'random'"
            )
        if not isinstance(self.replica_cooldown, (int, float)) or not self.replica_cooldown >= 0:  # nan too
            raise ConfigurationError(
                f"BindConfig(replica_cooldown={self.replica_cooldown!r}) must be a number of seconds (0 or more)"
            )
        if self.sticky_seconds is not None:
            if not isinstance(self.sticky_seconds, (int, float)) or not 0 < self.sticky_seconds < math.inf:
                raise ConfigurationError(
                    f"BindConfig(sticky_seconds={self.sticky_seconds!r}) must be a positive number of seconds, or None"
                )
            if not self.replicas:
                raise ConfigurationError(
                    "BindConfig(sticky_seconds=...) keeps a client that wrote on the primary, which only means "
                    "something with replicas=[...]; add replicas or remove sticky_seconds"
                )

    def _replicas(self) -> tuple[URL | AsyncEngine | Engine, ...]:
        given = self.replicas
        if isinstance(given, (str, URL, AsyncEngine, Engine)) or not isinstance(given, Sequence):
            raise ConfigurationError(
                "BindConfig(replicas=...) takes a list of URLs or engines, e.g. replicas=[url1, url2]"
            )
        replicas: list[URL | AsyncEngine | Engine] = []
        for number, replica in enumerate(given, 1):
            if isinstance(replica, str):
                try:
                    replicas.append(parse_url(replica))
                except ConfigurationError as exc:
                    raise ConfigurationError(f"BindConfig(replicas=...): replica {number}: {exc}") from None
            elif isinstance(replica, (URL, AsyncEngine, Engine)):
                replicas.append(replica)
            else:
                raise ConfigurationError(
                    f"BindConfig(replicas=...): replica {number} is a {type(replica).__name__}; give a URL string, "
                    "a sqlalchemy URL or an engine"
                )
        return tuple(replicas)

    @property
    def replica_targets(self) -> tuple[URL | AsyncEngine | Engine, ...]:
        """The replicas, URL strings parsed (normalised in ``__post_init__``)."""
        return self.replicas  # type: ignore[return-value]

    @property
    def replica_urls(self) -> tuple[URL, ...]:
        """Each replica's URL, read from the engine when the replica was given one."""
        return tuple(r if isinstance(r, URL) else r.url for r in self.replica_targets)

    @property
    def resolved_url(self) -> URL:
        """The bind's URL, read from the engine when the bind was given one."""
        if self.engine is not None:
            return self.engine.url
        assert isinstance(self.url, URL)  # normalised in __post_init__
        return self.url

    def __repr__(self) -> str:
        where = "url" if self.engine is None else f"engine={type(self.engine).__name__}, url"
        replicas = f", replicas={[mask_url(url) for url in self.replica_urls]!r}" if self.replicas else ""
        return (
            f"BindConfig({where}={mask_url(self.resolved_url)!r}, "
            f"engine_options={masked_options(self.engine_options)!r}, "
            f"session_options={masked_options(self.session_options)!r}{replicas})"
        )

    def secrets(self) -> list[str]:
        """The raw secrets of this bind and its replicas (passwords, secret query parameters, connect_args
        secrets), to be replaced in text the plugin did not write, such as a driver's error message."""
        found = set(secret_values(self.resolved_url, self.engine_options))
        for url in self.replica_urls:
            found.update(secret_values(url, self.engine_options))
        return sorted(found, key=len, reverse=True)  # longest first, as secret_values() orders them


@dataclass(frozen=True)
class _SQLAlchemyConfig:
    """Shared by the async and the sync config; use one of those."""

    is_async: ClassVar[bool]

    binds: Mapping[str, BindTarget]
    """Every database by key, e.g. ``{"default": "sqlite+aiosqlite:///app.db", "logs": BindConfig(...)}``.
    Keys must be Python identifiers: they name dependencies (``logs_db_session``)."""
    default_bind: str = "default"
    """The bind used by models without ``__bind_key__``, by ``text()`` and by ``db_engine``."""
    base: ModelSource | Sequence[ModelSource] | None = None
    """The models and tables the plugin validates, creates and lists: a declarative base, a registry or
    a MetaData, or a sequence of them. ``None`` means every mapped class in the process. Routing works for
    any model either way."""
    session_key: str = "db_session"
    """Dependency key of the routed session. Each named bind also gets ``<bind>_<session_key>``."""
    engine_key: str = "db_engine"
    """Dependency key of the default bind's engine. Each named bind also gets ``<bind>_<engine_key>``."""
    transaction: TransactionPolicy = field(default_factory=TransactionPolicy)
    """When a request's transaction commits; also used by ``litestar db run``."""
    two_phase: bool = False
    """Commit requests that touched several binds with two-phase commit (PostgreSQL, MariaDB/MySQL), so
    that all binds commit or none does. Without it binds commit one after another in config order."""
    create_all: bool = False
    """Create missing tables on every bind at startup (only the tables routed to that bind). Needs
    ``base``, so that only your models' tables are created."""
    shutdown_timeout: float = 5.0
    """Seconds each engine gets at shutdown to close its connections. Connections still open then (a
    server that stopped answering) are abandoned with a WARNING, so the process can exit."""
    map_integrity_errors: bool = True
    """Answer an ``IntegrityError`` raised in a handler (say, by an explicit ``flush()``) with 409 Conflict,
    as a failed commit is answered. An app's own exception handler for ``IntegrityError`` wins."""
    shell_context: ShellContext | None = None
    """Your own names for ``litestar db shell`` and ``db run`` (services, repositories, settings): a
    function, plain or async, called with the names they preload (``session``, ``<bind>_session``, the
    models, ...) once the engines are started, returning a mapping of extra names. The banner lists them;
    on a clash the preloaded name is kept."""
    sticky_secret: str | bytes | None = field(default=None, repr=False)
    """Key that signs the cookie of binds with ``sticky_seconds`` (at least 16 bytes; the same on every worker
    of the app, e.g. from an environment variable). Needed only when a bind has ``sticky_seconds``."""
    sticky_cookie: str = "db_primary_until"
    """Name of that cookie: for each sticky bind the client wrote on, until when it reads from the primary."""
    migrations: Migrations | Mapping[str, Migrations] | None = None
    """Where each bind's Alembic migrations live, for ``db check`` and the health route (read only):
    ``{"default": Migrations(...), "logs": Migrations(...)}``, or one ``Migrations`` for every bind
    (Alembic's multidb template: one revision chain, a version table in each database)."""

    def __post_init__(self) -> None:
        if not isinstance(self.binds, Mapping) or not self.binds:
            raise ConfigurationError(
                'binds= needs at least one bind, e.g. binds={"default": "sqlite+aiosqlite:///app.db"}'
            )
        normalised: dict[str, BindConfig] = {}
        for key, target in self.binds.items():
            if not isinstance(key, str) or not key.isidentifier():
                raise ConfigurationError(
                    f"bind key {key!r} is not a Python identifier; it names dependencies such as "
                    f"'{key}_{self.session_key}', so use letters, digits and underscores"
                )
            normalised[key] = self._bind_config(key, target)
        object.__setattr__(self, "binds", MappingProxyType(normalised))
        if self.default_bind not in normalised:
            raise ConfigurationError(
                f"default_bind={self.default_bind!r} is not one of the configured binds "
                f"({', '.join(map(repr, normalised))}); add it to binds= or set default_bind= to one of them"
            )
        if self.create_all and self.base is None:
            raise ConfigurationError(
                "create_all=True needs base=: without it every mapped class in the process (other libraries' "
                "models included) would get its table created; pass your declarative base(s), e.g. base=Base"
            )
        if not isinstance(self.shutdown_timeout, (int, float)) or self.shutdown_timeout <= 0:
            raise ConfigurationError(f"shutdown_timeout={self.shutdown_timeout!r} must be a positive number of seconds")
        object.__setattr__(self, "migrations", MappingProxyType(self._migrations(normalised)))
        self._check_replicas(normalised)
        for name in ("session_key", "engine_key"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.isidentifier():
                raise ConfigurationError(f"{name}={value!r} is not a Python identifier; dependency keys must be")
        seen: dict[str, str] = {}
        for key, what in self.dependency_keys():
            if key in seen:
                raise DuplicateKeyError(
                    f"dependency key {key!r} would be registered twice ({seen[key]} and {what}); "
                    "rename the bind or change session_key= / engine_key="
                )
            seen[key] = what

    def _bind_config(self, key: str, target: object) -> BindConfig:
        if isinstance(target, BindConfig):
            bind = target
        elif isinstance(target, (str, URL)):
            try:
                bind = BindConfig(url=parse_url(target) if isinstance(target, str) else target)
            except ConfigurationError as exc:
                raise ConfigurationError(f"bind {key!r}: {exc}") from None
        elif isinstance(target, (AsyncEngine, Engine)):
            bind = BindConfig(engine=target)
        else:
            raise ConfigurationError(
                f"bind {key!r} is a {type(target).__name__}; give a URL string, a sqlalchemy URL, "
                "a BindConfig or an engine"
            )
        expected = AsyncEngine if self.is_async else Engine
        if bind.engine is not None and not isinstance(bind.engine, expected):
            raise ConfigurationError(
                f"bind {key!r} was given a {type(bind.engine).__name__} but {type(self).__name__} needs "
                f"{'an' if self.is_async else 'a'} {expected.__name__}; use "
                f"{'SQLAlchemySyncConfig' if self.is_async else 'SQLAlchemyAsyncConfig'} or the other engine kind"
            )
        return bind

    def _check_replicas(self, binds: Mapping[str, BindConfig]) -> None:
        expected = AsyncEngine if self.is_async else Engine
        for key, bind in binds.items():
            for number, replica in enumerate(bind.replicas, 1):
                if isinstance(replica, (AsyncEngine, Engine)) and not isinstance(replica, expected):
                    raise ConfigurationError(
                        f"bind {key!r}: replica {number} is a {type(replica).__name__} but {type(self).__name__} "
                        f"needs {'an' if self.is_async else 'a'} {expected.__name__}"
                    )
        sticky = [key for key, bind in binds.items() if bind.sticky_seconds is not None]
        if not sticky:
            return
        secret = self.sticky_secret
        if not isinstance(secret, (str, bytes)) or len(secret.encode() if isinstance(secret, str) else secret) < 16:
            raise ConfigurationError(
                f"bind {sticky[0]!r} has sticky_seconds, whose cookie is signed: set sticky_secret= to at least 16 "
                "random bytes, the same on every worker (e.g. sticky_secret=os.environ['DB_STICKY_SECRET'])"
            )
        name = self.sticky_cookie
        if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigurationError(
                f"sticky_cookie={self.sticky_cookie!r} is not a valid cookie name; use letters, digits, '_' and '-'"
            )

    @property
    def has_replicas(self) -> bool:
        """Whether any bind has read replicas (decides, once, whether requests route reads at all)."""
        return any(bind.replicas for bind in self.bind_configs.values())

    def _migrations(self, binds: Mapping[str, BindConfig]) -> dict[str, Migrations]:
        given = self.migrations
        if given is None:
            return {}
        if isinstance(given, Migrations):
            return dict.fromkeys(binds, given)
        if not isinstance(given, Mapping) or not all(isinstance(m, Migrations) for m in given.values()):
            raise ConfigurationError(
                "migrations= takes a Migrations(...) for every bind, or a mapping of bind key to Migrations(...)"
            )
        if unknown := [key for key in given if key not in binds]:
            raise ConfigurationError(f"migrations=: {unknown_binds(unknown, binds)}; fix the key or add the bind")
        return dict(given)

    @property
    def migration_configs(self) -> Mapping[str, Migrations]:
        """The binds that have migrations configured, each with its :class:`Migrations`."""
        migrations: Mapping[str, Migrations] = self.migrations  # type: ignore[assignment]  # normalised
        return migrations

    @property
    def bind_configs(self) -> Mapping[str, BindConfig]:
        """The binds, each normalised to a :class:`BindConfig`, default bind first, then config order."""
        binds: Mapping[str, BindConfig] = self.binds  # type: ignore[assignment]  # normalised in __post_init__
        return {self.default_bind: binds[self.default_bind], **binds}

    def session_key_for(self, bind: str | None) -> str:
        """Dependency key of the routed session (``None``) or of one bind's session."""
        return self.session_key if bind is None else f"{bind}_{self.session_key}"

    def engine_key_for(self, bind: str) -> str:
        """Dependency key of one bind's engine; the default bind's is plain ``engine_key``."""
        return self.engine_key if bind == self.default_bind else f"{bind}_{self.engine_key}"

    def dependency_keys(self) -> list[tuple[str, str]]:
        """Every dependency key the plugin registers, with what it provides (for messages and listings)."""
        pairs = [(self.session_key, "the routed session"), (self.engine_key, f"engine of bind {self.default_bind!r}")]
        for bind in self.binds:
            if bind != self.default_bind:
                pairs += [
                    (self.session_key_for(bind), f"session of bind {bind!r}"),
                    (self.engine_key_for(bind), f"engine of bind {bind!r}"),
                ]
        return pairs


@dataclass(frozen=True)
class SQLAlchemyAsyncConfig(_SQLAlchemyConfig):
    """Config for async apps: ``AsyncEngine`` per bind, ``AsyncSession`` per request.

    Example::

        config = SQLAlchemyAsyncConfig(
            binds={"default": "sqlite+aiosqlite:///app.db", "logs": "sqlite+aiosqlite:///logs.db"},
            base=Base,
        )
        app = Litestar(route_handlers=[...], plugins=[SQLAlchemyPlugin(config=config)])
    """

    is_async: ClassVar[bool] = True


@dataclass(frozen=True)
class SQLAlchemySyncConfig(_SQLAlchemyConfig):
    """Config for sync apps: ``Engine`` per bind, ``Session`` per request (sync handlers run in threads)."""

    is_async: ClassVar[bool] = False
