"""Hyper-SD: trajectory-segmented consistency distillation LoRAs fused into SDXL or SD 1.5.

The official release (``ByteDance/Hyper-SD``) is a LoRA file per step count on top of a base pipeline:
the card's ``hub`` names the base repo, ``params.lora`` the file ({repo, revision, file}), both from the
local Hugging Face cache. The LoRA is merged into the weights at load time, W += lora_scale * (alpha /
rank) * up @ down (model_zoo/lora.py; no peft), which is what upstream's ``load_lora_weights`` +
``fuse_lora`` does.

Samplers (``params.scheduler``), as the upstream model card runs them, built from the base scheduler's
config: ``tcd`` (TCDScheduler; ``params.eta`` is its stochasticity gamma, 1.0 for the one-step LoRA) and
``ddim`` (DDIMScheduler with "trailing" spacing, eta 0; the 2/4/8-step LoRAs). ``steps`` are steps of
that scheduler; the LoRAs are distilled for their named step count, other counts run but are outside
that regime.

Guidance: the base pipeline's true classifier-free guidance (on only when cfg > 1, NFE = 2 * steps).
The released LoRAs (apart from the separate "CFG" LoRAs) are distilled for cfg 0, one pass per step.
"""

from __future__ import annotations

import math
from typing import Any

from harness.errors import HarnessError, ProtocolError
from harness.models.adapters import register
from harness.types import ModelCard, SamplerSettings
from model_zoo.diffusers_common import (
    COMMON_PARAMS,
    TRUE_CFG_NOTE,
    TrueCFGTextToImage,
    check_hub_file,
    read_state_dict,
    resolve_hub_file,
)
from model_zoo.lora import merge_lora
from model_zoo.sd import StableDiffusionAdapter
from model_zoo.sdxl import StableDiffusionXLAdapter

SCHEDULERS = {"tcd": ("TCDScheduler", {}), "ddim": ("DDIMScheduler", {"timestep_spacing": "trailing"})}


class HyperSDAdapter(TrueCFGTextToImage):
    """Base pipeline + merged Hyper-SD LoRA; subclasses fix the base architecture."""

    defaults = {**COMMON_PARAMS, "lora": None, "lora_scale": 1.0, "scheduler": "tcd", "eta": 1.0}
    guidance_note = TRUE_CFG_NOTE + "; the Hyper-SD LoRAs are distilled for cfg 0"

    def __init__(self, card: ModelCard) -> None:
        super().__init__(card)
        where = card.source or card.name
        self.lora = check_hub_file(card, "lora", self.params["lora"])
        if self.lora is not None and card.hub is None:
            raise ProtocolError(f"{where}: params.lora is a LoRA for a base pipeline; name that base with "
                                f"'hub: {{repo, revision}}'")
        for key, low, high in (("lora_scale", -math.inf, math.inf), ("eta", 0.0, 1.0)):
            value = self.params[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high \
                    or not math.isfinite(value):
                raise ProtocolError(f"{where}: params.{key}={value!r}; expected a finite number"
                                    + (f" in [{low}, {high}]" if key == "eta" else ""))

    @classmethod
    def samplers(cls, card: ModelCard, params: dict[str, Any]) -> tuple[str, ...]:
        if params["scheduler"] not in SCHEDULERS:
            raise ProtocolError(f"{card.source or card.name}: params.scheduler={params['scheduler']!r}; expected one "
                                f"of {', '.join(SCHEDULERS)}")
        return (params["scheduler"],)

    def call_kwargs(self, settings: SamplerSettings) -> dict[str, Any]:
        eta = {"eta": float(self.params["eta"])} if self.params["scheduler"] == "tcd" else {}
        return {"guidance_scale": settings.cfg, **eta}

    def prepare(self, pipe: Any, who: str) -> None:
        import diffusers

        if pipe.unet.config.time_cond_proj_dim is not None:
            raise HarnessError(f"{who}: the base UNet has a guidance embedding (time_cond_proj_dim); cfg would not "
                               f"be classifier-free guidance, so this is not a Hyper-SD base")
        if self.lora is not None:
            state = read_state_dict(resolve_hub_file(self.card, "lora", self.lora), who)
            merge_lora(pipe, state, float(self.params["lora_scale"]), who)
        name, overrides = SCHEDULERS[self.params["scheduler"]]
        pipe.scheduler = getattr(diffusers, name).from_config(pipe.scheduler.config, **overrides)


@register("hyper_sdxl")
class HyperSDXLAdapter(HyperSDAdapter):
    pipeline_class_name = "StableDiffusionXLPipeline"
    tiny_params = {"resolution": 64, "natural_cfg": 0.0, "max_steps": 8, "one_step": True}

    @classmethod
    def build_tiny_pipeline(cls, params: dict[str, Any]) -> Any:
        return StableDiffusionXLAdapter.build_tiny_pipeline(params)


@register("hyper_sd15")
class HyperSD15Adapter(HyperSDAdapter):
    pipeline_class_name = "StableDiffusionPipeline"
    load_overrides = StableDiffusionAdapter.load_overrides  # no safety checker (no black frames)
    tiny_params = HyperSDXLAdapter.tiny_params

    @classmethod
    def build_tiny_pipeline(cls, params: dict[str, Any]) -> Any:
        return StableDiffusionAdapter.build_tiny_pipeline(params)
