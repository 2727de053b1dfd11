"""Documents found inside documents: parent and nesting depth.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: SQLite cannot add a foreign key to an existing table, so it is recreated.
    with op.batch_alter_table("document", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        # Existing rows are top-level documents; the server default only fills them in.
        batch_op.add_column(sa.Column("depth", sa.Integer(), nullable=False, server_default="0"))
        batch_op.create_index(batch_op.f("ix_document_parent_id"), ["parent_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_document_parent_id_document"), "document", ["parent_id"], ["id"]
        )
    with op.batch_alter_table("document", schema=None) as batch_op:
        batch_op.alter_column("depth", existing_type=sa.Integer(), server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("document", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_document_parent_id_document"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_document_parent_id"))
        batch_op.drop_column("depth")
        batch_op.drop_column("parent_id")
