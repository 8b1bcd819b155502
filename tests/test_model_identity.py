"""Identity by construction (issue 19): what a result file's settings say about the models is every
argument their constructors were given, plus the weights' fingerprint. A resume with any argument
changed is refused naming that argument; here the REAL constructors are built (a tiny diffusers UNet
behind the real DiffusionDenoiser, each classifier family), never a stand-in with a description of
its own."""

from __future__ import annotations

import inspect
import json
import re
import shutil
from pathlib import Path

import pytest
import timm
import torch
from diffusers import DDPMScheduler, UNet2DModel
from safetensors.torch import save_file
from torch import nn

from ddsx.certification import CertifySettings, ClassifierSpec, SettingsMismatchError, build_certifier
from ddsx.certification.build import build_denoiser
from ddsx.certification.result_file import read_results, sidecar_path
from ddsx.denoisers.consistency import ConsistencyDenoiser
from ddsx.denoisers.dds import DiffusionDenoiser
from ddsx.denoisers.densepure import DensePureDenoiser
from ddsx.denoisers.local_smoothing import LocalSmoothingDenoiser
from ddsx.models.classifiers import AdaptedClassifier, InputAdapter, cifar_resnet, lenet, timm_classifier
from ddsx.models.classifiers.lenet import LeNetNetwork
from ddsx.models.classifiers.resnet_cifar import CifarResNetNetwork
from ddsx.models.identity import Construction, construction, recorded, records_arguments
from tests.conftest import tiny_unet

NUM_CLASSES = 3


def dataset(size: int = 3) -> list[tuple[torch.Tensor, int]]:
    """4x4 one-channel images: smaller than the 8x8 UNet, so the denoiser pads them (pad_mode counts)."""
    g = torch.Generator().manual_seed(0)
    return [(torch.rand(1, 4, 4, generator=g), i % NUM_CLASSES) for i in range(size)]


def unet(seed: int = 0, **overrides) -> UNet2DModel:
    return tiny_unet(8, seed, **overrides)


ABAR = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod


def denoiser(**changed) -> DiffusionDenoiser:
    arguments = {"unet": unet(), "alphas_cumprod": ABAR, "sigma": 0.25} | changed
    return DiffusionDenoiser(**arguments)


def classifier() -> nn.Module:
    return build_classifier(lenet)


def certify(tmp_path: Path, model: torch.nn.Module, denoiser: torch.nn.Module | None, examples: int) -> Path:
    values = {"sigma": 0.25, "n0": 4, "n": 16, "alpha": 0.01, "batch_size": 16, "progress": False}
    settings = CertifySettings.from_mapping(
        values | {"output": str(tmp_path / "certify.tsv"), "max": examples}
    )
    data = dataset()
    engine = build_certifier(
        settings,
        [ClassifierSpec(model.eval(), "test")],
        denoiser=denoiser,
        dataset=data,
        dataset_name="toy",
        num_classes=NUM_CLASSES,
    )
    [path] = engine.run(data)
    return path


def refused(tmp_path: Path, field: str, model: torch.nn.Module, denoiser: torch.nn.Module | None) -> str:
    """Resume with ``model``/``denoiser``: refused, naming ``field``, the file untouched."""
    path = tmp_path / "certify.tsv"
    before = path.read_bytes()
    with pytest.raises(SettingsMismatchError) as refusal:
        certify(tmp_path, model, denoiser, examples=2)
    assert re.search(rf"(^|[ (;]){re.escape(field)}: ", str(refusal.value)), str(refusal.value)
    assert path.read_bytes() == before
    return str(refusal.value)


def test_constant_padding_with_another_pad_value_is_another_base_classifier(tmp_path: Path) -> None:
    black, white = denoiser(pad_mode="constant", pad_value=0.0), denoiser(pad_mode="constant", pad_value=1.0)
    x = dataset()[0][0][None]
    assert not torch.allclose(black(x), white(x)), "pad_value changes the denoised images"
    certify(tmp_path, classifier(), black, examples=1)
    refused(tmp_path, "denoiser.arguments.pad_value", classifier(), white)
    certify(tmp_path, classifier(), denoiser(pad_mode="constant", pad_value=0.0), examples=2)  # same: resumes


