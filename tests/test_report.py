"""ddsx-report: per-run tables, the best-over-sigma envelope, LaTeX, plots, folder discovery."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ddsx.certification.results_file import HEADER, ResultRow, format_row
from ddsx.certification.store import sidecar_path
from ddsx.cli.report import build_report, main
from ddsx.report import envelope_curve, envelope_table, load_runs, summary_table

RADII = [0.0, 0.5, 1.0]


def write_run(folder: Path, method: str, sigma: float, outcomes: list[tuple[int, float]]) -> Path:
    """A result file whose rows are (correct, radius); abstentions where radius < 0."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "certify.tsv"
    lines = [HEADER]
    for idx, (correct, radius) in enumerate(outcomes):
        predict = -1 if radius < 0 else (1 if correct else 2)
        lines.append(
            format_row(
                ResultRow(
                    idx, 1, predict, max(radius, 0.0), correct, "0:00:01", 90, 100, 10, 0.9, sigma, None, 1.0
                )
            )
        )
    path.write_text("".join(lines))
    sidecar = {
        "settings": {"sigma": sigma, "dataset": "mnist5k", "n": 100, "alpha": 0.001, "split": "test"},
        "denoiser": {"name": "none"},
        "info": {"run": {"method": method, "classifier": "lenet"}},
    }
    sidecar_path(path).write_text(json.dumps(sidecar))
    return path


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "multirun"
    # gaussian sigma 0.25: certified accuracy 3/4 at 0, 2/4 at 0.5, 0 at 1; one abstention
    write_run(root / "0_sigma=0.25", "gaussian", 0.25, [(1, 0.2), (1, 0.6), (1, 0.7), (0, -1)])
    # gaussian sigma 0.5: 2/4 at 0, 2/4 at 0.5, 1/4 at 1
    write_run(root / "1_sigma=0.5", "gaussian", 0.5, [(1, 1.2), (1, 0.5), (0, 0.3), (0, 0.1)])
    write_run(root / "2_sigma=0.5", "dds_adv", 0.5, [(1, 1.0), (1, 1.0), (1, 1.0), (1, 0.0)])
    (root / "0_sigma=0.25" / "notes.tsv").write_text("a\tb\n1\t2\n")  # not a certification file: skipped
    return root


def test_finds_runs_recursively_and_labels_them_from_the_sidecar(sweep: Path) -> None:
    runs = load_runs([sweep])
    assert [(r.method, r.sigma) for r in runs] == [("dds_adv", 0.5), ("gaussian", 0.25), ("gaussian", 0.5)]
    assert runs[1].label == "mnist5k gaussian lenet sigma=0.25"


def test_per_run_table_matches_hand_counts(sweep: Path) -> None:
    runs = load_runs([sweep])
    header, rows = summary_table(runs, RADII)
    assert header[:6] == ["run", "sigma", "N", "r=0", "r=0.5", "r=1"]
    g25 = rows[1]
    assert g25[1:6] == ["0.25", "4", "75.0", "50.0", "0.0"]
    assert g25[6] == f"{(0.2 + 0.6 + 0.7) / 4:.3f}"  # ACR
    assert g25[7:] == ["25.0", "75.0"]  # abstain, clean acc


def test_envelope_is_the_best_over_sigma_per_method(sweep: Path) -> None:
    runs = load_runs([sweep])
    gaussian = [r for r in runs if r.method == "gaussian"]
    assert envelope_curve(gaussian, RADII) == [0.75, 0.5, 0.25]
    _, rows = envelope_table(runs, RADII)
    by_name = {row[0]: row for row in rows}
    assert by_name["mnist5k gaussian lenet"][1:4] == [
        "75.0 (sigma=0.25)",
        "50.0 (sigma=0.25)",
        "25.0 (sigma=0.5)",
    ]
    assert by_name["mnist5k dds_adv lenet"][3] == "75.0 (sigma=0.5)"


def test_latex_is_a_booktabs_table(sweep: Path) -> None:
    _, latex = build_report(load_runs([sweep]), RADII)
    assert latex.count(r"\begin{tabular}") == 2 and r"\toprule" in latex and r"\bottomrule" in latex
    assert r"dds\_adv" in latex and "75.0" in latex


def test_cli_writes_markdown_latex_png_and_pdf(sweep: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    assert main([str(sweep), "--out", str(out), "--radii", "0", "0.5", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| r=0 | r=0.5 | r=1 |" in printed.replace("|---", "")
    for name in ("report.md", "report.tex", "certified_accuracy.png", "certified_accuracy.pdf"):
        assert (out / name).stat().st_size > 0
    assert (out / "certified_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "certified_accuracy.pdf").read_bytes()[:4] == b"%PDF"


def test_reads_six_column_files_of_cohen_et_al(tmp_path: Path) -> None:
    path = tmp_path / "cohen" / "sigma_0.25.tsv"
    path.parent.mkdir()
    path.write_text(
        "idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t3\t3\t0.61\t1\t0:00:02.1\n20\t8\t-1\t0.0\t0\t0:00:02.0\n"
    )
    (run,) = load_runs([path])
    assert run.sigma is None and len(run.rows) == 2
    _, rows = summary_table([run], RADII)
    assert rows[0][3:6] == ["50.0", "50.0", "0.0"]


def test_cli_errors_are_clear(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "missing")])
    assert exit_.value.code == 2 and "no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "empty")])
    assert exit_.value.code == 2 and "no certification files" in capsys.readouterr().err
