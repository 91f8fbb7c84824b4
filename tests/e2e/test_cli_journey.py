"""One flagship subject from registration to completion, purely through `trialdesk` commands
(LIFE-1, SCHED-1, SCHED-3, RAND-6, RAND-7, AUD-1).

Every command builds its runtime from ``TRIALDESK_*`` variables, as in a shell, with the
production password-hashing cost. The clock is moved per command with ``TRIALDESK_CLOCK``,
which only a demo study accepts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from tests import flagship_data as fd
from tests.journey import visit_dates
from trialdesk.cli.main import build_app

PASSWORD = "journey-demo-password"
SITE = "S101"


@dataclass
class Shell:
    """A shell with the trial's database, key file and the demo password in its environment."""

    tmp: Path

    def env(self, user: str | None, clock: str | None, password: str | None) -> dict[str, Any]:
        return {
            "TRIALDESK_DATABASE_URL": f"sqlite:///{self.tmp / 't.db'}",
            "TRIALDESK_ALLOCATION_KEY_FILE": str(self.tmp / "k.key"),
            "TRIALDESK_PASSWORD": password,
            "TRIALDESK_USER": user,
            "TRIALDESK_CLOCK": clock,
        }

    def run(
        self,
        *args: str,
        user: str | None = None,
        on: str | None = None,
        password: str | None = PASSWORD,
    ) -> Result:
        clock = f"{on}T12:00:00Z" if on else None
        return CliRunner().invoke(build_app(), list(args), env=self.env(user, clock, password))

    def json(self, *args: str, user: str | None = None, on: str | None = None) -> Any:
        result = self.run(*args, "--json", user=user, on=on)
        assert result.exit_code == 0, (args, result.stderr)
        assert result.stderr == ""
        return json.loads(result.stdout)


def _values(values: dict[str, Any]) -> str:
    return json.dumps(values)


def walk_to_anatomy(sh: Shell) -> str:
    """Register, consent, screen, pass the CRC and record suitable anatomy; the subject's
    number. Each step's JSON shows the state the protocol says it reaches."""
    coordinator = "coordinator"
    view = sh.json(
        "subject", "register", "--site", SITE, "--date", fd.CONSENT_DATE,
        user=coordinator, on=fd.CONSENT_DATE,
    )  # fmt: skip
    number: str = view["number"]
    assert (view["state"], view["site"]) == ("registered", SITE)
    view = sh.json(
        "subject", "consent", number, "--date", fd.CONSENT_DATE, "--version", "v1.0",
        user=coordinator, on=fd.CONSENT_DATE,
    )  # fmt: skip
    assert (view["state"], view["consent_date"]) == ("screening", fd.CONSENT_DATE)
    for code, values in fd.screening_forms().items():
        view = sh.json(
            "subject", "form", number, code, "--values", _values(values),
            user=coordinator, on=fd.SCREENING_DATE,
        )  # fmt: skip
        assert view["state"] == "screening"
    for criterion in fd.INVESTIGATOR_CRITERIA:
        view = sh.json(
            "subject", "confirm", number, criterion, "--met",
            user=coordinator, on=fd.SCREENING_DATE,
        )  # fmt: skip
        assert view["state"] == "screening"
    view = sh.json("subject", "complete-screening", number, user=coordinator, on=fd.SCREENING_DATE)
    assert view["state"] == "echo_qualified"
    view = sh.json(
        "subject", "crc", number, "--decision", "approve",
        "--reason", "Suitable anatomy on echo; CS device appropriate",
        user="crc", on=fd.SCREENING_DATE,
    )  # fmt: skip
    assert (view["state"], view["crc_approved"]) == ("awaiting_procedure", True)
    view = sh.json(
        "subject", "anatomy", number, "--forms", _values(fd.anatomy_forms()),
        user="implanter", on=fd.PROCEDURE_DATE,
    )  # fmt: skip
    assert (view["state"], view["anatomy_suitable"]) == ("awaiting_procedure", True)
    assert view["arm"] is None and view["randomized"] is False
    return number