# Each argument of the real DiffusionDenoiser changed in turn (from the defaults, at pad_mode constant
# for pad_value, where it counts). A new argument fails test_every_argument_is_covered until it is here.
DENOISER_CHANGES = {
    "unet": ({"unet": unet(norm_eps=1e-3)}, "denoiser.parts.unet.arguments.norm_eps"),
    "alphas_cumprod": (
        {"alphas_cumprod": DDPMScheduler(beta_schedule="squaredcos_cap_v2").alphas_cumprod},
        "denoiser.arguments.alphas_cumprod.fingerprint",
    ),
    "num_steps": ({"num_steps": 3}, "denoiser.arguments.num_steps"),
    "prediction_type": ({"prediction_type": "sample"}, "denoiser.arguments.prediction_type"),
    "resolution": ({"resolution": "resize"}, "denoiser.arguments.resolution"),
    "interpolation": ({"interpolation": "bicubic"}, "denoiser.arguments.interpolation"),
    "pad_mode": ({"pad_mode": "replicate"}, "denoiser.arguments.pad_mode"),
    "pad_value": ({"pad_mode": "constant", "pad_value": 0.5}, "denoiser.arguments.pad_value"),
    "output_size": ({"output_size": 4}, "denoiser.arguments.output_size"),
    "clip": ({"clip": False}, "denoiser.arguments.clip"),
    "learn_sigma": ({"learn_sigma": False}, "denoiser.arguments.learn_sigma"),
    "name": ({"name": "dds_other"}, "denoiser.arguments.name"),
    "t_star_rule": ({"t_star_rule": "at_least"}, "denoiser.arguments.t_star_rule"),
}
# Recorded, not compared: sigma is compared as certify.sigma and t*; checkpointing is the same function.
DENOISER_UNCOMPARED = {"sigma", "checkpointing"}


def _parameters(constructor) -> set[str]:
    return {name for name in inspect.signature(constructor).parameters if name != "self"}


@pytest.mark.parametrize("argument", sorted(DENOISER_CHANGES))
def test_a_denoiser_argument_changed_is_refused_naming_it(tmp_path: Path, argument: str) -> None:
    changed, field = DENOISER_CHANGES[argument]
    base = {"pad_mode": "constant"} if argument == "pad_value" else {}
    certify(tmp_path, classifier(), denoiser(**base), examples=1)
    refused(tmp_path, field, classifier(), denoiser(**changed))


def test_uncompared_denoiser_arguments_resume(tmp_path: Path) -> None:
    certify(tmp_path, classifier(), denoiser(), examples=1)
    retuned = denoiser(sigma=0.5)
    retuned.set_sigma(0.25)  # what ddsx-certify does with a denoiser built at the training sigma
    certify(tmp_path, classifier(), retuned, examples=2)
    x = dataset()[0][0][None]
    torch.testing.assert_close(denoiser(checkpointing=True)(x), denoiser()(x), rtol=0, atol=0)
    path = certify(tmp_path, classifier(), denoiser(checkpointing=True), examples=3)
    assert len(path.read_text().splitlines()) == 4
    settings = json.loads(sidecar_path(path).read_text())
    assert settings["info"]["uncompared"]["denoiser"]["arguments"] == {"sigma": 0.25, "checkpointing": True}


def consistency(**changed) -> ConsistencyDenoiser:
    arguments = {"unet": unet(), "alphas_cumprod": ABAR, "sigma": 0.25, "t_min": 0, "t_max": 600} | changed
    return ConsistencyDenoiser(**arguments)


