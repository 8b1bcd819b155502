"""Rows of fixed (CERTIFY) and SEQ-CERT stay byte for byte what they were before the statistical tests
became plugins (issue 19): tests/golden/certify_rows.json was written by this file's generator from
the code at commit 313a9f7, before the refactoring, and is never edited by hand.

Compared: every row line except the timing fields (time, seconds) and any column added after
``seconds``, and the ``settings`` block of the sidecar (what a resume compares), so files made
before still resume.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from ddsx.certification import CertifySettings, ClassifierSpec, build_certifier, sidecar_path
from ddsx.denoisers.base import IdentityDenoiser

GOLDEN = Path(__file__).parent / "golden" / "certify_rows.json"
NUM_CLASSES = 3
# The fields up to ``seconds`` (the 14 columns of format ddsx-certify/2); time (5) and seconds (13) vary.
OLD_COLUMNS = 14
TIMING = (5, 13)

CASES = {
    "fixed": {"sigma": 0.25, "n0": 8, "n": 64, "alpha": 0.01, "batch_size": 16},
    "fixed_packed": {"sigma": 0.25, "n0": 8, "n": 64, "alpha": 0.01, "batch_size": 20, "max": 5},
    "fixed_big_n": {"sigma": 0.5, "n0": 10, "n": 2000, "alpha": 0.001, "batch_size": 300},
    "sequential_label": {
        "sigma": 0.25, "n0": 16, "n": 1200, "alpha": 0.01, "mode": "sequential", "check_every": 50,
        "radii": [0.0, 0.1, 0.2, 0.3], "batch_size": 7,
    },
    "sequential_n0": {
        "sigma": 0.25, "n0": 16, "n": 1200, "alpha": 0.01, "mode": "sequential", "check_every": 50,
        "radii": [0.0, 0.1, 0.2, 0.3], "batch_size": 256, "select": "n0",
    },
    "sequential_default_grid": {
        "sigma": 0.5, "n": 5000, "alpha": 0.001, "mode": "sequential", "check_every": 100,
        "batch_size": 333,
    },
}  # fmt: skip


def make_dataset(shape: tuple[int, ...], size: int = 12):
    g = torch.Generator().manual_seed(3)
    return [(torch.rand(*shape, generator=g), i % NUM_CLASSES) for i in range(size)]


def make_classifier(seed: int, features: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(features, NUM_CLASSES)).eval()


def case_output(tmp_path: Path, name: str, values: dict, shape: tuple[int, ...]) -> dict:
    """Rows (timing fields blanked) and sidecar settings of each of three classifiers on one run."""
    features = int(torch.tensor(shape).prod())
    classifiers = [make_classifier(seed, features) for seed in (0, 1, 2)]
    folder = tmp_path / f"{name}-{'x'.join(map(str, shape))}"
    s = CertifySettings.from_mapping(values | {"progress": False, "output": str(folder / "certify.tsv")})
    specs = [ClassifierSpec(c, "test", name=f"h{i}") for i, c in enumerate(classifiers)]
    dataset = make_dataset(shape)
    engine = build_certifier(
        s,
        specs,
        denoiser=IdentityDenoiser(values["sigma"]),
        dataset=dataset,
        dataset_name="toy",
        num_classes=NUM_CLASSES,
    )
    out = {}
    for i, path in enumerate(engine.run(dataset)):
        lines = path.read_text().splitlines()[1:]
        rows = []
        for line in lines:
            fields = line.split("\t")[:OLD_COLUMNS]
            rows.append("\t".join("" if j in TIMING else f for j, f in enumerate(fields)))
        settings = json.loads(sidecar_path(path).read_text())["settings"]
        out[f"h{i}"] = {"rows": rows, "settings": settings}
    return out


def all_outputs(tmp_path: Path) -> dict:
    return {
        f"{name}/{'x'.join(map(str, shape))}": case_output(tmp_path, name, values, shape)
        for name, values in CASES.items()
        for shape in ((1, 4, 4), (1, 1, 3))
    }


def test_rows_equal_the_rows_before_the_plugin_refactoring(tmp_path: Path) -> None:
    outputs = all_outputs(tmp_path)
    if os.environ.get("DDSX_WRITE_GOLDEN") == "1":  # only ever run on the pre-refactoring commit
        GOLDEN.write_text(json.dumps(outputs, indent=1, sort_keys=True) + "\n")
        pytest.skip("golden rows written")
    golden = json.loads(GOLDEN.read_text())
    assert sorted(outputs) == sorted(golden)
    for case, per_classifier in golden.items():
        for name, expected in per_classifier.items():
            got = outputs[case][name]
            assert got["settings"] == expected["settings"], f"{case} {name}: settings differ"
            assert got["rows"] == expected["rows"], f"{case} {name}: rows differ"
    # The cases must exercise what they are meant to: stopping at different times, abstentions.
    seq = [r.split("\t") for r in golden["sequential_label/1x1x3"]["h0"]["rows"]]
    assert len({r[6] for r in seq}) > 1


def smooth_outputs() -> dict:
    """Smooth.certify and Smooth.certify_sequential (both selections) on the same examples."""
    from ddsx.smoothing import Smooth, example_generator
    from ddsx.smoothing.sequential import sequential_plan

    out = {}
    for shape in ((1, 4, 4), (1, 1, 3)):
        key = "x".join(map(str, shape))
        classifier = make_classifier(0, int(torch.tensor(shape).prod()))
        smooth = Smooth(classifier, NUM_CLASSES, 0.25)
        plan = sequential_plan(0.25, [0.0, 0.1, 0.2, 0.3], 0.01, 1200, 50)
        for idx, (image, label) in enumerate(make_dataset(shape)[:6]):
            fixed = smooth.certify(image, 8, 64, 0.01, 16, generator=example_generator(0, idx))
            out[f"certify/{key}/{idx}"] = dataclasses.asdict(fixed)
            for kwargs in ({"label": label}, {"n0": 16}):
                cert = smooth.certify_sequential(
                    image, plan, batch_size=37, generator=example_generator(0, idx), **kwargs
                )
                out[f"sequential/{key}/{idx}/{sorted(kwargs)[0]}"] = dataclasses.asdict(cert)
    return out


def test_smooth_results_equal_the_results_before_the_facade() -> None:
    golden_path = GOLDEN.with_name("smooth_results.json")
    outputs = smooth_outputs()
    if os.environ.get("DDSX_WRITE_GOLDEN") == "1":
        golden_path.write_text(json.dumps(outputs, indent=1, sort_keys=True) + "\n")
        pytest.skip("golden results written")
    golden = json.loads(golden_path.read_text())
    assert sorted(outputs) == sorted(golden)
    for key, expected in golden.items():  # fields added later are not compared
        got = json.loads(json.dumps(outputs[key]))
        assert {f: got[f] for f in expected} == expected, key
