"""The sticky cookie: a client that wrote on a bind with ``sticky_seconds`` reads from its primary for a while.

The cookie (``sticky_cookie``, default ``db_primary_until``) holds, for each such bind the client wrote on,
the Unix time until which its reads go to the primary, and an HMAC-SHA256 of that list keyed with the
config's ``sticky_secret``::

    db_primary_until=default:1765049012.250|logs:1765049007.031|<signature>; Max-Age=5; Path=/; HttpOnly; SameSite=Lax

A cookie that does not verify (another secret, edited, truncated) is ignored: the client reads from the
replicas, as it would without one. The cookie only ever sends a client *to the primary*, so the worst a
forged one could do is more load on the primary, and the signature stops even that. Entries whose time
has passed are dropped; a request that writes again on the bind moves its time forward.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ("StickyCookie",)


class StickyCookie:
    """Reads and writes the signed cookie of one config."""

    def __init__(self, name: str, secret: str | bytes) -> None:
        self.name = name
        self._key = secret.encode() if isinstance(secret, str) else secret
        self._prefix = name.encode() + b"="

    def _sign(self, payload: str) -> str:
        digest = hmac.new(self._key, f"{self.name}={payload}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def read(self, headers: Iterable[tuple[bytes, bytes]], now: float) -> dict[str, float]:
        """The binds still sticky for this request's client, with their end times (empty when none or forged)."""
        for name, value in headers:
            if name != b"cookie":
                continue
            for part in value.split(b";"):
                cookie = part.strip()
                if cookie.startswith(self._prefix):
                    return self._verify(cookie[len(self._prefix) :].decode("latin-1").strip('"'), now)
        return {}

    def _verify(self, value: str, now: float) -> dict[str, float]:
        payload, _, signature = value.rpartition("|")
        # Bytes: compare_digest refuses str with non-ASCII characters, which a client can send (a 500).
        if not payload or not hmac.compare_digest(signature.encode("latin-1"), self._sign(payload).encode()):
            return {}
        found: dict[str, float] = {}
        for entry in payload.split("|"):
            key, _, until = entry.partition(":")
            try:
                moment = float(until)
            except ValueError:
                return {}
            if moment > now:
                found[key] = moment
        return found

    def header(self, until: Mapping[str, float], now: float, *, secure: bool) -> tuple[bytes, bytes]:
        """The ``set-cookie`` header that keeps these binds sticky until their times (all of them in the future)."""
        payload = "|".join(f"{key}:{moment:.3f}" for key, moment in sorted(until.items()))
        max_age = max(1, math.ceil(max(until.values()) - now))
        cookie = f"{self.name}={payload}|{self._sign(payload)}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Lax"
        return b"set-cookie", (cookie + ("; Secure" if secure else "")).encode("latin-1")
