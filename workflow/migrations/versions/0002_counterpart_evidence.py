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
    _fill_search_text()


def _fill_search_text() -> None:
    """Make existing letters findable by their executive, company and signers' names."""
    from workflow.text import search_text

    bind = op.get_bind()
    letters = sa.table("letters", sa.column("id", sa.Integer),
                       sa.column("executive_name", sa.String), sa.column("company_name", sa.String),
                       sa.column("search_text", sa.Text))
    envelopes = sa.table("envelopes", sa.column("id", sa.String),
                         sa.column("letter_id", sa.Integer))
    counterparts = sa.table("counterparts", sa.column("envelope_id", sa.String),
                            sa.column("name", sa.String))
    signers: dict[int, list[str]] = {}
    for letter_id, name in bind.execute(
            sa.select(envelopes.c.letter_id, counterparts.c.name)
            .join(counterparts, counterparts.c.envelope_id == envelopes.c.id)):
        signers.setdefault(letter_id, []).append(name)
    for letter_id, executive, company in bind.execute(
            sa.select(letters.c.id, letters.c.executive_name, letters.c.company_name)).all():
        text = search_text([executive, company, *signers.get(letter_id, [])])
        bind.execute(letters.update().where(letters.c.id == letter_id)
                     .values(search_text=text))


def downgrade() -> None:
    with op.batch_alter_table("letters", schema=None) as batch_op:
        batch_op.drop_column("search_text")
    with op.batch_alter_table("counterparts", schema=None) as batch_op:
        batch_op.drop_constraint("fk_counterparts_pending_document_id", type_="foreignkey")
        for name in ("pending_document_id", "paper", "uploaded_at", "emailed_at", "signed_on",
                     "time_zone"):
            batch_op.drop_column(name)
