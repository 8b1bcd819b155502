"""ddsx-report: per-run tables, the best-over-sigma envelope, LaTeX, plots, folder discovery."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ddsx.certification.result_file import HEADER, ResultRow, format_row, sidecar_path
from ddsx.cli.report import build_report, main, write_report
from ddsx.report import envelope_curve, envelope_table, load_runs, summary_table
from ddsx.report.labels import differing_labels

RADII = [0.0, 0.5, 1.0]


def write_run(
    folder: Path,
    method: str,
    sigma: float,
    outcomes: list[tuple[int, float]],
    n: int = 100_000,
    classifier: str = "lenet",
    planned: int | None = None,
    mode: str | None = None,
    samples: list[int] | None = None,
) -> Path:
    """A result file whose rows are (correct, radius), abstentions where radius < 0, and its sidecar.

    ``planned``: examples the settings plan (split_size with skip 1; default: as many as rows).
    ``samples``: a ``samples`` column (samples used after n0), as sequential runs write.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "certify.tsv"
    lines = [HEADER]
    for idx, (correct, radius) in enumerate(outcomes):
        predict = -1 if radius < 0 else (1 if correct else 2)
        row = ResultRow(
            idx,
            1,
            predict,
            max(radius, 0.0),
            correct,
            "0:00:01",
            samples=samples[idx] if samples else n,  # a fixed-n run uses n samples on every point
            count_a=90,
            n=n,
            n0=10,
            p_lower=0.9,
            sigma=sigma,
            t_star=None,
            seconds=1.0,
        )
        lines.append(format_row(row))
    path.write_text("".join(lines))
    settings = {
        "sigma": sigma,
        "dataset": "mnist5k",
        "n": n,
        "n0": 10,
        "alpha": 0.001,
        "split": "test",
        "seed": 0,
        "split_size": len(outcomes) if planned is None else planned,
    }
    if mode:
        settings["mode"] = mode
    sidecar = {
        "settings": settings,
        "denoiser": {"name": "none"},
        "info": {"run": {"method": method, "classifier": classifier}, "skip": 1, "max": None},
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
    runs, bad = load_runs([sweep])
    assert [b.path.name for b in bad] == ["notes.tsv"] and not bad[0].unreadable
    assert [(r.method, r.sigma) for r in runs] == [("dds_adv", 0.5), ("gaussian", 0.25), ("gaussian", 0.5)]
    assert runs[1].label == "mnist5k gaussian lenet sigma=0.25"


def test_per_run_table_matches_hand_counts(sweep: Path) -> None:
    runs, _ = load_runs([sweep])
    header, rows = summary_table(runs, RADII)
    assert header[:9] == ["run", "sigma", "examples", "n", "alpha", "mode", "r=0", "r=0.5", "r=1"]
    g25 = rows[1]
    # r = 1 is beyond 0.25 * PhiInv(0.001 ** (1 / 100000)) = 0.952: marked, not 0.0
    assert g25[1:9] == ["0.25", "4", "100000", "0.001", "fixed", "75.0", "50.0", "-"]
    assert g25[9] == f"{(0.2 + 0.6 + 0.7) / 4:.3f}"  # ACR
    assert g25[10:] == ["25.0", "75.0", "100000", "100000", "ok"]  # abstain, clean acc, samples, status


def test_envelope_is_the_best_over_sigma_per_method(sweep: Path) -> None:
    runs, _ = load_runs([sweep])
    gaussian = [r for r in runs if r.method == "gaussian"]
    assert envelope_curve(gaussian, RADII) == [0.75, 0.5, 0.25]
    _, rows = envelope_table(runs, RADII)
    by_name = {row[0]: row for row in rows}
    # dds_adv has one sigma only: nothing to take the best over
    assert list(by_name) == ["mnist5k gaussian lenet"]
    assert by_name["mnist5k gaussian lenet"][1:4] == ["100000", "0.001", "0.25,0.5"]
    assert by_name["mnist5k gaussian lenet"][4:7] == [
        "75.0 (sigma=0.25)",
        "50.0 (sigma=0.25)",
        "25.0 (sigma=0.5)",
    ]


def test_latex_is_a_booktabs_table(sweep: Path) -> None:
    _, latex = build_report(load_runs([sweep])[0], RADII)
    # one table per sigma (the fixture has two) and the envelope
    assert latex.count(r"\begin{tabular}") == 3 and r"\toprule" in latex and r"\bottomrule" in latex
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
    (run,), _ = load_runs([path])
    assert run.sigma is None and len(run.rows) == 2
    _, rows = summary_table([run], RADII)
    assert rows[0][6:9] == ["50.0", "50.0", "0.0"]


def test_cli_errors_are_clear(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "missing")])
    assert exit_.value.code == 2 and "no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "empty")])
    assert exit_.value.code == 2 and "no certification files" in capsys.readouterr().err


