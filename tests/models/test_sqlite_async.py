"""The SQLite driver: one crossing per statement, and transactions that stay whole."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.db import create_engine, session_factory
from models.sqlite_async import OneCrossingConnection


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
