"""disclosure audit, list custody, idempotency keys by actor (issue 12)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05

Idempotency keys were stored as ``<study id>:<key>``, shared by everyone in the study; they
are now the SHA-256 of the study, the user who sent the key and the key
(``services.randomization.scoped_key``), so a replay is its maker's only. Existing keys are
rewritten for the user who made the randomization (``randomized_by``). No table changes:
disclosures are audit entries, list custody reads the lists themselves.
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _scoped(study_id: int, username: str, key: str) -> str:
    text = f"trialdesk-idempotency/1\x1f{study_id}\x1f{username}\x1f{key}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT id, study_id, randomized_by, idempotency_key FROM randomizations "
            "WHERE idempotency_key IS NOT NULL"
        )
    ).all()
    for row_id, study_id, username, stored in rows:
        prefix = f"{study_id}:"
        if not stored.startswith(prefix):
            continue  # already scoped
        conn.execute(
            sa.text("UPDATE randomizations SET idempotency_key = :key WHERE id = :id"),
            {"key": _scoped(study_id, username, stored[len(prefix) :]), "id": row_id},
        )


def downgrade() -> None:
    # a hash cannot be turned back into its key: old keys simply stop replaying
    pass
