"""No change to the schema: the letter lists' indexes are made by 0009

This revision was published before the list work settled on 0009's indexes and full-text
tables; it stays, empty, so that a database already stamped with it still upgrades.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 08:00:00
"""

from __future__ import annotations

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
