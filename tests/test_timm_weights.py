"""timm classifiers take their starting weights from a local file through timm's own pretrained
loading: every weight of a file of this model, the backbone of a file with another head width, a
clear error naming a missing or foreign file, and no pickled code run from a hostile one."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from ddsx.errors import ModelFileError
from ddsx.models.classifiers import timm_classifier


def written(path: Path, model: torch.nn.Module) -> str:
    if path.suffix == ".safetensors":
        save_file(model.state_dict(), path)
    else:
        torch.save({"state_dict": model.state_dict()}, path)
    return str(path)


def assert_same_weights(network: torch.nn.Module, source: torch.nn.Module, skip: str = "~") -> None:
    loaded = network.state_dict()
    for key, value in source.state_dict().items():
        if not key.startswith(skip):
            torch.testing.assert_close(loaded[key], value, msg=key)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_every_weight_of_a_file_of_this_model_is_loaded(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(1)
    source = timm.create_model("test_resnet", num_classes=10, in_chans=1)
    path = written(tmp_path / f"w{suffix}", source)
    torch.manual_seed(2)
    model = timm_classifier("test_resnet", num_classes=10, in_channels=1, checkpoint_path=path)
    assert_same_weights(model.network, source)


def test_imagenet_weights_give_the_backbone_and_a_fresh_head_of_the_new_width(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = timm.create_model("test_resnet")  # 1000 classes
    model = timm_classifier(
        "test_resnet", num_classes=10, checkpoint_path=written(tmp_path / "w.pth", source)
    )
    assert model.network.fc.weight.shape[0] == 10
    assert_same_weights(model.network, source, skip="fc.")


def test_a_missing_or_foreign_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "absent.safetensors"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        timm_classifier("test_resnet", checkpoint_path=str(missing))
    foreign = written(tmp_path / "vit.safetensors", timm.create_model("test_vit"))
    with pytest.raises(ModelFileError, match=f"{foreign} cannot be loaded into timm model test_resnet"):
        timm_classifier("test_resnet", checkpoint_path=foreign)


class Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_that_runs_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker, path = tmp_path / "ran", tmp_path / "hostile.pth"
    torch.save(
        {"state_dict": {"fc.weight": torch.zeros(1)}, "payload": Payload(marker)},
        path,
        pickle_protocol=pickle.HIGHEST_PROTOCOL,
    )
    with pytest.raises(ModelFileError, match="hostile.pth"):
        timm_classifier("test_resnet", checkpoint_path=str(path))
    assert not marker.exists()
