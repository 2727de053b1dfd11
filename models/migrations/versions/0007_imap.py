"""IMAP mailboxes: folder state and refused mails.

Revision ID: 0007
Revises: 0005
Create Date: 2026-11-23 23:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "imap_folder_state",
        sa.Column("mailbox", sa.String(100), nullable=False),
        sa.Column("folder", sa.String(500), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("mailbox", "folder", name=op.f("pk_imap_folder_state")),
    )
    op.create_table(
        "imap_refused_mail",
        sa.Column("mailbox", sa.String(100), nullable=False),
        sa.Column("folder", sa.String(500), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "mailbox", "folder", "uidvalidity", "uid", name=op.f("pk_imap_refused_mail")
        ),
    )


def downgrade() -> None:
    op.drop_table("imap_refused_mail")
    op.drop_table("imap_folder_state")
