"""Stable Diffusion 3 / 3.5 (Large, Medium, Large-Turbo) through diffusers' StableDiffusion3Pipeline.

Guidance is true classifier-free guidance, in diffusers' convention: with ``cfg > 1`` every step runs the
transformer on a doubled batch (empty negative prompt, the pipeline default, as the paper's SD3.5-L script) and mixes
v = v_neg + cfg * (v_pos - v_neg); with ``cfg <= 1`` only the conditional branch runs (the Turbo
recipe, cfg 0). So NFE = steps * (2 if cfg > 1 else 1). ``steps`` is the number of flow-matching Euler
steps of the checkpoint's own scheduler (FlowMatchEulerDiscreteScheduler with its shift).
"""

from __future__ import annotations

from typing import Any

from harness.models.adapters import register
from harness.types import SamplerSettings
from model_zoo.diffusers_common import COMMON_PARAMS, TrueCFGTextToImage
from model_zoo.tiny_t2i_components import clip_tokenizer, t5_tokenizer, tiny_clip_text, tiny_t5, tiny_vae


@register("sd3")
class StableDiffusion3Adapter(TrueCFGTextToImage):
    pipeline_class_name = "StableDiffusion3Pipeline"
    defaults = {**COMMON_PARAMS, "max_sequence_length": 256}  # T5 prompt tokens (the pipeline's default)
    tiny_params = {"resolution": 64, "natural_cfg": 3.5, "max_steps": 50, "max_sequence_length": 16}

    def call_kwargs(self, settings: SamplerSettings) -> dict[str, Any]:
        return {**super().call_kwargs(settings), "max_sequence_length": self.params["max_sequence_length"]}

    @classmethod
    def build_tiny_pipeline(cls, params: dict[str, Any]) -> Any:
        from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

        latent = params["resolution"] // 8
        transformer = SD3Transformer2DModel(sample_size=latent, patch_size=2, in_channels=4, num_layers=2,
                                            attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
                                            joint_attention_dim=32, pooled_projection_dim=64, out_channels=4)
        return StableDiffusion3Pipeline(
            transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=tiny_vae(4),
            text_encoder=tiny_clip_text(True), tokenizer=clip_tokenizer(),
            text_encoder_2=tiny_clip_text(True), tokenizer_2=clip_tokenizer(),
            text_encoder_3=tiny_t5(), tokenizer_3=t5_tokenizer())
