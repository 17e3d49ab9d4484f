"""The app's own names in ``db shell`` and ``db run``: the config's ``shell_context`` hook.

Example::

    def shell_names(names):  # names: what the shell preloads (session, <bind>_session, models, ...)
        return {"notes": NoteService(session=names["session"]), "settings": settings}

    config = SQLAlchemyAsyncConfig(binds={...}, shell_context=shell_names)

The hook runs once the engines are started (an ``async def`` hook is awaited on the shell's loop), so a
service built on ``names["session"]`` uses the shell's session: in ``--sandbox`` the sandboxed one.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from plugin import ConfigurationError
from plugin.exceptions import describe_error

if TYPE_CHECKING:
    from alchemy_cli.loader import Target

__all__ = ("AppNames", "add_app_names")


@dataclass
class AppNames:
    """What the hook added (name, what it is) and which of its names were already taken."""

    added: list[tuple[str, str]] = field(default_factory=list)
    taken: list[str] = field(default_factory=list)


def _what(value: Any) -> str:
    if inspect.isclass(value):
        return f"class {value.__name__}"
    if inspect.ismodule(value):
        return f"module {value.__name__}"
    if callable(value) and hasattr(value, "__name__"):
        return f"function {value.__name__}"
    return type(value).__name__


async def add_app_names(target: Target, names: dict[str, Any]) -> AppNames:
    """Call the config's ``shell_context`` (if any) and add what it returns to ``names``."""
    hook = target.plugin.config.shell_context
    result = AppNames()
    if hook is None:
        return result
    label = f"shell_context ({getattr(hook, '__qualname__', repr(hook))})"
    try:
        extra = hook(MappingProxyType(dict(names)))
        if inspect.isawaitable(extra):
            extra = await extra
    except Exception as exc:  # the app's code: report it in one line, as any configuration mistake
        raise ConfigurationError(target.redact(f"{label} raised {describe_error(exc)}; fix the hook")) from None
    if not isinstance(extra, Mapping):
        raise ConfigurationError(f"{label} returned a {type(extra).__name__}; return a mapping of names to objects")
    for name, value in extra.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigurationError(f"{label} returned the name {name!r}, which is not a Python identifier")
        if name in names:
            result.taken.append(name)
            continue
        names[name] = value
        result.added.append((name, _what(value)))
    return result
