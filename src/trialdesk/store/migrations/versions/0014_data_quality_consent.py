"""data quality, queries grown up, consent versions, exits (issue 15)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05

Data queries gain their origin (a monitor, or a data-quality rule and its discrepancy key),
an assignee, a coded response and the monitor's verification (REC-6, REC-7). New tables:
rule exclusions per record, every signed consent version (REC-8; the consents already on
subjects become rows of the protocol's first consent document where it has one) and what a
withdrawn subject withdrew from (REC-9).
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("data_queries") as batch:
        batch.add_column(
            sa.Column("origin", sa.String(length=10), nullable=False, server_default="manual")
        )
        batch.add_column(sa.Column("rule_id", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("discrepancy_key", sa.String(length=300), nullable=True))
        batch.add_column(sa.Column("severity", sa.String(length=10), nullable=True))
        batch.add_column(sa.Column("assignee", sa.String(length=80), nullable=True))
        batch.add_column(sa.Column("response_code", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("verified_by", sa.String(length=80), nullable=True))
        batch.add_column(sa.Column("verified_at", UTC, nullable=True))
    op.create_table(
        "dq_exclusions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("studies.id"), nullable=False),
        sa.Column("subject_id", sa.Integer(), sa.ForeignKey("subjects.id"), nullable=False),
        sa.Column("rule_id", sa.String(length=40), nullable=False),
        sa.Column("form_code", sa.String(length=40), nullable=False),
        sa.Column("visit_code", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("excluded_by", sa.String(length=80), nullable=False),
        sa.Column("excluded_at", UTC, nullable=False),
        sa.Column("revoked_by", sa.String(length=80), nullable=True),
        sa.Column("revoked_at", UTC, nullable=True),
    )
    op.create_table(
        "consents",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("studies.id"), nullable=False),
        sa.Column("subject_id", sa.Integer(), sa.ForeignKey("subjects.id"), nullable=False),
        sa.Column("document", sa.String(length=40), nullable=False),
        sa.Column("version", sa.String(length=40), nullable=False),
        sa.Column("signed_on", sa.Date(), nullable=False),
        sa.Column(
            "protocol_version_id",
            sa.Integer(),
            sa.ForeignKey("protocol_versions.id"),
            nullable=False,
        ),
        sa.Column("recorded_by", sa.String(length=80), nullable=False),
        sa.Column("recorded_at", UTC, nullable=False),
    )
    op.create_index("ix_consents_subject_id", "consents", ["subject_id"])
    op.create_table(
        "withdrawals",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "subject_id", sa.Integer(), sa.ForeignKey("subjects.id"), nullable=False, unique=True
        ),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("contact_allowed", sa.Boolean(), nullable=False),
        sa.Column("form_record_id", sa.Integer(), sa.ForeignKey("form_records.id"), nullable=True),
        sa.Column("withdrawn_on", sa.Date(), nullable=False),
        sa.Column("recorded_by", sa.String(length=80), nullable=False),
        sa.Column("recorded_at", UTC, nullable=False),
    )
    _backfill_consents()


def _backfill_consents() -> None:
    """Consents recorded before this revision (a date and a free-text version on the subject)
    become rows; ``ICF v1.0`` is document ICF, version v1.0, a bare label the document ICF."""
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT id, study_id, consent_date, consent_version, protocol_version_id "
            "FROM subjects WHERE consent_date IS NOT NULL"
        )
    ).all()
    now = dt.datetime.now(dt.UTC)
    for subject_id, study_id, signed_on, label, version_id in rows:
        document, _, version = (label or "").strip().rpartition(" ")
        conn.execute(
            sa.text(
                "INSERT INTO consents (study_id, subject_id, document, version, signed_on, "
                "protocol_version_id, recorded_by, recorded_at) VALUES (:study, :subject, "
                ":document, :version, :on, :pv, 'migration', :at)"
            ),
            {
                "study": study_id,
                "subject": subject_id,
                "document": document or "ICF",
                "version": version or "?",
                "on": signed_on,
                "pv": version_id,
                "at": now,
            },
        )


def downgrade() -> None:
    op.drop_table("withdrawals")
    op.drop_index("ix_consents_subject_id", table_name="consents")
    op.drop_table("consents")
    op.drop_table("dq_exclusions")
    with op.batch_alter_table("data_queries") as batch:
        for column in (
            "verified_at",
            "verified_by",
            "response_code",
            "assignee",
            "severity",
            "discrepancy_key",
            "rule_id",
            "origin",
        ):
            batch.drop_column(column)
