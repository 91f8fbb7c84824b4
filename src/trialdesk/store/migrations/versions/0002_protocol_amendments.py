"""protocol amendments (PROT-2, PROT-3)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("protocol_versions") as batch:
        batch.add_column(
            sa.Column("status", sa.String(length=10), server_default="signed", nullable=False)
        )
        batch.add_column(sa.Column("effective_from", sa.Date(), nullable=True))
    op.create_table(
        "protocol_amendments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("previous_version_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("effective_from", sa.Date(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("needs_statistician", sa.Boolean(), nullable=False),
        sa.Column("manager_by", sa.String(length=80), nullable=False),
        sa.Column("manager_name", sa.String(length=200), nullable=False),
        sa.Column("manager_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("manager_meaning", sa.String(length=200), nullable=False),
        sa.Column("statistician_by", sa.String(length=80), nullable=True),
        sa.Column("statistician_name", sa.String(length=200), nullable=True),
        sa.Column("statistician_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("statistician_meaning", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["previous_version_id"], ["protocol_versions.id"]),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"]),
        sa.ForeignKeyConstraint(["version_id"], ["protocol_versions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("version_id"),
    )


def downgrade() -> None:
    op.drop_table("protocol_amendments")
    with op.batch_alter_table("protocol_versions") as batch:
        batch.drop_column("effective_from")
        batch.drop_column("status")
