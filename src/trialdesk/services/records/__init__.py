"""Records that hold (issue 15, lane x15a): locks, the freeze at unblinding, the database
lock and its checklist, SDV and investigator sign-off."""
