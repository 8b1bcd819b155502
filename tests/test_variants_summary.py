"""experiments/variants_summary.py: issue 20's head-to-head tables, against hand-computed values."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_mnist5k_v2 import write_file

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "experiments" / "variants_head_to_head.sh"
DENSEPURE = {"name": "densepure", "votes": 5, "unet_calls_per_copy": 10, "classifier_calls_per_copy": 5}


def load_summary():
    spec = importlib.util.spec_from_file_location(
        "variants_summary", REPO / "experiments" / "variants_summary.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


summary_module = load_summary()


def head_to_head(root: Path) -> Path:
    """sigma 0.5, six digits, dds_adv and dds_finetune (seed 0) behind dds and densepure.

    dds: dds_adv certifies every digit to 0.5, dds_finetune none (6 discordant digits at r = 0: exact
    two-sided p = 2 / 2**6 = 0.03125). densepure: dds_finetune misses the last digit only (p = 1).
    """
    certify = root / "certify" / "sigma0.5"
    write_file(certify / "dds", "dds_adv", 0, 0.5, [0.5] * 6, samples=[100, 200, 300, 400, 500, 600])
    write_file(certify / "dds", "dds_finetune", 0, 0.5, [None] * 6, samples=[600, 500, 400, 300, 200, 100])
    write_file(certify / "densepure", "dds_adv", 0, 0.5, [0.5] * 6, samples=[100] * 6, denoiser=DENSEPURE)
    write_file(
        certify / "densepure",
        "dds_finetune",
        0,
        0.5,
        [0.5] * 5 + [None],
        samples=[200] * 6,
        denoiser=DENSEPURE,
    )
    (certify / "dds" / "wall_seconds.txt").write_text("30\n")
    (certify / "densepure" / "wall_seconds.txt").write_text("120\n")
    return root / "certify"


def table_rows(text: str, title: str) -> list[list[str]]:
    """The data rows (after the header and rule) of the table under the heading that starts with title."""
    section = next(part for part in text.split("\n## ") if part.lstrip("# ").startswith(title))
    rows = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("|")
    ]
    return rows[2:]


def test_accuracy_cost_and_holm_family_by_hand(tmp_path):
    text = summary_module.summary(summary_module.load_root(head_to_head(tmp_path)), [0.0, 1.5, 2.0])
    accuracy = table_rows(text, "Certified accuracy")
    # sigma, variant, method, seeds, digits, r=0, r=1.5 (the grid ceiling below 1.6: "^"), r=2 (past it).
    assert accuracy == [
        ["0.5", "dds", "dds_adv", "1", "6", "100.0", "0.0^", "cap"],
        ["0.5", "dds", "dds_finetune", "1", "6", "0.0", "0.0^", "cap"],
        ["0.5", "densepure", "dds_adv", "1", "6", "100.0", "0.0^", "cap"],
        ["0.5", "densepure", "dds_finetune", "1", "6", "83.3", "0.0^", "cap"],
    ]
    cost = [row[1:] for row in table_rows(text, "Cost per certificate")]
    # copies per digit: the larger of the two arms per digit, mean (600+500+400+400+500+600)/6 = 500 for
    # dds, 200 for densepure; UNet calls per digit = copies x calls per copy; wall 30/6 and 120/6.
    assert cost == [
        ["dds", "2", "500", "1", "1", "500", "5.00"],
        ["densepure", "2", "200", "10", "5", "2000", "20.00"],
    ]
    tests = table_rows(text, "dds_adv against the other methods, per variant")
    # The family: the two radii-0 tests (no digit is discordant at 1.5 or 2); Holm doubles the smaller.
    assert [row[1:] for row in tests] == [
        ["dds", "0", "dds_finetune", "0", "100.0", "0.0", "6", "0", "0.0312", "0.0625"],
        ["densepure", "0", "dds_finetune", "0", "100.0", "83.3", "1", "0", "1", "1"],
    ]
    assert "one family of 2 tests" in text  # one seed: no run-level test joins it


def three_seeds(root: Path) -> Path:
    """sigma 0.5, dds only, seeds 0-2: dds_adv certifies all six digits to 0.5, dds_finetune misses the
    last m_k = 1, 2, 3 digits (wrong), so e_i = 1 on m_k digits and 0 on the others at r = 0."""
    certify = root / "certify" / "sigma0.5" / "dds"
    for seed, missed in enumerate((1, 2, 3)):
        write_file(certify, "dds_adv", seed, 0.5, [0.5] * 6)
        write_file(certify, "dds_finetune", seed, 0.5, [0.5] * (6 - missed) + [None] * missed)
    return root / "certify"


def test_run_level_pools_the_per_seed_differences_and_joins_the_holm_family(tmp_path):
    from scipy.stats import binomtest

    from ddsx.report.run_level import holm, random_effects

    text = summary_module.summary(summary_module.load_root(three_seeds(tmp_path)), [0.0])
    rows = table_rows(text, "dds_adv against the other methods over training seeds")
    # d_k = m_k / 6; v_k = sample variance of m_k ones among 6 values over 6: m (6 - m) / (6 * 5) / 6.
    d = [m / 6 for m in (1, 2, 3)]
    v = [m * (6 - m) / 30 / 6 for m in (1, 2, 3)]
    at_zero = random_effects(d, v)
    # ACR: e_i = 0.5 on the missed digits, so d and its variance scale by 0.5 and 0.25.
    acr = random_effects([x / 2 for x in d], [x / 4 for x in v])
    assert [row[2:6] for row in rows] == [
        ["dds_finetune", "r=0", "3", "+16.7, +33.3, +50.0"],
        ["dds_finetune", "ACR (grid)", "3", "+0.083, +0.167, +0.250"],
    ]
    assert rows[0][6].startswith(f"{100 * at_zero.estimate:+.1f} [{100 * at_zero.low:+.1f}, ")
    # One family: the two run-level tests and the three per-seed McNemar tests (1, 2, 3 discordant).
    mcnemar = [binomtest(m, m, 0.5).pvalue for m in (1, 2, 3)]
    adjusted = holm([at_zero.p_value, acr.p_value, *mcnemar])
    assert [row[7:] for row in rows] == [
        [f"{at_zero.p_value:.3g}", f"{adjusted[0]:.3g}"],
        [f"{acr.p_value:.3g}", f"{adjusted[1]:.3g}"],
    ]
    per_seed = table_rows(text, "dds_adv against the other methods, per variant")
    assert [row[-1] for row in per_seed] == [f"{p:.3g}" for p in adjusted[2:]]
    assert "one family of 5 tests" in text


def test_variants_must_hold_the_same_digits(tmp_path):
    root = head_to_head(tmp_path)
    for path in (root / "sigma0.5" / "densepure").glob("certify.*"):
        path.unlink()
    write_file(root / "sigma0.5" / "densepure", "dds_adv", 0, 0.5, [0.5] * 5, denoiser=DENSEPURE)
    with pytest.raises(Exception, match="do not hold the same examples"):
        summary_module.load_root(root)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["denoiser"].update(unet_calls_per_copy="10"), "positive integer"),
        (lambda d: d["denoiser"].update(classifier_calls_per_copy=0), "positive integer"),
        (lambda d: d["denoiser"].update(unet_calls_per_copy=3), "different denoisers"),
    ],
)
def test_hostile_sidecar_call_counts_are_refused(tmp_path, edit, message):
    root = head_to_head(tmp_path)
    sidecar = root / "sigma0.5" / "densepure" / "certify.dds_adv_seed0.settings.json"
    document = json.loads(sidecar.read_text())
    edit(document)
    sidecar.write_text(json.dumps(document))
    with pytest.raises(summary_module.SummaryInputError, match=message):
        summary_module.load_root(root)


def test_wall_seconds_must_be_a_number(tmp_path):
    root = head_to_head(tmp_path)
    (root / "sigma0.5" / "dds" / "wall_seconds.txt").write_text("rm -rf /\n")
    with pytest.raises(summary_module.SummaryInputError, match="number of seconds"):
        summary_module.load_root(root)


def run_script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {
        "PATH": "/usr/bin:/bin",
        "OUT": str(tmp_path / "out"),
        "RESULTS": str(tmp_path / "results"),
    }
    environment["DDSX_CHECKPOINTS"] = str(tmp_path / "ckpt")
    return subprocess.run(
        ["bash", str(SCRIPT)],
        cwd=tmp_path,
        env=environment | env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_script_refuses_unknown_variant_missing_denoiser_and_changed_settings(tmp_path):
    result = run_script(tmp_path, VARIANTS="dds diffsmooth")
    assert result.returncode == 2 and "unknown variant 'diffsmooth'" in result.stderr
    result = run_script(tmp_path)
    assert (
        result.returncode == 2 and "no mnist5k DDPM at" in result.stderr and "make denoiser" in result.stderr
    )
    denoiser = tmp_path / "ckpt" / "denoisers" / "mnist5k_ddpm"
    denoiser.mkdir(parents=True)
    (denoiser / "model_index.json").write_text("{}")
    # STEPS=report with nothing certified: it records its settings, then stops at the first missing run.
    result = run_script(tmp_path, STEPS="report", SIGMAS="0.5", VARIANTS="dds")
    assert result.returncode == 2 and "is not certified" in result.stderr
    result = run_script(tmp_path, STEPS="report", SIGMAS="0.5", VARIANTS="dds", N="1000")
    assert result.returncode == 2 and "was started with other settings" in result.stderr