# The same for the consistency denoiser (issue 20): every argument of its own constructor.
CONSISTENCY_CHANGES = {
    "unet": ({"unet": unet(norm_eps=1e-3)}, "denoiser.parts.unet.arguments.norm_eps"),
    "alphas_cumprod": (
        {"alphas_cumprod": DDPMScheduler(beta_schedule="squaredcos_cap_v2").alphas_cumprod},
        "denoiser.arguments.alphas_cumprod.fingerprint",
    ),
    "t_min": ({"t_min": 1}, "denoiser.arguments.t_min"),
    "t_max": ({"t_max": 700}, "denoiser.arguments.t_max"),
    "resolution": ({"resolution": "resize"}, "denoiser.arguments.resolution"),
    "interpolation": ({"interpolation": "bicubic"}, "denoiser.arguments.interpolation"),
    "pad_mode": ({"pad_mode": "replicate"}, "denoiser.arguments.pad_mode"),
    "pad_value": ({"pad_mode": "constant", "pad_value": 0.5}, "denoiser.arguments.pad_value"),
    "output_size": ({"output_size": 4}, "denoiser.arguments.output_size"),
    "clip": ({"clip": False}, "denoiser.arguments.clip"),
    "name": ({"name": "cm_other"}, "denoiser.arguments.name"),
    "t_star_rule": ({"t_star_rule": "at_least"}, "denoiser.arguments.t_star_rule"),
}
CONSISTENCY_UNCOMPARED = {"sigma"}


@pytest.mark.parametrize("argument", sorted(CONSISTENCY_CHANGES))
def test_a_consistency_denoiser_argument_changed_is_refused_naming_it(tmp_path: Path, argument: str) -> None:
    changed, field = CONSISTENCY_CHANGES[argument]
    base = {"pad_mode": "constant"} if argument == "pad_value" else {}
    certify(tmp_path, classifier(), consistency(**base), examples=1)
    refused(tmp_path, field, classifier(), consistency(**changed))


def test_the_consistency_denoiser_is_not_the_dds_denoiser_of_the_same_unet(tmp_path: Path) -> None:
    certify(tmp_path, classifier(), denoiser(), examples=1)
    refused(tmp_path, "denoiser.constructor", classifier(), consistency())
    certify(tmp_path / "cm", classifier(), consistency(), examples=1)
    retuned = consistency(sigma=0.5)
    retuned.set_sigma(0.25)  # sigma is retuned, not compared
    certify(tmp_path / "cm", classifier(), retuned, examples=2)


def test_other_unet_weights_are_refused_by_their_fingerprint(tmp_path: Path) -> None:
    certify(tmp_path, classifier(), denoiser(), examples=1)
    refused(tmp_path, "denoiser.fingerprint", classifier(), denoiser(unet=unet(seed=1)))


# ----- voting denoisers (issue 20) -------------------------------------------------------------------

# Each voting denoiser around the real DiffusionDenoiser, each of its arguments changed in turn: the
# vote's own (votes, eta, local_sigma) and its base's (recorded under parts.base).
VOTING = {
    DensePureDenoiser: (
        lambda **changed: DensePureDenoiser(**({"base": denoiser(num_steps=3), "votes": 2} | changed)),
        {
            "base": ({"base": denoiser(num_steps=4)}, "denoiser.parts.base.arguments.num_steps"),
            "votes": ({"votes": 3}, "denoiser.arguments.votes"),
            "eta": ({"eta": 0.5}, "denoiser.arguments.eta"),
        },
    ),
    LocalSmoothingDenoiser: (
        lambda **changed: LocalSmoothingDenoiser(**({"base": denoiser(), "votes": 2} | changed)),
        {
            "base": ({"base": denoiser(t_star_rule="at_least")}, "denoiser.parts.base.arguments.t_star_rule"),
            "votes": ({"votes": 3}, "denoiser.arguments.votes"),
            "local_sigma": ({"local_sigma": 0.3}, "denoiser.arguments.local_sigma"),
        },
    ),
}
VOTING_CASES = [(cls, argument) for cls, (_, changes) in VOTING.items() for argument in sorted(changes)]


@pytest.mark.parametrize(
    ("cls", "argument"), VOTING_CASES, ids=[f"{c.__name__}-{a}" for c, a in VOTING_CASES]
)
def test_a_voting_denoiser_argument_changed_is_refused_naming_it(tmp_path: Path, cls, argument) -> None:
    build, changes = VOTING[cls]
    changed, field = changes[argument]
    certify(tmp_path, classifier(), build(), examples=1)
    certify(tmp_path, classifier(), build(), examples=2)  # the same again: resumes
    refused(tmp_path, field, classifier(), build(**changed))


