"""GED drops and exports: the labels a person put on a dropped document (its index sidecar).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-23 23:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("contact") as batch:
        batch.add_column(sa.Column("dossier_hint", sa.String(length=20), nullable=True))
    with op.batch_alter_table("document") as batch:
        batch.add_column(sa.Column("doc_type_hint", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("document") as batch:
        batch.drop_column("doc_type_hint")
    with op.batch_alter_table("contact") as batch:
        batch.drop_column("dossier_hint")
