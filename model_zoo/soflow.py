"""SoFlow (zlab-princeton/SoFlow): a solution-operator model f(x_t, t, s) that maps a latent at time t
straight to time s, in SD-VAE latent space.

Time convention: x_t = (1 - t) * data + t * noise (the "Linear" noising; t = 1 is noise). With the
released "Euler" parameterisation, f(x_t, t, s) = x_t + (s - t) * NN(x_t, t, t - s, y); the DiT (SiT key
names plus ``s_embedder``, released under a ``network.`` prefix in the ``ema_model`` entry) embeds t and
t - s. Sampling with ``steps = N`` (sampler "renoise", upstream ``inference.py``): on t_i = 1 - i/N, jump
from t_i to 0, re-noise to t_{i+1} with fresh noise (x = (1 - t_{i+1}) x_0 + t_{i+1} ε), repeat; the last
jump lands at 0. One evaluation per step; the re-noising draws come from the sample's own generator.

Guidance: none at inference. Guidance was distilled during training (training cfg_scale 3.0 with decay),
and the network has no guidance input; the paper's harness recorded "cfg 7" / "cfg 2" without applying
them. This adapter refuses any cfg number (guidance "none", natural_cfg None), so a protocol cannot
pretend to sweep it.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.models.adapters import Capabilities, build_tiny, register
from harness.types import ModelCard, SampleRequest, SamplerSettings
from model_zoo import ode_solvers
from model_zoo.latent_common import TINY_ARCH, LatentAdapter, resolve_latent_params

RELEASE_PREFIX = "network."


@register("soflow")
class SoFlowAdapter(LatentAdapter):
    family_defaults = {"learn_sigma": False, "vae": {"repo": "stabilityai/sd-vae-ft-mse", "revision": "main"}}
    cond_scalars = ("s",)

    @classmethod
    def capabilities_for(cls, card: ModelCard) -> Capabilities:
        p = resolve_latent_params(card, cls.family_defaults)
        return Capabilities(conditioning="class", guidance="none", min_steps=1, max_steps=p["max_steps"],
                            resolution=cls.resolution_of(p), samplers=("renoise",), num_classes=p["num_classes"],
                            one_step=True, natural_cfg=None,
                            guidance_note="none: guidance was distilled in training and the network has no "
                                          "guidance input; a cfg number would be ignored, so it is refused")

    def expected_nfe(self, settings: SamplerSettings) -> int:
        return settings.steps

    def convert_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if all(k.startswith(RELEASE_PREFIX) for k in state):  # the released Soflow module wraps the DiT
            return {k[len(RELEASE_PREFIX):]: v for k, v in state.items()}
        return state

    def solution(self, x: torch.Tensor, t: float, s: float, y: torch.Tensor) -> torch.Tensor:
        n = len(x)
        return x + (s - t) * self.net(x, self.times(t, n), y, s=self.times(t - s, n))

    def sample_latents(self, requests: list[SampleRequest]) -> tuple[torch.Tensor, list[int]]:
        steps = requests[0].settings.steps
        gens = self.generators(requests)
        x, y = self.draw_noise(gens), self.labels(requests)
        start = self.counter.rows
        x = ode_solvers.sample_renoise(lambda z, t, s: self.solution(z, t, s, y), x,
                                       [1.0 - i / steps for i in range(steps + 1)], noise=lambda: self.draw_noise(gens))
        return x, [self.counter.per_sample(start, len(requests))] * len(requests)

    @classmethod
    def tiny(cls, **overrides: Any) -> SoFlowAdapter:
        return build_tiny(cls, {**TINY_ARCH, "learn_sigma": False, **overrides})
