"""Conversion of OpenAI ADM checkpoints (improved-diffusion, guided-diffusion) to diffusers folders."""

from ddsx.denoisers.adm.config import ADMConfig, adm_preset
from ddsx.denoisers.adm.convert import convert_adm_checkpoint, convert_adm_state_dict

__all__ = ["ADMConfig", "adm_preset", "convert_adm_checkpoint", "convert_adm_state_dict"]
