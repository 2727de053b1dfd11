"""Migrations on SQLite and PostgreSQL: the indexes the models declare, up and down."""

from __future__ import annotations

import asyncio
from typing import Any

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


async def test_audit_trail_is_indexed_by_object_and_the_index_comes_off_on_downgrade(
    database_url: str,
) -> None:
    await asyncio.to_thread(migrate.upgrade, database_url)
    wanted = ["object_type", "object_id"]
    assert _indexes(database_url, "audit_event").get("ix_audit_event_object") == wanted

    config = migrate.alembic_config(database_url)
    await asyncio.to_thread(command.downgrade, config, "0015")
    assert "ix_audit_event_object" not in _indexes(database_url, "audit_event")
    await asyncio.to_thread(migrate.upgrade, database_url)
    assert _indexes(database_url, "audit_event").get("ix_audit_event_object") == wanted


async def test_ready_jobs_are_indexed_by_kind_and_the_index_comes_off_on_downgrade(
    database_url: str,
) -> None:
    await asyncio.to_thread(migrate.upgrade, database_url)
    wanted = ["kind", "status", "run_after"]
    assert _indexes(database_url, "job").get("ix_job_kind_ready") == wanted

    config = migrate.alembic_config(database_url)
    await asyncio.to_thread(command.downgrade, config, "0016")
    assert "ix_job_kind_ready" not in _indexes(database_url, "job")
    await asyncio.to_thread(migrate.upgrade, database_url)
    assert _indexes(database_url, "job").get("ix_job_kind_ready") == wanted
