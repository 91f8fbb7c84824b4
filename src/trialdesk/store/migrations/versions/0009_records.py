"""records: locks, SDV marks, investigator signatures, changes after unblinding (issue 15)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05

Lane x15a's tables: ``record_locks`` (form, visit, casebook and study locks, including the
freeze at unblinding and the soft and hard database locks), ``sdv_marks``,
``record_signatures`` and ``unblinding_changes``. Data-quality and consent tables are 0014's.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column[dt.datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "record_locks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(length=10), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=True),
        sa.Column("visit_code", sa.String(length=40), nullable=True),
        sa.Column("form_code", sa.String(length=40), nullable=True),
        sa.Column("seq", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("locked_by", sa.String(length=80), nullable=False),
        sa.Column("locked_name", sa.String(length=200), nullable=False),
        _ts("locked_at"),
        sa.Column("locked_meaning", sa.Text(), nullable=False),
        _ts("unlocked_at", True),
        sa.Column("unlocked_by", sa.String(length=80), nullable=True),
        sa.Column("unlocked_name", sa.String(length=200), nullable=True),
        sa.Column("unlock_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"]),
        sa.ForeignKeyConstraint(["subject_id"], ["subjects.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_record_locks_study_id", "record_locks", ["study_id"])
    op.create_table(
        "sdv_marks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("form_record_id", sa.Integer(), nullable=False),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("fingerprints", sa.Text(), nullable=False),
        sa.Column("marked_by", sa.String(length=80), nullable=False),
        _ts("marked_at"),
        _ts("cleared_at", True),
        sa.Column("cleared_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"]),
        sa.ForeignKeyConstraint(["subject_id"], ["subjects.id"]),
        sa.ForeignKeyConstraint(["form_record_id"], ["form_records.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_sdv_marks_subject_id", "sdv_marks", ["subject_id"])
    op.create_table(
        "record_signatures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(length=10), nullable=False),
        sa.Column("visit_code", sa.String(length=40), nullable=True),
        sa.Column("form_record_id", sa.Integer(), nullable=True),
        sa.Column("signed_by", sa.String(length=80), nullable=False),
        sa.Column("signed_name", sa.String(length=200), nullable=False),
        _ts("signed_at"),
        sa.Column("meaning", sa.Text(), nullable=False),
        sa.Column("covered", sa.Text(), nullable=False),
        _ts("invalidated_at", True),
        sa.Column("invalidated_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"]),
        sa.ForeignKeyConstraint(["subject_id"], ["subjects.id"]),
        sa.ForeignKeyConstraint(["form_record_id"], ["form_records.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_record_signatures_subject_id", "record_signatures", ["subject_id"])
    op.create_table(
        "unblinding_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("form_record_id", sa.Integer(), nullable=False),
        sa.Column("form_code", sa.String(length=40), nullable=False),
        sa.Column("visit_code", sa.String(length=40), nullable=False),
        sa.Column("field", sa.String(length=80), nullable=False),
        sa.Column("flag", sa.String(length=30), nullable=False),
        sa.Column("old", sa.Text(), nullable=False),
        sa.Column("new", sa.Text(), nullable=False),
        _ts("changed_at"),
        sa.Column("changed_by", sa.String(length=80), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"]),
        sa.ForeignKeyConstraint(["subject_id"], ["subjects.id"]),
        sa.ForeignKeyConstraint(["form_record_id"], ["form_records.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_unblinding_changes_subject_id", "unblinding_changes", ["subject_id"])


def downgrade() -> None:
    for table in ("unblinding_changes", "record_signatures", "sdv_marks", "record_locks"):
        op.drop_table(table)
