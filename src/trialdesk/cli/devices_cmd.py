"""`trialdesk devices ...`: device accountability (SUP-1, SUP-2). The study manager adds
lots, ships and quarantines; the site coordinator receives; site staff return and destroy;
anyone with a study role reads stock (blinded roles: only what was received and is in
transit); re-supply warnings go to roles that may see the site's arms.

Each command signs in as ``--user``/``TRIALDESK_USER``, calls one service and prints what it
returns, or JSON with ``--json``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from trialdesk.cli.common import print_json
from trialdesk.cli.options import JsonOpt, StudyOpt, UserOpt, signed_in_call
from trialdesk.cli.runtime import (
    Session,
    parse_date,
    require_date,
    signature_password,
)
from trialdesk.services import supply

app = typer.Typer(
    help="Implant devices: lots, shipments, site stock, recalls.", no_args_is_help=True
)
lot_app = typer.Typer(help="Device lots (study manager).", no_args_is_help=True)


def _split(values: list[str]) -> list[str]:
    """Serials given as repeated arguments and/or comma-separated."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _lot_text(lot: dict[str, Any]) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in lot["counts"].items()) or "no devices"
    line = (
        f"lot {lot['lot_number']} [{lot['status']}] {lot['model']} by {lot['manufacturer']}, "
        f"GTIN {lot['gtin']}, expires {lot['expiry']}: {counts}"
    )
    if lot["quarantine_reason"]:
        line += f"\n  quarantined: {lot['quarantine_reason']}"
    return line


def _shipment_text(s: dict[str, Any]) -> str:
    line = f"shipment {s['number']} to {s['site']} [{s['status']}] shipped {s['shipped_on']}"
    if s["received_on"]:
        line += f", received {s['received_on']} by {s['received_by']}"
    return line + f": {', '.join(s['serials'])}"


def _show(data: Any, json_out: bool, text: Callable[[Any], str]) -> None:
    if json_out:
        print_json(data)
    else:
        typer.echo(text(data))


