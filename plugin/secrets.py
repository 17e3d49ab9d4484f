"""Keeping passwords out of everything the plugin and the CLI show: URLs, options, DSNs, messages.

One rule decides what is secret: a name that contains ``pass``, ``pwd``, ``secret``, ``token``, ``key``
or ``credential`` (``password``, ``sslpassword``, ``api_key``, ...). Its value is replaced by ``***``
wherever it appears: a URL's password, the URL's query string (asyncpg and psycopg take
``?password=...``), the keys of ``connect_args`` and nested mappings, and DSN strings inside them
(``postgresql://user:pw@host/db`` or libpq's ``host=db password=pw``).

:func:`secret_values` lists the raw secrets of a bind, so that text the plugin did not write (a
driver's error message) can have them replaced before it is shown.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import URL

__all__ = ("MASK", "is_secret_name", "mask_dsn", "mask_url", "masked_options", "secret_values")

MASK = "***"

_SECRET_NAME = re.compile(r"pass|pwd|secret|token|key|credential", re.IGNORECASE)
# ``scheme://user:password@`` inside any string; the password runs to the last ``@`` before the path,
# so an unencoded ``@`` in it is masked too.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][\w+.-]*://[^:/?#@\s]*:)(?P<secret>[^/?#\s]*)(?P<tail>@)")
# ``name=value`` pairs (libpq keyword DSNs, query strings) whose name looks secret; quoted or bare values.
_PAIR = re.compile(
    r"(?P<head>(?P<name>[\w.-]+)\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&;,]*)", re.IGNORECASE
)


def is_secret_name(name: object) -> bool:
    """Whether an option or parameter called ``name`` holds a secret."""
    return isinstance(name, str) and bool(_SECRET_NAME.search(name))


def mask_dsn(text: str) -> str:
    """``text`` with URL passwords and secret ``name=value`` pairs replaced by ``***``."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['tail']}", text)
    return _PAIR.sub(lambda m: f"{m['head']}{MASK}" if is_secret_name(m["name"]) else m[0], text)


def mask_url(url: URL) -> str:
    """Render ``url`` for humans: the password and every secret query parameter shown as ``***``."""
    # A placeholder that URL rendering leaves as it is (it would percent-encode ``***``).
    placeholder = "MASKEDSECRET0"
    query = {name: placeholder if is_secret_name(name) else value for name, value in url.query.items()}
    return url.set(query=query).render_as_string(hide_password=True).replace(placeholder, MASK)


def masked_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``options`` (``engine_options``, ``connect_args``, ...) safe to show."""
    return {name: MASK if is_secret_name(name) else _masked_value(value) for name, value in options.items()}


def _masked_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return masked_options(value)
    if isinstance(value, str):
        return mask_dsn(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_masked_value(item) for item in value)
    return value


def secret_values(url: URL | None, options: Mapping[str, Any]) -> list[str]:
    """Every secret a bind holds, raw and percent-decoded, longest first (to replace them in text)."""
    found: set[str] = set()
    if url is not None:
        if url.password:
            found.add(str(url.password))
        for name, value in url.query.items():
            if is_secret_name(name):
                found.update([value] if isinstance(value, str) else value)
    found.update(_option_secrets(options))
    found |= {unquote(value) for value in found}
    return sorted((value for value in found if value), key=len, reverse=True)


def _option_secrets(value: Any, name: object = None) -> Iterator[str]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _option_secrets(item, key)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _option_secrets(item, name)
    elif isinstance(value, str):
        if is_secret_name(name):
            yield value
        for match in _URL_PASSWORD.finditer(value):
            yield match["secret"]
        for match in _PAIR.finditer(value):
            if is_secret_name(match["name"]):
                yield match["secret"].strip("'\"")
    elif is_secret_name(name) and value is not None and not isinstance(value, bool):
        yield str(value)
