"""EDI: provider invoices and interchanges.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23 23:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(precision=14, scale=2)


def upgrade() -> None:
    op.create_table(
        "edi_interchange",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("sender", sa.String(length=35), nullable=False),
        sa.Column("recipient", sa.String(length=35), nullable=False),
        sa.Column("reference", sa.String(length=35), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("error_code", sa.String(length=3), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_segment", sa.String(length=10), nullable=True),
        sa.Column("error_position", sa.Integer(), nullable=True),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.Column("contrl_file", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contact.id"], name=op.f("fk_edi_interchange_contact_id_contact")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_edi_interchange")),
        sa.UniqueConstraint("contact_id", name=op.f("uq_edi_interchange_contact_id")),
        sa.UniqueConstraint("sender", "reference", name=op.f("uq_edi_interchange_sender")),
    )
    op.create_table(
        "provider_invoice",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("interchange_id", sa.Integer(), nullable=False),
        sa.Column("message_ref", sa.String(length=35), nullable=False),
        sa.Column("provider_id", sa.String(length=35), nullable=False),
        sa.Column("provider_name", sa.String(length=200), nullable=False),
        sa.Column("number", sa.String(length=35), nullable=False),
        sa.Column("invoice_date", sa.Date(), nullable=True),
        sa.Column("service_date", sa.Date(), nullable=True),
        sa.Column("dossier_ref", sa.String(length=40), nullable=False),
        sa.Column("dossier_id", sa.Integer(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("lines", sa.JSON(), nullable=False),
        sa.Column("total_lines", MONEY, nullable=True),
        sa.Column("taxable", MONEY, nullable=True),
        sa.Column("vat", MONEY, nullable=True),
        sa.Column("total", MONEY, nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("gaps", sa.JSON(), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contact.id"], name=op.f("fk_provider_invoice_contact_id_contact")
        ),
        sa.ForeignKeyConstraint(
            ["dossier_id"], ["dossier.id"], name=op.f("fk_provider_invoice_dossier_id_dossier")
        ),
        sa.ForeignKeyConstraint(
            ["interchange_id"],
            ["edi_interchange.id"],
            name=op.f("fk_provider_invoice_interchange_id_edi_interchange"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_invoice")),
        sa.UniqueConstraint(
            "interchange_id", "message_ref", name=op.f("uq_provider_invoice_interchange_id")
        ),
    )
    with op.batch_alter_table("provider_invoice", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_provider_invoice_contact_id"), ["contact_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_provider_invoice_dossier_id"), ["dossier_id"], unique=False
        )
        batch_op.create_index("ix_provider_invoice_number", ["provider_id", "number"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("provider_invoice", schema=None) as batch_op:
        batch_op.drop_index("ix_provider_invoice_number")
        batch_op.drop_index(batch_op.f("ix_provider_invoice_dossier_id"))
        batch_op.drop_index(batch_op.f("ix_provider_invoice_contact_id"))
    op.drop_table("provider_invoice")
    op.drop_table("edi_interchange")
