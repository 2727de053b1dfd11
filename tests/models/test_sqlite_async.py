"""The SQLite driver: one crossing per statement, and transactions that stay whole."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.db import create_engine, session_factory
from models.sqlite_async import OneCrossingConnection, WriteGate, write_gate


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    # One connection, so that every session below uses the one the test looks at.
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}", pool_size=1, max_overflow=0)
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    try:
        yield engine
    finally:
        await engine.dispose()


async def _driver_connection(engine: AsyncEngine) -> OneCrossingConnection:
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        adapted: Any = raw.dbapi_connection
    assert isinstance(adapted, OneCrossingConnection)
    return adapted


async def test_a_statement_and_its_transaction_cross_to_the_thread_twice(
    engine: AsyncEngine,
) -> None:
    adapted = await _driver_connection(engine)
    sessions = session_factory(engine)
    before = adapted._queued
    async with sessions() as session, session.begin():
        await session.execute(text("INSERT INTO t (v) VALUES ('a')"))
    # BEGIN IMMEDIATE went with the INSERT; COMMIT; no rollback when back in the pool.
    assert adapted._queued - before == 2
    before = adapted._queued
    async with sessions() as session:
        rows = (await session.execute(text("SELECT v FROM t"))).all()
    assert [tuple(r) for r in rows] == [("a",)]
    # BEGIN with the SELECT, the session's rollback at close.
    assert adapted._queued - before == 2


async def test_rows_rowcount_and_lastrowid_come_back_from_the_one_crossing(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as connection:
        inserted = await connection.execute(
            text("INSERT INTO t (v) VALUES (:v)"), [{"v": "x"}, {"v": "y"}, {"v": "z"}]
        )
        assert inserted.rowcount == 3
        single = await connection.execute(text("INSERT INTO t (v) VALUES ('w')"))
        assert single.lastrowid == 4
        returned = await connection.execute(
            text("UPDATE t SET v = upper(v) WHERE id <= 2 RETURNING id, v")
        )
        assert sorted(tuple(r) for r in returned) == [(1, "X"), (2, "Y")]
        assert (await connection.execute(text("SELECT count(*) FROM t"))).scalar() == 4


async def test_a_rollback_is_not_skipped_while_a_statement_is_still_queued(
    engine: AsyncEngine,
) -> None:
    """A task cancelled while its statement waits in aiosqlite's queue: the statement still
    runs later, BEGIN included. Its connection must not be judged idle before then, or the
    rollback would be skipped and the connection go back to the pool inside a transaction,
    holding SQLite's write lock."""
    adapted = await _driver_connection(engine)
    busy = asyncio.ensure_future(adapted.cross(lambda _connection: time.sleep(0.4)))
    sessions = session_factory(engine)

    async def write() -> None:
        async with sessions() as session, session.begin():
            await session.execute(text("INSERT INTO t (v) VALUES ('lost')"))

    writer = asyncio.ensure_future(write())
    await asyncio.sleep(0.1)
    assert not adapted._idle()  # the BEGIN and INSERT wait behind the busy call
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    await busy
    async with asyncio.timeout(5):  # a connection stuck in a transaction would block here
        async with sessions() as session, session.begin():
            await session.execute(text("INSERT INTO t (v) VALUES ('kept')"))
        async with sessions() as session:
            values = (await session.scalars(text("SELECT v FROM t ORDER BY id"))).all()
    assert values == ["kept"]
    assert not _gate(engine).locked()


def _gate(engine: AsyncEngine) -> WriteGate:
    gate = write_gate(engine.url.database)
    assert gate is not None
    return gate


