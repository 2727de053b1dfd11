"""Engines and sessions for SQLite (WAL, the embedded default) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from models.dispatch import StoreSession
from models.sqlite_async import OneCrossingConnection, OneCrossingDBAPI

SessionFactory = async_sessionmaker[AsyncSession]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the HTTP API read while intake writes; synchronous=FULL makes a commit survive
    # power loss, which "persist before acknowledging" promises to the SMTP client.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
    # The driver's implicit transactions start DEFERRED; a reader that later writes then fails
    # with "database is locked" instead of waiting. We begin every transaction ourselves.
    dbapi_connection.isolation_level = None


def _sqlite_begin(connection: Any) -> None:
    dbapi_connection = connection.connection.dbapi_connection
    if isinstance(dbapi_connection, OneCrossingConnection):
        # Said with the transaction's first statement, in the same crossing to its thread.
        dbapi_connection.defer_begin("BEGIN IMMEDIATE")
        return
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def sync_url(url: str) -> str:
    """The same database for synchronous tools (Alembic): drop the async driver."""
    parsed = make_url(url)
    if parsed.drivername == "sqlite+aiosqlite":
        return parsed.set(drivername="sqlite").render_as_string(hide_password=False)
    return url


def ensure_sqlite_folder(url: str) -> None:
    """SQLite creates the file but not its folder; a fresh GUICHET_HOME has neither."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def _set_up_sqlite(engine: Engine) -> None:
    event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "begin", _sqlite_begin)


#: Statement parameters are message bodies, addresses, phone numbers: a database error must not
#: carry them into the logs (SQLAlchemy puts them in the exception's text by default).
_PRIVATE = {"hide_parameters": True}


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    parsed = make_url(url)
    kwargs = {**_PRIVATE, **kwargs}
    if parsed.get_backend_name() == "sqlite":
        ensure_sqlite_folder(url)
        if parsed.drivername == "sqlite+aiosqlite":
            # aiosqlite with one thread crossing per statement instead of four.
            kwargs.setdefault("module", OneCrossingDBAPI())
        engine = create_async_engine(url, **kwargs)
        _set_up_sqlite(engine.sync_engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True, **kwargs)
    raise ValueError(
        f"unsupported database URL {parsed.render_as_string()}: use sqlite or postgresql"
    )


def create_sync_engine(url: str) -> Engine:
    """A synchronous engine on the same database, set up like ``create_engine``'s, for the
    one thread that writes accepts (``models.accept``)."""
    if make_url(url).get_backend_name() == "sqlite":
        engine = sqlalchemy.create_engine(sync_url(url), pool_size=1, max_overflow=1, **_PRIVATE)
        _set_up_sqlite(engine)
        return engine
    return sqlalchemy.create_engine(
        sync_url(url), pool_size=1, max_overflow=1, pool_pre_ping=True, **_PRIVATE
    )


def session_factory(engine: AsyncEngine) -> SessionFactory:
    # StoreSession carries the hook that dispatches new jobs to PostgreSQL workers.
    return async_sessionmaker(engine, expire_on_commit=False, sync_session_class=StoreSession)