@pytest.fixture
def shell(tmp_path: Path) -> Shell:
    sh = Shell(tmp_path)
    out = sh.json("init", "--demo", "--demo-password", PASSWORD, on="2027-01-20")
    assert out["study"]["mode"] == "demo" and out["study"]["created"] is True
    assert out["allocation_list"] is not None
    assert "coordinator" in out["demo_users"] and "implanter" in out["demo_users"]
    return sh


def test_life1_cli_walks_one_subject_from_registration_to_completed(shell: Shell) -> None:
    """LIFE-1, SCHED-1, SCHED-3, RAND-6, RAND-7, AUD-1: the whole journey from the shell."""
    sh = shell
    number = walk_to_anatomy(sh)
    other = walk_to_anatomy(sh)

    # RAND-6: the implanting team sees the arm at the procedure, the coordinator never does
    rand = sh.json("subject", "randomize", number, user="implanter", on=fd.PROCEDURE_DATE)
    assert rand["randomized"] is True
    assert rand["randomization_number"] == f"{SITE}-R001"
    arm = rand["arm"]["code"]
    assert arm in {"INT", "CTRL"} and rand["arm"]["label"]
    blinded = sh.json("subject", "randomize", other, user="coordinator", on=fd.PROCEDURE_DATE)
    assert blinded["randomized"] is True
    assert blinded["randomization_number"] == f"{SITE}-R002"
    assert "arm" not in blinded

    forms = fd.implant_procedure_forms() if arm == "INT" else fd.sham_procedure_forms()
    (values,) = forms.values()
    view = sh.json(
        "subject", "procedure", number, "--values", _values(values),
        user="implanter", on=fd.PROCEDURE_DATE,
    )  # fmt: skip
    assert (view["state"], view["procedure_done"]) == ("randomized", True)
    view = sh.json(
        "subject", "discharge", number, "--date", fd.DISCHARGE_DATE,
        user="coordinator", on=fd.DISCHARGE_DATE,
    )  # fmt: skip
    assert (view["state"], view["discharged_on"]) == ("randomized", fd.DISCHARGE_DATE)
    assert view["arm"] is None  # still blinded for the site
    assert [v["code"] for v in view["visits"]] == [
        "M1",
        "M6",
        "M12",
        "M18",
        "M24",
        "Y3",
        "Y4",
        "Y5",
    ]

    dates = {code: day.isoformat() for code, day in visit_dates().items()}
    for code in ("M1", "M6", "M12", "M18", "M24"):
        on = dates[code]
        view = sh.json(
            "subject", "visit", number, code, "--date", on,
            "--forms", _values(fd.follow_up_forms(on)),
            user="coordinator", on=on,
        )  # fmt: skip
        assert view["state"] == "randomized"
        done = {v["code"]: v for v in view["visits"]}[code]
        assert (done["status"], done["visit_date"], done["timing"]) == ("done", on, "on_time")

    view = sh.json("subject", "unblind", number, user="coordinator", on=dates["M24"])
    assert (view["state"], view["unblinded_on"]) == ("unblinded", dates["M24"])
    assert view["arm"]["code"] == arm  # RAND-7: the site now sees the arm

    for code in ("Y3", "Y4", "Y5"):
        on = dates[code]
        view = sh.json(
            "subject", "visit", number, code, "--date", on,
            "--forms", _values(fd.annual_contact_forms(on)),
            user="coordinator", on=on,
        )  # fmt: skip
        assert view["state"] == "unblinded"

    view = sh.json("subject", "complete", number, user="coordinator", on=dates["Y5"])
    assert view["state"] == "completed"
    assert [v["status"] for v in view["visits"]] == ["done"] * 8
    assert view["randomization_number"] == f"{SITE}-R001"
    assert view["allowed_actions"] == ["correct_data"]

    # the other subject stays blinded for the coordinator
    shown = sh.json("subject", "show", other, user="coordinator", on=dates["Y5"])
    assert (shown["state"], shown["arm"]) == ("randomized", None)

    verify = sh.run("audit", "verify", on=dates["Y5"])
    assert verify.exit_code == 0, verify.stderr
    assert verify.stdout.startswith("audit chain ok: ")
