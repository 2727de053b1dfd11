"""Inbox: triage state of contacts.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-23 23:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "contact_triage",
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("done_by", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contact.id"], name="fk_contact_triage_contact_id_contact"
        ),
        sa.PrimaryKeyConstraint("contact_id", name="pk_contact_triage"),
    )


def downgrade() -> None:
    op.drop_table("contact_triage")
