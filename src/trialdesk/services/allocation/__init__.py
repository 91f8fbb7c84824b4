"""The allocation family (issue 13): allocation lists (``lists``), randomization
(``randomization``), randomized-in-error and trial-level unblinding with its notifications
(``unblinding``), on the repositories of :mod:`trialdesk.store.allocation`."""