async def test_a_transaction_holds_the_write_gate_from_begin_to_end(engine: AsyncEngine) -> None:
    gate = _gate(engine)
    sessions = session_factory(engine)
    async with sessions() as session, session.begin():
        assert not gate.locked()  # nothing said to the database yet
        await session.execute(text("INSERT INTO t (v) VALUES ('a')"))
        assert gate.locked()
    assert not gate.locked()

    async def failing_step() -> None:
        async with sessions() as session, session.begin():
            await session.execute(text("INSERT INTO t (v) VALUES ('b')"))
            raise RuntimeError("the step failed")

    with pytest.raises(RuntimeError):
        await failing_step()
    assert not gate.locked()
    async with sessions() as session:
        await session.execute(text("SELECT v FROM t"))
        assert gate.locked()  # reads begin IMMEDIATE too (models/db.py)
    assert not gate.locked()
    async with sessions() as session:
        values = (await session.scalars(text("SELECT v FROM t"))).all()
    assert values == ["a"]


async def test_a_transaction_sqlite_ended_itself_gives_the_gate_back(engine: AsyncEngine) -> None:
    """SQLite rolls back on its own after some errors (disk full, I/O error): the connection
    is then idle while the gate is still held; its end must give it back."""
    gate = _gate(engine)
    async with engine.connect() as connection:
        await connection.begin()
        await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
        await connection.exec_driver_sql("ROLLBACK")
        assert gate.locked()
        await connection.commit()
        assert not gate.locked()


async def test_a_connection_closed_in_a_transaction_gives_the_gate_back(
    engine: AsyncEngine,
) -> None:
    gate = _gate(engine)
    async with engine.connect() as connection:
        await connection.begin()
        await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
        assert gate.locked()
        await connection.invalidate()
    assert not gate.locked()
    async with engine.begin() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM t"))).scalar() == 0


async def test_the_gate_is_waited_for_then_the_transaction_goes_on(engine: AsyncEngine) -> None:
    """Another transaction of this process holds the gate (the accept writer, say): a session
    waits for it on aiosqlite's thread, the event loop running meanwhile."""
    gate = _gate(engine)
    gate.take()
    sessions = session_factory(engine)

    async def write() -> None:
        async with sessions() as session, session.begin():
            await session.execute(text("INSERT INTO t (v) VALUES ('after')"))

    # Given back from another thread half a second from now, as the accept writer would.
    threading.Timer(0.5, gate.release).start()
    started = time.monotonic()
    writer = asyncio.ensure_future(write())
    ticks = 0
    async with asyncio.timeout(10):
        while not writer.done():
            await asyncio.sleep(0.02)
            ticks += 1
    await writer
    # It waited for the gate, and the event loop went on meanwhile (a loop blocked on the
    # gate would have ticked once or twice).
    assert time.monotonic() - started >= 0.45
    assert ticks >= 5
    assert not gate.locked()
    async with sessions() as session:
        assert (await session.scalars(text("SELECT v FROM t"))).all() == ["after"]


def test_each_database_file_has_its_gate(tmp_path: Path) -> None:
    first = write_gate(str(tmp_path / "a.db"))
    assert first is not None
    assert write_gate(str(tmp_path / "sub" / ".." / "a.db")) is first
    assert write_gate(str(tmp_path / "b.db")) is not first
    assert write_gate(":memory:") is None
    assert write_gate(None) is None


def test_an_urgent_taker_passes_those_waiting() -> None:
    """The accept writer (urgent) goes before the workers' transactions already waiting."""
    gate = WriteGate()
    gate.take()
    order: list[str] = []

    def taker(name: str, urgent: bool) -> None:
        gate.take(urgent=urgent)
        order.append(name)
        time.sleep(0.01)
        gate.release()

    worker = threading.Thread(target=taker, args=("worker", False))
    worker.start()
    time.sleep(0.1)  # the worker waits first
    accept = threading.Thread(target=taker, args=("accept", True))
    accept.start()
    time.sleep(0.1)
    assert order == []
    gate.release()
    accept.join(5)
    worker.join(5)
    assert order == ["accept", "worker"]
    assert not gate.locked()


def test_a_gate_held_too_long_is_sqlites_locked_error() -> None:
    gate = WriteGate()
    gate.take()
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        gate.take(urgent=True, timeout=0.05)
    # The urgent taker that gave up no longer holds the others back.
    gate.release()
    gate.take(timeout=0.05)
    assert gate.locked()
