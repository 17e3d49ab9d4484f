"""Wire framing for the fault proxy: which statement a client runs, and where the server's reply ends.

A :class:`Wire` reads one client message or one server message at a time and counts *requests* (client
messages the server answers with a completion marker) and *completions*: PostgreSQL's ``Query`` and
``Sync`` against ``ReadyForQuery``; MariaDB's commands (sequence id 0) against their first reply packet
(sequence id 1). With those counts a :class:`Link` can hold or swallow exactly the reply of the statement
a rule fired on, after the replies to earlier pipelined requests went through.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

_SSL_REQUEST, _GSSENC_REQUEST, _CANCEL_REQUEST = 80877103, 80877104, 80877102


@dataclass
class Message:
    raw: bytes
    sql: str | None = None
    """The statement this message makes the server run, if it runs one."""
    counted: bool = False
    """Whether this message is itself a request (its reply ends in a completion marker)."""


class Wire:
    """One connection's protocol state; subclasses know the framing."""

    def __init__(self) -> None:
        self.database: str | None = None
        self.requests = 0
        self.completions = 0

    async def read_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Message | None:
        """The next client message to forward (None: the proxy answered it itself)."""
        raise NotImplementedError

    async def read_server(self, reader: asyncio.StreamReader) -> Message:
        """The next server message; counts completions."""
        raise NotImplementedError


def _cstrings(body: bytes, count: int) -> list[str]:
    return [part.decode("utf-8", "replace") for part in body.split(b"\0", count)[:count]]


class PostgresWire(Wire):
    """PostgreSQL v3: an untyped startup phase, then ``type byte + int32 length + body`` both ways."""

    def __init__(self) -> None:
        super().__init__()
        self.started = False
        self.statements: dict[str, str] = {}
        self.portals: dict[str, str] = {}

    async def _read_startup(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Message | None:
        head = await reader.readexactly(4)
        body = await reader.readexactly(struct.unpack("!I", head)[0] - 4)
        code = struct.unpack("!I", body[:4])[0]
        if code in (_SSL_REQUEST, _GSSENC_REQUEST):  # no TLS: the proxy must read the protocol
            writer.write(b"N")
            await writer.drain()
            return None
        if code == _CANCEL_REQUEST:
            return Message(head + body)
        words = _cstrings(body[4:], body[4:].count(b"\0"))
        params = dict(zip(words[::2], words[1::2], strict=False))
        self.database = params.get("database") or params.get("user")
        self.started = True
        self.requests += 1  # answered by ReadyForQuery once authenticated
        return Message(head + body, counted=True)

    async def read_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Message | None:
        if not self.started:
            return await self._read_startup(reader, writer)
        head = await reader.readexactly(5)
        body = await reader.readexactly(struct.unpack("!I", head[1:])[0] - 4)
        kind, raw = head[:1], head + body
        if kind == b"Q":
            self.requests += 1
            return Message(raw, _cstrings(body, 1)[0], counted=True)
        if kind == b"P":  # Parse: statement name, query
            name, query = _cstrings(body, 2)
            self.statements[name] = query
        elif kind == b"B":  # Bind: portal name, statement name
            portal, statement = _cstrings(body, 2)
            self.portals[portal] = self.statements.get(statement, "")
        elif kind == b"E":  # Execute: the statement runs now; its reply ends at the next Sync's ReadyForQuery
            return Message(raw, self.portals.get(_cstrings(body, 1)[0], ""))
        elif kind == b"S":
            self.requests += 1
            return Message(raw, counted=True)
        return Message(raw)

    async def read_server(self, reader: asyncio.StreamReader) -> Message:
        head = await reader.readexactly(5)
        body = await reader.readexactly(struct.unpack("!I", head[1:])[0] - 4)
        if head[:1] == b"Z":
            self.completions += 1
            return Message(head + body, counted=True)
        return Message(head + body)


class MysqlWire(Wire):
    """MariaDB/MySQL: ``3-byte little-endian length + sequence id + body``; a command starts at sequence 0."""

    async def read_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Message | None:
        head = await reader.readexactly(4)
        body = await reader.readexactly(int.from_bytes(head[:3], "little"))
        if head[3] == 1 and self.requests == 0:  # the handshake response: it names the database
            self.database = _mysql_database(body)
        if head[3] != 0 or body[:1] == b"\x01":  # not a command, or COM_QUIT (no reply)
            return Message(head + body)
        self.requests += 1
        sql = body[1:].decode("utf-8", "replace") if body[:1] == b"\x03" else None  # COM_QUERY
        return Message(head + body, sql, counted=True)

    async def read_server(self, reader: asyncio.StreamReader) -> Message:
        head = await reader.readexactly(4)
        body = await reader.readexactly(int.from_bytes(head[:3], "little"))
        # The first packet of a command's reply has sequence id 1 (the handshake's never does): the server
        # has run the command, which is all "reply lost" needs; result-set packets that follow have 2, 3, ...
        if head[3] == 1 and self.requests:
            self.completions += 1
            return Message(head + body, counted=True)
        return Message(head + body)


def _mysql_database(body: bytes) -> str | None:
    capabilities = int.from_bytes(body[:4], "little")
    position = body.index(b"\0", 32) + 1  # after flags, max packet, charset, filler: the user name
    if capabilities & 0x00200000:  # CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        first = body[position]
        size_bytes = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first, 0)
        length = int.from_bytes(body[position + 1 : position + 1 + size_bytes], "little") if size_bytes else first
        position += 1 + size_bytes + length
    elif capabilities & 0x00008000:  # CLIENT_SECURE_CONNECTION
        position += 1 + body[position]
    else:
        position = body.index(b"\0", position) + 1
    if not capabilities & 0x00000008:  # CLIENT_CONNECT_WITH_DB
        return None
    return _cstrings(body[position:], 1)[0] or None


