"""The counting and summarising of experiments/certify_savings.py and experiments/paired_summary.py."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from ddsx.certification.result_file import HEADER, ResultRow, format_row
from ddsx.report.paired import McNemarResult

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


def test_paired_summary_lists_the_radii_a_method_leads_with_a_bonferroni_star() -> None:
    summary = _script("paired_summary")
    tests = [
        McNemarResult(0.0, 500, 0.9, 0.8, 30, 5, 0.001),  # A ahead, 0.001 * 3 < 0.05: starred
        McNemarResult(0.5, 500, 0.8, 0.7, 20, 9, 0.03),  # A ahead, 0.03 * 3 >= 0.05: no star
        McNemarResult(1.0, 500, 0.5, 0.6, 2, 12, 0.01),  # B ahead
    ]
    assert summary.ahead(tests, first=True) == "0 (0.001*), 0.5 (0.03)"
    assert summary.ahead(tests, first=False) == "1 (0.01*)"
    assert summary.ahead(tests[1:2], first=False) == "none"


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
