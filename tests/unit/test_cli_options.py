"""One source for the CLI's shared options (issue 13): ``--user``, ``--study`` and ``--json``
mean the same in every command, and signed-in commands sign in through one callback
(cli/options.py)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from trialdesk.cli import options
from trialdesk.cli.main import build_app

CLI = Path(options.__file__).parent
SHARED = {"--user": options.UserOpt, "--study": options.StudyOpt, "--json": options.JsonOpt}
OWN_MEANING = {
    ("init", "--study"),  # the code of the study being created (default FLAGSHIP)
    ("study grant", "--study"),  # required: the study the role is given in
    ("simulate", "--study"),  # an operator command on a demo or sandbox study, no sign-in
    ("simulate", "--json"),
    ("protocol show", "--json"),  # a protocol file's tables, or JSON instead
    ("design assess", "--json"),  # an offline design report, not a signed-in command
}
"""Commands where one of these flags means something else, on purpose."""


def _commands(group: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(command path, command) of every leaf command (typer vendors its own click)."""
    if hasattr(group, "commands"):
        for name, sub in group.commands.items():
            yield from _commands(sub, f"{path} {name}".strip())
    else:
        yield path, group


def test_shared_options_mean_the_same_everywhere() -> None:
    """Every --user/--study/--json option has the shared default and help text."""
    differing = {}
    commands = list(_commands(typer.main.get_command(build_app())))
    assert len(commands) > 50 and any(path == "devices lot add" for path, _ in commands)
    for path, command in commands:
        for param in command.params:
            for flag in set(param.opts) & set(SHARED):
                if (path, flag) in OWN_MEANING:
                    continue
                shared = SHARED[flag]
                if (param.default, getattr(param, "help", None)) != (shared.default, shared.help):
                    differing[f"{path} {flag}"] = (param.default, getattr(param, "help", None))
    assert not differing, differing


def test_cmd_modules_define_no_shared_option_or_sign_in_helper_of_their_own() -> None:
    """The *_cmd modules import the shared options and sign-in callback; none redefines them
    (the 7 copies in two styles that issue 13 found)."""
    found = []
    for path in sorted(CLI.glob("*_cmd.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call | ast.Subscript):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
                text = ast.unparse(node.value)
                if any(f"'{flag}'" in text for flag in SHARED) and names:
                    found.append(f"{path.name}: {names[0]}")
            if isinstance(node, ast.FunctionDef) and node.name == "_call":
                found.append(f"{path.name}: def _call")
    assert not found, found
