"""The pre-registered analysis of mnist5k v2 (ddsx.report.mnist5k_v2) on synthetic result files.

The files are written as ddsx-certify writes a multi-classifier sequential run: certify.<arm>_seed<k>.tsv
with its settings sidecar, in certify/sigma<s>/<run>/ folders, every second digit of the test split.
Each seed's per-digit outcomes are built from counts, so d_k and v_k are known in closed form, and the
pooled figure is checked against DerSimonian-Laird + Hartung-Knapp written out here with scipy's t.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from ddsx.certification.result_file import HEADER, ResultRow, format_row
from ddsx.report import load_runs
from ddsx.report.method_compare import compare_methods, holm_family
from ddsx.report.mnist5k_v2 import (
    PROTOCOL_DIGITS,
    ProtocolError,
    analysis_markdown,
    main,
    primary_endpoint,
    secondary_comparisons,
)

REPO = Path(__file__).resolve().parents[1]
N, ALPHA = 10_000, 0.001


def write_file(
    folder: Path,
    arm: str,
    seed: int,
    sigma: float,
    radii: list[float | None],
    device: str = "cpu",
    planned: int | None = None,
    samples: list[int] | None = None,
    denoiser: dict | None = None,
) -> Path:
    """certify.<arm>_seed<seed>.tsv: digit j is idx 2 j, label j % 10, certified correctly to radii[j]
    (None: wrong) after samples[j] copies (7,600 each by default), with the sidecar of a sequential run
    (n 10,000, alpha 0.001, skip 2) whose denoiser description is ``denoiser`` (default one-shot dds)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"certify.{arm}_seed{seed}.tsv"
    lines = [HEADER]
    for j, radius in enumerate(radii):
        label = j % 10
        row = ResultRow(
            idx=2 * j,
            label=label,
            predict=label if radius is not None else (label + 1) % 10,
            radius=radius or 0.0,
            correct=int(radius is not None),
            time="0:00:00.010000",
            samples=7600 if samples is None else samples[j],
            count_a=7600 if samples is None else samples[j],
            n=N,
            n0=0,
            p_lower=None,
            sigma=sigma,
            t_star=495,
            seconds=0.01,
        )
        lines.append(format_row(row))
    path.write_text("".join(lines))
    digits = len(radii) if planned is None else planned
    grid = [0.25 * i for i in range(13)]
    sidecar = {
        "format": "ddsx-certify/2",
        "denoiser": denoiser or {"name": "dds"},
        "settings": {
            "alpha": ALPHA,
            "dataset": "mnist5k",
            "device_type": device,
            "mode": "sequential",
            "n": N,
            "n0": 0,
            "radii": grid,
            "seed": 0,
            "sigma": sigma,
            "split": "test",
            "split_size": 2 * digits,
        },
        "info": {
            "max": digits,
            "skip": 2,
            "radii": grid,
            "run": {"classifier": "lenet", "method": arm, "seed": seed, "train_sigma": sigma},
        },
    }
    path.with_name(path.stem + ".settings.json").write_text(json.dumps(sidecar))
    return path


def counts(seed: int) -> tuple[int, int, int]:
    """(p, q, u) of a seed: p digits A certifies at r >= 1 at both sigmas and B at neither (e = +1),
    q digits A certifies at sigma 0.5 only (e = +1/2), u digits B certifies at sigma 1.0 only (e = -1/2).
    Unequal across seeds, so that tau^2 > 0."""
    return 5 + 7 * (seed % 4), 10 + seed, 8 + 5 * (seed % 3)


def outcomes(seed: int, digits: int) -> dict[tuple[str, float], list[float | None]]:
    """(arm, sigma) -> per digit the certified radius (None: wrong), from counts(seed). The digits after
    p + q + u: every third certified by both at both sigmas to 1.25, the others wrong for both."""
    p, q, u = counts(seed)
    out = {}
    for sigma in (0.5, 1.0):
        a, b = [], []
        for j in range(digits):
            both = 1.25 if j >= p + q + u and j % 3 == 0 else None
            if j < p:
                a.append(1.25), b.append(0.5)  # B certifies it, but below r = 1
            elif j < p + q:
                a.append(1.0 if sigma == 0.5 else None), b.append(None)
            elif j < p + q + u:
                a.append(None), b.append(1.5 if sigma == 1.0 else 0.25)
            else:
                a.append(both), b.append(both)
        out[("dds_adv", sigma)], out[("dds_finetune", sigma)] = a, b
    return out


