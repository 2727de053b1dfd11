"""Index our outbound Message-IDs, which matching looks up to follow a reply's thread.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_outbound_message_message_id",
        "outbound_message",
        ["message_id"],
        postgresql_ops={"message_id": "varchar_pattern_ops"},
    )


def downgrade() -> None:
    op.drop_index("ix_outbound_message_message_id", table_name="outbound_message")
