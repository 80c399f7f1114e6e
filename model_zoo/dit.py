"""DiT (facebook/DiT-XL-2-256) through diffusers' ``DiTPipeline``: the pipeline as diffusers ships it.

Semantics are diffusers', which differ from the original DiT repo in two recorded ways: CFG is applied to
all 4 latent channels (the original ``forward_with_cfg`` guides 3), and the image is ``(x / 2 + 0.5)``
clamped to [0, 1] and rounded here by ``to_uint8_images`` (half to even; the original truncates
127.5 x + 128). Guidance: true CFG with the null label 1000, enabled by the pipeline only when cfg > 1
(batch doubled: NFE 2 per step); cfg < 1 would be silently ignored by the pipeline, so it is refused.
Samplers: the scheduler of the checkpoint folder re-created as ``dpm`` (DPMSolverMultistep, diffusers'
documented choice for DiT) or ``ddim``; one transformer call per step either way.

Each sample runs as its own pipeline call with its own CPU generator, so an image never depends on the
batch it was in (diffusers' batched kernels differ by ~5e-7 between batch sizes on CPU).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.errors import HarnessError, ProtocolError
from harness.models.adapters import Adapter, Capabilities, build_tiny, register, to_uint8_images
from harness.models.cards import merge_params, params_where, require_float32, resolve_hub_snapshot
from harness.types import ModelCard, SampleOutput, SampleRequest, SamplerSettings
from model_zoo.latent_common import NFECounter
from model_zoo.sd_vae import build_tiny_vae

SCHEDULERS = {"dpm": "DPMSolverMultistepScheduler", "ddim": "DDIMScheduler"}
DEFAULTS: dict[str, Any] = {"resolution": 256, "num_classes": 1000, "natural_cfg": 4.0, "max_steps": 1000,
                            "path": None, "tiny_seed": None}


def resolve_params(card: ModelCard) -> dict[str, Any]:
    where = params_where(card)
    p = merge_params(card, DEFAULTS, int_keys=("resolution", "num_classes", "max_steps"))
    if p["num_classes"] != 1000:  # DiTPipeline hard-codes the null label 1000
        raise ProtocolError(f"{where}.num_classes={p['num_classes']}; DiTPipeline supports 1000 classes only")
    require_float32(card)
    return p


def tiny_pipeline(seed: int = 0):
    """A DiTPipeline of the real classes with tiny widths: 8x8x4 latents, 16 tokens, 16x16 images."""
    from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = DiTTransformer2DModel(sample_size=8, num_layers=2, patch_size=2, attention_head_dim=8,
                                            num_attention_heads=2, in_channels=4, out_channels=8,
                                            num_embeds_ada_norm=1000, norm_type="ada_norm_zero",
                                            norm_elementwise_affine=False)
        with torch.no_grad():  # ada_norm_zero starts as identity; give the blocks live weights
            for p in transformer.parameters():
                p.add_(0.05 * torch.randn_like(p))
    pipe = DiTPipeline(transformer=transformer.eval(), vae=build_tiny_vae(seed), scheduler=DDIMScheduler())
    return pipe


@register("dit")
class DiTAdapter(Adapter):
    def __init__(self, card: ModelCard) -> None:
        super().__init__(card)
        self.params = resolve_params(card)
        self.pipe = None
        self.counter: NFECounter | None = None
        self.schedulers: dict[str, Any] = {}

    @classmethod
    def capabilities_for(cls, card: ModelCard) -> Capabilities:
        p = resolve_params(card)
        return Capabilities(conditioning="class", guidance="cfg", min_steps=1, max_steps=p["max_steps"],
                            resolution=p["resolution"], samplers=tuple(SCHEDULERS), num_classes=p["num_classes"],
                            natural_cfg=float(p["natural_cfg"]),
                            guidance_note="true CFG on all 4 latent channels (diffusers DiTPipeline), null label "
                                          "1000, active when cfg > 1 (batch doubled); cfg < 1 refused")

    def load(self, device: str = "cpu") -> None:
        import diffusers

        p = self.params
        if p["tiny_seed"] is not None:
            pipe = tiny_pipeline(p["tiny_seed"])
        else:
            folder = resolve_hub_snapshot(self.card) if self.card.hub else Path(p["path"] or "")
            if not (folder / "model_index.json").is_file():
                raise HarnessError(f"model card {self.card.name!r}: {str(folder)!r} is not a diffusers pipeline "
                                   f"folder (no model_index.json); give hub: or params.path")
            pipe = diffusers.DiTPipeline.from_pretrained(str(folder), local_files_only=True)
        for module in (pipe.transformer, pipe.vae):
            module.eval().requires_grad_(False)
        pipe.set_progress_bar_config(disable=True)
        self.schedulers = {name: getattr(diffusers, cls).from_config(pipe.scheduler.config)
                           for name, cls in SCHEDULERS.items()}
        self.pipe = pipe.to(device)
        self.counter = NFECounter(pipe.transformer)
        self.device = device

    def expected_nfe(self, settings: SamplerSettings) -> int:
        return settings.steps * (2 if settings.cfg > 1 else 1)

    def _sample_batch(self, requests: list[SampleRequest]) -> list[SampleOutput]:
        if self.pipe is None:
            raise HarnessError(f"model {self.card.name!r}: load() before sample()")
        s = requests[0].settings
        if s.cfg < 1:
            raise ProtocolError(f"model {self.card.name!r}: cfg={s.cfg} < 1 would be ignored by DiTPipeline "
                                f"(it guides only when cfg > 1)")
        self.pipe.scheduler = self.schedulers[s.sampler]
        start = time.perf_counter()
        pixels, nfe = [], []
        for r in requests:  # one call per sample: batch-independent images
            rows = self.counter.rows
            # No ode_solvers sampler: DiTPipeline's scheduler (the card's sampler) owns the step loop.
            out = self.pipe(class_labels=[r.label], guidance_scale=s.cfg, num_inference_steps=s.steps,
                            generator=torch.Generator("cpu").manual_seed(r.seed), output_type="np")
            pixels.append(out.images[0])
            nfe.append(self.counter.per_sample(rows, 1))
        # Rounding rule: diffusers returns (x / 2 + 0.5) clamped to [0, 1]; rint(255 * y), half to even.
        images = to_uint8_images(np.stack(pixels), [r.index for r in requests], value_range=(0.0, 1.0))
        seconds = (time.perf_counter() - start) / len(requests)
        return [SampleOutput(image=img, nfe=n, seconds=seconds) for img, n in zip(images, nfe, strict=True)]

    @classmethod
    def tiny(cls, **overrides: Any) -> DiTAdapter:
        return build_tiny(cls, {"resolution": 16, "tiny_seed": 0, **overrides})
