"""FLUX.1-dev and FLUX.1-schnell through diffusers' FluxPipeline.

FLUX.1-dev is guidance-distilled: its ``cfg`` (diffusers ``guidance_scale``) is an *input* of the
transformer (a guidance embedding), not classifier-free guidance, so every step is one pass whatever
the value (NFE = steps). Real CFG against an empty negative prompt is a separate, declared knob,
``true_cfg_scale``: when > 1 each step runs a second (negative) pass, NFE = 2 * steps.

FLUX.1-schnell is timestep-distilled without a guidance embedding: it has no guidance at all (cfg must be
null; diffusers would silently ignore a guidance_scale) and no knobs.

``steps`` is the number of flow-matching Euler steps of the checkpoint's scheduler, with FLUX's
resolution-dependent time shift.
"""

from __future__ import annotations

import math
from typing import Any

from harness.errors import ProtocolError
from harness.models.adapters import Capabilities, register
from harness.models.knobs import Knob
from harness.types import ModelCard, SamplerSettings
from model_zoo.diffusers_common import COMMON_PARAMS, DiffusersTextToImage, resolve_params
from model_zoo.tiny_t2i_components import clip_tokenizer, t5_tokenizer, tiny_clip_text, tiny_t5, tiny_vae

TINY = {"resolution": 64, "max_steps": 50, "max_sequence_length": 16}
DEV_NOTE = ("embedded (distilled) guidance: cfg is a transformer input, one pass per step; real CFG only via the "
            "knob true_cfg_scale > 1 (empty negative prompt, two passes per step)")


@register("flux")
class FluxDevAdapter(DiffusersTextToImage):
    """FLUX.1-dev: embedded guidance, optional true CFG."""

    pipeline_class_name = "FluxPipeline"
    defaults = {**COMMON_PARAMS, "max_sequence_length": 512}
    tiny_params = {**TINY, "natural_cfg": 3.5}
    guidance_embeds = True

    @classmethod
    def capabilities_for(cls, card: ModelCard) -> Capabilities:
        p = resolve_params(card, cls.defaults)
        return Capabilities(conditioning="text", guidance="embedded", min_steps=p["min_steps"],
                            max_steps=p["max_steps"], resolution=p["resolution"], samplers=("euler",),
                            one_step=p["one_step"], natural_cfg=p["natural_cfg"],
                            knobs=(Knob("true_cfg_scale", "number", 0.0),), guidance_note=DEV_NOTE)

    def true_cfg_scale(self, settings: SamplerSettings) -> float:
        value = settings.knob("true_cfg_scale", 1.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ProtocolError(f"model {self.card.name!r}: knob true_cfg_scale={value!r}; expected a finite number "
                                f">= 0 (values <= 1 mean no true CFG)")
        return float(value)

    def expected_nfe(self, settings: SamplerSettings) -> int:
        return settings.steps * (2 if self.true_cfg_scale(settings) > 1 else 1)

    def call_kwargs(self, settings: SamplerSettings) -> dict[str, Any]:
        true_cfg = self.true_cfg_scale(settings)
        # diffusers runs true CFG only when a negative prompt is given: give one exactly when it is asked for.
        return {"guidance_scale": settings.cfg, "true_cfg_scale": true_cfg,
                "negative_prompt": "" if true_cfg > 1 else None,
                "max_sequence_length": self.params["max_sequence_length"]}

    @classmethod
    def build_tiny_pipeline(cls, params: dict[str, Any]) -> Any:
        from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

        transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                             attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                             pooled_projection_dim=32, guidance_embeds=cls.guidance_embeds,
                                             axes_dims_rope=(4, 4, 8))
        # The released FLUX schedulers shift time by image size (dynamic shifting); so does the tiny one.
        scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                    base_image_seq_len=256, max_image_seq_len=4096)
        return FluxPipeline(transformer=transformer, scheduler=scheduler, vae=tiny_vae(4),
                            text_encoder=tiny_clip_text(False), tokenizer=clip_tokenizer(),
                            text_encoder_2=tiny_t5(), tokenizer_2=t5_tokenizer())


@register("flux_schnell")
class FluxSchnellAdapter(FluxDevAdapter):
    """FLUX.1-schnell: no guidance of any kind, one pass per step."""

    defaults = {**COMMON_PARAMS, "max_sequence_length": 256}
    tiny_params = TINY
    guidance_embeds = False  # the tiny transformer has no guidance embedding, like the released schnell

    @classmethod
    def capabilities_for(cls, card: ModelCard) -> Capabilities:
        p = resolve_params(card, cls.defaults)
        if p["natural_cfg"] is not None:
            raise ProtocolError(f"{card.source or card.name}: params.natural_cfg={p['natural_cfg']!r}, but "
                                f"FLUX.1-schnell has no guidance; remove it")
        return Capabilities(conditioning="text", guidance="none", min_steps=p["min_steps"], max_steps=p["max_steps"],
                            resolution=p["resolution"], samplers=("euler",), one_step=p["one_step"],
                            guidance_note="none: timestep-distilled without a guidance input; cfg must be null")

    def expected_nfe(self, settings: SamplerSettings) -> int:
        return settings.steps

    def call_kwargs(self, settings: SamplerSettings) -> dict[str, Any]:
        return {"max_sequence_length": self.params["max_sequence_length"]}
