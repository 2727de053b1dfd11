"""Full-text search over contacts and documents.

SQLite: external-content FTS5 tables (``unicode61 remove_diacritics 2``, so accents and case do
not matter) kept in sync by triggers on contact and document. PostgreSQL: a generated tsvector
column on each table with a GIN index, under the text search configuration ``guichet_french``
(a copy of ``french`` that also drops accents when the unaccent extension can be installed).
None of these objects is in the models; ``models.tables.managed_by_models`` leaves them out of
the comparison.

Beware: a later SQLite batch migration of contact or document (copy, drop, rename) drops the
triggers with the old table; such a migration must run ``create_sqlite_triggers`` again.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-23 23:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
from sqlalchemy.exc import DBAPIError

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: FTS table, content table, indexed columns.
SQLITE_INDEXES = (
    ("search_contact", "contact", ("subject", "sender", "sender_name", "text")),
    ("search_document", "document", ("filename", "text")),
)

#: PostgreSQL caps a tsvector at 1 MB: only the start of a very long text is indexed, so that
#: a huge OCR never makes the insertion of its contact fail.
PG_TEXT_CAP = 100_000
PG_VECTORS = {
    "contact": (
        "setweight(to_tsvector('guichet_french'::regconfig, coalesce(subject, '')), 'A')"
        " || setweight(to_tsvector('guichet_french'::regconfig,"
        " coalesce(sender_name, '') || ' ' || coalesce(sender, '')), 'B')"
        f" || setweight(to_tsvector('guichet_french'::regconfig,"
        f" left(coalesce(text, ''), {PG_TEXT_CAP})), 'C')"
    ),
    "document": (
        "setweight(to_tsvector('guichet_french'::regconfig, coalesce(filename, '')), 'B')"
        f" || setweight(to_tsvector('guichet_french'::regconfig,"
        f" left(coalesce(text, ''), {PG_TEXT_CAP})), 'C')"
    ),
}


def create_sqlite_triggers() -> None:
    for fts, table, columns in SQLITE_INDEXES:
        names = ", ".join(columns)
        new = ", ".join(f"new.{c}" for c in columns)
        old = ", ".join(f"old.{c}" for c in columns)
        delete = f"INSERT INTO {fts}({fts}, rowid, {names}) VALUES ('delete', old.id, {old});"  # noqa: S608
        insert = f"INSERT INTO {fts}(rowid, {names}) VALUES (new.id, {new});"  # noqa: S608
        op.execute(f"DROP TRIGGER IF EXISTS {fts}_insert")
        op.execute(f"DROP TRIGGER IF EXISTS {fts}_delete")
        op.execute(f"DROP TRIGGER IF EXISTS {fts}_update")
        op.execute(f"CREATE TRIGGER {fts}_insert AFTER INSERT ON {table} BEGIN {insert} END")
        op.execute(f"CREATE TRIGGER {fts}_delete AFTER DELETE ON {table} BEGIN {delete} END")
        # Only a change of an indexed column touches the index (status changes are frequent).
        op.execute(
            f"CREATE TRIGGER {fts}_update AFTER UPDATE OF {names} ON {table}"
            f" BEGIN {delete} {insert} END"
        )


def _upgrade_sqlite() -> None:
    for fts, table, columns in SQLITE_INDEXES:
        op.execute(
            f"CREATE VIRTUAL TABLE {fts} USING fts5({', '.join(columns)},"
            f" content='{table}', content_rowid='id',"
            " tokenize='unicode61 remove_diacritics 2')"
        )
        op.execute(f"INSERT INTO {fts}({fts}) VALUES ('rebuild')")  # noqa: S608
    create_sqlite_triggers()


def _unaccent_available() -> bool:
    bind = op.get_bind()
    try:
        # In a savepoint: a refused CREATE EXTENSION must not abort the migration's transaction.
        with bind.begin_nested():
            bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS unaccent")
    except DBAPIError:
        return False
    return True


def _upgrade_postgresql() -> None:
    op.execute("CREATE TEXT SEARCH CONFIGURATION guichet_french (COPY = pg_catalog.french)")
    if _unaccent_available():
        op.execute(
            "ALTER TEXT SEARCH CONFIGURATION guichet_french"
            " ALTER MAPPING FOR hword, hword_part, word WITH unaccent, french_stem"
        )
    for table, vector in PG_VECTORS.items():
        op.execute(
            f"ALTER TABLE {table} ADD COLUMN search_vector tsvector"
            f" GENERATED ALWAYS AS ({vector}) STORED"
        )
        op.execute(f"CREATE INDEX ix_{table}_search_vector ON {table} USING gin (search_vector)")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        _upgrade_sqlite()
    elif dialect == "postgresql":
        _upgrade_postgresql()


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for fts, _table, _columns in SQLITE_INDEXES:
            for event in ("insert", "delete", "update"):
                op.execute(f"DROP TRIGGER IF EXISTS {fts}_{event}")
            op.execute(f"DROP TABLE IF EXISTS {fts}")
    elif dialect == "postgresql":
        for table in PG_VECTORS:
            op.execute(f"DROP INDEX IF EXISTS ix_{table}_search_vector")
            op.execute(f"ALTER TABLE {table} DROP COLUMN IF EXISTS search_vector")
        op.execute("DROP TEXT SEARCH CONFIGURATION IF EXISTS guichet_french")
