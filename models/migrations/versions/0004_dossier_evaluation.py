"""Dossier evaluation (missing documents, coverage, claim type confidence, cause) and held replies.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 21:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dossier", schema=None) as batch_op:
        # Existing dossiers start with nothing missing and no coverage computed yet.
        batch_op.add_column(sa.Column("missing", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("coverage", sa.JSON(), nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("claim_type_confidence", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("cause", sa.String(length=40), nullable=True))
    with op.batch_alter_table("dossier", schema=None) as batch_op:
        batch_op.alter_column("missing", existing_type=sa.JSON(), server_default=None)
        batch_op.alter_column("coverage", existing_type=sa.JSON(), server_default=None)
    with op.batch_alter_table("outbound_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("send_after", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("decided_by", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbound_message", schema=None) as batch_op:
        batch_op.drop_column("decided_at")
        batch_op.drop_column("decided_by")
        batch_op.drop_column("send_after")
    with op.batch_alter_table("dossier", schema=None) as batch_op:
        batch_op.drop_column("cause")
        batch_op.drop_column("claim_type_confidence")
        batch_op.drop_column("coverage")
        batch_op.drop_column("missing")