def test_a_voting_denoiser_is_not_its_base(tmp_path: Path) -> None:
    """One-shot DDS and local smoothing around it are different base classifiers: refused."""
    certify(tmp_path, classifier(), denoiser(), examples=1)
    refused(tmp_path, "denoiser.name", classifier(), LocalSmoothingDenoiser(denoiser(), votes=2))


# ----- classifiers ---------------------------------------------------------------------------------


def adapter(**changed) -> InputAdapter:
    return InputAdapter(**({"mean": [0.5], "std": [0.5], "input_size": 28} | changed))


def adapted_lenet(**adapter_arguments) -> AdaptedClassifier:
    return AdaptedClassifier(adapter(**adapter_arguments), LeNetNetwork(NUM_CLASSES, 1))


# Per constructor: (how to build a classifier with it, its arguments, {argument: (what changes, the
# field the refusal names)}, the arguments recorded but not compared).
CLASSIFIERS = {
    lenet: (
        lenet,
        {"num_classes": NUM_CLASSES, "in_channels": 1, "input_size": 28},
        {
            "num_classes": ({"num_classes": 4}, "model.arguments.num_classes"),
            "in_channels": ({"in_channels": 3}, "model.arguments.in_channels"),
            "input_size": ({"input_size": 16}, "model.arguments.input_size"),
        },
        set(),
    ),
    cifar_resnet: (
        cifar_resnet,
        {"depth": 8, "num_classes": NUM_CLASSES, "in_channels": 1, "input_size": 16},
        {
            "depth": ({"depth": 14}, "model.arguments.depth"),
            "num_classes": ({"num_classes": 4}, "model.arguments.num_classes"),
            "in_channels": ({"in_channels": 3}, "model.arguments.in_channels"),
            "input_size": ({"input_size": 12}, "model.arguments.input_size"),
        },
        set(),
    ),
    timm_classifier: (
        timm_classifier,
        {"model_name": "test_resnet", "num_classes": NUM_CLASSES, "in_channels": 1, "input_size": 16},
        {
            "model_name": ({"model_name": "test_efficientnet"}, "model.arguments.model_name"),
            "num_classes": ({"num_classes": 4}, "model.arguments.num_classes"),
            "in_channels": ({"in_channels": 3}, "model.arguments.in_channels"),
            "input_size": ({"input_size": 12}, "model.arguments.input_size"),
            # **model_kwargs: each keyword timm is given is an argument of its own.
            "model_kwargs": ({"drop_rate": 0.1}, "model.arguments.drop_rate"),
        },
        {"checkpoint_path"},  # where the starting weights are: the weights are compared by fingerprint
    ),
    # What every family is made of, built directly: the input adapter and the wrapper.
    InputAdapter.__init__: (
        adapted_lenet,
        {},
        {
            "mean": ({"mean": [0.4]}, "model.parts.adapter.arguments.mean"),
            "std": ({"std": [0.25]}, "model.parts.adapter.arguments.std"),
            "input_size": ({"input_size": 16}, "model.parts.adapter.arguments.input_size"),
        },
        set(),
    ),
    AdaptedClassifier.__init__: (
        AdaptedClassifier,
        {"adapter": adapter(), "network": LeNetNetwork(NUM_CLASSES, 1)},
        {
            "adapter": ({"adapter": adapter(std=[0.25])}, "model.parts.adapter.arguments.std"),
            "network": ({"network": CifarResNetNetwork(8, NUM_CLASSES, 1)}, "model.arguments.network"),
        },
        set(),
    ),
}
CLASSIFIER_CASES = [(c, argument) for c, (_, _, changes, _) in CLASSIFIERS.items() for argument in changes]


def build_classifier(constructor, **changed) -> nn.Module:
    build, arguments, _, _ = CLASSIFIERS[constructor]
    torch.manual_seed(0)  # the same arguments give the same weights
    return build(**(arguments | changed))


def test_every_argument_is_covered() -> None:
    """Every constructor argument is either changed in a test below or declared uncompared."""
    assert set(DENOISER_CHANGES) | DENOISER_UNCOMPARED == _parameters(DiffusionDenoiser.__init__)
    assert set(CONSISTENCY_CHANGES) | CONSISTENCY_UNCOMPARED == _parameters(ConsistencyDenoiser.__init__)
    for cls, (_, changes) in VOTING.items():
        assert set(changes) == _parameters(cls.__init__), cls
    for constructor, (_, _, changes, uncompared) in CLASSIFIERS.items():
        assert set(changes) | uncompared == _parameters(constructor), constructor


