"""SANA-Sprint (continuous-time consistency distillation of SANA) through diffusers' SanaSprintPipeline.

Guidance is *embedded*, as in FLUX.1-dev: the distilled transformer takes the guidance value as an input
(a guidance embedding, scaled by the checkpoint's ``guidance_embeds_scale``), so every step is a single
transformer pass whatever ``cfg`` is (NFE = steps); there is no classifier-free guidance to switch on.
A transformer without a guidance embedding is refused at load time, since the pipeline would then drop
``cfg`` without a word.

``steps`` are sCM steps of the checkpoint's SCMScheduler on the trigonometric time grid from
``max_timesteps`` (pi/2) to 0; with exactly two steps the pipeline's upstream default intermediate time
1.3 is used (the released two-step recipe), with any other count the grid is uniform (the pipeline
accepts an intermediate time only for two steps). Upstream describes the model as step-adaptive over
1-4 steps; more steps run mechanically but are outside what it was distilled for.

Resolution binning is off: at the native square size (1024) the bin table maps the size to itself, and
the tiny test transformer would otherwise be run at 1024 px. Prompts keep the pipeline's default
"complex human instruction" prefix, as the upstream examples run it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from harness.errors import HarnessError
from harness.models.adapters import register
from harness.types import SamplerSettings
from model_zoo.diffusers_common import COMMON_PARAMS, EmbeddedGuidanceTextToImage

GUIDANCE_NOTE = ("embedded (distilled) guidance: cfg is a transformer input (guidance embedding), one pass per "
                 "step; no classifier-free guidance")
TWO_STEP_INTERMEDIATE = 1.3  # SanaSprintPipeline's default intermediate time, only valid for two steps


@lru_cache(maxsize=1)
def gemma_tokenizer() -> Any:
    """A tiny BPE Gemma tokenizer (lower-case letters, digits, punctuation; the rest is <unk>), built offline."""
    from transformers import GemmaTokenizer

    chars = "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-:\n"
    words = ["\u2581" + c for c in chars[:26]]
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "\u2581", *chars, *words]
    return GemmaTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[("\u2581", c) for c in chars[:26]])


@register("sana_sprint")
class SanaSprintAdapter(EmbeddedGuidanceTextToImage):
    pipeline_class_name = "SanaSprintPipeline"
    defaults = {**COMMON_PARAMS, "max_sequence_length": 300}
    tiny_params = {"resolution": 32, "natural_cfg": 4.5, "max_steps": 8, "one_step": True, "max_sequence_length": 16}
    guidance_note = GUIDANCE_NOTE
    sampler_names = ("scm",)

    def call_kwargs(self, settings: SamplerSettings) -> dict[str, Any]:
        return {"guidance_scale": settings.cfg, "use_resolution_binning": False,
                "intermediate_timesteps": TWO_STEP_INTERMEDIATE if settings.steps == 2 else None,
                "max_sequence_length": self.params["max_sequence_length"]}

    def prepare(self, pipe: Any, who: str) -> None:
        if not pipe.transformer.config.guidance_embeds:
            raise HarnessError(f"{who}: the transformer has no guidance embedding (guidance_embeds is false); the "
                               f"pipeline would silently ignore cfg, so family {self.card.family} does not run it")

    @classmethod
    def build_tiny_pipeline(cls, params: dict[str, Any]) -> Any:
        from diffusers import AutoencoderDC, SanaSprintPipeline, SanaTransformer2DModel, SCMScheduler
        from transformers import Gemma2Config, Gemma2Model

        # DC-AE with two stages downsamples by 2 (the real f32c32 one by 32); the transformer sees 1x1 patches.
        vae = AutoencoderDC(in_channels=3, latent_channels=4, attention_head_dim=2,
                            encoder_block_types=("ResBlock", "EfficientViTBlock"),
                            decoder_block_types=("ResBlock", "EfficientViTBlock"),
                            encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                            encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)),
                            encoder_layers_per_block=(1, 1), decoder_layers_per_block=(1, 1),
                            downsample_block_type="conv", upsample_block_type="interpolate",
                            decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.41407)
        transformer = SanaTransformer2DModel(patch_size=1, in_channels=4, out_channels=4, num_layers=1,
                                             num_attention_heads=2, attention_head_dim=4, num_cross_attention_heads=2,
                                             cross_attention_head_dim=4, cross_attention_dim=8, caption_channels=8,
                                             sample_size=params["resolution"] // 2, qk_norm="rms_norm_across_heads",
                                             guidance_embeds=True)
        text_encoder = Gemma2Model(Gemma2Config(hidden_size=8, head_dim=16, intermediate_size=32, num_hidden_layers=1,
                                                num_attention_heads=2, num_key_value_heads=2,
                                                vocab_size=len(gemma_tokenizer()), max_position_embeddings=4096,
                                                attn_implementation="eager", pad_token_id=0))
        return SanaSprintPipeline(tokenizer=gemma_tokenizer(), text_encoder=text_encoder, vae=vae,
                                  transformer=transformer, scheduler=SCMScheduler())
