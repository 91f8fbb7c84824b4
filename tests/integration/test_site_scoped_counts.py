"""Counts a site-scoped user reads include their own sites only (ACC-1), on both databases."""

from __future__ import annotations

from tests import journey as j
from tests.conftest import Trial
from trialdesk.services.allocation.unblinding import trial_unblinding_status


def test_acc1_trial_unblinding_status_counts_own_site_subjects_for_site_roles(
    trial: Trial,
) -> None:
    """ACC-1: 'subjects in blinded follow-up' is the study's count for study-wide roles and
    the own site's count for the site coordinator and implanting team (found by the
    site-isolation sweep: it used to count every site)."""
    j.randomized(trial)
    j.randomized(trial, "S102")
    j.randomized(trial, "S103")
    counts = {
        user: trial_unblinding_status(
            trial.ctx, trial.actor(user), trial.study_id
        ).subjects_in_blinded_follow_up
        for user in ("manager", "statistician", "coordinator", "implanter")
    }
    assert counts == {"manager": 3, "statistician": 3, "coordinator": 1, "implanter": 1}
    other = j.staff(trial, "coordinator", "S102")
    assert (
        trial_unblinding_status(trial.ctx, other, trial.study_id).subjects_in_blinded_follow_up == 1
    )
