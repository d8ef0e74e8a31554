"""Notices and reminders

The emails of :mod:`workflow.notices` (one row each, with what the mail server answered), the
reminder settings of an envelope, and per counterpart its reminders, its expiry warning and its
current signing link, encrypted, so a reminder repeats the link of the invitation.

Envelopes sent before this revision get no reminders (``reminder_count`` 0).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 04:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("envelopes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reminder_count", sa.Integer(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("reminder_first_after_days", sa.Integer(),
                                      nullable=False, server_default="3"))
        batch_op.add_column(sa.Column("reminder_every_days", sa.Integer(), nullable=False,
                                      server_default="3"))
    with op.batch_alter_table("counterparts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reminders_sent", sa.Integer(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("next_reminder_at", sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column("last_reminded_at", sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column("expiry_warned_for", sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column("link_sealed", sa.Text(), nullable=True))
    op.create_table(
        "notices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("letter_id", sa.Integer(), nullable=False),
        sa.Column("envelope_id", sa.String(length=36), nullable=False),
        sa.Column("counterpart_id", sa.Integer(), nullable=True),
        sa.Column("event_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("audience", sa.String(length=16), nullable=False),
        sa.Column("to_name", sa.String(length=200), nullable=False),
        sa.Column("to_email", sa.String(length=254), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["letter_id"], ["letters.id"]),
        sa.ForeignKeyConstraint(["envelope_id"], ["envelopes.id"]),
        sa.ForeignKeyConstraint(["counterpart_id"], ["counterparts.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    with op.batch_alter_table("notices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notices_letter_id"), ["letter_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_notices_envelope_id"), ["envelope_id"],
                              unique=False)
        batch_op.create_index(batch_op.f("ix_notices_status"), ["status"], unique=False)
    with op.batch_alter_table("counterparts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_counterparts_next_reminder_at"),
                              ["next_reminder_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("counterparts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_counterparts_next_reminder_at"))
    op.drop_table("notices")
    with op.batch_alter_table("counterparts", schema=None) as batch_op:
        batch_op.drop_column("link_sealed")
        batch_op.drop_column("expiry_warned_for")
        batch_op.drop_column("last_reminded_at")
        batch_op.drop_column("next_reminder_at")
        batch_op.drop_column("reminders_sent")
    with op.batch_alter_table("envelopes", schema=None) as batch_op:
        batch_op.drop_column("reminder_every_days")
        batch_op.drop_column("reminder_first_after_days")
        batch_op.drop_column("reminder_count")
