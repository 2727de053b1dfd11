"""The async SQLite driver of the engine: aiosqlite, with one thread crossing per statement.

SQLAlchemy's aiosqlite adapter crosses to the connection's thread four times per statement
(make a cursor, execute, fetch the rows, close the cursor), each crossing a wake-up of the
event loop: a one-row SELECT in a session cost 1.1 ms, ten times its work. Every step of every
contact is a few such transactions. Here the statement, its rows and the cursor's end happen
in one call on aiosqlite's thread (the thread that owns the sqlite3 connection, so SQLite's
threading rules hold), and so do commits and rollbacks; connecting and closing are
aiosqlite's own. SQLAlchemy takes the DBAPI module as the engine's ``module`` argument
(``models.db.create_engine``).
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util.concurrency import await_

#: What one crossing brings back: description, rows, rowcount, lastrowid.
_Outcome = tuple[Any, list[Any], int, int | None]

#: How long a transaction waits for this process's other transactions on the same database,
#: as long as SQLite's ``busy_timeout`` (models/db.py) lets it wait for other processes'.
GATE_TIMEOUT_SECONDS = 30.0


class WriteGate:
    """A lock whose urgent takers go first: the accept writer, which a client waits on (an
    SMTP ``250``, a webhook's answer), passes the workers' transactions waiting for the same
    gate. A flood of accepts thus slows the pipeline down, not the acknowledgements; what is
    accepted waits durably in the job queue."""

    __slots__ = ("_changed", "_held", "_urgent")

    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._held = False
        self._urgent = 0

    def take(self, *, urgent: bool = False, timeout: float = GATE_TIMEOUT_SECONDS) -> None:
        """Wait for the gate as SQLite waits for its lock: up to ``timeout``, then its error."""
        with self._changed:
            if urgent:
                self._urgent += 1
            try:
                free = self._changed.wait_for(
                    lambda: not self._held and (urgent or not self._urgent), timeout
                )
            finally:
                if urgent:
                    self._urgent -= 1
            if not free:
                # Others may pass now that this taker is gone.
                self._changed.notify_all()
                raise sqlite3.OperationalError(
                    "database is locked: other transactions of this process held it for"
                    f" over {timeout:.0f} s"
                )
            self._held = True

    def release(self) -> None:
        with self._changed:
            self._held = False
            self._changed.notify_all()

    @contextmanager
    def held(self, *, urgent: bool = False) -> Iterator[None]:
        """The gate for the block (a transaction opened and ended in it)."""
        self.take(urgent=urgent)
        try:
            yield
        finally:
            self.release()

    def locked(self) -> bool:
        return self._held


_gates: dict[str, WriteGate] = {}
_gates_guard = threading.Lock()


def write_gate(database: str | None) -> WriteGate | None:
    """The gate this process's transactions on the SQLite file ``database`` hold from their
    BEGIN IMMEDIATE to their end (None for an in-memory database, which nothing shares).

    SQLite lets one transaction at a time hold the write lock; the others wait in its busy
    handler, which polls with sleeps growing to 100 ms. The accept writer, waiting so behind
    the workers' transactions, answered webhooks after 180 ms at the 99th percentile and up
    to 730 ms (measured in ``guichet serve`` at 200 requests/s), where the transactions it
    waited for took a few milliseconds each. Within one process they queue on this gate
    instead, and the next begins as soon as the last ends; other processes (the CLI, a backup)
    still meet SQLite's own lock.
    """
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    key = os.path.realpath(database)
    with _gates_guard:
        return _gates.setdefault(key, WriteGate())


def _statement(
    connection: sqlite3.Connection,
    begin: Callable[[sqlite3.Connection], None] | None,
    operation: str,
    parameters: Any,
    many: bool,
) -> _Outcome:
    """On the connection's thread: the transaction's BEGIN if it is still to be said, then
    the whole life of one cursor."""
    if begin is not None:
        begin(connection)
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneCrossingCursor:
    """Speaks aiosqlite's cursor API to SQLAlchemy's adapter, but runs each statement with its
    rows in one crossing; the rows then wait here, so fetching and closing cross nothing."""

    def __init__(self, adapted: OneCrossingConnection) -> None:
        self._adapted = adapted
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1
        self._rows: list[Any] = []

    async def __aenter__(self) -> OneCrossingCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def _cross(self, operation: str, parameters: Any, many: bool) -> OneCrossingCursor:
        adapted = self._adapted
        begin, adapted._begin = adapted._begin, None
        opening = functools.partial(adapted.open, begin) if begin is not None else None
        outcome: _Outcome = await adapted.cross(_statement, opening, operation, parameters, many)
        self.description, self._rows, self.rowcount, self.lastrowid = outcome
        return self

    async def execute(self, operation: str, parameters: Any = None) -> OneCrossingCursor:
        return await self._cross(operation, parameters, many=False)

    async def executemany(self, operation: str, parameters: Sequence[Any]) -> OneCrossingCursor:
        return await self._cross(operation, parameters, many=True)

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        size = self.arraysize if size is None else size
        rows, self._rows = self._rows[:size], self._rows[size:]
        return rows

    async def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    async def close(self) -> None:
        self._rows = []

    async def setinputsizes(self, *_sizes: Any) -> None:
        return None

    def setoutputsize(self, *_args: Any) -> None:
        return None


class _Cursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ()

    def _make_new_cursor(self, connection: Any) -> Any:
        adapted = self._adapt_connection
        assert isinstance(adapted, OneCrossingConnection)
        return OneCrossingCursor(adapted)


class OneCrossingConnection(AsyncAdapt_aiosqlite_connection):
    """Two crossings saved per transaction: its BEGIN goes with its first statement
    (``defer_begin``), and the pool's rollback of a connection that is in no transaction
    (after a commit) is not sent at all.

    Whether the connection is in a transaction is read from the loop's thread, so it is only
    trusted when no crossing of ours is queued or running: a task cancelled while its
    statement waits in aiosqlite's queue leaves that statement to run later (it may BEGIN),
    and its rollback must then follow it through the queue. Each crossing is counted when
    queued (by the loop's thread) and when done (by aiosqlite's), each counter written by
    one thread only.

    A transaction holds the database's ``write_gate`` from its BEGIN to its end; both are
    taken and given on aiosqlite's thread, so the event loop never waits for it.
    """

    __slots__ = ("_begin", "_done", "_gate", "_holding", "_queued")

    # Server-side cursors (streamed results) keep aiosqlite's own: they fetch in chunks.
    _cursor_cls = _Cursor

    def __init__(self, dbapi: Any, connection: Any, gate: WriteGate | None = None) -> None:
        super().__init__(dbapi, connection)
        self._begin: str | None = None
        self._queued = 0
        self._done = 0
        self._gate = gate
        #: Written on aiosqlite's thread, or on the loop's when nothing of ours is queued there.
        self._holding = False

    @property
    def _aiosqlite(self) -> aiosqlite.Connection:
        return cast(aiosqlite.Connection, self._connection)

    async def cross(self, function: Callable[..., Any], *args: Any) -> Any:
        """``function(sqlite3_connection, *args)`` on the connection's thread, counted."""
        connection = self._aiosqlite
        sqlite_connection = connection._conn
        self._queued += 1
        # aiosqlite's ``_execute`` queues a call for the connection's thread; its own cursors
        # use it the same way, and SQLAlchemy's adapter reaches into aiosqlite likewise.
        queue_call = cast(Any, connection)._execute
        return await queue_call(self._counted, function, sqlite_connection, *args)

    def _counted(self, function: Callable[..., Any], *args: Any) -> Any:
        try:
            return function(*args)
        finally:
            self._done += 1

    def defer_begin(self, statement: str) -> None:
        self._begin = statement

    def open(self, statement: str, connection: sqlite3.Connection) -> None:
        """On aiosqlite's thread: take the gate, then BEGIN."""
        if self._gate is not None and not self._holding:
            self._gate.take()
            self._holding = True
        try:
            connection.execute(statement)
        except BaseException:
            self._let_go(connection)
            raise

    def _let_go(self, connection: sqlite3.Connection) -> None:
        """On aiosqlite's thread: give the gate back once no transaction is open."""
        if self._holding and not connection.in_transaction:
            self._give_back()

    def _give_back(self) -> None:
        self._holding = False
        assert self._gate is not None
        self._gate.release()

    def cursor(self, server_side: bool = False) -> Any:
        if server_side and self._begin is not None:
            # A streamed result runs on aiosqlite's own cursor: the BEGIN goes first, alone.
            begin, self._begin = self._begin, None
            await_(self.cross(functools.partial(self.open, begin)))
        return super().cursor(server_side)

    def _idle(self) -> bool:
        connection = self._aiosqlite._connection
        if connection is None:
            return True
        # sqlite3_get_autocommit: safe to read from here once nothing of ours is in flight.
        return self._queued == self._done and not connection.in_transaction

    def rollback(self) -> None:
        self._begin = None
        if not self._idle():
            self._end(sqlite3.Connection.rollback)
        else:
            self._let_go_idle()

    def commit(self) -> None:
        self._begin = None
        if not self._idle():
            self._end(sqlite3.Connection.commit)
        else:
            self._let_go_idle()

    def _let_go_idle(self) -> None:
        # SQLite rolls a transaction back by itself after some errors (disk full, I/O): the
        # connection is idle but the gate still held. Nothing of ours runs on aiosqlite's
        # thread now, so it is safe to give it back from here.
        if self._holding:
            self._give_back()

    def _end(self, how: Callable[[sqlite3.Connection], None]) -> None:
        try:
            await_(self.cross(self._ended, how))
        except Exception as error:
            self._handle_exception(error)

    def _ended(
        self, connection: sqlite3.Connection, how: Callable[[sqlite3.Connection], None]
    ) -> None:
        try:
            how(connection)
        finally:
            self._let_go(connection)

    # Every way the connection closes first queues the gate's release on aiosqlite's thread:
    # behind whatever was queued before (a cancelled task's BEGIN may still be waiting there,
    # and takes the gate when it runs), ahead of the close.

    def close(self) -> None:
        self._queue_let_go()
        super().close()

    async def _terminate_graceful_close(self) -> None:
        self._queue_let_go()
        await super()._terminate_graceful_close()

    def _terminate_force_close(self) -> None:
        self._queue_let_go()
        super()._terminate_force_close()

    def _queue_let_go(self) -> None:
        if self._gate is not None:
            # aiosqlite's queue takes (future, call); no future: nobody waits for this one.
            self._aiosqlite._tx.put_nowait((None, self._closing))

    def _closing(self) -> None:
        """On aiosqlite's thread, as the connection closes: end its transaction, if one is
        open, and give the gate back."""
        if not self._holding:
            return
        connection = self._aiosqlite._connection
        try:
            if connection is not None and connection.in_transaction:
                connection.rollback()
        finally:
            self._give_back()


class OneCrossingDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """aiosqlite as SQLAlchemy adapts it, with ``OneCrossingCursor`` for ordinary cursors."""

    def __init__(self) -> None:
        super().__init__(aiosqlite, sqlite3)

    def connect(self, *arg: Any, **kw: Any) -> OneCrossingConnection:
        adapted = super().connect(*arg, **kw)
        database = arg[0] if arg else kw.get("database")
        gate = write_gate(database if isinstance(database, str) else None)
        return OneCrossingConnection(self, adapted._connection, gate)
