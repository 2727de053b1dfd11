"""Raw bytes of small contacts committed with their accept, until written to the blob store.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 17:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "staged_blob",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("staged_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_staged_blob")),
    )


def downgrade() -> None:
    # Bytes still staged would be lost with the table: write them to the blob store first
    # (``guichet serve`` does at start-up and its accept writer within moments).
    op.drop_table("staged_blob")
