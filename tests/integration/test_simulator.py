"""The whole-trial simulator (issue 7) on SQLite and PostgreSQL: its trials are consistent,
reproducible from the seed, agree with the services' own reports, and it never writes to a
live study."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from tests.conftest import PASSWORD, Database, Trial, flagship
from tests.conftest import test_settings as settings_for
from trialdesk.bootstrap import bootstrap
from trialdesk.demo.trial import (
    SimulationConfig,
    SimulationRefused,
    check_consistency,
    simulate_trial,
    trial_digest,
)
from trialdesk.domain.errors import PreconditionFailed, TrialError, ValidationFailed
from trialdesk.domain.roles import Role
from trialdesk.services import dashboard, report_views
from trialdesk.services.access import Actor, operator_actor
from trialdesk.services.allocation.lists import generate_list
from trialdesk.services.setup import create_user, initialize_study, study_contents
from trialdesk.store.tables import Base, SubjectRow


def _study(t: Trial, code: str) -> tuple[int, Actor]:
    """Another demo study of the flagship in the trial's database, with its own monitor."""
    operator = operator_actor()
    if code == "FLAGSHIP":
        return t.study_id, t.actor("monitor")
    info = initialize_study(t.ctx, operator, flagship(), code=code, mode="demo")
    generate_list(t.ctx, operator, info.id, mode="live", seed=11)
    create_user(
        t.ctx,
        operator,
        info.id,
        username=f"monitor-{code.lower()}",
        full_name=f"Monitor {code}",
        password=PASSWORD,
        roles=[(Role.MONITOR, None)],
    )
    return info.id, t.actor(f"monitor-{code.lower()}")


def _config(subjects: int, seed: int, sites: int = 4) -> SimulationConfig:
    """Fast-recruiting small trials, so follow-up stays short and the module stays quick."""
    return SimulationConfig(subjects=subjects, sites=sites, seed=seed, screened_per_site_month=4.0)


def _row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            table.name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
            for table in Base.metadata.sorted_tables
        }


def test_sim_trials_pass_every_consistency_check(trial: Trial) -> None:
    """CONSORT counts equal the counts by state, one allocation per randomized subject, no
    visit before randomization or data after exit, audit chain intact (LIFE-1, REP-2, AUD-1),
    for several seeds and sizes on SQLite and one on PostgreSQL."""
    runs = [(20, 1), (25, 2), (30, 3)] if trial.backend == "sqlite" else [(20, 4)]
    for i, (subjects, seed) in enumerate(runs):
        study_id, monitor = _study(trial, "FLAGSHIP" if i == 0 else f"SIM{i}")
        code = "FLAGSHIP" if i == 0 else f"SIM{i}"
        summary = simulate_trial(trial.ctx, code, _config(subjects, seed))
        assert summary.randomized == subjects
        assert summary.registered > subjects  # more are screened than randomized
        assert sum(summary.excluded.values()) > 0
        assert summary.visits_done > 0 and summary.service_calls > 10 * subjects
        assert check_consistency(trial.ctx, monitor, study_id) == []


def test_sim_same_seed_same_trial_other_seed_other_trial(trial: Trial) -> None:
    """Same seed ⇒ the same subjects, states and dates; another seed ⇒ another trial."""
    digests = []
    for code, seed in (("FLAGSHIP", 7), ("SAME", 7), ("OTHER", 8)):
        study_id, monitor = _study(trial, code)
        simulate_trial(trial.ctx, code, _config(8, seed, sites=2))
        digests.append(trial_digest(trial.ctx, monitor, study_id))
    assert digests[0] == digests[1]
    assert digests[0] != digests[2]


def test_rep2_consort_and_enrolment_reports_match_a_simulated_trial(trial: Trial) -> None:
    """A report dataset built by the simulator: the services' CONSORT flow and enrolment
    dashboard count what the simulator did, up to the as-of date (REP-1, REP-2); a study with
    subjects is not simulated again."""
    as_of = dt.date(2027, 5, 31)
    config = SimulationConfig(subjects=60, sites=4, seed=5, as_of=as_of)
    summary = simulate_trial(trial.ctx, "FLAGSHIP", config)
    assert summary.end == as_of.isoformat()
    assert 0 < summary.randomized < 60  # stopped at the as-of date, before the target
    manager = trial.actor("manager")
    flow = report_views.consort(trial.ctx, manager, trial.study_id)
    assert flow.assessed == summary.registered
    assert flow.randomized == summary.randomized
    assert flow.excluded == summary.excluded
    assert flow.assessed == sum(summary.states.values())
    enrolment = dashboard.enrolment(trial.ctx, manager, trial.study_id)
    assert (enrolment.registered, enrolment.randomized) == (summary.registered, summary.randomized)
    # nobody is registered after the as-of date
    with trial.ctx.uow(readonly=True) as uow:
        latest = uow.session.scalar(select(func.max(SubjectRow.registered_on)))
    assert latest is not None and latest <= as_of
    assert check_consistency(trial.ctx, trial.actor("monitor"), trial.study_id) == []
    # what the simulator checks first: the operator's read of the study (nobody else's)
    contents = study_contents(trial.ctx, operator_actor(), "FLAGSHIP")
    assert (contents.study.mode, contents.subjects) == ("demo", summary.registered)
    with pytest.raises(PreconditionFailed):
        study_contents(trial.ctx, manager, "FLAGSHIP")
    # a second run does not simulate again (`make run` relies on it), and writes nothing
    before = _row_counts(trial.runtime.engine)
    with pytest.raises(TrialError) as again:
        simulate_trial(trial.ctx, "FLAGSHIP", config)
    assert again.value.code == "study-has-subjects"
    assert "not simulating again" in again.value.message
    assert _row_counts(trial.runtime.engine) == before


def test_sim_refuses_a_live_study_and_writes_nothing(database: Database, tmp_path: Path) -> None:
    """Synthetic subjects never enter a live trial: one clear refusal, no row written."""
    runtime = bootstrap(settings_for(database, tmp_path), engine=database.engine)
    try:
        operator = operator_actor()
        info = initialize_study(runtime.context, operator, flagship(), code="LIVE", mode="live")
        generate_list(runtime.context, operator, info.id, mode="live")  # RAND-3: drawn seed
        before = _row_counts(database.engine)
        with pytest.raises(SimulationRefused) as refused:
            simulate_trial(runtime.context, "LIVE", SimulationConfig(subjects=5, sites=2))
        assert refused.value.code == "not-a-demo-study"
        assert "LIVE is a live study" in refused.value.message
        assert "demo or sandbox" in refused.value.message
        assert _row_counts(database.engine) == before
    finally:
        runtime.close()


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (SimulationConfig(subjects=353, sites=5), "subjects"),
        (SimulationConfig(subjects=0, sites=5), "subjects"),
        (SimulationConfig(subjects=10, sites=76), "sites"),
        (SimulationConfig(subjects=10, sites=5, screened_per_site_month=0), "screened"),
        (
            SimulationConfig(
                subjects=10, sites=5, start=dt.date(2027, 2, 1), as_of=dt.date(2027, 1, 1)
            ),
            "as_of",
        ),
    ],
)
def test_sim_bad_settings_are_refused_before_any_write(
    trial: Trial, config: SimulationConfig, field: str
) -> None:
    """Bad input: one message naming the setting, nothing written."""
    before = _row_counts(trial.runtime.engine)
    with pytest.raises(ValidationFailed) as bad:
        simulate_trial(trial.ctx, "FLAGSHIP", config)
    assert any(key.startswith(field) for key in bad.value.problems)
    assert _row_counts(trial.runtime.engine) == before
