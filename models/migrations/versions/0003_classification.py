"""Classification results on contacts and documents, and corrections kept as training data.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 21:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("contact", schema=None) as batch_op:
        # Existing contacts have no entities yet; the default only fills them in.
        batch_op.add_column(sa.Column("entities", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.alter_column("entities", existing_type=sa.JSON(), server_default=None)
    with op.batch_alter_table("document", schema=None) as batch_op:
        batch_op.add_column(sa.Column("language", sa.String(length=5), nullable=True))
    op.create_table(
        "training_example",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=True),
        sa.Column("document_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("label", sa.JSON(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contact.id"], name=op.f("fk_training_example_contact_id_contact")
        ),
        sa.ForeignKeyConstraint(
            ["document_id"], ["document.id"], name=op.f("fk_training_example_document_id_document")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_example")),
    )
    with op.batch_alter_table("training_example", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_training_example_contact_id"), ["contact_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("training_example", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_training_example_contact_id"))
    op.drop_table("training_example")
    with op.batch_alter_table("document", schema=None) as batch_op:
        batch_op.drop_column("language")
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.drop_column("entities")
