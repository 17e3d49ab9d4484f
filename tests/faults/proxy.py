"""A TCP proxy on 127.0.0.1 that injects faults into PostgreSQL or MariaDB/MySQL client traffic.

It runs its own event loop in a daemon thread, so sync tests (psycopg, pymysql), async tests (asyncpg,
asyncmy) and subprocesses (uvicorn) can all connect through it, and every control method can be called
from any thread. It reads the wire protocol of each connection: the SQL a client runs (PostgreSQL simple
``Query``, or extended ``Parse``/``Bind``/``Execute`` followed through statement and portal names;
MariaDB ``COM_QUERY``), and the server's replies (PostgreSQL ``ReadyForQuery``; MariaDB's one reply
packet). On a statement matching a rule it can:

- ``drop_on(pattern, when="before")``: cut the client and the server off before the server sees it;
- ``drop_on(pattern, when="after")``: forward it, let the server run it to its end, then cut the client
  off without the reply ("the reply was lost": the client cannot know the outcome);
- ``stall_on(pattern, seconds=None, when=...)``: hold the statement (``before``) or its reply (``after``)
  for ``seconds``, or until :meth:`FaultProxy.release`;

and at any time :meth:`FaultProxy.cut_all` closes every connection, :meth:`FaultProxy.refuse` makes new
ones fail. PostgreSQL TLS requests are answered "no TLS" by the proxy itself; MariaDB clients must not ask
for TLS. Rules can be limited to connections to one ``database`` (from the startup message; PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from tests.faults.ports import PortLease, lease_port, port_is_free
from tests.faults.wire import Link, MysqlWire, PostgresWire, Wire

if TYPE_CHECKING:
    from collections.abc import Iterator

Protocol = Literal["postgresql", "mysql"]
When = Literal["before", "after"]

COMMIT = r"^\s*commit\s*;?\s*$"
"""A plain ``COMMIT`` (not ``COMMIT PREPARED``)."""
COMMIT_PREPARED = r"^\s*commit\s+prepared\b"
INSERT = r"^\s*insert\b"
ROLLBACK_PREPARED = r"^\s*rollback\s+prepared\b"
PREPARE_TRANSACTION = r"^\s*prepare\s+transaction\b"
XA_PREPARE = r"^\s*xa\s+prepare\b"
XA_COMMIT = r"^\s*xa\s+commit\b"


@dataclass(eq=False)
class Rule:
    """One fault: what it matches, what it does, and the statements it has fired on so far."""

    pattern: re.Pattern[str]
    action: Literal["drop", "stall"]
    when: When
    database: str | None = None
    times: int | None = 1
    """How many times it fires; None: every time."""
    seconds: float | None = None
    """How long a stall lasts; None: until :meth:`FaultProxy.release`."""
    fired: list[str] = field(default_factory=list)
    """The SQL of each statement it fired on."""
    _event: threading.Event = field(default_factory=threading.Event, repr=False)

    def matches(self, sql: str, database: str | None) -> bool:
        exhausted = self.times is not None and len(self.fired) >= self.times
        wrong_database = self.database is not None and self.database != database
        return not exhausted and not wrong_database and self.pattern.search(sql) is not None

    def wait(self, timeout: float = 10.0) -> bool:
        """Block until the rule has fired once; False on timeout."""
        return self._event.wait(timeout)

    async def wait_async(self, timeout: float = 10.0) -> bool:
        """:meth:`wait` for async tests (waits in a worker thread, not on the test's loop)."""
        return await asyncio.to_thread(self._event.wait, timeout)


class FaultProxy:
    """A fault-injecting proxy in front of ``upstream_port`` on 127.0.0.1; see the module docstring.

    Example::

        with FaultProxy.leased(cluster.port) as proxy:
            engine = create_async_engine(cluster.url(name, port=proxy.port))
            rule = proxy.drop_on(COMMIT_PREPARED, when="after", database=name)
            ...
            assert rule.fired
    """

    def __init__(self, upstream_port: int, port: int, protocol: Protocol = "postgresql") -> None:
        self.upstream_port = upstream_port
        self.port = port
        self.protocol: Protocol = protocol
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._links: set[Link] = set()
        self._refusing = False
        self._lease: PortLease | None = None
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    def __repr__(self) -> str:
        return f"FaultProxy(127.0.0.1:{self.port} -> {self.upstream_port}, {self.protocol})"

    @classmethod
    @contextlib.contextmanager
    def leased(cls, upstream_port: int, protocol: Protocol = "postgresql") -> Iterator[FaultProxy]:
        """A started proxy on a leased port (``FAULT_PORTS``); closed and the port released at exit."""
        lease = lease_port(port_is_free, highest_first=True)
        proxy = cls(upstream_port, lease.port, protocol)
        try:
            proxy.start()
            yield proxy
        finally:
            proxy.close()
            lease.release()

    # -- control (any thread) --------------------------------------------------------------------------

    def drop_on(
        self, pattern: str, *, when: When = "after", database: str | None = None, times: int | None = 1
    ) -> Rule:
        """Cut the connection on a statement matching ``pattern`` (case-insensitive ``re.search``)."""
        return self._add(Rule(re.compile(pattern, re.IGNORECASE), "drop", when, database, times))

    def stall_on(
        self,
        pattern: str,
        *,
        seconds: float | None = None,
        when: When = "after",
        database: str | None = None,
        times: int | None = 1,
    ) -> Rule:
        """Hold a matching statement (``before``) or its reply (``after``) for ``seconds`` or until released."""
        return self._add(Rule(re.compile(pattern, re.IGNORECASE), "stall", when, database, times, seconds))

    def pass_through(self) -> None:
        """Remove every rule and release every stall: from now on the proxy only forwards."""
        with self._lock:
            self._rules.clear()
        self.release()

    def release(self) -> None:
        """Let every stalled statement or reply through."""
        self._loop.call_soon_threadsafe(self._release_all)

    def cut_all(self) -> None:
        """Close every open connection at once, client and server side (a network cut)."""
        asyncio.run_coroutine_threadsafe(self._cut_all(), self._loop).result(5)

    def refuse(self, refusing: bool = True) -> None:
        """While refusing, a new connection is closed as soon as it is accepted (the server looks down)."""
        self._refusing = refusing

    @property
    def connections(self) -> int:
        """Client connections open through the proxy now."""
        return len(self._links)

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name=repr(self), daemon=True)
        self._thread.start()
        if not started.wait(10) or self._server is None:
            raise RuntimeError(f"{self!r} did not start")

    def close(self) -> None:
        if self._thread is None:
            return
        if self._loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the proxy's own loop --------------------------------------------------------------------------

    def _add(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def _match(self, sql: str, database: str | None) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(sql, database):
                    rule.fired.append(sql)
                    rule._event.set()
                    return rule
        return None

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        )
        started.set()
        try:
            self._loop.run_forever()
        finally:
            # A link cut at shutdown may still be unwinding when the loop stops: finish it here, as
            # asyncio.run() does, rather than leave a pending task for the garbage collector to report.
            try:
                pending = asyncio.all_tasks(self._loop)
                for task in pending:
                    task.cancel()
                if pending:  # gather() of nothing looks for a current loop (a warning on early 3.10/3.11)
                    self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            finally:
                self._loop.close()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._cut_all()
        self._release_all()

    async def _cut_all(self) -> None:
        for link in list(self._links):
            link.cut()

    def _release_all(self) -> None:
        for link in self._links:
            link.release()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            client_writer.transport.abort()
            return
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_writer.transport.abort()
            return
        wire: Wire = PostgresWire() if self.protocol == "postgresql" else MysqlWire()
        link = Link((client_reader, client_writer), (server_reader, server_writer), wire, self._match)
        self._links.add(link)
        try:
            await link.relay()
        finally:
            self._links.discard(link)
