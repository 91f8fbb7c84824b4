"""`trialdesk design ...` commands: weigh a randomization design before the trial starts."""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, replace
from typing import Annotated, Any

import typer

from trialdesk.cli.common import fail, fail_from, print_json
from trialdesk.domain.errors import TrialError

app = typer.Typer(help="design commands", no_args_is_help=True)

_METHODS = ("complete", "blocks", "minimization")
_PROTOCOL_METHODS = {
    "complete": "complete",
    "permuted_blocks": "blocks",
    "minimization": "minimization",
}


@dataclass(frozen=True)
class _Settings:
    method: str | None = None
    block_sizes: tuple[int, ...] = ()
    strata: int = 1
    subjects: int = 100
    ratio: tuple[int, ...] = (1, 1)
    preferred_probability: float = 0.8
    source: str = "command line"


def _int_list(option: str, text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        fail(f"{option} must be whole numbers separated by commas (e.g. 4,6), not {text!r}")
    return values


def _levels(protocol: Any, factor: str) -> int:
    """How many values a stratification or minimization factor takes in the protocol."""
    named = {"site": protocol.sites, "country": protocol.countries, "region": protocol.regions}
    if factor in named:
        if not named[factor]:
            fail(
                f"the protocol lists no {factor}s, so strata by {factor} cannot be counted; "
                "give --strata"
            )
        return len(named[factor])
    form_code, _, field_code = factor.partition(".")
    try:
        form = protocol.form(form_code)
    except KeyError:
        fail(f"factor {factor!r} names no form of the protocol; give --strata")
    for field in form.fields:
        if field.code == field_code:
            if field.type == "boolean":
                return 2
            if field.type == "choice" and field.choices:
                return len(field.choices)
            fail(f"factor {factor!r} is not a choice or yes/no field; give --strata")
    fail(f"factor {factor!r} names no field of form {form_code!r}; give --strata")


def _from_protocol(reference: str, strata: int | None) -> _Settings:
    """The protocol's own design: its ratio, method, block sizes, strata and target.

    ``strata`` given on the command line replaces counting the protocol's factors.
    """
    from trialdesk.protocol.loader import load_protocol  # lazy: pydantic + YAML only here

    try:
        loaded = load_protocol(None if reference == "flagship" else reference)
    except TrialError as exc:
        fail_from(exc)
    protocol = loaded.protocol
    design = protocol.randomization
    method = _PROTOCOL_METHODS[str(design.method.value)]
    probability = 0.8
    factors = list(design.strata)
    if method == "minimization" and design.minimization is not None:
        factors = [factor.factor for factor in design.minimization.factors]
        probability = design.minimization.preferred_probability
        if len(factors) > 1 and strata is None:
            fail(
                f"the protocol minimizes on {len(factors)} factors ({', '.join(factors)}); "
                "design assess simulates one factor: give --strata for its number of levels"
            )
    if strata is None:
        strata = math.prod(_levels(protocol, factor) for factor in factors)
    return _Settings(
        method=method,
        block_sizes=tuple(design.block_sizes),
        strata=strata,
        subjects=protocol.enrolment.target_subjects,
        ratio=tuple(arm.ratio for arm in protocol.arms),
        preferred_probability=probability,
        source=f"protocol {protocol.name} {protocol.version}",
    )


def _print_summary(result: dict[str, Any], source: str) -> None:
    ratio = ":".join(map(str, result["arms_ratio"]))
    method = result["method"]
    if method == "blocks":
        method = f"permuted blocks (sizes {', '.join(map(str, result['block_sizes']))})"
    elif method == "minimization":
        method = f"minimization (preferred probability {result['preferred_probability']:g})"
    else:
        method = "complete randomization"
    bias = result["selection_bias"]
    final = result["final_imbalance"]
    during = result["max_abs_imbalance_during"]
    lines = [
        f"Design assessment ({source}): {method}",
        f"  ratio {ratio}, {result['strata']} strata, {result['subjects']} subjects, "
        f"{result['simulations']:,} simulated trials, seed {result['seed']}, "
        f"{result['seconds']:.2f} s",
        "",
        "Selection bias (convergence strategy)",
        f"  correct-guess rate        {100 * bias['convergence_correct_guess_rate']:.2f}%"
        f"  (standard error {100 * bias['standard_error']:.3f} points)",
        "Imbalance between arms at the end",
        f"  mean                      {final['mean_abs']:.2f}",
        f"  95th percentile           {final['p95_abs']:g}",
        f"  worst                     {final['max_abs']:g}",
        "Largest imbalance during enrolment",
        f"  mean                      {during['mean']:.2f}",
        f"  95th percentile           {during['p95']:g}",
        "",
        textwrap.fill(result["interpretation"], width=88),
    ]
    typer.echo("\n".join(lines))


@app.command("assess")
def assess_command(
    method: Annotated[
        str | None,
        typer.Option(help="complete, blocks or minimization (default: the protocol's)."),
    ] = None,
    block_sizes: Annotated[
        str | None, typer.Option(help="Block sizes for 'blocks', comma-separated, e.g. 4,6.")
    ] = None,
    strata: Annotated[int | None, typer.Option(help="Number of strata (sites); default 1.")] = None,
    subjects: Annotated[int | None, typer.Option(help="Subjects per trial; default 100.")] = None,
    simulations: Annotated[int, typer.Option(help="Simulated trials.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed; the same seed gives the same figures.")] = 1,
    ratio: Annotated[
        str | None, typer.Option(help="Allocation ratio, comma-separated; default 1,1.")
    ] = None,
    preferred_probability: Annotated[
        float | None,
        typer.Option(help="Minimization: probability of the imbalance-reducing arm (0.8)."),
    ] = None,
    protocol: Annotated[
        str | None,
        typer.Option(
            help="Assess this protocol file's own design ('flagship' for the built-in one); "
            "the other options override its values."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Simulate a randomization design: how guessable and how balanced it is."""
    from trialdesk.stats.design import assess  # lazy: numpy only when a design is assessed

    settings = _from_protocol(protocol, strata) if protocol is not None else _Settings()
    if method is not None:
        if method not in _METHODS:
            fail(f"--method must be one of {', '.join(_METHODS)}, not {method!r}")
        settings = replace(settings, method=method)
    if block_sizes is not None:
        settings = replace(settings, block_sizes=_int_list("--block-sizes", block_sizes))
    elif settings.method == "blocks" and not settings.block_sizes:
        settings = replace(settings, block_sizes=(4, 6))
    if ratio is not None:
        settings = replace(settings, ratio=_int_list("--ratio", ratio))
    if strata is not None:
        settings = replace(settings, strata=strata)
    if subjects is not None:
        settings = replace(settings, subjects=subjects)
    if preferred_probability is not None:
        settings = replace(settings, preferred_probability=preferred_probability)
    chosen = settings.method
    if chosen is None:
        fail("give --method (complete, blocks or minimization) or --protocol")
    try:
        result = assess(
            chosen,
            block_sizes=settings.block_sizes,
            strata=settings.strata,
            subjects=settings.subjects,
            simulations=simulations,
            seed=seed,
            arms_ratio=settings.ratio,
            preferred_probability=settings.preferred_probability,
        )
    except TrialError as exc:
        fail(exc.message)
    if as_json:
        print_json(result)
    else:
        _print_summary(result, settings.source)
