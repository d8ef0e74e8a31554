"""Counterpart evidence: the signer's time zone and date of signing, how the link reached the
signer, paper uploads awaiting confirmation and their checks; letters' accent-free search text

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 00:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("counterparts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("time_zone", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("signed_on", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("emailed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("paper", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("pending_document_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key("fk_counterparts_pending_document_id", "documents",
                                    ["pending_document_id"], ["id"])
    with op.batch_alter_table("letters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("search_text", sa.Text(), nullable=False,
                                      server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("letters", schema=None) as batch_op:
        batch_op.drop_column("search_text")
    with op.batch_alter_table("counterparts", schema=None) as batch_op:
        batch_op.drop_constraint("fk_counterparts_pending_document_id", type_="foreignkey")
        for name in ("pending_document_id", "paper", "uploaded_at", "emailed_at", "signed_on",
                     "time_zone"):
            batch_op.drop_column(name)
