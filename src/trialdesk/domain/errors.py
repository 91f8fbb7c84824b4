"""Domain refusals. Each carries a stable ``code`` (a :class:`Refusal`) that adapters map to
messages and HTTP problem types; docs/refusals.md is generated from :data:`REFUSALS`."""

from __future__ import annotations

from enum import StrEnum


class Refusal(StrEnum):
    """Every code a refusal can carry. The API's problem ``type`` ends in it, so a code is
    never renamed once released; tests/unit/test_refusals_enum.py fails on a code raised
    anywhere in the code that is not listed here."""

    ERROR = "error"
    NOT_ALLOWED_IN_STATE = "not-allowed-in-state"
    VALIDATION_FAILED = "validation-failed"
    PRECONDITION_FAILED = "precondition-failed"
    NOT_FOUND = "not-found"
    FORBIDDEN = "forbidden"
    AUTHENTICATION_FAILED = "authentication-failed"
    CONFLICT = "conflict"
    # subjects and their journey
    SITE_INACTIVE = "site-inactive"
    ALREADY_RECORDED = "already-recorded"
    SCREENING_INCOMPLETE = "screening-incomplete"
    ANATOMY_INCOMPLETE = "anatomy-incomplete"
    PROCEDURE_MISSING = "procedure-missing"
    NO_PROCEDURE_FORM = "no-procedure-form"
    FINAL_VISIT_MISSING = "final-visit-missing"
    NOT_ENOUGH_MISSED_CONTACTS = "not-enough-missed-contacts"
    CONCEALED_RECORD = "concealed-record"
    VISIT_NOT_OPEN = "visit-not-open"
    # randomization and allocation lists
    ANATOMY_NOT_CONFIRMED = "anatomy-not-confirmed"
    CONSENT_MISSING = "consent-missing"
    CRC_APPROVAL_MISSING = "crc-approval-missing"
    ENROLMENT_CLOSED = "enrolment-closed"
    SITE_CAP_REACHED = "site-cap-reached"
    COUNTRY_CAP_REACHED = "country-cap-reached"
    NO_ALLOCATION_LIST = "no-allocation-list"
    STRATUM_UNKNOWN = "stratum-unknown"
    LIST_EXHAUSTED = "list-exhausted"
    LIST_EXISTS = "list-exists"
    NO_LIST_METHOD = "no-list-method"
    UNSUPPORTED_STRATA = "unsupported-strata"
    GENERATED_LIST = "generated-list"
    IMPORTED_LIST = "imported-list"
    ALLOCATION_KEY_MISSING = "allocation-key-missing"
    ALLOCATION_KEY_WRONG = "allocation-key-wrong"
    # unblinding
    UNBLINDING_NOT_DUE = "unblinding-not-due"
    UNBLINDING_PENDING = "unblinding-pending"
    NO_UNBLINDING_REQUEST = "no-unblinding-request"
    TRIAL_UNBLINDED = "trial-unblinded"
    NOT_RANDOMIZED = "not-randomized"
    ALREADY_IN_ERROR = "already-in-error"
    # Central Review Committee and data queries
    NO_OPEN_CASE = "no-open-case"
    CASE_DECIDED = "case-decided"
    QUERY_IN_PROGRESS = "query-in-progress"
    QUERY_OPEN = "query-open"
    QUERY_ANSWERED = "query-answered"
    QUERY_CLOSED = "query-closed"
    # devices
    DEVICE_UNAVAILABLE = "device-unavailable"
    DEVICE_EXPIRED = "device-expired"
    ALREADY_RECEIVED = "already-received"
    ALREADY_QUARANTINED = "already-quarantined"
    LOT_EXISTS = "lot-exists"
    # protocol and amendments
    PROTOCOL_LOCKED = "protocol-locked"
    AMENDMENT_PENDING = "amendment-pending"
    AMENDMENT_NOT_PENDING = "amendment-not-pending"
    AMENDMENT_REFUSED = "amendment-refused"
    EFFECTIVE_DATE_PAST = "effective-date-past"
    EFFECTIVE_DATE_ORDER = "effective-date-order"
    # studies, users, installation
    STUDY_MODE = "study-mode"
    STUDY_HAS_SUBJECTS = "study-has-subjects"
    NOT_A_DEMO_STUDY = "not-a-demo-study"
    PROTOCOL_NOT_SIMULABLE = "protocol-not-simulable"
    SIMULATION_STEP_REFUSED = "simulation-step-refused"
    NO_ACTIVE_SITE = "no-active-site"
    OWN_ACCOUNT = "own-account"
    LAST_ADMIN = "last-admin"
    SCHEMA_REVISION = "schema-revision"
    DATABASE_NOT_EMPTY = "database-not-empty"
    AUDIT_CHAIN_BROKEN = "audit-chain-broken"
    FILE_EXISTS = "file-exists"
    NO_FOLDER = "no-folder"
    BLINDED = "blinded"
    PROTOCOL_INVALID = "protocol-invalid"
    # accounts, access and mail (issue 12)
    REQUEST_DECIDED = "request-decided"
    TOTP_REQUIRED = "totp-required"
    TOTP_NOT_STARTED = "totp-not-started"
    TOTP_NOT_ENROLLED = "totp-not-enrolled"
    INVITATION_CLOSED = "invitation-closed"
    INVITE_INSTEAD = "invite-instead"
    NO_EMAIL = "no-email"
    NO_SMTP = "no-smtp"
    # list custody (RAND-3, issue 12)
    LIST_CUSTODY = "list-custody"
    LIST_INACTIVE = "list-inactive"
    LIST_IN_USE = "list-in-use"
    # records: locks, sign-off, consent, exits (issue 15)
    RECORD_LOCKED = "record-locked"
    DATABASE_LOCKED = "database-locked"
    ALREADY_LOCKED = "already-locked"
    NOT_LOCKED = "not-locked"
    BLINDED_PHASE_FROZEN = "blinded-phase-frozen"
    DATABASE_LOCK_BLOCKED = "database-lock-blocked"
    DATABASE_NOT_LOCKED = "database-not-locked"
    NOTHING_TO_SIGN = "nothing-to-sign"
    CONSENT_VERSION_NOT_APPROVED = "consent-version-not-approved"
    CONSENT_VERSION_NOT_IN_FORCE = "consent-version-not-in-force"
    CONSENT_VERSION_SUPERSEDED = "consent-version-superseded"
    SUBJECT_DIED = "subject-died"
    SUBJECT_LOST = "subject-lost"
    WITHDRAWN_NO_CONTACT = "withdrawn-no-contact"
    WITHDRAWN_CONTACT_ONLY = "withdrawn-contact-only"
    # review pages: CRC dossier, lists (issue 14, x14b)
    CASE_NOT_WAITING = "case-not-waiting"
    # issue 15 (lane x15b): consent, queries, data quality
    CONSENT_ALREADY_SIGNED = "consent-already-signed"
    CONSENT_NOT_RECORDED = "consent-not-recorded"
    QUERY_VERIFIED = "query-verified"
    NOT_WITHDRAWN_WITH_CONTACT = "not-withdrawn-with-contact"


