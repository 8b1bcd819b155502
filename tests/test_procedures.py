"""Statistical tests as plugins: the registry finds each module's PROCEDURE, every test has its yaml
under conf/certify/, the settings ask the test what a resume compares and which selections it allows,
an unknown mode is refused naming the known ones, and the report asks the test for its radius kind."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ddsx.certification import CertifySettings, InvalidSettingError
from ddsx.report.runs import Run
from ddsx.smoothing.procedures import procedures, radius_kind

CONF = Path(__file__).parents[1] / "conf" / "certify"


def test_the_registry_holds_the_three_tests_with_their_declarations() -> None:
    found = procedures()
    assert sorted(found) == ["fixed", "sequential", "union_cp"]
    assert (found["fixed"].radius, found["fixed"].stops_early, found["fixed"].parameters) == (
        "exact",
        False,
        (),
    )
    for name in ("sequential", "union_cp"):
        assert (found[name].radius, found[name].stops_early) == ("grid", True)
        assert found[name].parameters == ("radii", "check_every")


@pytest.mark.parametrize("name", sorted(procedures()))
def test_every_test_has_its_yaml_selecting_it(compose_certify, name: str) -> None:
    assert (CONF / f"{name}.yaml").is_file()
    cfg = compose_certify(f"certify={name}")
    settings = CertifySettings.from_mapping(OmegaConf.to_container(cfg.certify, resolve=True), sigma=0.5)
    assert settings.mode == name
    assert settings.selection == procedures()[name].selections[0]


def test_row_settings_hold_exactly_the_declared_parameters() -> None:
    fixed = CertifySettings(sigma=0.5, radii=(0.5, 0.0, 0.5), check_every=7).row_settings()
    assert "radii" not in fixed and "check_every" not in fixed  # fixed files stay as they were
    union = CertifySettings(sigma=0.5, mode="union_cp", radii=(0.5, 0.0, 0.5), check_every=7).row_settings()
    assert (union["mode"], union["radii"], union["check_every"], union["select"]) == (
        "union_cp",
        [0.0, 0.5],
        7,
        "label",
    )


def test_unknown_mode_and_disallowed_selection_are_refused_naming_the_options() -> None:
    with pytest.raises(
        InvalidSettingError, match=r"certify\.mode must be one of fixed, sequential, union_cp"
    ):
        CertifySettings(mode="voracek")
    with pytest.raises(InvalidSettingError, match=r"certify\.select must be null or n0 with mode fixed"):
        CertifySettings(mode="fixed", select="label")


def test_the_report_asks_the_files_test_for_its_radius_kind() -> None:
    assert [Run(path=Path("x"), rows=[], mode=m).grid for m in ("fixed", "sequential", "union_cp")] == [
        False,
        True,
        True,
    ]
    assert radius_kind("made-up") is None and not Run(path=Path("x"), rows=[], mode="made-up").grid