# ----- issue 14 / 9 / 10: no cherry-picking, flagged files, bounds, comparisons -------------------


def test_two_models_at_two_sigmas_build_two_envelopes_and_an_empty_file_is_marked(
    tmp_path: Path, capsys
) -> None:
    root = tmp_path / "sweep"
    # Two models that share a label (same dataset, method, classifier) but were certified with
    # different n: two experiments, never one envelope taking the best cell of either.
    write_run(root / "a25", "dds_adv", 0.25, [(1, 0.3), (1, 0.1)])
    write_run(root / "a50", "dds_adv", 0.5, [(1, 0.9), (0, 0.0)])
    write_run(root / "b25", "dds_adv", 0.25, [(1, 0.4), (1, 0.4)], n=10_000)
    write_run(root / "b50", "dds_adv", 0.5, [(1, 1.2), (1, 1.1)], n=10_000)
    empty = root / "c50"
    empty.mkdir()
    (empty / "certify.tsv").write_text("")
    out = tmp_path / "report"
    assert main([str(root), "--out", str(out), "--radii", "0", "0.5", "1"]) == 0
    runs, _ = load_runs([root])
    _, envelope_rows = envelope_table(runs, RADII)
    assert sorted((row[0], row[1]) for row in envelope_rows) == [
        ("mnist5k dds_adv lenet", "10000"),
        ("mnist5k dds_adv lenet", "100000"),
    ]
    first = next(row for row in envelope_rows if row[1] == "100000")
    assert first[4:7] == ["100.0 (sigma=0.25)", "50.0 (sigma=0.5)", "0.0 (sigma=0.5)"]
    assert "Best over sigma" in (out / "report.md").read_text()
    _, per_run = summary_table(runs, RADII)
    (empty_row,) = [row for row in per_run if row[-1] == "empty"]
    assert empty_row[2] == "0" and set(empty_row[6:-1]) == {"-"}
    assert "c50/certify.tsv: empty" in capsys.readouterr().err


def test_incomplete_torn_and_mixed_files_are_flagged_and_never_in_an_envelope(tmp_path: Path) -> None:
    whole = write_run(tmp_path / "whole", "gaussian", 0.25, [(1, 0.3), (1, 0.2)])
    incomplete = write_run(tmp_path / "incomplete", "gaussian", 0.5, [(1, 0.9)], planned=4)
    torn = write_run(tmp_path / "torn", "gaussian", 1.0, [(1, 0.9), (1, 0.8)])
    torn.write_text(torn.read_text() + "2\t1\t1\t0.")
    mixed = write_run(tmp_path / "mixed", "gaussian", 0.75, [(1, 0.9), (1, 0.8)])
    lines = mixed.read_text().splitlines(keepends=True)
    mixed.write_text("".join(lines[:2]) + lines[2].replace("\t0.75\t", "\t0.5\t"))
    # Without settings the rows alone show the mix; with them, the row validator refuses the odd row.
    unknown = tmp_path / "unknown" / "certify.tsv"
    unknown.parent.mkdir()
    unknown.write_bytes(mixed.read_bytes())
    runs, bad = load_runs([tmp_path])
    status = {run.path.parent.name: run.problem for run in runs}
    assert status == {
        "whole": "",
        "incomplete": "incomplete 1/4",
        "torn": "torn last line",
        "unknown": "mixes sigmas 0.5,0.75",
    }
    assert [(b.path, b.unreadable) for b in bad] == [(mixed, True)]
    assert f"{mixed}:3: idx 1 has sigma=0.5, its settings say sigma=0.75" in bad[0].reason
    assert envelope_table(runs, RADII)[1] == []  # only one usable run: nothing to take the best over
    assert whole.exists() and incomplete.exists()


