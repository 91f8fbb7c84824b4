"""Moved to :mod:`trialdesk.services.allocation.lists` (issue 13); this name stays for
branches in flight during wave 3 and goes after it."""

from trialdesk.services.allocation.lists import CSV_COLUMNS as CSV_COLUMNS
from trialdesk.services.allocation.lists import ListDownload as ListDownload
from trialdesk.services.allocation.lists import ListImportRefused as ListImportRefused
from trialdesk.services.allocation.lists import ListInfo as ListInfo
from trialdesk.services.allocation.lists import StratumStatus as StratumStatus
from trialdesk.services.allocation.lists import discard_list as discard_list
from trialdesk.services.allocation.lists import download_list as download_list
from trialdesk.services.allocation.lists import extend as extend
from trialdesk.services.allocation.lists import generate_list as generate_list
from trialdesk.services.allocation.lists import import_list as import_list
from trialdesk.services.allocation.lists import list_info as list_info
from trialdesk.services.allocation.lists import stratum_status as stratum_status
