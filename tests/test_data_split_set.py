"""ddsx.data.base.split_set: the dataset of a split ("test" or "val") of a datamodule, set up for that
split only when it is not there yet, and a one-line error when setup does not make it."""

from __future__ import annotations

import lightning as L
import pytest

from ddsx.data.base import split_set


class Recording(L.LightningDataModule):
    """Makes the sets its ``setup`` stage names (unless told not to), recording each stage."""

    def __init__(self, makes: bool = True, **ready) -> None:
        super().__init__()
        self.makes, self.stages = makes, []
        self.test_set = ready.get("test_set")
        self.val_set = ready.get("val_set")

    def setup(self, stage: str) -> None:
        self.stages.append(stage)
        if self.makes and stage == "test":
            self.test_set = ["test digit"]
        if self.makes and stage == "validate":
            self.val_set = ["val digit"]


def test_a_set_already_there_is_returned_without_setup() -> None:
    datamodule = Recording(test_set=["ready"], val_set=["ready val"])
    assert split_set(datamodule, "test") == ["ready"]
    assert split_set(datamodule, "val") == ["ready val"]
    assert datamodule.stages == []


@pytest.mark.parametrize(
    ("split", "stage", "expected"), [("test", "test", "test digit"), ("val", "validate", "val digit")]
)
def test_a_missing_set_is_set_up_with_its_own_stage(split: str, stage: str, expected: str) -> None:
    datamodule = Recording()
    assert split_set(datamodule, split) == [expected]
    assert datamodule.stages == [stage]  # only that split's stage: the training set is never loaded


@pytest.mark.parametrize("split", ["test", "val"])
def test_a_set_setup_does_not_make_is_an_error_naming_the_module_and_split(split: str) -> None:
    with pytest.raises(ValueError, match=rf"^Recording has no {split}_set after setup\(\)$"):
        split_set(Recording(makes=False), split)
