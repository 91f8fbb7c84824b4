"""Exit 0 when ``make run`` can go straight to the server: the local demo database exists and
already holds the simulated demo study (``init --demo`` and ``simulate`` would both leave it
as it is, after paying for their start-up). Standard library only, so asking costs
milliseconds; anything unexpected answers "not ready" and ``make run`` does the full set-up
(``serve`` itself applies any new migration).

    python3 scripts/demo_ready.py [DATABASE_FILE] [STUDY_CODE]
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path


def ready(db: Path, study: str) -> bool:
    if not db.is_file():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM subjects JOIN studies ON studies.id = subjects.study_id "
                "WHERE studies.code = ? AND studies.mode = 'demo'",
                (study,),
            ).fetchone()
    except sqlite3.Error:
        return False
    return bool(row and row[0] > 0)


if __name__ == "__main__":
    args = sys.argv[1:]
    db = Path(args[0] if args else "trialdesk.db")
    sys.exit(0 if ready(db, args[1] if len(args) > 1 else "FLAGSHIP") else 1)
