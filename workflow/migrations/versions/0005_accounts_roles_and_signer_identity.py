"""Accounts, roles and signer identity

Roles replace the administrator flag (kept, and kept in step, for older code and databases);
one-time set-password links; two-factor sign-in (an encrypted TOTP secret, hashed recovery
codes, sessions waiting for their second factor); settings made in the admin pages; per signer,
an emailed one-time code before the signing page opens, and how each signer was identified.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 01:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("role", sa.String(length=16), nullable=False,
                                      server_default="staff"))
        batch_op.add_column(sa.Column("password_set_at", sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column("totp_secret", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("totp_enabled_at", sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column("totp_last_step", sa.Integer(), nullable=True))
    users = sa.table("users", sa.column("role", sa.String(16)),
                     sa.column("is_admin", sa.Boolean()),
                     sa.column("created_at", sa.DateTime(timezone=True)),
                     sa.column("password_set_at", sa.DateTime(timezone=True)))
    bind = op.get_bind()
    # Administrators stay administrators; every other account is staff. Their passwords were
    # set when the accounts were made.
    bind.execute(users.update().where(users.c.is_admin.is_(True)).values(role="admin"))
    bind.execute(users.update().values(password_set_at=users.c.created_at))

    with op.batch_alter_table("staff_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pending", sa.String(length=32), nullable=True))

    op.create_table(
        "account_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=254), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("account_links", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_account_links_user_id"), ["user_id"], unique=False)

    op.create_table(
        "recovery_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("recovery_codes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_recovery_codes_user_id"), ["user_id"],
                              unique=False)

    op.create_table(
        "app_settings",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.JSON(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=254), nullable=True),
        sa.PrimaryKeyConstraint("key"),
    )

    with op.batch_alter_table("counterparts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("verify_email", sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column("identity", sa.JSON(), nullable=True))

    op.create_table(
        "signer_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("counterpart_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("browser_hash", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["counterpart_id"], ["counterparts.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("signer_codes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_signer_codes_counterpart_id"), ["counterpart_id"],
                              unique=False)
        batch_op.create_index(batch_op.f("ix_signer_codes_browser_hash"), ["browser_hash"],
                              unique=False)


def downgrade() -> None:
    op.drop_table("signer_codes")
    with op.batch_alter_table("counterparts", schema=None) as batch_op:
        batch_op.drop_column("identity")
        batch_op.drop_column("verify_email")
    op.drop_table("app_settings")
    op.drop_table("recovery_codes")
    op.drop_table("account_links")
    with op.batch_alter_table("staff_sessions", schema=None) as batch_op:
        batch_op.drop_column("pending")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("totp_last_step")
        batch_op.drop_column("totp_enabled_at")
        batch_op.drop_column("totp_secret")
        batch_op.drop_column("password_set_at")
        batch_op.drop_column("role")
