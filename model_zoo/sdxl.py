"""Stable Diffusion XL (base 1.0, SDXL-Turbo) through diffusers' StableDiffusionXLPipeline.

Guidance is true classifier-free guidance (diffusers ``guidance_scale``, on only when > 1: the UNet runs
on a doubled batch, NFE = 2 * steps; the unconditional branch is the checkpoint's default, zero text
embeddings for SDXL's ``force_zeros_for_empty_prompt``). ``steps`` are steps of the scheduler the card
names (``params.scheduler``: SDXL base ships Euler with "leading" spacing, SDXL-Turbo Euler-ancestral
with "trailing"); a differently named scheduler is built from the checkpoint's scheduler config.
A UNet with a guidance embedding (LCM-style distillation) is refused: its cfg would not be CFG.
"""

from __future__ import annotations

from typing import Any

from harness.models.adapters import register
from model_zoo.diffusers_common import UNetTextToImage
from model_zoo.tiny_t2i_components import clip_tokenizer, tiny_clip_text, tiny_vae


@register("sdxl")
class StableDiffusionXLAdapter(UNetTextToImage):
    pipeline_class_name = "StableDiffusionXLPipeline"
    tiny_params = {"resolution": 64, "natural_cfg": 5.0, "max_steps": 50, "scheduler": "euler"}

    @classmethod
    def build_tiny_pipeline(cls, params: dict[str, Any]) -> Any:
        from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

        # cross_attention_dim = the two CLIP hidden sizes concatenated (32 + 32); the added conditioning
        # is 6 size/crop numbers embedded to 8 each plus the pooled 32-d projection of text encoder 2.
        unet = UNet2DConditionModel(sample_size=params["resolution"] // 8, in_channels=4, out_channels=4,
                                    block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
                                    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                                    use_linear_projection=True, addition_embed_type="text_time",
                                    addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
                                    projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64)
        scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                           steps_offset=1, timestep_spacing="leading")
        return StableDiffusionXLPipeline(vae=tiny_vae(4), unet=unet, scheduler=scheduler,
                                         text_encoder=tiny_clip_text(False), tokenizer=clip_tokenizer(),
                                         text_encoder_2=tiny_clip_text(True), tokenizer_2=clip_tokenizer())
