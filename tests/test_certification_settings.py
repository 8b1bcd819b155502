"""Settings validation: every bad value names its field."""

from __future__ import annotations

import pytest

from ddsx.certification import CertifySettings, InvalidSettingError


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sigma", 0.0, "certify.sigma must be a number > 0"),
        ("sigma", -1.0, "certify.sigma must be a number > 0"),
        ("n0", 0, "certify.n0 must be an integer >= 1"),
        ("n", 0, "certify.n must be an integer >= 1"),
        ("n", 10.5, "certify.n must be an integer >= 1"),
        ("alpha", 0.0, r"certify.alpha must be a number in \(0, 1\)"),
        ("alpha", 1.0, r"certify.alpha must be a number in \(0, 1\)"),
        ("batch_size", 0, "certify.batch_size must be an integer >= 1"),
        ("skip", 0, "certify.skip must be an integer >= 1"),
        ("max", -1, "certify.max must be null or an integer >= 0"),
        ("split", "train", "certify.split must be one of test, val"),
        ("autocast_dtype", "int8", "certify.autocast_dtype must be null, float16, bfloat16 or auto"),
    ],
)
def test_each_bad_value_names_its_field(field: str, value, message: str) -> None:
    with pytest.raises(InvalidSettingError, match=message):
        CertifySettings.from_mapping({"sigma": 0.25, field: value})


def test_defaults_selection_and_overrides() -> None:
    s = CertifySettings.from_mapping({"sigma": 1, "skip": 20, "max": 3, "radii": [0, 1]})
    assert s.sigma == 1.0 and isinstance(s.sigma, float)
    assert (s.n0, s.n, s.alpha) == (100, 100_000, 0.001)
    assert s.indices(100) == [0, 20, 40]
    assert CertifySettings.from_mapping({"skip": 30}).indices(100) == [0, 30, 60, 90]
    assert s.forward_passes(3) == 3 * 100_100
    assert s.radii == (0.0, 1.0)
    assert s.as_dict()["max"] == 3
    with pytest.raises(InvalidSettingError, match=r"certify\.sigma is not set"):
        CertifySettings().require_sigma()
    with pytest.raises(InvalidSettingError, match=r"unknown certify setting\(s\) \['sigmaa'\]"):
        CertifySettings.from_mapping({"sigmaa": 0.5})
