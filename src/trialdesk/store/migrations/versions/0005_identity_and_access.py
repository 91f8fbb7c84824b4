"""identity and access: invitations, grant approvals, sign-in throttling, TOTP (issue 12)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("failed_attempts")
        batch.drop_column("locked_until")
        batch.add_column(sa.Column("email", sa.String(length=254), nullable=True))
        batch.add_column(sa.Column("totp_secret_enc", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("totp_enabled_at", UTC, nullable=True))
        batch.add_column(sa.Column("totp_last_step", sa.BigInteger(), nullable=True))
        batch.create_unique_constraint("uq_users_email", ["email"])
    with op.batch_alter_table("role_grants") as batch:
        batch.add_column(sa.Column("granted_by_user_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("approved_by_user_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("granted_at", UTC, nullable=True))
    with op.batch_alter_table("auth_tokens") as batch:
        batch.add_column(sa.Column("last_used_at", UTC, nullable=True))
        batch.add_column(
            sa.Column("scope", sa.String(length=10), nullable=False, server_default="full")
        )
        batch.add_column(sa.Column("client", sa.String(length=100), nullable=True))
    op.create_table(
        "invitations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("full_name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=True),
        sa.Column("invited_by", sa.String(length=80), nullable=False),
        sa.Column("invited_by_user_id", sa.Integer(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=True),
        sa.Column("expires_at", UTC, nullable=True),
        sa.Column("approved_by_user_id", sa.Integer(), nullable=True),
        sa.Column("accepted_at", UTC, nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"]),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "grant_approvals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("invitation_id", sa.Integer(), nullable=True),
        sa.Column("grantee", sa.String(length=254), nullable=False),
        sa.Column("requested_by", sa.String(length=80), nullable=False),
        sa.Column("requested_by_user_id", sa.Integer(), nullable=True),
        sa.Column("requested_at", UTC, nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("decided_by", sa.String(length=80), nullable=True),
        sa.Column("decided_by_user_id", sa.Integer(), nullable=True),
        sa.Column("decided_name", sa.String(length=200), nullable=True),
        sa.Column("decided_at", UTC, nullable=True),
        sa.Column("meaning", sa.String(length=300), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["invitation_id"], ["invitations.id"]),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"]),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "password_resets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.Column("used_at", UTC, nullable=True),
        sa.Column("requested_by", sa.String(length=80), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "signin_throttle",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("client", sa.String(length=100), nullable=True),
        sa.Column("name", sa.String(length=254), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("first_failure_at", UTC, nullable=True),
        sa.Column("last_failure_at", UTC, nullable=True),
        sa.Column("blocked_until", UTC, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_table(
        "mail_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("recipient", sa.String(length=254), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("body_enc", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTC, nullable=False),
        sa.Column("claimed_until", UTC, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("sent_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"]),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("mail_outbox")
    op.drop_table("signin_throttle")
    op.drop_table("password_resets")
    op.drop_table("grant_approvals")
    op.drop_table("invitations")
    with op.batch_alter_table("auth_tokens") as batch:
        batch.drop_column("client")
        batch.drop_column("scope")
        batch.drop_column("last_used_at")
    with op.batch_alter_table("role_grants") as batch:
        batch.drop_column("granted_at")
        batch.drop_column("approved_by_user_id")
        batch.drop_column("granted_by_user_id")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("uq_users_email", type_="unique")
        batch.drop_column("totp_last_step")
        batch.drop_column("totp_enabled_at")
        batch.drop_column("totp_secret_enc")
        batch.drop_column("email")
        batch.add_column(sa.Column("locked_until", UTC, nullable=True))
        batch.add_column(
            sa.Column("failed_attempts", sa.Integer(), nullable=False, server_default="0")
        )
