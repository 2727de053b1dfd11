"""Web chat: conversations (token hashes only) and the replies recorded for them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 23:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chat_conversation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(length=40), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("visitor_name", sa.String(length=200), nullable=False),
        sa.Column("visitor_email", sa.String(length=320), nullable=False),
        sa.Column("visitor_phone", sa.String(length=40), nullable=False),
        sa.Column("language", sa.String(length=5), nullable=False),
        sa.Column("peer", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_conversation")),
        sa.UniqueConstraint("public_id", name=op.f("uq_chat_conversation_public_id")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_chat_conversation_token_sha256")),
    )
    op.create_table(
        "chat_reply",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("outbound_message_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["chat_conversation.id"],
            name=op.f("fk_chat_reply_conversation_id_chat_conversation"),
        ),
        sa.ForeignKeyConstraint(
            ["outbound_message_id"],
            ["outbound_message.id"],
            name=op.f("fk_chat_reply_outbound_message_id_outbound_message"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_reply")),
        sa.UniqueConstraint("outbound_message_id", name=op.f("uq_chat_reply_outbound_message_id")),
    )
    with op.batch_alter_table("chat_reply", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_chat_reply_conversation_id"), ["conversation_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("chat_reply", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_chat_reply_conversation_id"))
    op.drop_table("chat_reply")
    op.drop_table("chat_conversation")
