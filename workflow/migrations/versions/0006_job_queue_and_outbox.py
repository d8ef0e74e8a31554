"""Job queue and event outbox

The outbox's two tables: the mark that an audit event was handed to a subscriber (its primary
key makes a second hand-over impossible), and when each subscriber was first seen (the
catch-up hands a subscriber only the events recorded since), and an index of events by time
for the catch-up. The job queue itself lives in
Huey's storage: ``queue.db`` beside a SQLite database, or Huey's ``queue_*`` tables, which it
creates, in a PostgreSQL one.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 04:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox_dispatches",
        sa.Column("event_id", sa.Integer(), sa.ForeignKey("events.id"), nullable=False),
        sa.Column("subscriber", sa.String(length=200), nullable=False),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", "subscriber"),
    )
    op.create_table(
        "outbox_subscribers",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    # The catch-up reads the last day's events every minute.
    op.create_index("ix_events_at", "events", ["at"])


def downgrade() -> None:
    op.drop_index("ix_events_at", table_name="events")
    op.drop_table("outbox_subscribers")
    op.drop_table("outbox_dispatches")
