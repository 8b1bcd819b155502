"""Sweeps: every sweep definition composes at its points, grids expand as documented, the SLURM
launcher resolves to fields the installed plugin has, threads are shared, a failing job leaves the
others running and is named at the end (basic launcher here; the real submitit executor in the slow
test), and each job of a sweep gets its own folder, W&B run and result file."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import yaml
from omegaconf import OmegaConf

from ddsx.sweeps.grid import expand_grids
from ddsx.sweeps.threads import threads_per_job
from tests.conftest import CONF_DIR, compose_config

SWEEPS = sorted(p.stem for p in (CONF_DIR / "sweep").glob("*.yaml"))


def _env() -> dict[str, str]:
    return os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}


def test_grids_are_a_union_and_the_command_line_replaces_or_adds_axes() -> None:
    grids = [{"sigma": "0.25,0.5", "method": "a"}, {"sigma": "0.25,0.5", "method": "b", "attack": "x,y"}]
    assert len(expand_grids(grids, [])) == 2 + 4
    narrowed = expand_grids(grids, ["sigma=0.5"])
    assert sorted(sorted(job) for job in narrowed) == [
        ["attack=x", "method=b", "sigma=0.5"],
        ["attack=y", "method=b", "sigma=0.5"],
        ["method=a", "sigma=0.5"],
    ]
    assert len(expand_grids(grids, ["seed=0,1"])) == 2 * 6
    # a point in two grids runs once
    assert len(expand_grids([{"sigma": "0.25,0.5"}, {"sigma": "0.5,1.0"}], [])) == 3


def test_the_sweeper_stands_on_hydras_public_sweeper_interface_only() -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.utils import JobReturn, JobStatus
    from hydra.errors import HydraException

    from ddsx.sweeps.grid import cartesian_jobs
    from ddsx.sweeps.sweeper import job_error
    from hydra_plugins.ddsx_sweeper import DDSXSweeper

    assert not [c for c in DDSXSweeper.__mro__ if c.__module__.startswith("hydra._internal")]
    parse = OverridesParser.create().parse_overrides
    assert cartesian_jobs(parse(["a=1,2", "b=x", "a=3,4"])) == [["a=3", "b=x"], ["a=4", "b=x"]]
    assert cartesian_jobs(parse(["+c=choice(p,q)", "d=[1,2]"])) == [["+c=p", "d=[1,2]"], ["+c=q", "d=[1,2]"]]
    with pytest.raises(HydraException, match="interval"):
        cartesian_jobs(parse(["lr=interval(0,1)"]))
    failed = JobReturn(overrides=["a=1"], status=JobStatus.FAILED)
    failed.return_value = ValueError("no such file\nsecond line")
    assert job_error(failed) == "ValueError: no such file"
    assert job_error(JobReturn(overrides=["a=2"], status=JobStatus.COMPLETED)) == ""


@pytest.mark.parametrize("name", SWEEPS)
def test_every_sweep_definition_composes_at_its_first_middle_and_last_point(
    name: str, tmp_path: Path
) -> None:
    # paper_grid sweeps the chosen experiment's dataset (the per-dataset grids choose theirs)
    chosen = [f"sweep={name}"] + (["experiment=mnist5k_dds_adv"] if name == "paper_grid" else [])
    cfg = compose_config("ddsx_train", [*chosen, f"paths.root_dir={tmp_path}"], tmp_path / "run")
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.ddsx_sweeper.DDSXSweeper"
    jobs = expand_grids(OmegaConf.to_container(cfg.hydra.sweeper.grids, resolve=True), [])
    assert len(jobs) == (4 if name == "mnist5k_small" else 12)
    for job in (jobs[0], jobs[len(jobs) // 2], jobs[-1]):
        point = compose_config("ddsx_train", [*chosen, f"paths.root_dir={tmp_path}", *job], tmp_path)
        values = dict(item.split("=", 1) for item in job)
        assert point.sigma == float(values["sigma"])
        assert point.method.name == values["method"]
        if "attack" in values:  # the strength of the named attack reached the method
            attack = yaml.safe_load((CONF_DIR / "attack" / f"{values['attack']}.yaml").read_text())
            assert point.method.attack.step_size == attack["step_size"]
        body = OmegaConf.masked_copy(point, [k for k in point if k != "hydra"])
        OmegaConf.to_container(body, resolve=True, throw_on_missing=True)  # every value resolves


@pytest.mark.parametrize(
    "chosen", [["sweep=cifar10_grid"], ["sweep=paper_grid", "experiment=cifar10_dds_adv"]]
)
def test_paper_grids_cover_three_sigmas_two_methods_three_attack_strengths(
    chosen: list[str], tmp_path: Path
) -> None:
    cfg = compose_config("ddsx_train", [*chosen, f"paths.root_dir={tmp_path}"], tmp_path)
    # the grids as the sweeper receives them (Hydra instantiates it, resolving the attack axis)
    grids = hydra.utils.instantiate(cfg.hydra.sweeper).grids
    jobs = [dict(item.split("=", 1) for item in job) for job in expand_grids(grids, [])]
    assert {job["sigma"] for job in jobs} == {"0.25", "0.5", "1.0"}
    assert {(job["method"], job.get("attack")) for job in jobs} == {
        ("dds_finetune", None),
        ("dds_adv", "cifar10_weak"),
        ("dds_adv", "cifar10"),
        ("dds_adv", "cifar10_strong"),
    }


@pytest.mark.e2e
def test_slurm_launcher_resolves_to_fields_of_the_installed_submitit_plugin() -> None:
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf

    command = [sys.executable, "-m", "ddsx.cli.train", "sweep=cifar10_grid", "hydra/launcher=slurm"]
    command += ["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2", "hydra.launcher.partition=gpu"]
    result = subprocess.run(
        [*command, "--cfg", "all", "--resolve"], env=_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    launcher = yaml.safe_load(result.stdout)["hydra"]["launcher"]
    assert set(launcher) <= {f.name for f in dataclasses.fields(SlurmQueueConf)}
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["nodes"], launcher["gpus_per_node"], launcher["tasks_per_node"]) == (2, 4, 4)
    assert launcher["partition"] == "gpu" and launcher["timeout_min"] == 1440


@pytest.mark.parametrize(
    ("launcher", "cores", "threads"),
    [
        ({"n_jobs": 2}, 16, 8),
        ({"n_jobs": 3}, 2, 1),
        ({"n_jobs": -1}, 16, 1),
        ({"cpus_per_task": 3}, 16, 3),
        ({}, 16, None),
    ],
)
def test_each_job_gets_its_share_of_the_cores(launcher: dict, cores: int, threads: int | None) -> None:
    assert threads_per_job(launcher, cores) == threads


def _train_multirun(sweep_dir: Path, *overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "ddsx.cli.train", "--multirun", "dataset=digits", "method=gaussian"]
    command += ["debug=limit", "trainer.max_epochs=1", "callbacks=certify", "certify.max=3", "certify.n0=4"]
    command += ["certify.batch_size=24", "certify.progress=false", f"hydra.sweep.dir={sweep_dir}"]
    return subprocess.run([*command, *overrides], env=_env(), capture_output=True, text=True, timeout=timeout)


@pytest.mark.e2e
def test_a_failing_job_is_reported_and_the_others_finish(tmp_path: Path) -> None:
    # job 0 stops on an expected error (a refused setting: exit 2 in a single run, which would end the
    # whole multirun); job 1 after it must still run
    result = _train_multirun(tmp_path / "sweep", "certify.n=0,20")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "1 of 2 jobs failed (1 finished): #0 (" in result.stderr
    # said at the start, before the silent minutes: where each job's log grows
    assert (
        f"2 jobs; each job's log: {tmp_path / 'sweep' / '<job>' / 'train.log'}"
        in result.stdout + result.stderr
    )
    assert "certify.n=0" in result.stderr and "certify.n must be an integer >= 1" in result.stderr
    summary = (tmp_path / "sweep" / "multirun_summary.txt").read_text().splitlines()
    assert [line.split("\t")[1] for line in summary[1:]] == ["failed", "finished"]
    assert len(list((tmp_path / "sweep").glob("1_*/certify.tsv"))) == 1


@pytest.mark.e2e
def test_jobs_of_a_sweep_have_their_own_folder_w_and_b_run_and_result_file(tmp_path: Path) -> None:
    from ddsx.certification import read_results
    from ddsx.certification.metrics import summarize
    from ddsx.certification.row_validation import largest_certifiable_radius
    from ddsx.report.wandb_offline import find_runs, read_run

    sweep = tmp_path / "sweep"
    result = _train_multirun(sweep, "sigma=0.25,0.5", "logger=wandb", "certify.n=20")
    assert result.returncode == 0, result.stderr[-3000:]
    results = sorted(sweep.glob("*/certify.tsv"))
    runs = [read_run(folder) for folder in find_runs([sweep])]
    assert len(results) == 2 and len({p.parent for p in results}) == 2
    assert len(runs) == 2 and len({run.run_id for run in runs}) == 2  # one W&B run per job
    for run in runs:
        assert run.group == sweep.name and run.job_type == "train" and run.exit_code == 0
        assert "dataset=digits" in run.tags and "method=gaussian" in run.tags
        sigma = run.config["sigma"]
        assert f"sigma={sigma:g}" in run.tags
        assert "optimizer.lr" in run.config and "optimizer" not in run.config  # flattened to dotted keys
        [tsv] = [p for p in results if f"sigma={sigma}" in p.parent.name]
        expected = summarize(read_results(tsv), [0.25])
        assert run.summary["cert/acr"] == pytest.approx(expected["acr"])
        # n = 20, alpha = 0.001 certify at most sigma * PhiInv(0.001 ** (1 / 20)) = 0.137 at sigma 0.25,
        # 0.274 at 0.5: past it no accuracy is logged (the report's "-"), before it the file's value.
        if 0.25 <= largest_certifiable_radius(sigma, 20, 0.001):
            assert run.summary["cert/acc@0.25"] == pytest.approx(expected["acc@0.25"])
        else:
            assert "cert/acc@0.25" not in run.summary and "cert/acc@0" in run.summary
        assert run.summary["cert/samples_mean"] == 20
    # ddsx-report labels the runs by the override that differs, one table per sigma, and the W&B runs
    report = subprocess.run(
        [sys.executable, "-m", "ddsx.cli.report", str(sweep)], env=_env(), capture_output=True, text=True
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert "## Certified accuracy at sigma=0.25" in report.stdout and "## Offline W&B runs" in report.stdout
    assert "| sigma=0.25 |" not in report.stdout  # the run column is the label less sigma: here empty
    assert (sweep / "report" / "certified_accuracy_sigma0.5.png").is_file()


@pytest.mark.slow
def test_two_jobs_through_the_real_submitit_executor_one_failing(tmp_path: Path) -> None:
    """The failure isolation through submitit_local (separate job processes, pickled job returns)."""
    result = _train_multirun(
        tmp_path / "sweep",
        "sweep=mnist5k_small",
        "denoiser=none",
        "sigma=0.5",
        "hydra/launcher=submitit_local",
        "hydra.launcher.cpus_per_task=1",
        "certify.n=20",
        # an unexpected error this time (AdamW refuses lr < 0): a traceback in job 1's log
        "optimizer.lr=1e-3,-1",
        timeout=600,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "1 of 2 jobs failed (1 finished): #1 (" in result.stderr
    assert len(list((tmp_path / "sweep").glob("0_*/certify.tsv"))) == 1
    assert list((tmp_path / "sweep" / ".submitit").iterdir())  # it ran through submitit
