"""Alembic environment: migrates the database named in the Alembic config, offline or online."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from models.tables import Base, managed_by_models

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        include_name=managed_by_models,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with connectable.connect() as connection:
        # Batch mode lets later ALTERs work on SQLite, which cannot alter most columns.
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,
            # The full-text objects of migration 0014 live beside the models, not in them.
            include_name=managed_by_models,
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # Fronts and workers starting together on several hosts all upgrade: one at a
                # time, the others then find nothing left to do. Released at commit.
                connection.exec_driver_sql("SELECT pg_advisory_xact_lock(4242001)")
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