def closed_form(seed: int, digits: int) -> tuple[float, float]:
    """d_k and v_k from the counts: e_i is +1 (p digits), +1/2 (q), -1/2 (u), else 0."""
    p, q, u = counts(seed)
    d = (p + q / 2 - u / 2) / digits
    squares = p + (q + u) / 4
    return d, (squares - digits * d**2) / (digits - 1) / digits


def write_primary(root: Path, seeds: range, digits: int) -> None:
    for seed in seeds:
        for (arm, sigma), radii in outcomes(seed, digits).items():
            write_file(root / f"sigma{sigma}" / "primary", arm, seed, sigma, radii)


@pytest.fixture(scope="module")
def protocol_scale(tmp_path_factory) -> Path:
    """Ten seeds, 500 digits, both primary sigmas: the protocol's scale."""
    root = tmp_path_factory.mktemp("v2") / "certify"
    write_primary(root, range(10), PROTOCOL_DIGITS)
    return root


def dl_hartung_knapp(y: np.ndarray, v: np.ndarray) -> dict[str, float]:
    """DerSimonian-Laird with the Hartung-Knapp standard error, written out: one-sided p for mu > 0."""
    k = len(y)
    w = 1 / v
    fixed = np.sum(w * y) / np.sum(w)
    q = float(np.sum(w * (y - fixed) ** 2))
    tau2 = max(0.0, (q - (k - 1)) / (np.sum(w) - np.sum(w**2) / np.sum(w)))
    ws = 1 / (v + tau2)
    mu = float(np.sum(ws * y) / np.sum(ws))
    se = math.sqrt(np.sum(ws * (y - mu) ** 2) / (k - 1) / np.sum(ws))
    half = stats.t.ppf(0.975, k - 1) * se
    return {
        "mu": mu,
        "se": se,
        "p": float(stats.t.sf(mu / se, k - 1)),
        "low": mu - half,
        "high": mu + half,
        "tau2": tau2,
        "q": q,
        "i2": max(0.0, (q - (k - 1)) / q),
    }


def test_per_seed_difference_and_variance_are_the_protocols(protocol_scale: Path) -> None:
    runs, bad = load_runs([protocol_scale])
    assert not bad and len(runs) == 40
    primary = primary_endpoint(runs)
    c = primary.comparison
    assert c.sigmas == (0.5, 1.0) and c.radius == 1.0 and c.seeds == tuple(range(10))
    expected = [closed_form(seed, PROTOCOL_DIGITS) for seed in range(10)]
    assert c.differences == pytest.approx([d for d, _ in expected], rel=1e-12)
    # The per-digit variance: the p digits move both sigmas together, so it is not the sum of the two
    # sigmas' variances over 4 (which a per-sigma computation would give).
    assert c.variances == pytest.approx([v for _, v in expected], rel=1e-12)
    assert primary.deviations == () and primary.digits == PROTOCOL_DIGITS


def test_pooled_endpoint_is_dersimonian_laird_with_hartung_knapp_one_sided(protocol_scale: Path) -> None:
    runs, _ = load_runs([protocol_scale])
    pooled = primary_endpoint(runs).comparison.pooled
    d, v = (np.array(x) for x in zip(*(closed_form(s, PROTOCOL_DIGITS) for s in range(10)), strict=True))
    hand = dl_hartung_knapp(d, v)
    assert hand["tau2"] > 0  # the seeds differ: the random-effects variance matters here
    assert pooled.alternative == "greater" and pooled.df == 9
    assert pooled.estimate == pytest.approx(hand["mu"], rel=1e-10)
    assert pooled.se == pytest.approx(hand["se"], rel=1e-10)
    assert pooled.p_value == pytest.approx(hand["p"], rel=1e-8)
    assert (pooled.low, pooled.high) == pytest.approx((hand["low"], hand["high"]), rel=1e-10)
    assert (pooled.tau2, pooled.q, pooled.i2) == pytest.approx(
        (hand["tau2"], hand["q"], hand["i2"]), rel=1e-10
    )


