"""`trialdesk lists ...`: the unblinded statistician's allocation lists (RAND-3, RAND-6).

Every command signs in as ``--user`` and calls one service of
:mod:`trialdesk.services.allocation.lists`; nothing printed here carries an arm or a slot's content.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer

from trialdesk.cli.common import fail, print_json
from trialdesk.cli.options import JsonOpt, StudyOpt, UserOpt
from trialdesk.cli.runtime import guarded, open_runtime, sign_in
from trialdesk.services.allocation.lists import (
    ListImportRefused,
    ListInfo,
    StratumStatus,
    discard_list,
    download_list,
    extend,
    generate_list,
    import_list,
    list_info,
    stratum_status,
)

app = typer.Typer(help="Allocation lists (unblinded statistician).", no_args_is_help=True)

MODE_HELP = "live (real subjects) or test (test subjects only)"


def _echo_info(info: ListInfo, verb: str) -> None:
    typer.echo(
        f"{info.mode} list {info.id} {verb}: {info.strata} strata, {info.slots} slots, "
        f"fingerprint {info.fingerprint}"
    )


def _echo_status(s: StratumStatus) -> None:
    flag = "\tLOW" if s.low else ""
    typer.echo(
        f"{s.mode}\t{s.stratum}\t{s.used} used\t{s.unused} unused\t{s.extensions} extensions{flag}"
    )


@app.command("generate")
def lists_generate(
    mode: str = typer.Option("live", "--mode", help=MODE_HELP),
    seed: int | None = typer.Option(None, "--seed", help="seed (default: generated, recorded)"),
    size: int | None = typer.Option(None, "--size", help="slots per stratum"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Generate the concealed, seeded permuted-block list for every stratum."""
    with open_runtime() as runtime:
        session = sign_in(runtime, user, study)
        info = guarded(
            lambda: generate_list(
                runtime.context,
                session.actor,
                session.study.id,
                mode=mode,
                seed=seed,
                size_per_stratum=size,
            )
        )
    if json_out:
        print_json(asdict(info))
        return
    _echo_info(info, "generated")


@app.command("import")
def lists_import(
    file: Path = typer.Argument(..., help="CSV file of the list", show_default=False),
    mode: str = typer.Option("live", "--mode", help=MODE_HELP),
    append: bool = typer.Option(
        False, "--append", help="add the file's slots to the active imported list of --mode"
    ),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Import a list made elsewhere; every problem is listed with its row, nothing is stored
    unless the whole file is right.

    \b
    Example (site-stratified protocol with arms INT and CTRL, ratio 1:1):
      stratum,sequence,block,block_size,arm
      site=S101,1,1,2,CTRL
      site=S101,2,1,2,INT
      site=S101,3,2,4,INT
      site=S101,4,2,4,CTRL
      site=S101,5,2,4,CTRL
      site=S101,6,2,4,INT
      site=S102,1,1,2,INT
      site=S102,2,1,2,CTRL

    \b
    One row per slot. stratum: site=<code> for every site of the study
    (all for an unstratified protocol; factor=level joined by | for other
    strata). sequence: 1, 2, ... without gaps per stratum. block: the
    permuted block's number; block_size: its size. arm: a protocol arm code.
    Each complete block holds the arms in the protocol's ratio; only a
    stratum's last block may be incomplete. An imported list has no seed:
    when a stratum runs low, import rows continuing it with --append.
    """
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}")
    except UnicodeDecodeError:
        fail(f"{file} is not UTF-8 text")
    with open_runtime() as runtime:
        session = sign_in(runtime, user, study)

        def call() -> ListInfo:
            try:
                return import_list(
                    runtime.context,
                    session.actor,
                    session.study.id,
                    text,
                    mode=mode,
                    source_name=file.name,
                    append=append,
                )
            except ListImportRefused as refused:
                for line in refused.lines:
                    typer.echo(f"{file}: {line}", err=True)
                count = len(refused.lines)
                fail(f"{file}: {count} problem{'s' if count != 1 else ''}; nothing was imported")

        info = guarded(call)
    if json_out:
        print_json(asdict(info))
        return
    _echo_info(info, "slots added" if append else "imported")


@app.command("show")
def lists_show(
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Lists of the study with their fingerprints (no content)."""
    with open_runtime() as runtime:
        session = sign_in(runtime, user, study)
        infos = guarded(lambda: list_info(runtime.context, session.actor, session.study.id))
    if json_out:
        print_json([asdict(i) for i in infos])
        return
    if not infos:
        typer.echo("no allocation lists")
    for i in infos:
        state = "active" if i.active else "inactive"
        typer.echo(
            f"{i.id}\t{i.mode}\t{i.source}\t{state}\t{i.strata} strata\t{i.slots} slots\t"
            f"{i.fingerprint}"
        )


@app.command("status")
def lists_status(
    mode: str | None = typer.Option(None, "--mode", help="only this mode (default: both)"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Per stratum of the active lists: slots used, unused, extensions; LOW marks strata
    below the protocol's low_slots_warning."""
    with open_runtime() as runtime:
        session = sign_in(runtime, user, study)
        rows = guarded(
            lambda: stratum_status(runtime.context, session.actor, session.study.id, mode=mode)
        )
    if json_out:
        print_json([asdict(r) for r in rows])
        return
    if not rows:
        typer.echo("no active allocation list")
    for row in rows:
        _echo_status(row)


@app.command("extend")
def lists_extend(
    stratum: str = typer.Option(..., "--stratum", help="e.g. site=S101", show_default=False),
    blocks: int | None = typer.Option(
        None, "--blocks", help="blocks to add (default: two of the largest block size)"
    ),
    mode: str = typer.Option("live", "--mode", help=MODE_HELP),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Add seeded blocks to a stratum of a generated list (reproducible from its seed,
    audited)."""
    with open_runtime() as runtime:
        session = sign_in(runtime, user, study)
        status = guarded(
            lambda: extend(
                runtime.context,
                session.actor,
                session.study.id,
                stratum,
                blocks=blocks,
                mode=mode,
            )
        )
    if json_out:
        print_json(asdict(status))
        return
    _echo_status(status)


@app.command("download")
def lists_download(
    list_id: int = typer.Argument(..., help="the list's id ('lists show')", show_default=False),
    out: Path = typer.Option(..., "--out", help="file to write (must not exist)"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
) -> None:
    """Write the whole list in the import format (stratum,sequence,block,block_size,arm), for
    reconciliation; every download is audited (who, which list, when)."""
    if out.exists():
        fail(f"{out} exists; name a new file")
    with open_runtime() as runtime:
        session = sign_in(runtime, user, study)
        got = guarded(
            lambda: download_list(runtime.context, session.actor, session.study.id, list_id)
        )
    try:
        with out.open("x", encoding="utf-8", newline="") as handle:
            handle.write(got.csv)
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    typer.echo(f"list {list_id} written to {out} (download audited)")


@app.command("discard")
def lists_discard(
    list_id: int = typer.Argument(..., help="the list's id ('lists show')", show_default=False),
    reason: str = typer.Option(..., "--reason", help="why the list is taken out of use"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Take a test list (or a live list no subject drew from) out of use, so another list can
    be loaded in its mode; the list is kept and still counts for custody."""
    with open_runtime() as runtime:
        session = sign_in(runtime, user, study)
        info = guarded(
            lambda: discard_list(runtime.context, session.actor, session.study.id, list_id, reason)
        )
    if json_out:
        print_json(asdict(info))
        return
    typer.echo(f"{info.mode} list {info.id} discarded: it is out of use")
