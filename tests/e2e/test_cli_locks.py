"""`trialdesk lock|sdv|sign` (issue 15): the database lock set from the shell refuses the
shell's own writes through the same guard (REC-3, REC-5); the checklist, SDV status and
signatures print (REC-1, REC-2)."""

from __future__ import annotations

from tests import flagship_data as fd
from tests.e2e.test_cli_journey import Shell, shell  # noqa: F401  (shell is a fixture)


def test_rec5_cli_soft_lock_refuses_cli_writes_until_lifted(shell: Shell) -> None:  # noqa: F811
    """REC-5, REC-3: the study manager's soft lock from the shell refuses a registration from
    the shell with one line naming the lock; the hard lock is refused while the checklist
    lists a blocker; lifted with a reason, registration works again."""
    on = fd.CONSENT_DATE
    first = shell.json("subject", "register", "--site", "S101", user="coordinator", on=on)
    shell.json(
        "subject", "consent", first["number"], "--date", on, "--version", "v1.0",
        user="coordinator", on=on,
    )  # fmt: skip
    locked = shell.json(
        "lock", "database", "--kind", "soft", "--reason", "interim look", user="manager", on=on
    )
    assert (locked["level"], locked["kind"], locked["active"]) == ("study", "soft", True)
    refused = shell.run("subject", "register", "--site", "S101", user="coordinator", on=on)
    assert refused.exit_code == 1, refused.stdout
    assert "soft database lock" in refused.stderr and refused.stderr.strip().count("\n") == 0
    hard = shell.run(
        "lock", "database", "--kind", "hard", "--reason", "final", user="manager", on=on
    )
    assert hard.exit_code == 1 and "see the lock checklist" in hard.stderr
    lifted = shell.json(
        "lock", "unlock-database", "--reason", "interim done", user="manager", on=on
    )
    assert lifted["active"] is False and lifted["unlock_reason"] == "interim done"
    view = shell.json("subject", "register", "--site", "S101", user="coordinator", on=on)
    number = view["number"]
    checklist = shell.json("lock", "checklist", user="monitor", on=on)
    assert checklist["ready"] is False
    assert first["number"] in {b["subject"] for b in checklist["blockers"]}
    assert shell.json("sign", "list", number, user="monitor", on=on) == []
    status = shell.json("sdv", "status", user="monitor", on=on)
    assert status["records"] == []
