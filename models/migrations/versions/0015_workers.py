"""Job lock keys, and procrastinate's schema on PostgreSQL for the scale-out workers.

procrastinate keeps its own tables, types and functions (``procrastinate_*``), installed here
from the schema file of the installed procrastinate so that ``guichet db upgrade`` is the only
command an operator runs. A later procrastinate release ships migration files of its own; the
version is pinned in pyproject.toml and a bump must come with a migration that applies them.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-24 02:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("lock_key", sa.String(length=100), nullable=True))
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    present = bind.scalar(sa.text("SELECT to_regclass('procrastinate_jobs') IS NOT NULL"))
    if not present:
        from procrastinate.schema import SchemaManager

        # A script of many statements with "%" in its bodies: given to psycopg itself without
        # parameters, it is sent as is (SQLAlchemy would make psycopg look for placeholders),
        # on the same connection, so inside the migration's transaction.
        driver = bind.connection.driver_connection
        assert driver is not None
        driver.execute(SchemaManager.get_schema())


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for table in ("events", "periodic_defers", "jobs", "workers"):
            op.execute(f"DROP TABLE IF EXISTS procrastinate_{table} CASCADE")
        op.execute(
            "DO $$ DECLARE f record; BEGIN "
            "FOR f IN SELECT p.oid::regprocedure AS sig FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate%' "
            "LOOP EXECUTE 'DROP FUNCTION IF EXISTS ' || f.sig || ' CASCADE'; END LOOP; END $$"
        )
        for type_ in ("job_to_defer_v1", "job_event_type", "job_status"):
            op.execute(f"DROP TYPE IF EXISTS procrastinate_{type_} CASCADE")
    with op.batch_alter_table("job") as batch:
        batch.drop_column("lock_key")
