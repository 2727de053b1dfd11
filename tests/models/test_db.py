"""Engines: what a database error tells the logs."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from guichet.logs import redact
from models.db import create_sync_engine
from models.store import Store
from models.tables import Contact

SECRET = "Mon IBAN est FR76 3000 6000 0112 3456 7890 189, mon diagnostic : fracture"


async def test_a_database_error_does_not_carry_what_was_written(store: Store) -> None:
    """The text of a refused statement's error is what the logs get ('could not store a
    message: ...'): the statement, never its values (message bodies, addresses, IBANs).
    SQLAlchemy leaves the parameters out; the log filter masks what the server quotes."""
    # No channel: the NOT NULL constraint refuses the row, on either back end.
    statement = insert(Contact).values(text=SECRET, sender="jean.dupont@example.org")
    with pytest.raises(IntegrityError) as on_async:
        async with store.sessions() as session, session.begin():
            await session.execute(statement)

    def on_the_accept_writers_engine() -> str:
        engine = create_sync_engine(store.engine.url.render_as_string(hide_password=False))
        try:
            with pytest.raises(IntegrityError) as raised, engine.begin() as connection:
                connection.execute(statement)
            return str(raised.value)
        finally:
            engine.dispose()

    for text in (str(on_async.value), await asyncio.to_thread(on_the_accept_writers_engine)):
        assert "INSERT INTO contact" in text
        assert "hidden due to hide_parameters" in text
        # PostgreSQL quotes the refused row in its own detail: the log filter masks that.
        logged = redact(text)
        assert "FR76" not in logged and "fracture" not in logged and "jean.dupont" not in logged
