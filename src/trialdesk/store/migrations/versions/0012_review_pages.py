"""review pages: status grid, casebook, queries on the web (issue 14)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05

``crc_case_notes``: the rounds of a CRC case, kept apart from the case row (which holds only
the latest decision): each "more information" request of the committee and each reply of the
site, so the dossier shows what was asked and what the site answered, round by round.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "crc_case_notes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("crc_cases.id"), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("written_by", sa.String(80), nullable=False),
        sa.Column("written_name", sa.String(200), nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_crc_case_notes_case_id", "crc_case_notes", ["case_id"])


def downgrade() -> None:
    op.drop_index("ix_crc_case_notes_case_id", table_name="crc_case_notes")
    op.drop_table("crc_case_notes")
