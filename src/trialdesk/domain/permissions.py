"""Permissions by name and the one table of which role holds which (ACC-1, ACC-2).

Services check a :class:`Permission` (``require(actor, study_id, Permission.VISIT_RECORD,
site_id=...)``), never a list of roles written inline. docs/permissions.md is generated from
:data:`ROLE_PERMISSIONS`, and the authorisation sweep (tests/e2e/test_sweep_authorisation.py)
asserts that its own table, written from SYSTEM.md §1, says the same.

A permission is what a role may attempt; the service still decides by site (site-scoped
roles act at their own site only), by the subject's state (:mod:`trialdesk.domain.lifecycle`)
and by blinding.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from trialdesk.domain.lifecycle import Action, SubjectState, allowed_actions
from trialdesk.domain.roles import Role


class Permission(StrEnum):
    """``<area>:<resource>:<action>``; used instead of a string literal (warehouse style)."""

    # subjects and the journey (SYSTEM.md §2)
    SUBJECT_READ = "subject:record:read"
    SUBJECT_HISTORY_READ = "subject:history:read"
    SUBJECT_REGISTER = "subject:record:register"
    CONSENT_RECORD = "subject:consent:record"
    SCREENING_FORM_RECORD = "subject:screening-form:record"
    CRITERION_CONFIRM = "subject:criterion:confirm"
    ELIGIBILITY_READ = "subject:eligibility:read"
    SCREENING_COMPLETE = "subject:screening:complete"
    SCREEN_FAIL = "subject:screening:fail"
    ANATOMY_RECORD = "subject:anatomy:record"
    SUBJECT_RANDOMIZE = "subject:allocation:randomize"
    PROCEDURE_RECORD = "subject:procedure:record"
    DISCHARGE_RECORD = "subject:discharge:record"
    VISIT_RECORD = "subject:visit:record"
    THERAPY_RECORD = "subject:therapy:record"
    ADVERSE_EVENT_RECORD = "subject:adverse-event:record"
    SUBJECT_EXIT = "subject:exit:record"
    SUBJECT_COMPLETE = "subject:completion:record"
    FORM_CORRECT = "subject:form:correct"
    SUBJECT_UNBLIND = "subject:allocation:unblind"
    SUBJECT_EMERGENCY_UNBLIND = "subject:allocation:emergency-unblind"
    RANDOMIZATION_MARK_IN_ERROR = "subject:allocation:mark-in-error"
    VISIT_WORKLIST_READ = "study:visit-worklist:read"
    # Central Review Committee (ELIG-3, THER-2, THER-3)
    CRC_QUEUE_READ = "crc:queue:read"
    CRC_ELIGIBILITY_DECIDE = "crc:eligibility:decide"
    CRC_THERAPY_DECIDE = "crc:therapy:decide"
    # data review (DATA-2)
    QUERY_READ = "data:query:read"
    QUERY_RAISE = "data:query:raise"
    QUERY_ANSWER = "data:query:answer"
    QUERY_CLOSE = "data:query:close"
    QUERY_REOPEN = "data:query:reopen"
    DATA_EXPORT = "data:export:create"
    # allocation lists (RAND-3) and trial-level unblinding (RAND-7)
    LIST_READ = "allocation:list:read"
    LIST_GENERATE = "allocation:list:generate"
    LIST_IMPORT = "allocation:list:import"
    LIST_EXTEND = "allocation:list:extend"
    LIST_DISCARD = "allocation:list:discard"
    TRIAL_UNBLINDING_READ = "study:unblinding:read"
    TRIAL_UNBLINDING_REQUEST = "study:unblinding:request"
    TRIAL_UNBLINDING_CONFIRM = "study:unblinding:confirm"
    NOTIFICATION_READ = "study:notification:read"
    # protocol and amendments (PROT-2)
    PROTOCOL_READ = "protocol:version:read"
    AMENDMENT_PREVIEW = "protocol:amendment:preview"
    AMENDMENT_PROPOSE = "protocol:amendment:propose"
    AMENDMENT_SIGN = "protocol:amendment:sign"
    SITE_READ = "study:site:read"
    # device accountability (SUP-1, SUP-2)
    SUPPLY_READ = "supply:stock:read"
    SUPPLY_LOT_READ = "supply:lot:read"
    SUPPLY_LOT_REGISTER = "supply:lot:register"
    SUPPLY_LOT_QUARANTINE = "supply:lot:quarantine"
    SUPPLY_LOT_RECALL = "supply:lot:recall"
    SUPPLY_SHIP = "supply:shipment:ship"
    SUPPLY_RECEIVE = "supply:shipment:receive"
    DEVICE_RETURN = "supply:device:return"
    DEVICE_DESTROY = "supply:device:destroy"
    # reports (REP-*)
    ENROLMENT_DASHBOARD_READ = "report:enrolment:read"
    ENROLMENT_FORECAST_READ = "report:forecast:read"
    SCREENING_LOG_READ = "report:screening-log:read"
    CONSORT_READ = "report:consort:read"
    COMPLIANCE_READ = "report:compliance:read"
    CRC_WORKLOAD_READ = "report:crc-workload:read"
    UNBLINDING_EVENTS_READ = "report:unblinding:read"
    INTERIM_READ = "report:interim:read"
    ENDPOINTS_BY_ARM_READ = "report:endpoints-by-arm:read"
    DESIGN_ASSESS = "design:assessment:run"
    # administration
    USER_MANAGE = "admin:user:manage"
    SITE_MANAGE = "admin:site:manage"
    GRANT_APPROVE = "admin:grant:approve"
    # issue 14 (x14b): the site replies to the CRC's request for more information
    CRC_CASE_REPLY = "crc:case:reply"
    # issue 15 (lane x15b): data quality, queries grown up, consent versions (REC-6..REC-9)
    DQ_READ = "data:quality:read"
    DQ_RUN = "data:quality:run"
    DQ_EXCLUDE = "data:quality:exclude"
    MISSING_DATA_READ = "data:missing:read"
    QUERY_ASSIGN = "data:query:assign"
    QUERY_VERIFY = "data:query:verify"
    CONSENT_WORKLIST_READ = "subject:consent:worklist"
    # records that hold (issue 15, lane x15a): locks, database lock, SDV, sign-off
    RECORD_LOCK = "records:lock:manage"
    DATABASE_LOCK = "records:database-lock:manage"
    LOCK_CHECKLIST_READ = "records:lock-checklist:read"
    SDV_MARK = "records:sdv:mark"
    SDV_READ = "records:sdv:read"
    RECORD_SIGN = "records:signature:sign"
    # x16a (issue 16): the analysis datasets are by arm
    ADAM_EXPORT = "data:adam-export:create"


P = Permission

PERMISSION_TITLES: dict[Permission, str] = {
    P.SUBJECT_READ: "view a subject",
    P.SUBJECT_HISTORY_READ: "view subject history",
    P.SUBJECT_REGISTER: "register subject",
    P.CONSENT_RECORD: "record or decline consent",
    P.SCREENING_FORM_RECORD: "record a screening form",
    P.CRITERION_CONFIRM: "confirm criterion",
    P.ELIGIBILITY_READ: "check eligibility",
    P.SCREENING_COMPLETE: "complete screening",
    P.SCREEN_FAIL: "end screening for another reason",
    P.ANATOMY_RECORD: "record procedure-day anatomy",
    P.SUBJECT_RANDOMIZE: "randomize",
    P.PROCEDURE_RECORD: "record the index procedure",
    P.DISCHARGE_RECORD: "record discharge",
    P.VISIT_RECORD: "record or miss a visit",
    P.THERAPY_RECORD: "record an additional therapy",
    P.ADVERSE_EVENT_RECORD: "record an adverse event",
    P.SUBJECT_EXIT: "record withdrawal, loss to follow-up or death",
    P.SUBJECT_COMPLETE: "complete a subject",
    P.FORM_CORRECT: "correct saved form data",
    P.SUBJECT_UNBLIND: "unblind",
    P.SUBJECT_EMERGENCY_UNBLIND: "emergency unblinding",
    P.RANDOMIZATION_MARK_IN_ERROR: "mark randomized in error",
    P.VISIT_WORKLIST_READ: "list visits",
    P.CRC_QUEUE_READ: "CRC queue",
    P.CRC_ELIGIBILITY_DECIDE: "CRC decision",
    P.CRC_THERAPY_DECIDE: "CRC therapy decision",
    P.QUERY_READ: "list data queries",
    P.QUERY_RAISE: "raise data query",
    P.QUERY_ANSWER: "answer data query",
    P.QUERY_CLOSE: "close data query",
    P.QUERY_REOPEN: "reopen data query",
    P.DATA_EXPORT: "export data",
    P.ADAM_EXPORT: "export ADaM analysis datasets",
    P.LIST_READ: "view allocation lists",
    P.LIST_GENERATE: "generate allocation list",
    P.LIST_IMPORT: "import allocation list",
    P.LIST_EXTEND: "extend allocation list",
    P.LIST_DISCARD: "discard an allocation list not yet drawn from",
    P.TRIAL_UNBLINDING_READ: "view trial unblinding status",
    P.TRIAL_UNBLINDING_REQUEST: "request trial-level unblinding",
    P.TRIAL_UNBLINDING_CONFIRM: "confirm trial-level unblinding",
    P.NOTIFICATION_READ: "read one's notifications",
    P.PROTOCOL_READ: "view protocol versions and amendments",
    P.AMENDMENT_PREVIEW: "preview a protocol amendment",
    P.AMENDMENT_PROPOSE: "amend the protocol",
    P.AMENDMENT_SIGN: "co-sign a protocol amendment",
    P.SITE_READ: "list sites",
    P.SUPPLY_READ: "read shipments, device inventory and stock warnings",
    P.SUPPLY_LOT_READ: "list device lots",
    P.SUPPLY_LOT_REGISTER: "register a device lot",
    P.SUPPLY_LOT_QUARANTINE: "quarantine a device lot",
    P.SUPPLY_LOT_RECALL: "recall a lot (lists implanted subjects)",
    P.SUPPLY_SHIP: "ship devices",
    P.SUPPLY_RECEIVE: "receive a shipment",
    P.DEVICE_RETURN: "return a device",
    P.DEVICE_DESTROY: "destroy a device",
    P.ENROLMENT_DASHBOARD_READ: "enrolment dashboard",
    P.ENROLMENT_FORECAST_READ: "enrolment report and forecast",
    P.SCREENING_LOG_READ: "screening log",
    P.CONSORT_READ: "CONSORT flow",
    P.COMPLIANCE_READ: "visit compliance and protocol deviations",
    P.CRC_WORKLOAD_READ: "CRC workload",
    P.UNBLINDING_EVENTS_READ: "unblinding events",
    P.INTERIM_READ: "interim status",
    P.ENDPOINTS_BY_ARM_READ: "endpoints by arm",
    P.DESIGN_ASSESS: "design assessment",
    P.USER_MANAGE: "manage users and their roles",
    P.SITE_MANAGE: "manage sites",
    P.GRANT_APPROVE: "approve a grant of a role that can reach an arm (e-signed)",
    # issue 14 (x14b)
    P.CRC_CASE_REPLY: "reply to the CRC's request for more information",
    # issue 15, lane x15a
    P.RECORD_LOCK: "lock or unlock a form, visit or casebook",
    P.DATABASE_LOCK: "lock the database (soft or hard)",
    P.LOCK_CHECKLIST_READ: "view the database-lock checklist",
    P.SDV_MARK: "mark source data verified",
    P.SDV_READ: "view SDV status",
    P.RECORD_SIGN: "e-sign a form, visit or casebook (investigator)",
}
"""The words a refusal uses for the action ("'record discharge' needs the role ...")."""

_EVERYONE: frozenset[Permission] = frozenset(
    {
        P.SUBJECT_READ,
        P.SUBJECT_HISTORY_READ,
        P.TRIAL_UNBLINDING_READ,
        P.NOTIFICATION_READ,
        P.PROTOCOL_READ,
        P.SITE_READ,
    }
)
"""What every role of a study may do (blinding is decided apart, in the services)."""

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: _EVERYONE
    | {
        P.USER_MANAGE,
        P.SITE_MANAGE,
        P.SUPPLY_READ,
        P.SUPPLY_LOT_READ,
        P.ENROLMENT_DASHBOARD_READ,
        P.CONSORT_READ,
    },
    Role.MANAGER: _EVERYONE
    | {
        P.ELIGIBILITY_READ,
        P.VISIT_WORKLIST_READ,
        P.CRC_QUEUE_READ,
        P.QUERY_READ,
        P.QUERY_RAISE,
        P.QUERY_CLOSE,
        P.QUERY_REOPEN,
        P.DATA_EXPORT,
        P.TRIAL_UNBLINDING_REQUEST,
        P.AMENDMENT_PREVIEW,
        P.AMENDMENT_PROPOSE,
        P.SUPPLY_READ,
        P.SUPPLY_LOT_READ,
        P.SUPPLY_LOT_REGISTER,
        P.SUPPLY_LOT_QUARANTINE,
        P.SUPPLY_LOT_RECALL,
        P.SUPPLY_SHIP,
        P.DEVICE_RETURN,
        P.DEVICE_DESTROY,
        P.ENROLMENT_DASHBOARD_READ,
        P.ENROLMENT_FORECAST_READ,
        P.SCREENING_LOG_READ,
        P.CONSORT_READ,
        P.COMPLIANCE_READ,
        P.CRC_WORKLOAD_READ,
        P.UNBLINDING_EVENTS_READ,
        P.INTERIM_READ,
    },
    Role.COORDINATOR: _EVERYONE
    | {
        P.SUBJECT_REGISTER,
        P.CONSENT_RECORD,
        P.SCREENING_FORM_RECORD,
        P.CRITERION_CONFIRM,
        P.ELIGIBILITY_READ,
        P.SCREENING_COMPLETE,
        P.SCREEN_FAIL,
        P.ANATOMY_RECORD,
        P.SUBJECT_RANDOMIZE,
        P.DISCHARGE_RECORD,
        P.VISIT_RECORD,
        P.THERAPY_RECORD,
        P.ADVERSE_EVENT_RECORD,
        P.SUBJECT_EXIT,
        P.SUBJECT_COMPLETE,
        P.FORM_CORRECT,
        P.SUBJECT_UNBLIND,
        P.SUBJECT_EMERGENCY_UNBLIND,
        P.VISIT_WORKLIST_READ,
        P.QUERY_READ,
        P.QUERY_ANSWER,
        P.SUPPLY_READ,
        P.SUPPLY_RECEIVE,
        P.COMPLIANCE_READ,
        P.CRC_CASE_REPLY,  # issue 14 (x14b)
    },
    Role.IMPLANTER: _EVERYONE
    | {
        P.ELIGIBILITY_READ,
        P.ANATOMY_RECORD,
        P.SUBJECT_RANDOMIZE,
        P.PROCEDURE_RECORD,
        P.VISIT_WORKLIST_READ,
        P.SUPPLY_READ,
        P.SUPPLY_LOT_RECALL,
        P.DEVICE_RETURN,
        P.DEVICE_DESTROY,
        P.GRANT_APPROVE,
    },
    Role.CRC: _EVERYONE
    | {
        P.ELIGIBILITY_READ,
        P.VISIT_WORKLIST_READ,
        P.CRC_QUEUE_READ,
        P.CRC_ELIGIBILITY_DECIDE,
        P.CRC_THERAPY_DECIDE,
        P.CRC_WORKLOAD_READ,
    },
    Role.MONITOR: _EVERYONE
    | {
        P.ELIGIBILITY_READ,
        P.VISIT_WORKLIST_READ,
        P.QUERY_READ,
        P.QUERY_RAISE,
        P.QUERY_CLOSE,
        P.QUERY_REOPEN,
        P.DATA_EXPORT,
        P.SUPPLY_READ,
        P.SUPPLY_LOT_READ,
        P.ENROLMENT_DASHBOARD_READ,
        P.ENROLMENT_FORECAST_READ,
        P.SCREENING_LOG_READ,
        P.CONSORT_READ,
        P.COMPLIANCE_READ,
        P.CRC_WORKLOAD_READ,
        P.UNBLINDING_EVENTS_READ,
    },
    Role.STATISTICIAN: _EVERYONE
    | {
        P.RANDOMIZATION_MARK_IN_ERROR,
        P.DATA_EXPORT,
        P.LIST_READ,
        P.LIST_GENERATE,
        P.LIST_IMPORT,
        P.LIST_EXTEND,
        P.LIST_DISCARD,
        P.GRANT_APPROVE,
        P.TRIAL_UNBLINDING_CONFIRM,
        P.AMENDMENT_PREVIEW,
        P.AMENDMENT_SIGN,
        P.SUPPLY_READ,
        P.SUPPLY_LOT_READ,
        P.SUPPLY_LOT_RECALL,
        P.ENROLMENT_DASHBOARD_READ,
        P.ENROLMENT_FORECAST_READ,
        P.SCREENING_LOG_READ,
        P.CONSORT_READ,
        P.COMPLIANCE_READ,
        P.UNBLINDING_EVENTS_READ,
        P.INTERIM_READ,
        P.ENDPOINTS_BY_ARM_READ,
        P.DESIGN_ASSESS,
        P.ADAM_EXPORT,  # x16a (issue 16)
    },
    Role.DSMB: _EVERYONE
    | {
        P.SUPPLY_READ,
        P.SUPPLY_LOT_READ,
        P.SUPPLY_LOT_RECALL,
        P.ENROLMENT_DASHBOARD_READ,
        P.ENROLMENT_FORECAST_READ,
        P.SCREENING_LOG_READ,
        P.CONSORT_READ,
        P.COMPLIANCE_READ,
        P.UNBLINDING_EVENTS_READ,
        P.INTERIM_READ,
        P.ENDPOINTS_BY_ARM_READ,
        P.GRANT_APPROVE,
    },
}
"""The one role -> permission table. Changing it changes what every adapter allows."""

# issue 15 (lane x15a): the monitor acts as the data manager (locks, SDV, the lock checklist)
# beside the study manager; the investigator signing records is the coordinator role today.
_RECORDS_HOLD: dict[Role, frozenset[Permission]] = {
    Role.MANAGER: frozenset({P.RECORD_LOCK, P.DATABASE_LOCK, P.LOCK_CHECKLIST_READ, P.SDV_READ}),
    Role.MONITOR: frozenset(
        {P.RECORD_LOCK, P.DATABASE_LOCK, P.LOCK_CHECKLIST_READ, P.SDV_MARK, P.SDV_READ}
    ),
    Role.COORDINATOR: frozenset({P.SDV_READ, P.RECORD_SIGN}),
}
for _role, _extra in _RECORDS_HOLD.items():
    ROLE_PERMISSIONS[_role] = ROLE_PERMISSIONS[_role] | _extra


def roles_with(permission: Permission) -> frozenset[Role]:
    """The roles that hold ``permission``, in no particular order."""
    return frozenset(role for role, held in ROLE_PERMISSIONS.items() if permission in held)


ACTION_PERMISSIONS: dict[Action, Permission] = {
    Action.RECORD_CONSENT: P.CONSENT_RECORD,
    Action.DECLINE_CONSENT: P.CONSENT_RECORD,
    Action.RECORD_SCREENING_FORM: P.SCREENING_FORM_RECORD,
    Action.CONFIRM_CRITERION: P.CRITERION_CONFIRM,
    Action.PASS_SCREENING: P.SCREENING_COMPLETE,
    Action.FAIL_SCREENING: P.SCREENING_COMPLETE,
    Action.CRC_APPROVE: P.CRC_ELIGIBILITY_DECIDE,
    Action.CRC_REJECT: P.CRC_ELIGIBILITY_DECIDE,
    Action.CRC_REQUEST_INFO: P.CRC_ELIGIBILITY_DECIDE,
    Action.ANATOMY_SUITABLE: P.ANATOMY_RECORD,
    Action.ANATOMY_UNSUITABLE: P.ANATOMY_RECORD,
    Action.SCREEN_FAIL_OTHER: P.SCREEN_FAIL,
    Action.RANDOMIZE: P.SUBJECT_RANDOMIZE,
    Action.RECORD_PROCEDURE: P.PROCEDURE_RECORD,
    Action.RECORD_DISCHARGE: P.DISCHARGE_RECORD,
    Action.RECORD_VISIT: P.VISIT_RECORD,
    Action.MISS_VISIT: P.VISIT_RECORD,
    Action.RECORD_THERAPY: P.THERAPY_RECORD,
    Action.RECORD_ADVERSE_EVENT: P.ADVERSE_EVENT_RECORD,
    Action.EMERGENCY_UNBLIND: P.SUBJECT_EMERGENCY_UNBLIND,
    Action.UNBLIND: P.SUBJECT_UNBLIND,
    Action.COMPLETE: P.SUBJECT_COMPLETE,
    Action.WITHDRAW: P.SUBJECT_EXIT,
    Action.MARK_LOST_TO_FOLLOW_UP: P.SUBJECT_EXIT,
    Action.RECORD_DEATH: P.SUBJECT_EXIT,
    Action.CORRECT_DATA: P.FORM_CORRECT,
}
"""The permission each lifecycle action needs."""


def permitted_actions(roles: Iterable[Role], state: SubjectState) -> list[Action]:
    """Actions the lifecycle allows from ``state`` that one of ``roles`` may take, in the
    lifecycle's order (what a page may offer; site and facts are the service's to add)."""
    held: set[Permission] = set()
    for role in roles:
        held |= ROLE_PERMISSIONS[role]
    return [a for a in allowed_actions(state) if ACTION_PERMISSIONS[a] in held]


# --- issue 15 (lane x15b): data quality, queries grown up, consent versions -------------------

PERMISSION_TITLES.update(
    {
        P.DQ_READ: "data-quality report",
        P.DQ_RUN: "run the data-quality rules",
        P.DQ_EXCLUDE: "exclude a data-quality rule for one record",
        P.MISSING_DATA_READ: "missing-data report",
        P.QUERY_ASSIGN: "assign data query",
        P.QUERY_VERIFY: "verify a data query's answer",
        P.CONSENT_WORKLIST_READ: "consent and re-consent worklist",
    }
)
for _role, _more in {
    Role.MANAGER: {
        P.DQ_READ,
        P.DQ_RUN,
        P.DQ_EXCLUDE,
        P.MISSING_DATA_READ,
        P.QUERY_ASSIGN,
        P.QUERY_VERIFY,
        P.CONSENT_WORKLIST_READ,
    },
    Role.MONITOR: {
        P.DQ_READ,
        P.DQ_RUN,
        P.DQ_EXCLUDE,
        P.MISSING_DATA_READ,
        P.QUERY_ASSIGN,
        P.QUERY_VERIFY,
        P.CONSENT_WORKLIST_READ,
    },
    Role.COORDINATOR: {P.DQ_READ, P.MISSING_DATA_READ, P.CONSENT_WORKLIST_READ},
}.items():
    ROLE_PERMISSIONS[_role] = ROLE_PERMISSIONS[_role] | frozenset(_more)