REFUSALS: dict[Refusal, str] = {
    Refusal.ERROR: "A refusal with no more specific code.",
    Refusal.NOT_ALLOWED_IN_STATE: "The subject's state does not allow the action; the "
    "message names the state and the actions allowed now (LIFE-1).",
    Refusal.VALIDATION_FAILED: "Input values are wrong; `errors` names each field and "
    "what is wrong with it. Nothing was changed.",
    Refusal.PRECONDITION_FAILED: "A precondition of the action does not hold.",
    Refusal.NOT_FOUND: "The record does not exist, or the caller may not know that it "
    "exists (another site's subject, another study).",
    Refusal.FORBIDDEN: "The caller's roles do not hold the permission the action needs "
    "(docs/permissions.md).",
    Refusal.AUTHENTICATION_FAILED: "Username or password wrong, the account locked, or the "
    "token expired.",
    Refusal.CONFLICT: "Someone else changed the record first; reload and try again.",
    Refusal.SITE_INACTIVE: "The site is not active; subjects cannot be registered there.",
    Refusal.ALREADY_RECORDED: "The fact is already recorded (a visit, the index procedure, "
    "discharge); change it with a correction and a reason.",
    Refusal.SCREENING_INCOMPLETE: "Screening criteria still wait for form data or the "
    "investigator's confirmation.",
    Refusal.ANATOMY_INCOMPLETE: "The anatomy criteria still wait for data.",
    Refusal.PROCEDURE_MISSING: "The index procedure must be recorded first.",
    Refusal.NO_PROCEDURE_FORM: "The protocol names no procedure form for the arm.",
    Refusal.FINAL_VISIT_MISSING: "Completion needs the protocol's final visit recorded.",
    Refusal.NOT_ENOUGH_MISSED_CONTACTS: "Lost to follow-up needs the protocol's number of "
    "missed contacts first.",
    Refusal.CONCEALED_RECORD: "The index procedure record would tell the arm; the blinded "
    "data path cannot read, query or correct it (RAND-6).",
    Refusal.VISIT_NOT_OPEN: "A visit cannot be marked missed before its window opens.",
    Refusal.ANATOMY_NOT_CONFIRMED: "Randomization needs suitable anatomy (ELIG-4).",
    Refusal.CONSENT_MISSING: "Randomization needs recorded consent (RAND-4).",
    Refusal.CRC_APPROVAL_MISSING: "Randomization needs the CRC's approval (RAND-4).",
    Refusal.ENROLMENT_CLOSED: "The total enrolment cap is reached (RAND-4).",
    Refusal.SITE_CAP_REACHED: "The site's cap is reached (RAND-4).",
    Refusal.COUNTRY_CAP_REACHED: "The country's cap is reached (RAND-4).",
    Refusal.NO_ALLOCATION_LIST: "No allocation list of the subject's mode (test or live) "
    "is loaded (RAND-3).",
    Refusal.STRATUM_UNKNOWN: "The allocation list has no such stratum.",
    Refusal.LIST_EXHAUSTED: "The stratum's list is used up and cannot be extended.",
    Refusal.LIST_EXISTS: "An active list of that mode exists already.",
    Refusal.NO_LIST_METHOD: "The protocol's randomization method uses no list.",
    Refusal.UNSUPPORTED_STRATA: "The list's strata do not match the protocol's.",
    Refusal.GENERATED_LIST: "A generated list is extended from its seed, not by import.",
    Refusal.IMPORTED_LIST: "An imported list is extended by importing more slots.",
    Refusal.ALLOCATION_KEY_MISSING: "The allocation key file is missing.",
    Refusal.ALLOCATION_KEY_WRONG: "The allocation key file does not decrypt this "
    "database's allocations.",
    Refusal.UNBLINDING_NOT_DUE: "Scheduled unblinding is due only after the protocol's "
    "unblinding visit (RAND-7).",
    Refusal.UNBLINDING_PENDING: "A trial-level unblinding request waits for confirmation.",
    Refusal.NO_UNBLINDING_REQUEST: "There is no trial-level unblinding request to confirm.",
    Refusal.TRIAL_UNBLINDED: "The trial is unblinded already.",
    Refusal.NOT_RANDOMIZED: "The subject has not been randomized.",
    Refusal.ALREADY_IN_ERROR: "The randomization is already marked in error.",
    Refusal.NO_OPEN_CASE: "The subject has no open CRC case of that kind.",
    Refusal.CASE_DECIDED: "The CRC case is decided already.",
    Refusal.QUERY_IN_PROGRESS: "The field already has a data query that is not closed.",
    Refusal.QUERY_OPEN: "The data query is open (unanswered).",
    Refusal.QUERY_ANSWERED: "The data query is answered and waits for the monitor.",
    Refusal.QUERY_CLOSED: "The data query is closed; the monitor may reopen it.",
    Refusal.DEVICE_UNAVAILABLE: "The device cannot be used or moved (the message says what "
    "the caller may not do, never a blinded fact).",
    Refusal.DEVICE_EXPIRED: "The device is past its expiry date.",
    Refusal.ALREADY_RECEIVED: "The shipment was received already.",
    Refusal.ALREADY_QUARANTINED: "The lot is quarantined already.",
    Refusal.LOT_EXISTS: "A lot with that number exists already.",
    Refusal.PROTOCOL_LOCKED: "A study's protocol changes only by a signed amendment.",
    Refusal.AMENDMENT_PENDING: "Another amendment waits for signatures.",
    Refusal.AMENDMENT_NOT_PENDING: "The amendment does not wait for a signature.",
    Refusal.AMENDMENT_REFUSED: "The amendment cannot be made; the message lists why.",
    Refusal.EFFECTIVE_DATE_PAST: "An amendment cannot take effect in the past.",
    Refusal.EFFECTIVE_DATE_ORDER: "An amendment cannot take effect before the previous one.",
    Refusal.STUDY_MODE: "The study exists in another mode (live, demo, sandbox).",
    Refusal.STUDY_HAS_SUBJECTS: "The action needs a study without subjects.",
    Refusal.NOT_A_DEMO_STUDY: "Simulation runs only on demo and sandbox studies.",
    Refusal.PROTOCOL_NOT_SIMULABLE: "The protocol cannot be simulated.",
    Refusal.SIMULATION_STEP_REFUSED: "A step of the simulation was refused by a service.",
    Refusal.NO_ACTIVE_SITE: "The study has no active site.",
    Refusal.OWN_ACCOUNT: "Administrators cannot deactivate their own account.",
    Refusal.LAST_ADMIN: "The study's last active administrator cannot be removed.",
    Refusal.SCHEMA_REVISION: "The database schema is at another revision; run "
    "'trialdesk init' first.",
    Refusal.DATABASE_NOT_EMPTY: "Restore goes into an empty database (or --force).",
    Refusal.AUDIT_CHAIN_BROKEN: "The audit chain does not verify.",
    Refusal.FILE_EXISTS: "The output file exists already.",
    Refusal.NO_FOLDER: "The output folder does not exist.",
    Refusal.BLINDED: "The result is by arm and the caller may not see allocations (RAND-6).",
    Refusal.PROTOCOL_INVALID: "The protocol file does not pass its checks; the message "
    "lists every problem.",
    Refusal.REQUEST_DECIDED: "The access request was approved or rejected already.",
    Refusal.TOTP_REQUIRED: "The caller's roles need a second factor (TOTP) that is not "
    "enrolled; the session serves enrolment only.",
    Refusal.TOTP_NOT_STARTED: "Second-factor enrolment was not started.",
    Refusal.TOTP_NOT_ENROLLED: "No second factor is enrolled.",
    Refusal.INVITATION_CLOSED: "Only an open invitation can be cancelled.",
    Refusal.INVITE_INSTEAD: "In a live study people choose their own password: invite them "
    "by e-mail.",
    Refusal.NO_EMAIL: "The user has no e-mail address on file for a link.",
    Refusal.NO_SMTP: "No SMTP server is configured; mails wait in the outbox.",
    Refusal.LIST_CUSTODY: "The list repeats a list of the other mode (test vs live) by "
    "fingerprint or arm sequence (RAND-3).",
    Refusal.LIST_INACTIVE: "The allocation list is out of use already.",
    Refusal.LIST_IN_USE: "A live list subjects drew from is extended, never replaced.",
    Refusal.RECORD_LOCKED: "The record is locked; the message names the lock.",
    Refusal.DATABASE_LOCKED: "The study's database is locked.",
    Refusal.ALREADY_LOCKED: "The record is locked already.",
    Refusal.NOT_LOCKED: "The record is not locked.",
    Refusal.BLINDED_PHASE_FROZEN: "The blinded-phase data were frozen at unblinding; a data "
    "manager's unlock with a reason is needed.",
    Refusal.DATABASE_LOCK_BLOCKED: "The database lock is blocked; the message lists what "
    "blocks it.",
    Refusal.DATABASE_NOT_LOCKED: "Trial-level unblinding needs the hard database lock.",
    Refusal.NOTHING_TO_SIGN: "There is no saved data to sign.",
    Refusal.CONSENT_VERSION_NOT_APPROVED: "The consent version is not approved at the site.",
    Refusal.CONSENT_VERSION_NOT_IN_FORCE: "The consent version is not in force on that date.",
    Refusal.CONSENT_VERSION_SUPERSEDED: "A newer consent version is in force on that date.",
    Refusal.SUBJECT_DIED: "Nothing dated after a subject's death can be recorded.",
    Refusal.SUBJECT_LOST: "The subject is lost to follow-up.",
    Refusal.WITHDRAWN_NO_CONTACT: "The subject withdrew from further contact.",
    Refusal.WITHDRAWN_CONTACT_ONLY: "The subject withdrew from further data; only contacts "
    "are recorded.",
    Refusal.CASE_NOT_WAITING: "The CRC case does not wait for the site's reply (only a case "
    "the committee asked more information on does).",
}
"""What each code means, for docs/refusals.md."""

