"""Index ready jobs by kind, so that a claim finds the next reply without a sort.

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-24 08:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_job_kind_ready", "job", ["kind", "status", "run_after"])


def downgrade() -> None:
    op.drop_index("ix_job_kind_ready", table_name="job")
