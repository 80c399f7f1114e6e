"""Latent consistency models (SD 1.5-based LCM checkpoints) through diffusers' LatentConsistencyModelPipeline.

LCM distils classifier-free guidance into the UNet: ``cfg`` enters as an *input* (w = cfg - 1 embedded
into the time embedding through ``time_cond_proj_dim``), so every step is one UNet pass (NFE = steps)
whatever the value. ``steps`` are LCM multistep-consistency steps (LCMScheduler, which re-noises between
steps from the image's own generator), at most the checkpoint's ``original_inference_steps`` (50).
"""

from __future__ import annotations

from typing import Any

from harness.errors import HarnessError
from harness.models.adapters import register
from harness.types import SamplerSettings
from model_zoo.diffusers_common import COMMON_PARAMS, EmbeddedGuidanceTextToImage, use_scheduler
from model_zoo.sd import StableDiffusionAdapter, tiny_sd_unet
from model_zoo.tiny_t2i_components import clip_tokenizer, tiny_clip_text, tiny_vae

GUIDANCE_NOTE = "embedded (distilled CFG): w = cfg - 1 is a UNet input, one pass per step"


@register("lcm")
class LatentConsistencyAdapter(EmbeddedGuidanceTextToImage):
    pipeline_class_name = "LatentConsistencyModelPipeline"
    load_overrides = StableDiffusionAdapter.load_overrides  # no safety checker (no black frames)
    defaults = {**COMMON_PARAMS, "max_steps": 50}
    tiny_params = {"resolution": 64, "natural_cfg": 8.0}
    guidance_note = GUIDANCE_NOTE
    sampler_names = ("lcm",)

    def call_kwargs(self, settings: SamplerSettings) -> dict[str, Any]:
        return {"guidance_scale": settings.cfg}

    def prepare(self, pipe: Any, who: str) -> None:
        if pipe.unet.config.time_cond_proj_dim is None:
            raise HarnessError(f"{who}: the UNet has no guidance embedding (time_cond_proj_dim is null); it is not an "
                               f"LCM-distilled checkpoint, so cfg would be ignored")
        use_scheduler(pipe, "lcm")

    @classmethod
    def build_tiny_pipeline(cls, params: dict[str, Any]) -> Any:
        from diffusers import LatentConsistencyModelPipeline, LCMScheduler

        scheduler = LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                 original_inference_steps=50)
        return LatentConsistencyModelPipeline(vae=tiny_vae(4), unet=tiny_sd_unet(params, time_cond_proj_dim=32),
                                              scheduler=scheduler, text_encoder=tiny_clip_text(False),
                                              tokenizer=clip_tokenizer(), **cls.load_overrides)