def test_unreadable_file_stops_the_report_unless_skip_bad(tmp_path: Path, capsys) -> None:
    write_run(tmp_path / "good", "gaussian", 0.25, [(1, 0.3)])
    bad = write_run(tmp_path / "bad", "gaussian", 0.5, [(1, 0.3), (1, 0.2)])
    bad.write_text(bad.read_text() + "garbage line\n")
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path), "--out", str(tmp_path / "report")])
    assert exit_.value.code == 2 and "bad/certify.tsv" in capsys.readouterr().err
    assert main([str(tmp_path), "--out", str(tmp_path / "report"), "--skip-bad"]) == 0
    assert "bad/certify.tsv" in (tmp_path / "report" / "report.md").read_text()


def test_largest_certifiable_radius_is_the_radius_of_a_unanimous_vote() -> None:
    from ddsx.report import Run
    from ddsx.smoothing.bounds import certified_radius, lower_confidence_bound

    for sigma, n, alpha in [(0.5, 1000, 0.001), (0.25, 100_000, 0.001), (1.0, 100, 0.01)]:
        run = Run(path=Path("x.tsv"), rows=[], sigma=sigma, n=n, alpha=alpha)
        # The engine's own certificate when all n samples vote for the top class: nothing exceeds it.
        unanimous = certified_radius(lower_confidence_bound(n, n, alpha), sigma)
        assert run.max_radius == pytest.approx(unanimous, rel=1e-6)
    # sigma * PhiInv(0.001 ** (1 / 1000)) = 0.5 * PhiInv(0.993116) = 0.5 * 2.4633
    assert Run(path=Path("x.tsv"), rows=[], sigma=0.5, n=1000, alpha=0.001).max_radius == pytest.approx(
        1.2316, abs=1e-3
    )


