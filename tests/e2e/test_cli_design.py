"""`trialdesk design assess` end to end through the Typer app (RAND-2)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from trialdesk.cli.main import build_app
from trialdesk.protocol.loader import flagship_path, load_protocol

runner = CliRunner()


def _invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(build_app(), ["design", "assess", *args])
    return result.exit_code, result.stdout, result.stderr


def test_rand_2_json_has_every_figure() -> None:
    code, out, _ = _invoke(
        "--method", "blocks", "--block-sizes", "2,4", "--strata", "5", "--subjects", "40",
        "--simulations", "200", "--seed", "3", "--json",
    )  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert set(data) >= {
        "method", "subjects", "simulations", "strata", "block_sizes", "selection_bias",
        "final_imbalance", "max_abs_imbalance_during", "seconds", "interpretation",
    }  # fmt: skip
    assert set(data["selection_bias"]) == {"convergence_correct_guess_rate", "standard_error"}
    assert set(data["final_imbalance"]) == {"mean_abs", "p95_abs", "max_abs"}
    assert set(data["max_abs_imbalance_during"]) == {"mean", "p95"}
    assert (data["method"], data["subjects"], data["strata"]) == ("blocks", 40, 5)
    assert data["block_sizes"] == [2, 4]
    assert data["simulations"] == 200


def test_rand_2_summary_is_readable() -> None:
    code, out, _ = _invoke("--method", "minimization", "--simulations", "100")
    assert code == 0
    assert "minimization (preferred probability 0.8)" in out
    assert "correct-guess rate" in out
    assert "Someone who knew every earlier assignment" in out


def test_rand_2_protocol_design_is_assessed() -> None:
    """The flagship's own design: its ratio, block sizes, one stratum per site, target."""
    protocol = load_protocol(None).protocol
    code, out, _ = _invoke("--protocol", "flagship", "--simulations", "100", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["method"] == "blocks"
    assert data["block_sizes"] == sorted(protocol.randomization.block_sizes)
    assert data["strata"] == len(protocol.sites)
    assert data["subjects"] == protocol.enrolment.target_subjects
    assert data["arms_ratio"] == [arm.ratio for arm in protocol.arms]


def test_rand_2_options_override_the_protocol() -> None:
    code, out, _ = _invoke(
        "--protocol", "flagship", "--method", "complete", "--subjects", "30",
        "--simulations", "100", "--json",
    )  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert (data["method"], data["subjects"], data["block_sizes"]) == ("complete", 30, [])


def test_rand_2_protocol_minimization_settings_are_used(tmp_path: Path) -> None:
    text = flagship_path().read_text(encoding="utf-8")
    assert "  method: permuted_blocks" in text
    changed = text.replace(
        "  method: permuted_blocks",
        "  method: minimization\n  minimization:\n    factors: [{factor: site}]\n"
        "    preferred_probability: 0.9",
        1,
    )
    file = tmp_path / "minimized.yaml"
    file.write_text(changed, encoding="utf-8")
    code, out, err = _invoke("--protocol", str(file), "--simulations", "100", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["method"] == "minimization"
    assert data["preferred_probability"] == 0.9
    assert data["strata"] == len(load_protocol(None).protocol.sites)


def test_rand_2_bad_input_is_one_line_on_stderr(tmp_path: Path) -> None:
    cases = [
        (["--method", "blocks", "--block-sizes", "3"], "not a multiple of 2"),
        (["--method", "blocks", "--block-sizes", "two"], "--block-sizes must be whole numbers"),
        (["--method", "sometimes"], "--method must be one of"),
        ([], "give --method"),
        (["--method", "complete", "--simulations", "1"], "simulations must be"),
        (["--protocol", str(tmp_path / "missing.yaml")], "file not found"),
    ]
    for args, fragment in cases:
        code, out, err = _invoke(*args)
        assert code == 1, args
        assert out == ""
        assert err.count("\n") == 1, err
        assert err.startswith("error: ")
        assert fragment in err


def test_rand_2_strata_multiply_over_factors(tmp_path: Path) -> None:
    """Stratifying by site and a two-level field gives one stratum per combination."""
    text = flagship_path().read_text(encoding="utf-8")
    assert "  strata: [site]" in text
    file = tmp_path / "by_sex.yaml"
    file.write_text(text.replace("  strata: [site]", "  strata: [site, demographics.sex]", 1))
    code, out, err = _invoke("--protocol", str(file), "--simulations", "100", "--json")
    assert code == 0, err
    assert json.loads(out)["strata"] == 2 * len(load_protocol(None).protocol.sites)


def test_rand_2_multi_factor_minimization_is_refused_clearly(tmp_path: Path) -> None:
    """The simulator minimizes on one factor; it says so rather than simulate another design."""
    text = flagship_path().read_text(encoding="utf-8")
    changed = text.replace(
        "  method: permuted_blocks",
        "  method: minimization\n  minimization:\n"
        "    factors: [{factor: site}, {factor: demographics.sex}]",
        1,
    )
    file = tmp_path / "two_factors.yaml"
    file.write_text(changed, encoding="utf-8")
    code, _, err = _invoke("--protocol", str(file), "--simulations", "100")
    assert code == 1
    assert "minimizes on 2 factors (site, demographics.sex)" in err
    code, out, _ = _invoke(
        "--protocol", str(file), "--strata", "30", "--simulations", "100", "--json"
    )  # fmt: skip
    assert code == 0
    assert (json.loads(out)["method"], json.loads(out)["strata"]) == ("minimization", 30)
