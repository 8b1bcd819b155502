"""mode=cascade (ddsx.certification.cascade): per-sigma CERTIFY files of one selection in, a cascade
result file out that ddsx-report reads; hand-computed rows; every file that is not one selection at
distinct sigmas is refused, naming it, before anything is written."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from scipy.stats import beta, norm

from ddsx.certification import read_results, sidecar_path
from ddsx.certification.cascade import write_cascade
from ddsx.certification.result_file import HEADER, ResultFileError, ResultRow, format_row
from ddsx.cli import certify as certify_cli
from ddsx.report import load_runs, summary_table
from ddsx.smoothing import lower_confidence_bound
from ddsx.smoothing.cascade import Level, cascade
from tests.test_certification_cli import save_tiny_ddpm
from tests.test_certify_multi import engine, make_classifier, make_dataset
from tests.test_cli_errors import assert_clean, certify_args, run_app  # noqa: F401 - run_app: a fixture

# ----- per-sigma runs made by the engine --------------------------------------------------------


def certify_level(folder: Path, sigma: float, alpha: float, classifier_seed: int = 0, **overrides) -> Path:
    """A certify.mode=fixed run of the toy split at ``sigma`` (the engine, as ddsx-certify runs it)."""
    classifier = make_classifier(classifier_seed)
    [path] = engine(folder, [classifier], None, sigma=sigma, alpha=alpha, **overrides).run(make_dataset())
    return path


@pytest.fixture
def levels(tmp_path: Path) -> list[Path]:
    """Three levels of one selection, given in no particular order."""
    return [
        certify_level(tmp_path / "s05", 0.5, 0.004),
        certify_level(tmp_path / "s1", 1.0, 0.004),
        certify_level(tmp_path / "s025", 0.25, 0.002),
    ]


def test_each_row_is_the_cascade_of_the_levels_rows_and_the_report_reads_the_file(tmp_path: Path) -> None:
    # n = 1000 copies: enough for a level to be shown below p0 = 0.8, so rows stop at several levels.
    sigmas, alphas = (1.0, 0.5, 0.25), (0.004, 0.004, 0.002)
    levels = [certify_level(tmp_path / f"s{s}", s, a, n=1000) for s, a in zip(sigmas, alphas, strict=True)]
    out = write_cascade(levels[::-1], tmp_path / "cascade" / "certify.tsv", p0=0.8)  # any input order
    rows = read_results(out)
    assert [r.idx for r in rows] == list(range(10))
    stops = []
    for row, inputs in zip(rows, zip(*map(read_results, levels), strict=True), strict=True):
        answer = cascade(
            [Level(s, a, r.count_a, r.n, r.predict) for s, a, r in zip(sigmas, alphas, inputs, strict=True)],
            0.8,
        )
        assert (row.predict, row.radius) == (answer.prediction, pytest.approx(answer.radius, rel=1e-12))
        assert row.sigma == sigmas[answer.level]
        assert row.samples == 1000 * (answer.level + 1)  # the levels consulted, top down
        assert row.correct == int(row.predict == row.label)
        stops.append((answer.level, answer.prediction == -1))
    assert len(set(stops)) >= 3  # answers and abstentions at more than one level
    settings = json.loads(sidecar_path(out).read_text())["settings"]
    assert (settings["mode"], settings["sigma"]) == ("cascade", None)
    assert settings["alpha"] == pytest.approx(0.01)
    assert [level["sigma"] for level in settings["cascade"]["levels"]] == [1.0, 0.5, 0.25]
    assert settings["cascade"]["p0"] == 0.8
    (run,), bad = load_runs([out])
    assert bad == [] and run.problem == "" and run.mode == "cascade" and run.alpha == pytest.approx(0.01)
    assert summary_table([run], [0.0])[1][0][0]  # a table row, no exception


# ----- hand-computed rows -------------------------------------------------------------------------


def write_counts(source: Path, folder: Path, n: int, rows: list[tuple[int, int, int]]) -> Path:
    """``source``'s settings with n copies, and rows (label, candidate, count) as CERTIFY writes them:
    p_lower the Clopper-Pearson bound at the file's alpha, an abstention below 1/2."""
    identity = json.loads(sidecar_path(source).read_text())
    identity["settings"]["n"] = n
    identity["settings"]["split_size"] = len(rows)
    alpha, sigma = identity["settings"]["alpha"], identity["settings"]["sigma"]
    lines = [HEADER]
    for idx, (label, candidate, count) in enumerate(rows):
        p_lower = lower_confidence_bound(count, n, alpha)
        predict = candidate if p_lower >= 0.5 else -1
        radius = sigma * float(norm.ppf(p_lower)) if predict != -1 else 0.0
        lines.append(
            format_row(
                ResultRow(
                    idx,
                    label,
                    predict,
                    radius,
                    int(predict == label),
                    "0:00:01",
                    n,
                    count,
                    n,
                    8,
                    p_lower,
                    sigma,
                    None,
                    1.0,
                    n if predict != -1 else None,
                )
            )
        )
    folder.mkdir(parents=True)
    path = folder / "certify.tsv"
    path.write_text("".join(lines))
    sidecar_path(path).write_text(json.dumps(identity))
    return path