# issue 15 (lane x15b)
REFUSALS.update(
    {
        Refusal.CONSENT_ALREADY_SIGNED: "The subject has already signed that consent version.",
        Refusal.CONSENT_NOT_RECORDED: "A re-consent needs the first consent recorded.",
        Refusal.QUERY_VERIFIED: "The data query's answer is verified; the monitor may reopen it.",
        Refusal.NOT_WITHDRAWN_WITH_CONTACT: "Follow-up contacts are recorded only for a subject "
        "who withdrew and still allows contact.",
    }
)


class TrialError(Exception):
    """Base for every refusal a user can cause; ``code`` is stable across versions."""

    code: str = Refusal.ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ActionNotAllowed(TrialError):
    """The subject's state does not allow this action (LIFE-1)."""

    code: str = Refusal.NOT_ALLOWED_IN_STATE


class ValidationFailed(TrialError):
    """Input values are wrong; ``problems`` maps a field or path to its message."""

    code: str = Refusal.VALIDATION_FAILED

    def __init__(self, message: str, problems: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.problems = dict(problems or {})


class PreconditionFailed(TrialError):
    """A named precondition of an action does not hold (e.g. consent missing)."""

    code: str = Refusal.PRECONDITION_FAILED

    def __init__(self, message: str, reason: Refusal | str = Refusal.PRECONDITION_FAILED) -> None:
        """``reason``: a :class:`Refusal` (a plain string is accepted while wave 2 of issue 13
        converts the remaining services; the unit test on refusal codes keeps them listed)."""
        super().__init__(message)
        try:
            self.code = Refusal(reason)
        except ValueError:
            self.code = reason


class NotFound(TrialError):
    """The record does not exist, or the actor may not know that it exists (ACC-1)."""

    code: str = Refusal.NOT_FOUND


class PermissionDenied(TrialError):
    """The actor's roles do not allow the action."""

    code: str = Refusal.FORBIDDEN


class AuthenticationFailed(TrialError):
    """Username or password wrong, or the account is locked."""

    code: str = Refusal.AUTHENTICATION_FAILED


class Conflict(TrialError):
    """Someone else changed the record first; the caller may reload and retry."""

    code: str = Refusal.CONFLICT
