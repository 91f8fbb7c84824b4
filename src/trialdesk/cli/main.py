"""Entry point: builds the Typer app from the command groups; nothing runs at import."""

from __future__ import annotations

import typer

from trialdesk.cli import (
    account_cmd,
    audit_cmd,
    backup_cmd,
    design_cmd,
    devices_cmd,
    endpoints_cmd,
    export_cmd,
    lists_cmd,
    locks_cmd,
    mail_cmd,
    me_cmd,
    protocol_cmd,
    records_cmd,
    report_cmd,
    review_cmd,
    serve_cmd,
    setup_cmd,
    simulate_cmd,
    subject_cmd,
    users_cmd,
    visits_cmd,
)


def build_app() -> typer.Typer:
    app = typer.Typer(
        help="trialdesk: run a randomized, blinded, multi-centre clinical trial.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    app.command("init")(setup_cmd.init)
    app.command("serve")(serve_cmd.serve)
    app.command("simulate")(simulate_cmd.simulate)
    app.command("backup")(backup_cmd.backup)
    app.command("restore")(backup_cmd.restore)
    app.add_typer(protocol_cmd.app, name="protocol", help="Validate and show protocol files.")
    app.add_typer(subject_cmd.app, name="subject", help="Subject actions.")
    app.add_typer(me_cmd.app, name="me", help="Your own settings (time zone, password, TOTP).")
    app.add_typer(users_cmd.app, name="users", help="Users, invitations and approvals.")
    app.add_typer(account_cmd.app, name="account", help="Invitation and reset links.")
    app.add_typer(mail_cmd.app, name="mail", help="The mail outbox (local operator).")
    app.add_typer(lists_cmd.app, name="lists", help="Allocation lists.")
    app.add_typer(audit_cmd.build_audit_app(), name="audit", help="The audit trail.")
    app.add_typer(setup_cmd.study_app, name="study", help="Studies.")
    app.command("schedule")(visits_cmd.schedule)
    app.add_typer(visits_cmd.visits_app, name="visits", help="Visit worklists.")
    app.add_typer(endpoints_cmd.app, name="endpoints", help="Primary endpoints (unblinded).")
    app.add_typer(design_cmd.app, name="design", help="Assess a randomization design.")
    app.add_typer(review_cmd.queries_app, name="queries", help="Data queries (monitor).")
    app.add_typer(review_cmd.crc_app, name="crc", help="Central Review Committee.")
    app.add_typer(export_cmd.app, name="export", help="Standard exports (CSV, ODM, SDTM).")
    app.command("forecast")(report_cmd.forecast)
    app.add_typer(report_cmd.report_app, name="report", help="Reports (enrolment).")
    app.add_typer(devices_cmd.app, name="devices", help="Implant devices (SUP-1, SUP-2).")
    # issue 15, lane x15a: records that hold
    app.add_typer(locks_cmd.lock_app, name="lock", help="Locks and the database lock.")
    app.add_typer(locks_cmd.sdv_app, name="sdv", help="Source-data verification.")
    app.add_typer(locks_cmd.sign_app, name="sign", help="Investigator e-signatures.")
    # issue 15 (x15b): data quality, consent versions, exits through forms
    app.add_typer(records_cmd.quality_app, name="quality", help="Data quality (REC-6, REC-10).")
    app.add_typer(records_cmd.consent_app, name="consent", help="Consent versions (REC-8).")
    app.add_typer(records_cmd.exit_app, name="exit", help="Exits on forms (REC-9).")
    return app


def run() -> None:
    build_app()()