@lot_app.command("add")
def lot_add(
    lot_number: str,
    model: str = typer.Option(..., "--model", help="device model"),
    gtin: str = typer.Option(..., "--gtin", help="GTIN-14, the UDI's device identifier (01)"),
    manufacturer: str = typer.Option(..., "--manufacturer"),
    expiry: str = typer.Option(..., "--expiry", help="expiry date YYYY-MM-DD"),
    serial: list[str] = typer.Option([], "--serial", help="serial number (repeat, or a,b,c)"),
    udi: list[str] = typer.Option([], "--udi", help="a device's GS1 UDI (repeat)"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Register a lot and its devices at the depot (study manager)."""
    when = require_date(expiry, "--expiry")
    view = signed_in_call(
        user,
        study,
        lambda s: supply.register_lot(
            s.runtime.context,
            s.actor,
            s.study.id,
            lot_number=lot_number,
            model=model,
            gtin=gtin,
            manufacturer=manufacturer,
            expiry=when,
            serials=_split(serial),
            udis=udi,
        ),
    )
    _show(view.to_dict(), json_out, _lot_text)


@lot_app.command("list")
def lot_list(
    user: str | None = UserOpt, study: str | None = StudyOpt, json_out: bool = JsonOpt
) -> None:
    """Lots with device counts by status (blinded: by place, all delivered as at_sites)."""
    views = signed_in_call(
        user, study, lambda s: supply.list_lots(s.runtime.context, s.actor, s.study.id)
    )
    _show([v.to_dict() for v in views], json_out, lambda d: "\n".join(map(_lot_text, d)))


@app.command("ship")
def ship(
    site: str,
    serials: list[str] = typer.Argument(..., help="serial numbers (or a,b,c)"),
    shipped_on: str | None = typer.Option(None, "--on", help="shipping date (default today)"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Ship devices from the depot to a site (study manager)."""
    on = parse_date(shipped_on, "--on")
    view = signed_in_call(
        user,
        study,
        lambda s: supply.ship_devices(
            s.runtime.context, s.actor, s.study.id, site, _split(serials), on
        ),
    )
    _show(view.to_dict(), json_out, _shipment_text)


@app.command("receive")
def receive(
    shipment: str,
    received_on: str | None = typer.Option(None, "--on", help="receipt date (default today)"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Confirm receipt of a shipment (site coordinator of the receiving site)."""
    on = parse_date(received_on, "--on")
    view = signed_in_call(
        user,
        study,
        lambda s: supply.receive_shipment(s.runtime.context, s.actor, s.study.id, shipment, on),
    )
    _show(view.to_dict(), json_out, _shipment_text)


@app.command("shipments")
def shipments(
    user: str | None = UserOpt, study: str | None = StudyOpt, json_out: bool = JsonOpt
) -> None:
    """Shipments the caller may see."""
    views = signed_in_call(
        user, study, lambda s: supply.list_shipments(s.runtime.context, s.actor, s.study.id)
    )
    _show([v.to_dict() for v in views], json_out, lambda d: "\n".join(map(_shipment_text, d)))


def _inventory_text(data: dict[str, Any]) -> str:
    lines = []
    for site in data["sites"]:
        if site["on_hand"] is None:
            lines.append(
                f"{site['site']} {site['name']}: received {site['received']}, in transit "
                f"{site['in_transit']} (reorder level {site['reorder_level']}); on hand, "
                "quarantined and used devices: not shown to blinded roles"
            )
        else:
            flag = "  LOW STOCK" if site["low_stock"] else ""
            lines.append(
                f"{site['site']} {site['name']}: on hand {site['on_hand']} (reorder level "
                f"{site['reorder_level']}){flag}; in transit {site['in_transit']}, quarantined "
                f"{site['quarantined']}, expired {site['expired']}, received "
                f"{site['received']}, left stock {site['left_stock']}"
            )
        if site["by_status"] is not None:
            lines.append(
                "  left stock: " + ", ".join(f"{k} {v}" for k, v in site["by_status"].items())
            )
        for device in site["devices"]:
            lines.append(
                f"  {device['serial']} lot {device['lot']} exp {device['expiry']} "
                f"[{device['status']}]"
            )
        for used in site["used"] or []:
            how = "implanted" if used["released"] else "used, not released"
            lines.append(
                f"  {used['serial']} lot {used['lot']}: {how} in {used['subject']} on "
                f"{used['procedure_date']}"
            )
    return "\n".join(lines) or "no device stock"


@app.command("inventory")
def inventory(
    site: str | None = typer.Option(None, "--site", help="one site (default: every site)"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Stock by site; which subject got which device only for roles that may see arms."""
    view = signed_in_call(
        user, study, lambda s: supply.site_inventory(s.runtime.context, s.actor, s.study.id, site)
    )
    _show(view.to_dict(), json_out, _inventory_text)


@app.command("stock")
def stock(
    user: str | None = UserOpt, study: str | None = StudyOpt, json_out: bool = JsonOpt
) -> None:
    """Re-supply warnings: supplied sites at or below the protocol's reorder level (SUP-2);
    for the site's implanting team and unblinded roles, empty for blinded roles."""
    warnings = signed_in_call(
        user, study, lambda s: supply.stock_warnings(s.runtime.context, s.actor, s.study.id)
    )
    data = [w.to_dict() for w in warnings]
    _show(
        data,
        json_out,
        lambda d: (
            "\n".join(
                f"{w['site']} {w['name']}: {w['on_hand']} on hand, {w['in_transit']} in transit, "
                f"reorder level {w['reorder_level']}"
                for w in d
            )
            or "no re-supply warning (shown to each site's implanting team and unblinded roles)"
        ),
    )


def _removal(kind: str) -> Callable[..., None]:
    service = supply.return_device if kind == "return" else supply.destroy_device

    def command(
        serial: str,
        reason: str = typer.Option(..., "--reason"),
        on: str | None = typer.Option(None, "--on", help="date (default today)"),
        user: str | None = UserOpt,
        study: str | None = StudyOpt,
        json_out: bool = JsonOpt,
    ) -> None:
        when = parse_date(on, "--on")
        view = signed_in_call(
            user,
            study,
            lambda s: service(s.runtime.context, s.actor, s.study.id, serial, reason, when),
        )
        _show(
            view.to_dict(),
            json_out,
            lambda d: f"device {d['serial']} lot {d['lot']}: {d['status']}",
        )

    return command


app.command("return", help="Return a device held at a site to the sponsor (site staff).")(
    _removal("return")
)
app.command("destroy", help="Destroy a device (site staff at their site, manager at the depot).")(
    _removal("destroy")
)


@app.command("quarantine")
def quarantine(
    lot_number: str,
    reason: str = typer.Option(..., "--reason"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Quarantine a lot (recall or quality hold): nothing of it ships or is implanted."""
    view = signed_in_call(
        user,
        study,
        lambda s: supply.quarantine_lot(s.runtime.context, s.actor, s.study.id, lot_number, reason),
    )
    _show(view.to_dict(), json_out, _lot_text)


@app.command("recall")
def recall(
    lot_number: str,
    reason: str | None = typer.Option(
        None, "--reason", help="study manager: why the list is needed (signed, audited)"
    ),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Every subject who received a device of the lot, with site and procedure date.
    Statistician, DSMB, an implanting team (its own site); the study manager with --reason
    and an e-signature."""

    def run(s: Session) -> supply.RecallView:
        password = signature_password(s.runtime.context.settings) if reason else None
        return supply.recall_subjects(
            s.runtime.context, s.actor, s.study.id, lot_number, reason=reason, password=password
        )

    view = signed_in_call(user, study, run)
    data = view.to_dict()

    def text(d: dict[str, Any]) -> str:
        head = f"lot {d['lot_number']} [{d['lot_status']}]: {len(d['subjects'])} subject(s)"
        rows = [
            f"  {e['subject']} site {e['site']} procedure {e['procedure_date']} device "
            f"{e['serial']}" + ("" if e["released"] else " (not released)")
            for e in d["subjects"]
        ]
        return "\n".join([head, *rows])

    _show(data, json_out, text)


app.add_typer(lot_app, name="lot")
