"""Where each bind points, for the shell's banner and prompt: host and database, never a password.

A bind is *local* when it is a SQLite file or its host is this machine (``localhost``, a loopback
address, a Unix socket). Anything else is shown in red, as Rails shows a production console: a
reminder that what you type there reaches a shared server.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = ("Location", "locate")


@dataclass(frozen=True)
class Location:
    where: str
    """``host:port/database``, or the SQLite file."""
    short: str
    """For the prompt: ``host/database``, or the SQLite file's name."""
    local: bool


def _is_local(host: str | None) -> bool:
    if not host or host == "localhost" or host.startswith("/"):  # no host or a directory: a Unix socket
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def locate(url: URL) -> Location:
    """Where ``url`` points."""
    if url.get_backend_name() == "sqlite":
        database = url.database or ":memory:"
        return Location(database, PurePath(database).name or database, local=True)
    host = url.host or "localhost"
    port = f":{url.port}" if url.port else ""
    database = f"/{url.database}" if url.database else ""
    return Location(f"{host}{port}{database}", f"{host}{database}", local=_is_local(url.host))