def test_welch_second_line_is_one_sided_over_the_sigma_averaged_run_accuracies(protocol_scale: Path) -> None:
    runs, _ = load_runs([protocol_scale])
    w = primary_endpoint(runs).comparison.welch
    per_run = {arm: [] for arm in ("dds_adv", "dds_finetune")}
    for seed in range(10):
        cells = outcomes(seed, PROTOCOL_DIGITS)
        for arm in per_run:
            at_one = [np.mean([r is not None and r >= 1.0 for r in cells[(arm, s)]]) for s in (0.5, 1.0)]
            per_run[arm].append(np.mean(at_one))
    scipy_welch = stats.ttest_ind(
        per_run["dds_adv"], per_run["dds_finetune"], equal_var=False, alternative="greater"
    )
    assert w.alternative == "greater" and w.p_value == pytest.approx(scipy_welch.pvalue, rel=1e-10)


def test_markdown_states_the_endpoint_answer_and_what_is_uncorrected(protocol_scale: Path) -> None:
    markdown = analysis_markdown(protocol_scale)
    runs, _ = load_runs([protocol_scale])
    pooled = primary_endpoint(runs).comparison.pooled
    assert markdown.index("## Primary endpoint") < markdown.index("## Secondary analyses")
    assert "Not the pre-registered scale" not in markdown
    assert f"Delta = {100 * pooled.estimate:+.2f} pp" in markdown
    assert f"one-sided p = {pooled.p_value:.4g}" in markdown
    assert f"[{100 * pooled.low:+.2f}, {100 * pooled.high:+.2f}] pp" in markdown
    answer = "dds_adv certifies more at r = 1" if pooled.p_value < 0.05 else "not shown at this power"
    assert answer in markdown
    assert "Uncorrected, by design" in markdown
    # Only the primary arms: S2-S4 and sigma 0.25 are listed as not made, with S6 and S7.
    assert "S2 dds_adv vs standard: not certified" in markdown and "- S7:" in markdown


def test_secondary_p_values_form_one_holm_family_without_the_primary(tmp_path: Path) -> None:
    root = tmp_path / "certify"
    write_primary(root, range(3), 60)
    # standard, certified behind the denoiser in a second run: A's outcomes shifted by two digits.
    for seed in range(3):
        for (arm, sigma), radii in outcomes(seed, 60).items():
            if arm == "dds_adv":
                write_file(
                    root / f"sigma{sigma}" / "dds_secondary", "standard", seed, sigma, radii[2:] + radii[:2]
                )
    runs, _ = load_runs([root])
    found, missing = secondary_comparisons(runs, [0.0, 0.5, 1.0])
    groups = [g for g, _ in found]
    # S1: 3 radii + ACR at each sigma; S2: dds_adv and dds_finetune vs standard on the primary's measure.
    assert groups == ["S1"] * 8 + ["S2"] * 2
    assert all(c.sigmas == (0.5, 1.0) and c.radius == 1.0 for g, c in found if g == "S2")
    assert all(c.pooled is None or c.pooled.alternative == "two-sided" for _, c in found)
    markdown = analysis_markdown(root, [0.0, 0.5, 1.0])
    _, _, family = holm_family([c for _, c in found])
    assert family == sum((c.pooled is not None) + (c.welch is not None) for _, c in found)
    assert f"Holm-corrected over one family of {family} tests" in markdown
    assert "**Not the pre-registered scale**: seeds 0,1,2 (protocol: 0-9); 60 digits" in markdown
    assert any(line.startswith("S3 dds_adv_px vs dds_finetune") for line in missing)


def test_an_incomplete_primary_file_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    root = tmp_path / "certify"
    write_primary(root, range(2), 20)
    # Seed 1 of dds_finetune at sigma 1.0 plans 20 digits and holds 19.
    write_file(
        root / "sigma1.0" / "primary",
        "dds_finetune",
        1,
        1.0,
        outcomes(1, 20)[("dds_finetune", 1.0)][:19],
        planned=20,
    )
    with pytest.raises(ProtocolError, match="incomplete 19/20"):
        primary_endpoint(load_runs([root])[0])
    with pytest.raises(SystemExit) as exit_:
        main([str(root)])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "the primary endpoint needs every file whole" in error