@pytest.mark.parametrize(
    ("constructor", "argument"), CLASSIFIER_CASES, ids=[f"{c.__qualname__}-{a}" for c, a in CLASSIFIER_CASES]
)
def test_a_classifier_argument_changed_is_refused_naming_it(tmp_path: Path, constructor, argument) -> None:
    changed, field = CLASSIFIERS[constructor][2][argument]
    certify(tmp_path, build_classifier(constructor), None, examples=1)
    certify(tmp_path, build_classifier(constructor), None, examples=2)  # the same again: resumes
    refused(tmp_path, field, build_classifier(constructor, **changed), None)


def _timm_weights(folder: Path, seed: int) -> str:
    torch.manual_seed(seed)
    model = timm.create_model("test_resnet", num_classes=NUM_CLASSES, in_chans=1)
    path = folder / f"test_resnet_{seed}.safetensors"
    save_file(model.state_dict(), path)
    return str(path)


def test_the_timm_checkpoint_path_is_compared_through_its_weights(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    first, other = _timm_weights(weights, 0), _timm_weights(weights, 1)
    copy = shutil.copy(first, weights / "copy.safetensors")
    certify(tmp_path, build_classifier(timm_classifier, checkpoint_path=first), None, examples=1)
    certify(tmp_path, build_classifier(timm_classifier, checkpoint_path=str(copy)), None, examples=2)
    refused(tmp_path, "model.fingerprint", build_classifier(timm_classifier, checkpoint_path=other), None)


# ----- files of the previous format ---------------------------------------------------------------

# certify.tsv and its sidecar as ddsx at 313a9f7 (settings format ddsx-certify/2) wrote them for
# build_classifier(lenet), no denoiser and dataset() above, one example.
FORMAT2 = Path(__file__).parent / "fixtures" / "format2"


def test_a_file_of_the_previous_format_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    for name in ("certify.tsv", "certify.settings.json"):
        shutil.copy(FORMAT2 / name, tmp_path / name)
    assert json.loads((tmp_path / "certify.settings.json").read_text())["format"] == "ddsx-certify/2"
    before = (tmp_path / "certify.tsv").read_bytes()
    with pytest.raises(SettingsMismatchError) as refusal:
        certify(tmp_path, classifier(), None, examples=2)  # the very models that made it
    message = str(refusal.value)
    assert "ddsx-certify/2" in message and "constructor arguments" in message and "certify.output" in message
    assert (tmp_path / "certify.tsv").read_bytes() == before
    assert [row.idx for row in read_results(tmp_path / "certify.tsv")] == [0]  # still readable by reports


# ----- the recording itself ---------------------------------------------------------------------------


def test_a_subclass_with_an_undecorated_init_records_nothing_rather_than_too_little() -> None:
    class Base(nn.Module):
        @records_arguments
        def __init__(self, width: int = 2) -> None:
            super().__init__()

    class Inherits(Base):
        pass

    class OwnInit(Base):
        def __init__(self, depth: int) -> None:  # arguments Base's record would not see
            super().__init__(width=3)

    assert recorded(Base()).arguments == {"width": 2}  # the default, filled in
    assert recorded(Inherits(width=5)) == Construction("Inherits", {"width": 5})
    assert recorded(OwnInit(depth=7)) is None
    assert construction(OwnInit(depth=7)) == ({}, {})


def test_a_configured_denoiser_records_pad_value_from_the_yaml(compose_certify, tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    unet().save_pretrained(folder / "unet")
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(folder / "scheduler")
    cfg = compose_certify(
        "denoiser=diffusers", f"denoiser.path={folder}", "denoiser.pad_value=0.5", "sigma=0.25"
    )
    built = build_denoiser(cfg.denoiser, 0.25)
    assert recorded(built).arguments["pad_value"] == 0.5
    # Loaded from the folder, the UNet's config is recorded as built in memory.
    assert construction(built)[0]["parts"]["unet"] == construction(denoiser())[0]["parts"]["unet"]
