"""Migrations on SQLite and PostgreSQL: the indexes the models declare, up and down."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from models import migrate
from models.db import sync_url


def _indexes(database_url: str, table: str) -> dict[str, list[Any]]:
    engine = sa.create_engine(sync_url(database_url))
    try:
        with engine.connect() as conn:
            found = sa.inspect(conn).get_indexes(table)
    finally:
        engine.dispose()
    return {str(index["name"]): list(index["column_names"]) for index in found}


@pytest.mark.parametrize(
    ("table", "index", "columns", "before"),
    [
        # The inbox, the SLA sweep and the purge look the audit trail up by object.
        ("audit_event", "ix_audit_event_object", ["object_type", "object_id"], "0015"),
        # A claim finds the next reply by kind without sorting the backlog.
        ("job", "ix_job_kind_ready", ["kind", "status", "run_after"], "0016"),
    ],
)
async def test_an_index_comes_with_its_migration_and_goes_on_downgrade(
    database_url: str, table: str, index: str, columns: list[str], before: str
) -> None:
    await asyncio.to_thread(migrate.upgrade, database_url)
    assert _indexes(database_url, table).get(index) == columns

    config = migrate.alembic_config(database_url)
    await asyncio.to_thread(command.downgrade, config, before)
    assert index not in _indexes(database_url, table)
    await asyncio.to_thread(migrate.upgrade, database_url)
    assert _indexes(database_url, table).get(index) == columns