def test_a_seed_missing_at_one_sigma_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "certify"
    write_primary(root, range(3), 20)
    (root / "sigma0.5" / "primary" / "certify.dds_adv_seed2.tsv").unlink()
    with pytest.raises(ProtocolError, match="the same training seeds"):
        primary_endpoint(load_runs([root])[0])


def test_a_seed_whose_files_do_not_pair_is_refused_not_left_out(tmp_path: Path) -> None:
    root = tmp_path / "certify"
    write_primary(root, range(3), 20)
    # Seed 2 certified on another device at both sigmas: it pairs with itself, not with seeds 0 and 1.
    for (arm, sigma), radii in outcomes(2, 20).items():
        write_file(root / f"sigma{sigma}" / "primary", arm, 2, sigma, radii, device="cuda")
    with pytest.raises(ProtocolError, match=r"2 sets that do not pair with each other \(seeds 0,1 \| 2\)"):
        primary_endpoint(load_runs([root])[0])


def test_a_seed_paired_at_one_sigma_only_is_refused_not_left_out(tmp_path: Path) -> None:
    root = tmp_path / "certify"
    write_primary(root, range(3), 20)
    # Seed 2 at sigma 1.0 only on another device: the sigma average can pair seeds 0 and 1 alone.
    for arm in ("dds_adv", "dds_finetune"):
        write_file(root / "sigma1.0" / "primary", arm, 2, 1.0, outcomes(2, 20)[(arm, 1.0)], device="cuda")
    with pytest.raises(ProtocolError, match="files of seeds 2 do not pair with the others"):
        primary_endpoint(load_runs([root])[0])


def test_runs_on_different_devices_do_not_pair(tmp_path: Path) -> None:
    # The noise stream of a digit is the same on one device only: a CPU and a GPU file are not paired.
    radii = outcomes(0, 20)
    for seed in range(2):
        write_file(tmp_path / "gpu", "dds_adv", seed, 0.5, radii[("dds_adv", 0.5)], device="cuda")
        write_file(tmp_path / "cpu", "gaussian", seed, 0.5, radii[("dds_finetune", 0.5)], device="cpu")
    runs, _ = load_runs([tmp_path])
    assert compare_methods(runs, "dds_adv", "gaussian", [1.0]) == []


@pytest.mark.e2e
@pytest.mark.slow  # about 5 min on this loaded 2-core CPU: the step runs ddsx-report about ten times
def test_the_v2_script_report_step_writes_the_endpoint_from_the_copied_files(tmp_path: Path) -> None:
    # Only the report step, on synthetic files in OUT/certify: no training, no certification.
    out, results = tmp_path / "out", tmp_path / "results"
    write_primary(out / "certify", range(3), 60)
    env = os.environ | {
        "PROTOCOL": "v2",
        "STEPS": "report",
        "SEEDS": "0 1 2",
        "DIGITS": "60",
        "RADII": "0 0.5 1.0",
        "OUT": str(out),
        "RESULTS": str(results),
        "DDSX_CHECKPOINTS": str(tmp_path / "no_checkpoints"),
    }
    done = subprocess.run(
        ["bash", "experiments/mnist5k_reproduce.sh"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (out / "train").exists() and not (out / "denoiser").exists()
    endpoint = (results / "endpoint.md").read_text()
    copied = results / "certify"
    assert (copied / "sigma0.5" / "primary" / "certify.dds_adv_seed0.tsv").is_file()
    runs, _ = load_runs([copied])
    pooled = primary_endpoint(runs).comparison.pooled
    d, v = (np.array(x) for x in zip(*(closed_form(s, 60) for s in range(3)), strict=True))
    assert pooled.estimate == pytest.approx(dl_hartung_knapp(d, v)["mu"], rel=1e-10)
    assert f"one-sided p = {pooled.p_value:.4g}" in endpoint
    assert endpoint.strip() == analysis_markdown(copied, [0.0, 0.5, 1.0]).strip()
