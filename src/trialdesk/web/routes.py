"""Every router of the web pages and the handlers they rely on, in one place, so the
application is assembled without knowing the page modules one by one."""

from __future__ import annotations

from fastapi import FastAPI

from trialdesk.web import (
    account_pages,
    admin_pages,
    audit_pages,
    crc_pages,
    devices,
    exit_pages,
    followup_pages,
    list_pages,
    lock_pages,
    preferences,
    protocol_pages,
    query_pages,
    records_pages,
    report_pages,
    signin_pages,
    statistician_pages,
    subject_pages,
)
from trialdesk.web.session import install_signed_out_handler

PAGE_MODULES = (
    signin_pages,
    subject_pages,
    crc_pages,
    report_pages,
    admin_pages,
    statistician_pages,
    preferences,
    devices,
    protocol_pages,
    account_pages,
    audit_pages,
    query_pages,  # issue 14 (x14b)
    list_pages,  # issue 14 (x14b)
    records_pages,  # issue 15 (x15b)
    followup_pages,  # x14a: the subject after randomization
    lock_pages,  # issue 15, lane x15a: locks, SDV, signatures, the lock checklist
    exit_pages,  # issue 14 deliver 1 (f4): exits on the protocol's forms, contacts
)


def install_pages(app: FastAPI) -> None:
    """Add every page router to ``app`` and send signed-out requests to the sign-in page."""
    for module in PAGE_MODULES:
        app.include_router(module.router)
    install_signed_out_handler(app)