def test_report_paths_are_relative_to_the_report_folder(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "deep" / "report"
    main([str(sweep), "--out", str(out)])
    text = (out / "report.md").read_text()
    assert str(tmp_path) not in text
    assert "`../../multirun/0_sigma=0.25/certify.tsv`" in text
    assert "same dataset, split, method, classifier, denoiser" in text  # the grouping is stated


def test_sequential_runs_show_mode_samples_and_grid_acr(tmp_path: Path) -> None:
    outcomes = [(1, 0.5), (1, 0.25), (0, 0.0), (1, 0.5)]
    write_run(tmp_path / "fixed", "gaussian", 0.25, outcomes, n=1000)
    write_run(
        tmp_path / "seq", "gaussian", 0.25, outcomes, n=1000, mode="sequential", samples=[100, 300, 200, 400]
    )
    runs, _ = load_runs([tmp_path])
    header, rows = summary_table(runs, RADII)
    by_mode = {row[5]: dict(zip(header, row, strict=True)) for row in rows}
    assert by_mode["sequential"]["samples mean"] == "250" and by_mode["sequential"]["samples median"] == "250"
    assert by_mode["sequential"]["ACR"] == "0.312 grid" and by_mode["fixed"]["ACR"] == "0.312"
    assert by_mode["fixed"]["samples mean"] == "1000"
    markdown, _ = build_report(runs, RADII)
    assert "grid: sequential runs" in markdown


def test_compare_prints_accuracy_per_radius_and_the_samples_ratio(tmp_path: Path, capsys) -> None:
    a = write_run(tmp_path / "fixed", "gaussian", 0.25, [(1, 0.5), (1, 0.25), (0, 0.0), (1, 0.5)], n=1000)
    b = write_run(
        tmp_path / "seq",
        "gaussian",
        0.25,
        [(1, 0.5), (1, 0.0), (0, 0.0), (1, 0.5)],
        n=1000,
        mode="sequential",
        samples=[100, 300, 200, 400],
    )
    assert main(["--compare", str(a), str(b.parent), "--radii", "0", "0.25", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert "| 0 | 75.0 | 75.0 | +0.0 |" in printed
    assert "| 0.25 | 75.0 | 50.0 | -25.0 |" in printed
    assert "ratio A/B = 4.00" in printed  # 1000 samples a point against 250


# ----- a multirun folder: labels from the overrides that differ, a table and a plot per sigma --------


def _job(root: Path, name: str, method: str, sigma: float, rows, overrides: list[str]) -> None:
    write_run(root / name, method, sigma, rows)
    (root / name / ".hydra").mkdir()
    (root / name / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))


def test_labels_are_the_overrides_that_differ_with_sigma_last() -> None:
    jobs = [
        {"method": "dds_adv", "attack": "mnist", "sigma": "0.5", "logger": "wandb", "hydra.x": "1"},
        {"method": "dds_finetune", "sigma": "0.5", "logger": "wandb", "hydra.x": "2"},
        {"sigma": "0.25", "method": "dds_adv", "attack": "mnist_strong", "logger": "wandb"},
    ]
    assert differing_labels(jobs) == [
        "method=dds_adv attack=mnist sigma=0.5",
        "method=dds_finetune sigma=0.5",
        "method=dds_adv attack=mnist_strong sigma=0.25",
    ]
    assert differing_labels([jobs[0], None]) is None  # a run outside any Hydra job: no such labels
    # Where a job ran is not what it measured: a GPU job and a CPU job of one method share a label.
    on_gpu = {
        "method": "gaussian",
        "sigma": "1.0",
        "trainer.accelerator": "gpu",
        "certify.batch_size": "10000",
    }
    assert differing_labels([on_gpu, {"method": "gaussian", "sigma": "0.5"}]) == ["sigma=1.0", "sigma=0.5"]


def test_multirun_report_labels_runs_by_overrides_with_a_table_and_plot_per_sigma(tmp_path: Path) -> None:
    root = tmp_path / "multirun"
    rows = [(1, 0.6), (1, 0.3), (0, 0.2), (1, 0.9)]
    for num, (method, attack, sigma) in enumerate(
        [("dds_adv", "mnist", 0.25), ("dds_adv", "mnist_strong", 0.25), ("dds_adv", "mnist", 0.5)]
        + [("dds_adv", "mnist_strong", 0.5)]
    ):
        overrides = [f"sigma={sigma}", f"method={method}", f"attack={attack}", "logger=csv"]
        _job(root, f"{num}_job", method, sigma, rows, overrides)
    runs, _ = load_runs([root])
    assert sorted(run.label for run in runs) == [
        "attack=mnist sigma=0.25",  # method is the same in every job: not in the label
        "attack=mnist sigma=0.5",
        "attack=mnist_strong sigma=0.25",
        "attack=mnist_strong sigma=0.5",
    ]
    markdown, _ = build_report(runs, RADII)
    # one table per sigma, each with the two attack strengths, labelled without the sigma
    assert markdown.count("## Certified accuracy at sigma=") == 2
    section = markdown.split("## Certified accuracy at sigma=0.5")[1].split("##")[0]
    assert "| attack=mnist_strong |" in section and "| attack=mnist |" in section
    # two envelopes: one per attack strength (they differ in more than sigma)
    assert markdown.split("## Best over sigma")[1].count("| attack=mnist") == 2
    paths = write_report(runs, RADII, tmp_path / "out")
    assert paths["sigma0.25"].is_file() and paths["sigma0.5"].is_file()


def test_a_multi_classifier_job_labels_each_file_by_its_method(tmp_path: Path) -> None:
    # `ddsx-certify ckpt_path=[a,b] denoiser=mnist5k` writes certify.<name>.tsv per classifier in one job
    # folder with one set of overrides; a job without the denoiser sits beside it.
    root = tmp_path / "certify"
    rows = [(1, 0.6), (0, 0.2)]
    for job, methods, overrides in [
        ("dds", ["dds_adv", "dds_finetune"], ["ckpt_path=[a,b]", "denoiser=mnist5k", "sigma=0.5"]),
        ("no_denoiser", ["gaussian"], ["ckpt_path=[c]", "sigma=0.5"]),
    ]:
        (root / job / ".hydra").mkdir(parents=True)
        for method in methods:
            written = write_run(tmp_path / "tmp" / method, method, 0.5, rows)
            target = root / job / f"certify.{method}.tsv"
            sidecar_path(written).rename(sidecar_path(target))
            written.rename(target)
        (root / job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    runs, _ = load_runs([root])
    assert sorted(run.label for run in runs) == [
        "dds_adv denoiser=mnist5k sigma=0.5",
        "dds_finetune denoiser=mnist5k sigma=0.5",
        "gaussian sigma=0.5",
    ]


def _with_train_seed(path: Path, seed: int) -> None:
    sidecar = sidecar_path(path)
    identity = json.loads(sidecar.read_text())
    identity["info"]["run"]["seed"] = seed
    sidecar.write_text(json.dumps(identity))


def test_spread_over_training_seeds_is_mean_and_sample_sd(tmp_path: Path) -> None:
    from ddsx.report.seeds import seed_groups, seed_table

    # Three seeds of one method: accuracy at r = 0 100, 50, 0 % (mean 50, sample sd 50); at r = 1
    # 50, 50, 0 % (mean 33.3, sd sqrt(2500 / 3) = 28.9); ACR 0.8, 0.5, 0 (mean 0.433, sd sqrt(0.49 / 3) = 0.404).
    # The 95% t interval of a mean over 3 seeds is mean -+ t_{0.975, 2} sd / sqrt(3), t_{0.975, 2} = 4.3027:
    # 50 -+ 124.2 at r = 0, 33.3 -+ 71.7 at r = 1 (an interval, not clipped to [0, 100]).
    outcomes = {0: [(1, 1.0), (1, 0.6)], 1: [(1, 1.0), (0, 0.3)], 2: [(0, 0.2), (0, -1)]}
    for seed, rows in outcomes.items():
        _with_train_seed(write_run(tmp_path / f"dds_adv_seed{seed}", "dds_adv", 0.5, rows), seed)
    # Another sigma and a run without a recorded seed: not part of the group.
    _with_train_seed(write_run(tmp_path / "other_sigma", "dds_adv", 0.25, [(1, 1.0), (1, 1.0)]), 0)
    write_run(tmp_path / "no_seed", "dds_adv", 0.5, [(1, 1.0), (1, 1.0)])
    runs, _ = load_runs([tmp_path])
    [group] = seed_groups(runs)
    assert [run.train_seed for run in group] == [0, 1, 2]
    header, [row] = seed_table([group], [0.0, 1.0])
    assert header == ["run", "sigma", "seeds", "r=0", "r=1", "ACR"]
    assert row[1:] == [
        "0.5",
        "0,1,2",
        "50.0 ± 50.0 [-74.2, 174.2]",
        "33.3 ± 28.9 [-38.4, 105.0]",
        "0.433 ± 0.404 (exact)",
    ]
    markdown, _ = build_report(runs, [0.0, 1.0])
    assert "## Spread over training seeds" in markdown and "0.433 ± 0.404 (exact)" in markdown
    # The seeds lead the report: their table comes before the per-run table.
    assert markdown.index("## Spread over training seeds") < markdown.index("## Certified accuracy")


def test_spread_marks_radii_no_run_could_certify(tmp_path: Path) -> None:
    from ddsx.report.seeds import seed_groups, seed_table

    # n = 1,000 at sigma 0.25: at most 0.25 * PhiInv(0.001 ** (1 / 1000)) = 0.62 can be certified.
    for seed in range(2):
        _with_train_seed(write_run(tmp_path / f"s{seed}", "dds", 0.25, [(1, 0.5), (0, 0.1)], n=1000), seed)
    runs, _ = load_runs([tmp_path])
    _, [row] = seed_table(seed_groups(runs), [0.0, 1.0])
    assert row[3:] == ["50.0 ± 0.0 [50.0, 50.0]", "-", "0.250 ± 0.000 (exact)"]


def test_runs_of_one_seed_make_no_spread(sweep: Path) -> None:
    from ddsx.report.seeds import seed_groups

    runs, _ = load_runs([sweep])
    assert seed_groups(runs) == []
    assert "Spread over training seeds" not in build_report(runs, RADII)[0]


def test_a_multirun_over_the_training_seed_makes_one_spread(tmp_path: Path) -> None:
    # `ddsx-train -m seed=0,1,2 ...`: the seed is in each run's label, yet the runs are one experiment.
    from ddsx.report.seeds import seed_groups

    root = tmp_path / "multirun"
    for seed in range(3):
        _job(root, f"{seed}_job", "dds_adv", 0.5, [(1, 0.6), (seed % 2, 0.3)], [f"seed={seed}", "sigma=0.5"])
        _with_train_seed(root / f"{seed}_job" / "certify.tsv", seed)
    runs, _ = load_runs([root])
    assert sorted(run.group for run in runs) == ["seed=0", "seed=1", "seed=2"]
    [group] = seed_groups(runs)
    assert [run.train_seed for run in group] == [0, 1, 2]
