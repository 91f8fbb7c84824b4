"""Moved to :mod:`trialdesk.services.allocation.unblinding` (issue 13); this name stays for
branches in flight during wave 3 and goes after it."""

from trialdesk.services.allocation.unblinding import (
    confirm_trial_unblinding as confirm_trial_unblinding,
)
from trialdesk.services.allocation.unblinding import (
    mark_notification_read as mark_notification_read,
)
from trialdesk.services.allocation.unblinding import (
    mark_randomized_in_error as mark_randomized_in_error,
)
from trialdesk.services.allocation.unblinding import notifications as notifications
from trialdesk.services.allocation.unblinding import (
    request_trial_unblinding as request_trial_unblinding,
)
from trialdesk.services.allocation.unblinding import trial_unblinded as trial_unblinded
from trialdesk.services.allocation.unblinding import (
    trial_unblinding_status as trial_unblinding_status,
)