def cp(count: int, n: int, tail: float) -> tuple[float, float]:
    return float(beta.ppf(tail, count, n - count + 1)), float(beta.ppf(1 - tail, count + 1, n - count))


def test_hand_computed_rows(levels: list[Path], tmp_path: Path) -> None:
    # sigma 1 at alpha 0.004 (bounds at 0.002 each), sigma 0.5 at 0.004 (the last level: all of it).
    # (label, candidate, count) of 100: idx 0 passes level 1 and answers at level 2; idx 1 answers at
    # level 1; idx 2 abstains at level 1 (neither above nor surely below 0.8); idx 3 passes level 1 and
    # abstains at level 2; idx 4 answers at level 2 with a wrong class.
    high = write_counts(
        levels[1], tmp_path / "h1", 100, [(7, 3, 50), (2, 2, 99), (1, 1, 75), (4, 6, 45), (0, 8, 61)]
    )
    low = write_counts(
        levels[0], tmp_path / "h05", 100, [(7, 7, 99), (2, 5, 100), (1, 1, 100), (4, 4, 60), (0, 9, 98)]
    )
    rows = read_results(write_cascade([low, high], tmp_path / "out.tsv", p0=0.8))
    z = norm.ppf(0.8)

    def margin(count):  # level 1's non-confidence radius: PhiInv(p0) - PhiInv(max(U, 1 - L))
        lower, upper = cp(count, 100, 0.002)
        return 1.0 * (z - norm.ppf(max(upper, 1 - lower)))

    def own(count):  # level 2's confidence radius, all of its alpha
        return 0.5 * (norm.ppf(cp(count, 100, 0.004)[0]) - z)

    assert [(r.predict, r.sigma, r.samples, r.correct) for r in rows] == [
        (7, 0.5, 200, 1),
        (2, 1.0, 100, 1),
        (-1, 1.0, 100, 0),
        (-1, 0.5, 200, 0),
        (9, 0.5, 200, 0),
    ]
    assert rows[0].radius == pytest.approx(min(margin(50), own(99)), rel=1e-9)
    assert rows[1].radius == pytest.approx(1.0 * (norm.ppf(cp(99, 100, 0.002)[0]) - z), rel=1e-9)
    assert rows[4].radius == pytest.approx(min(margin(61), own(98)), rel=1e-9)
    assert margin(61) < own(98)  # idx 4: level 1's margin binds
    assert (rows[2].radius, rows[3].radius) == (0.0, 0.0)
    assert rows[0].seconds == pytest.approx(2.0) and rows[1].seconds == pytest.approx(1.0)


# ----- refusals -----------------------------------------------------------------------------------


def edit_sidecar(path: Path, change: Callable[[dict], None]) -> None:
    identity = json.loads(sidecar_path(path).read_text())
    change(identity)
    sidecar_path(path).write_text(json.dumps(identity))


def edit_rows(path: Path, change: Callable[[list[str]], list[str]]) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "".join(change(lines[1:])))


def _field(line: str, index: int, value: str) -> str:
    fields = line.rstrip("\n").split("\t")
    fields[index] = value
    return "\t".join(fields) + "\n"


def relabel_a_wrong_row(rows: list[str]) -> list[str]:
    """Another label on a row whose prediction is wrong, keeping it wrong (so the row stays valid)."""
    for i, line in enumerate(rows):
        fields = line.split("\t")
        label, predict = int(fields[1]), int(fields[2])
        if predict != label:
            new = next(c for c in range(10) if c not in (label, predict))
            return [*rows[:i], _field(line, 1, str(new)), *rows[i + 1 :]]
    raise AssertionError("no wrong row to relabel")


