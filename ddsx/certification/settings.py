"""Certification settings (the ``certify`` config node), validated before any work or file is made."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from ddsx.smoothing.precision import resolve_autocast_dtype
from ddsx.smoothing.procedures import Budget, Procedure, get_procedure, procedures

DEFAULT_RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
SPLITS = ("test", "val")
SELECTS = ("label", "n0")
# More forward passes than this is a job of days to years; it needs certify.allow_huge=true.
HUGE_BUDGET = 10**9


class InvalidSettingError(ValueError):
    """A certify setting is missing or out of range; the message names it as ``certify.<field>``."""


@dataclass(frozen=True)
class CertifySettings:
    """What CERTIFY runs with (docs/method.md section 4); config keys are the field names (``max`` for max_examples).

    Attributes:
        sigma: noise level in [0,1] pixel units, > 0; None until resolved (checkpoint or module sigma).
        n0: noisy copies to pick the candidate class, >= 1.
        n: noisy copies to bound its probability, >= 1.
        alpha: failure probability of each certificate, in (0, 1).
        batch_size: noisy copies per forward pass, >= 1, or "auto" (timed on the pipeline before the
            first example; ``ddsx.certification.autotune``). Speed only.
        skip: certify every ``skip``-th example of the split, >= 1.
        max_examples: certify at most this many examples (None: all selected by ``skip``).
        seed: noise seed; example idx draws from a generator seeded by (seed, idx).
        split: "test" or "val".
        output: result file (TSV); its settings are stored beside it (``*.settings.json``).
        radii: radii at which certified accuracy is reported.
        autocast_dtype: None, "float16", "bfloat16" or "auto" (the fastest the device supports,
            resolved by ``resolved_for``) for the denoiser's and classifiers' forward pass.
        compile: torch.compile the denoiser and classifiers (eager fallback on failure).
        channels_last: NHWC layout for models and noisy batches (full precision: same function).
        pin_memory: copy test images to an accelerator from pinned memory, without blocking.
        progress: show progress (a bar on a terminal, a log line every few seconds otherwise).
        mode: the statistical test, a name from ``ddsx.smoothing.procedures`` (one module each):
            "fixed" (Cohen et al.'s CERTIFY with n samples), "sequential" (SEQ-CERT, docs/sequential.md:
            stops as soon as every grid radius is decided; ``n`` is the budget), "union_cp"
            (union-bound Clopper-Pearson sequence, Voracek et al.).
        select: how the class under test is chosen, among the test's ``selections``: "label" tests
            the true label (no n0; certified accuracy), "n0" picks the candidate from n0 samples
            (deployment). None: the test's default (fixed: n0; the sequential tests: label).
        check_every: tests that look more than once: samples between two looks at the counts.
        allow_huge: allow more than 10^9 forward passes in one run.
        shard, num_shards: this job certifies every ``num_shards``-th of the selected examples,
            starting at the ``shard``-th (one job of a SLURM array; ``ddsx.certification.shards``
            merges the jobs' files). Rows do not depend on them.
    """

    sigma: float | None = None
    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    batch_size: int | str = 1000
    skip: int = 1
    max_examples: int | None = None
    seed: int = 0
    split: str = "test"
    output: str | None = None
    radii: tuple[float, ...] = field(default=DEFAULT_RADII)
    autocast_dtype: str | None = None
    progress: bool = True
    mode: str = "fixed"
    select: str | None = None
    check_every: int = 100
    allow_huge: bool = False
    compile: bool = False
    channels_last: bool = False
    pin_memory: bool = True
    shard: int = 0
    num_shards: int = 1

    def __post_init__(self) -> None:
        if self.sigma is not None:
            _check(_is_number(self.sigma) and self.sigma > 0, "sigma", "a number > 0", self.sigma)
        for name in ("n0", "n", "skip"):
            value = getattr(self, name)
            _check(_is_int(value) and value >= 1, name, "an integer >= 1", value)
        _check(
            self.batch_size == "auto" or (_is_int(self.batch_size) and self.batch_size >= 1),
            "batch_size",
            "an integer >= 1 or auto",
            self.batch_size,
        )
        _check(_is_number(self.alpha) and 0 < self.alpha < 1, "alpha", "a number in (0, 1)", self.alpha)
        if self.max_examples is not None:
            _check(
                _is_int(self.max_examples) and self.max_examples >= 0,
                "max",
                "null or an integer >= 0",
                self.max_examples,
            )
        _check(_is_int(self.seed) and self.seed >= 0, "seed", "an integer >= 0", self.seed)
        _check(self.split in SPLITS, "split", f"one of {', '.join(SPLITS)}", self.split)
        _check(
            all(_is_number(r) and r >= 0 for r in self.radii), "radii", "a list of numbers >= 0", self.radii
        )
        names = sorted(procedures())
        _check(self.mode in names, "mode", f"one of {', '.join(names)}", self.mode)
        _check(self.select is None or self.select in SELECTS, "select", "null, label or n0", self.select)
        allowed = self.procedure.selections
        _check(
            self.select is None or self.select in allowed,
            "select",
            f"null or {' or '.join(allowed)} with mode {self.mode}",
            self.select,
        )
        _check(
            _is_int(self.check_every) and self.check_every >= 1,
            "check_every",
            "an integer >= 1",
            self.check_every,
        )
        _check(
            _is_int(self.num_shards) and self.num_shards >= 1,
            "num_shards",
            "an integer >= 1",
            self.num_shards,
        )
        _check(
            _is_int(self.shard) and 0 <= self.shard < self.num_shards,
            "shard",
            f"an integer in [0, certify.num_shards={self.num_shards})",
            self.shard,
        )
        for name in ("allow_huge", "compile", "channels_last", "pin_memory"):
            _check(isinstance(getattr(self, name), bool), name, "true or false", getattr(self, name))
        if self.autocast_dtype != "auto":
            try:
                resolve_autocast_dtype(self.autocast_dtype)
            except ValueError:
                _check(False, "autocast_dtype", "null, float16, bfloat16 or auto", self.autocast_dtype)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None = None, **overrides: Any) -> CertifySettings:
        """Build from a ``certify`` config node (DictConfig or dict) plus keyword overrides.

        Unknown keys are an error (a typo would otherwise silently fall back to a default).
        """
        values = {**dict(mapping or {}), **overrides}
        if "max" in values:
            values["max_examples"] = values.pop("max")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(values) - known)
        if unknown:
            names = sorted((known - {"max_examples"}) | {"max"})
            raise InvalidSettingError(f"unknown certify setting(s) {unknown}; known: {names}")
        if values.get("radii") is not None:
            values["radii"] = tuple(float(r) if _is_number(r) else r for r in values["radii"])
        elif "radii" in values:
            values.pop("radii")
        if values.get("autocast_dtype") is not None:
            values["autocast_dtype"] = str(values["autocast_dtype"])
        for name in ("sigma", "alpha"):  # ints are fine numbers (sigma=1); keep one type in files
            if _is_number(values.get(name)):
                values[name] = float(values[name])
        return cls(**values)

    def resolved_for(self, device: torch.device | str) -> CertifySettings:
        """A copy with ``autocast_dtype="auto"`` replaced by what it means on ``device`` (files never say "auto")."""
        from ddsx.certification.fast_paths import resolve_autocast_name

        if self.autocast_dtype != "auto":
            return self
        return replace(self, autocast_dtype=resolve_autocast_name("auto", torch.device(device)))

    def with_sigma(self, sigma: float | None) -> CertifySettings:
        """A copy with ``sigma`` set (validated)."""
        return replace(self, sigma=None if sigma is None else float(sigma))

    def require_sigma(self) -> float:
        if self.sigma is None:
            raise InvalidSettingError(
                "certify.sigma is not set: pass certify.sigma=<noise level in [0,1] pixel units> "
                "(or a checkpoint whose run config has sigma)"
            )
        return self.sigma

    def require_output(self) -> str:
        """``certify.output``; a missing one is refused before anything is built or loaded."""
        if not self.output:
            raise InvalidSettingError("certify.output must be a file path, got None")
        return self.output

    def indices(self, dataset_size: int) -> list[int]:
        """The example indices this job certifies: of 0, skip, 2*skip, ... (at most ``max_examples``),
        every ``num_shards``-th from the ``shard``-th (all of them with one shard)."""
        return selected_indices(dataset_size, self.skip, self.max_examples, self.shard, self.num_shards)

    def all_indices(self, dataset_size: int) -> list[int]:
        """The example indices of the whole run, every shard together."""
        return selected_indices(dataset_size, self.skip, self.max_examples)

    @property
    def procedure(self) -> Procedure:
        """The statistical test ``mode`` names (validated in __post_init__)."""
        return get_procedure(self.mode)

    def budget(self) -> Budget:
        """What the test is prepared from: sigma, alpha, the budget n, the radii grid, the looks."""
        return Budget(
            self.require_sigma(), self.alpha, self.n, tuple(sorted(set(self.radii))), self.check_every
        )

    @property
    def selection(self) -> str:
        """How the class under test is chosen: "n0" (CERTIFY's n0 samples) or "label" (the true label)."""
        return self.select or self.procedure.selections[0]

    @property
    def n0_used(self) -> int:
        """Selection samples per example (0 when the true label is tested)."""
        return self.n0 if self.selection == "n0" else 0

    def forward_passes(self, num_examples: int) -> int:
        """Noisy images the base classifier sees for ``num_examples`` examples (at most, for a test that stops early)."""
        return num_examples * (self.n0_used + self.n)

    def check_budget(self, num_examples: int, classifiers: int = 1) -> None:
        """Refuse a run of more than 10^9 forward passes unless ``allow_huge`` says it is meant."""
        passes = self.forward_passes(num_examples) * classifiers
        if passes > HUGE_BUDGET and not self.allow_huge:
            raise InvalidSettingError(
                f"certify.n={self.n} on {num_examples} examples x {classifiers} classifier(s) is {passes:,} "
                f"forward passes (more than {HUGE_BUDGET:,}: days to years of compute); lower certify.n or "
                "certify.max, or set certify.allow_huge=true if this is meant"
            )

    def row_settings(self) -> dict[str, Any]:
        """The settings a row depends on (batch_size, skip, max, output only decide which rows get made)."""
        values = {
            "sigma": self.require_sigma(),
            "n0": self.n0_used,
            "n": self.n,
            "alpha": self.alpha,
            "seed": self.seed,
            "split": self.split,
            "autocast_dtype": self.autocast_dtype,
            "mode": self.mode,
            "select": self.selection,
        }
        values |= self.procedure.row_parameters(self.budget())  # what the test's decisions depend on
        if self.compile:  # a compiled pipeline is another function (absent when off: older files agree)
            values["compile"] = True
        return values

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["max"] = values.pop("max_examples")
        values["radii"] = list(self.radii)
        return values


def selected_indices(
    split_size: int, skip: int, max_examples: int | None, shard: int = 0, num_shards: int = 1
) -> list[int]:
    """Examples 0, skip, 2*skip, ... of the split, at most ``max_examples``, then every ``num_shards``-th
    from the ``shard``-th: what a run (or one shard of it) certifies. Also read back from sidecars."""
    selected = list(range(0, int(split_size), skip))
    if max_examples is not None:
        selected = selected[:max_examples]
    return selected[shard::num_shards]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check(ok: bool, name: str, expected: str, got: Any) -> None:
    if not ok:
        raise InvalidSettingError(f"certify.{name} must be {expected}, got {got!r}")


# The libraries whose versions can change the numbers of a run with the same seed (kernels, the
# denoiser's scheduler, timm's models): recorded in the settings file's info, shown, never compared.
ENVIRONMENT_PACKAGES = ("torch", "lightning", "diffusers", "timm", "numpy")


def environment(device_type: str) -> dict[str, str]:
    """Python, the versions of ENVIRONMENT_PACKAGES (``absent`` if not installed) and the device."""
    import platform
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for package in ENVIRONMENT_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    device = device_type
    if device_type == "cuda" and torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name()}, CUDA {torch.version.cuda})"
    elif device_type == "cpu":
        device = f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
    versions["torch"] = torch.__version__  # with its build (+cu130, +cpu), which the metadata may lack
    return versions | {"device": device}