class RuleLike(Protocol):
    """What a link needs of a proxy rule (``tests.faults.proxy.Rule``)."""

    @property
    def action(self) -> str: ...
    @property
    def when(self) -> str: ...
    @property
    def seconds(self) -> float | None: ...


class Link:
    """One client connection and its server connection, relayed both ways with faults applied."""

    def __init__(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        wire: Wire,
        match: Callable[[str, str | None], RuleLike | None],
    ) -> None:
        self.client_reader, self.client_writer = client
        self.server_reader, self.server_writer = server
        self.wire = wire
        self.match = match
        self.swallow_from: int | None = None
        """Completion number whose reply is swallowed, after which the link is cut."""
        self.hold_from: int | None = None
        """Completion number from whose reply on server messages wait for ``gate``."""
        self.gate = asyncio.Event()
        self.gate.set()

    def cut(self) -> None:
        self.client_writer.transport.abort()
        self.server_writer.transport.abort()

    def release(self) -> None:
        self.gate.set()

    def _close_gate(self, seconds: float | None) -> None:
        self.gate.clear()
        if seconds is not None:
            asyncio.get_running_loop().call_later(seconds, self.gate.set)

    async def relay(self) -> None:
        tasks = [asyncio.ensure_future(self._client_to_server()), asyncio.ensure_future(self._server_to_client())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.cut()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _client_to_server(self) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                message = await self.wire.read_client(self.client_reader, self.client_writer)
                if message is None:
                    continue
                rule = self.match(message.sql, self.wire.database) if message.sql is not None else None
                # The reply to this statement ends with the completion of this request (or the next one,
                # for PostgreSQL's Execute, answered at the following Sync).
                target = self.wire.requests if message.counted else self.wire.requests + 1
                if rule is not None and rule.when == "before":
                    if rule.action == "drop":
                        return
                    self._close_gate(rule.seconds)
                    await self.gate.wait()
                elif rule is not None:
                    if rule.action == "drop":
                        self.swallow_from = target
                    else:
                        self.hold_from = target
                        self._close_gate(rule.seconds)
                self.server_writer.write(message.raw)
                await self.server_writer.drain()

    async def _server_to_client(self) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                message = await self.wire.read_server(self.server_reader)
                # Which reply this message belongs to: the one after the completions seen before it.
                reply = self.wire.completions + (0 if message.counted else 1)
                if self.hold_from is not None and reply >= self.hold_from:
                    await self.gate.wait()
                    self.hold_from = None
                if self.swallow_from is not None and reply >= self.swallow_from:
                    if message.counted:  # the server has finished the statement: the reply is lost
                        return
                    continue
                self.client_writer.write(message.raw)
                await self.client_writer.drain()
