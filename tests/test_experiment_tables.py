"""The counting and summarising of experiments/certify_savings.py and experiments/paired_summary.py."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest
from scipy import stats

from ddsx.certification.result_file import HEADER, ResultRow, format_row, sidecar_path
from ddsx.report.paired import McNemarResult
from ddsx.report.run_level import welch
from tests.test_report import write_run

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _file(path: Path, samples: dict[int, int], n: int = 1000) -> None:
    rows = [
        ResultRow(idx, 1, 1, 0.5, 1, "0:00:01", samples=s, count_a=s, n=n, n0=0, sigma=0.5, seconds=1.0)
        for idx, s in samples.items()
    ]
    path.write_text(HEADER + "".join(format_row(r) for r in rows))


def test_savings_count_the_copies_the_neediest_classifier_drew(tmp_path: Path) -> None:
    savings = _script("certify_savings")
    _file(tmp_path / "certify.a.tsv", {0: 100, 2: 900})
    _file(tmp_path / "certify.b.tsv", {0: 300, 2: 200})
    _file(tmp_path / "certify.c.tsv", {0: 50, 2: 1000})
    counts = savings.copies(tmp_path, n0=100)
    assert counts["multi_sequential"] == 300 + 1000  # per example the most any classifier used
    assert counts["separate_sequential"] == 100 + 900 + 300 + 200 + 50 + 1000
    assert counts["multi_fixed"] == 2 * 1100
    assert counts["separate_fixed"] == 3 * 2 * 1100


def test_savings_refuse_files_of_other_examples(tmp_path: Path) -> None:
    savings = _script("certify_savings")
    _file(tmp_path / "certify.a.tsv", {0: 100, 2: 900})
    _file(tmp_path / "certify.b.tsv", {0: 300, 4: 200})
    with pytest.raises(SystemExit, match="same examples"):
        savings.copies(tmp_path, n0=100)


def test_paired_summary_lists_the_radii_a_method_leads_with_a_holm_star() -> None:
    summary = _script("paired_summary")
    tests = [
        McNemarResult(0.0, 500, 0.9, 0.8, 30, 5, 0.001),  # A ahead, Holm-adjusted 0.004: starred
        McNemarResult(0.5, 500, 0.8, 0.7, 20, 9, 0.03),  # A ahead, Holm-adjusted 0.09: no star
        McNemarResult(1.0, 500, 0.5, 0.6, 2, 12, 0.01),  # B ahead, Holm-adjusted 0.04: starred
    ]
    adjusted = [0.004, 0.09, 0.04]
    assert summary.ahead(tests, adjusted, first=True) == "0 (0.001*), 0.5 (0.03)"
    assert summary.ahead(tests, adjusted, first=False) == "1 (0.01*)"
    assert summary.ahead(tests[1:2], adjusted[1:2], first=False) == "none"


def test_paired_summary_corrects_over_every_mcnemar_and_welch_test_together() -> None:
    summary = _script("paired_summary")
    with_test = McNemarResult(0.0, 500, 0.9, 0.8, 30, 5, 0.001)
    no_test = McNemarResult(0.5, 500, 0.8, 0.8, 0, 0, 1.0)  # no discordant digit: outside the family
    other = McNemarResult(0.0, 500, 0.8, 0.7, 20, 9, 0.02)
    seed_test = dataclasses.replace(welch([1.0, 2.0, 3.0], [2.0, 3.0, 5.0]), p_value=0.01)
    tests, seeds, family = summary.family_adjusted([[with_test, no_test], [other]], [seed_test, None])
    # By hand over the family {0.001, 0.02, 0.01}: 3 * 0.001 = 0.003, 2 * 0.01 = 0.02, 1 * 0.02 = 0.02.
    assert family == 3
    assert tests == [[pytest.approx(0.003), None], [pytest.approx(0.02)]]
    assert seeds == [pytest.approx(0.02), None]


def test_paired_summary_reads_result_files_and_states_the_family(tmp_path: Path, capsys) -> None:
    summary = _script("paired_summary")
    folder = tmp_path / "sigma0.5" / "dds"
    certified = {"a": [[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]], "b": [[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0]]}
    for method, per_seed in certified.items():
        for seed, digits in enumerate(per_seed):
            path = write_run(tmp_path / "tmp", method, 0.5, [(c, 1.0 if c else 0.0) for c in digits])
            folder.mkdir(parents=True, exist_ok=True)
            path.rename(folder / f"certify.{method}_seed{seed}.tsv")
            sidecar_path(path).rename(folder / f"certify.{method}_seed{seed}.settings.json")
    argv = [str(tmp_path), "--sigmas", "0.5", "--seeds", "0", "1", "--pairs", "a:b", "--radii", "0", "1"]
    assert summary.main(argv) == 0
    out = capsys.readouterr().out
    # Seed 0: A only on 3 digits at both radii; seed 1: A only on 1. Four McNemar tests and one Welch.
    assert "one family of 5 tests: the 4 McNemar tests" in out and "the 1 Welch tests" in out
    acr_a, acr_b = [4 / 6, 3 / 6], [1 / 6, 2 / 6]
    p = stats.ttest_ind(acr_a, acr_b, equal_var=False).pvalue
    assert f"| {p:.2g} |" in out


def test_training_summary_takes_the_last_logged_value_of_each_metric(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    summary = _script("training_summary")
    run = tmp_path / "train" / "sigma1.0" / "dds_adv_seed2"
    (run / "csv").mkdir(parents=True)
    # Lightning's CSV logger: one column group per row, the others empty.
    (run / "csv" / "metrics.csv").write_text(
        "epoch,step,train/acc,train/delta_norm,test/acc_denoised\n"
        "0,27,0.5,2.8,\n"
        "1,55,0.75,2.7,\n"
        "2,56,,,0.625\n"
    )
    (run / ".done").write_text("87 s\n")
    (tmp_path / "train" / "sigma1.0" / "not_a_run").mkdir()
    monkeypatch.setattr(sys, "argv", ["training_summary.py", str(tmp_path / "train")])
    summary.main()
    header, row = capsys.readouterr().out.splitlines()
    cells = dict(zip(header.split("\t"), row.split("\t"), strict=True))
    assert (cells["sigma"], cells["method"], cells["seed"], cells["wall_seconds"]) == (
        "1.0",
        "dds_adv",
        "2",
        "87",
    )
    assert (cells["train/acc"], cells["train/delta_norm"], cells["test/acc_denoised"]) == (
        "0.75",
        "2.7",
        "0.625",
    )
    assert cells["test/acc_clean"] == "NA"
