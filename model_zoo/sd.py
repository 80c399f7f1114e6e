"""Stable Diffusion 1.x / 2.x UNet checkpoints (e.g. SD-Turbo) through diffusers' StableDiffusionPipeline.

Same guidance semantics as SDXL: true classifier-free guidance against an empty negative prompt, on only
when cfg > 1 (NFE = 2 * steps; SD-Turbo's recipe uses cfg 0, one pass per step). ``steps`` are steps of
the scheduler the card names (``params.scheduler``). The safety checker is not loaded: it replaces
flagged images by black frames, which would silently enter the metrics (the harness refuses them).
"""

from __future__ import annotations

from typing import Any

from harness.models.adapters import register
from model_zoo.diffusers_common import UNetTextToImage
from model_zoo.tiny_t2i_components import clip_tokenizer, tiny_clip_text, tiny_vae


def tiny_sd_unet(params: dict[str, Any], **config: Any) -> Any:
    """A two-level SD 1.x/2.x-style UNet (cross-attention on 32-d CLIP states) for a 1/8 latent."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(sample_size=params["resolution"] // 8, in_channels=4, out_channels=4,
                                block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                                cross_attention_dim=32, **config)


@register("sd")
class StableDiffusionAdapter(UNetTextToImage):
    pipeline_class_name = "StableDiffusionPipeline"
    load_overrides = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    tiny_params = {"resolution": 64, "natural_cfg": 7.5, "max_steps": 50, "scheduler": "euler"}

    @classmethod
    def build_tiny_pipeline(cls, params: dict[str, Any]) -> Any:
        from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

        scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                           steps_offset=1, timestep_spacing="trailing")
        return StableDiffusionPipeline(vae=tiny_vae(4), unet=tiny_sd_unet(params), scheduler=scheduler,
                                       text_encoder=tiny_clip_text(False), tokenizer=clip_tokenizer(),
                                       **cls.load_overrides)
