"""Writing a denoiser as a diffusers folder (what ``load_diffusers_denoiser`` reads back)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn


def save_diffusers_folder(
    unet: nn.Module, scheduler: Any, dst: str | Path, metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``dst`` as a DDPMPipeline folder: model_index.json, unet/ (safetensors), scheduler/.

    ``scheduler`` is a diffusers scheduler; ``metadata`` (provenance: training config, source checkpoint)
    goes to ``dst/ddsx_source.json``, which loading ignores.
    """
    from diffusers import DDPMPipeline

    dst = Path(str(dst)).expanduser()
    dst.mkdir(parents=True, exist_ok=True)
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(dst, safe_serialization=True)
    if metadata is not None:
        (dst / "ddsx_source.json").write_text(json.dumps(metadata, indent=2, default=str))
    return dst