REFUSALS = {
    # another classifier: the weights' fingerprint differs
    "classifier": (lambda p, tmp: certify_level(tmp / "other", 0.5, 0.004, 1), "model.fingerprint"),
    "n": (lambda p, tmp: certify_level(tmp / "other", 0.5, 0.004, n=40), "certify.n"),
    "seed": (lambda p, tmp: certify_level(tmp / "other", 0.5, 0.004, seed=3), "certify.seed"),
    "sigma twice": (lambda p, tmp: certify_level(tmp / "other", 1.0, 0.001), "both at sigma 1"),
    "sequential": (
        lambda p, tmp: certify_level(tmp / "other", 0.5, 0.004, mode="sequential", select="n0"),
        "certify.mode=sequential",
    ),
    "other examples": (lambda p, tmp: certify_level(tmp / "other", 0.5, 0.004, skip=2), "selects other"),
    "missing row": (lambda p, tmp: edit_rows(p, lambda rows: rows[:-1]) or p, "no row for idx 9"),
    "label": (lambda p, tmp: edit_rows(p, relabel_a_wrong_row) or p, "has label"),
    "p_lower edited": (
        lambda p, tmp: edit_rows(p, lambda rows: [_field(rows[0], 10, "0.999"), *rows[1:]]) or p,
        "not written",
    ),
    "no count": (
        lambda p, tmp: edit_rows(p, lambda rows: [_field(rows[0], 7, "NA"), *rows[1:]]) or p,
        "no count_a",
    ),
    "no settings": (lambda p, tmp: sidecar_path(p).unlink() or p, "settings are unknown"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_files_that_are_not_one_selection_are_refused_naming_the_file(
    case: str, levels: list[Path], tmp_path: Path
) -> None:
    make, words = REFUSALS[case]
    replaced = make(levels[0], tmp_path)
    inputs = [replaced, *levels[1:]]
    out = tmp_path / "out" / "certify.tsv"
    with pytest.raises(ResultFileError, match=words) as refusal:
        write_cascade(inputs, out, p0=0.6)
    assert str(replaced.resolve()) in str(refusal.value)
    assert not out.exists() and not sidecar_path(out).exists()


def test_a_threshold_outside_its_range_and_an_existing_output_are_refused(
    levels: list[Path], tmp_path: Path
) -> None:
    with pytest.raises(ResultFileError, match=r"cascade.p0.*\[0.5, 1\)"):
        write_cascade(levels, tmp_path / "out.tsv", p0=0.45)
    out = write_cascade(levels, tmp_path / "out.tsv", p0=0.6)
    with pytest.raises(ResultFileError, match="exists"):
        write_cascade(levels, out, p0=0.6)


# ----- ddsx-certify mode=cascade, through a DDS denoiser whose t* follows sigma -----------------


def test_ddsx_certify_mode_cascade_over_dds_runs(run_app, tmp_path: Path) -> None:  # noqa: F811
    save_tiny_ddpm(tmp_path / "ddpm")
    dds = [
        "denoiser=diffusers",
        f"denoiser.path={tmp_path / 'ddpm'}",
        "certify.max=3",
        "certify.alpha=0.0005",
    ]
    for sigma in (0.5, 0.25):
        args = certify_args(
            tmp_path, *dds, f"certify.sigma={sigma}", f"certify.output={tmp_path}/s{sigma}/c.tsv"
        )
        assert run_app(certify_cli.main, *args)[0] in (0, None)
    inputs = f"cascade.inputs=[{tmp_path}/s0.5/c.tsv,{tmp_path}/s0.25/c.tsv]"
    out = f"certify.output={tmp_path}/cascade.tsv"
    assert_clean(
        *run_app(certify_cli.main, *certify_args(tmp_path, "mode=cascade", inputs, out)), "cascade.p0"
    )
    code, stderr = run_app(
        certify_cli.main, *certify_args(tmp_path, "mode=cascade", inputs, out, "cascade.p0=0.6")
    )
    assert code in (0, None), stderr[-3000:]
    rows = read_results(tmp_path / "cascade.tsv")
    levels = json.loads(sidecar_path(tmp_path / "cascade.tsv").read_text())["settings"]["cascade"]["levels"]
    t_stars = {level["sigma"]: level["denoiser_t_star"] for level in levels}
    assert t_stars[0.5] > t_stars[0.25]  # each level kept its own t*
    assert len(rows) == 3 and all(r.t_star == t_stars[r.sigma] for r in rows)
    # a second run into the same output is one clean line, and writes nothing
    message = assert_clean(
        *run_app(certify_cli.main, *certify_args(tmp_path, "mode=cascade", inputs, out, "cascade.p0=0.6")),
        "exists",
    )
    assert "cascade.tsv" in message
