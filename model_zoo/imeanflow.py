"""MeanFlow (Gsunshine/meanflow) and improved MeanFlow (Lyy-iiis/imeanflow): one/few-step average-velocity
models in SD-VAE latent space, ported from their JAX releases to PyTorch.

Time convention (both): z_t = (1 - t) * data + t * noise, so t = 1 is noise. The network predicts the
average velocity u over [r, t]; sampling takes ``steps`` jumps on the grid linspace(1, 0, steps + 1):
z_r = z_t - (t - r) * u(z_t, ...). That is an Euler step of the average velocity, hence sampler "euler";
one network evaluation per step.

Guidance, as each was trained:
- ``meanflow_latent``: the DiT (official MeanFlow key names: SiT's plus ``h_embedder``) conditions on t and
  h = t - r. Guidance was folded into the training target (CFG-in-training, ω = 1.0, κ = 0.5 for MF-B/4),
  so there is nothing to set at inference: guidance "none", cfg must be null. (The paper's harness bolted
  external CFG onto it, doubling the NFE; this adapter refuses instead.)
- ``imf``: the MiT (``nets/mit.py``) takes ω and the interval [t_min, t_max] as inputs: cfg = ω
  (>= 1; ω = 1 is unguided), knobs ``t_min``/``t_max`` (defaults from the card's ``interval``), still one
  evaluation per step.

Checkpoints: ``.pt`` state dicts in our layout, or the releases' Flax params flattened to ``.npz``
(``flax_convert.py``); MeanFlow's fixed sin/cos position table is not a parameter there and is recomputed.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
import torch

from harness.errors import ProtocolError
from harness.models.adapters import Capabilities, build_tiny, register
from harness.models.knobs import INTERVAL_KNOBS
from harness.types import ModelCard, SampleRequest, SamplerSettings
from model_zoo import ode_solvers
from model_zoo.flax_convert import flax_to_torch
from model_zoo.latent_common import TINY_ARCH, LatentAdapter, resolve_latent_params
from model_zoo.nets.latent_dit import sincos_pos_embed
from model_zoo.nets.mit import MiT

# Module names of the iMF releases that differ from ours (older exports), per the upstream converter.
IMF_RENAMES = {"k_embedder": "omega_embedder", "cfg_start_cond_tokens": "t_min_tokens",
               "cfg_end_cond_tokens": "t_max_tokens", "time_cond_tokens": "time_tokens",
               "class_cond_tokens": "class_tokens", "kappa_cond_tokens": "omega_tokens"}
IMF_TRAIN_ONLY = ("v_heads", "v_final_layer")  # the instantaneous-velocity head, unused at inference
MIT_KEYS = ("input_size", "patch", "in_channels", "hidden", "depth", "heads", "num_classes", "head_depth",
            "mlp_ratio")


class _AverageVelocityAdapter(LatentAdapter):
    """Shared: the linspace(1, 0, N + 1) grid of average-velocity jumps, one evaluation per step."""

    def expected_nfe(self, settings: SamplerSettings) -> int:
        self.validate(settings)  # the plan asks for the NFE of every cell: bad values are refused there
        return settings.steps

    @abstractmethod
    def average_velocity(self, z: torch.Tensor, t: float, r: float, y: torch.Tensor,
                         settings: SamplerSettings) -> torch.Tensor:
        """u over [r, t] for latents z at time t (one network evaluation)."""

    def sample_latents(self, requests: list[SampleRequest]) -> tuple[torch.Tensor, list[int]]:
        s = requests[0].settings
        self.validate(s)
        z, y = self.initial_noise(requests), self.labels(requests)
        grid = np.linspace(1.0, 0.0, s.steps + 1).tolist()
        start = self.counter.rows
        z = ode_solvers.sample_average_velocity(lambda x, t, r: self.average_velocity(x, t, r, y, s), z, grid)
        return z, [self.counter.per_sample(start, len(requests))] * len(requests)

    def validate(self, settings: SamplerSettings) -> None:
        """Value checks beyond the capabilities (before any compute)."""


@register("meanflow_latent")
class MeanFlowLatentAdapter(_AverageVelocityAdapter):
    family_defaults = {"learn_sigma": False, "vae": {"repo": "stabilityai/sd-vae-ft-mse", "revision": "main"}}
    cond_scalars = ("h",)

    @classmethod
    def capabilities_for(cls, card: ModelCard) -> Capabilities:
        p = resolve_latent_params(card, cls.family_defaults)
        return Capabilities(conditioning="class", guidance="none", min_steps=1, max_steps=p["max_steps"],
                            resolution=cls.resolution_of(p), samplers=("euler",), num_classes=p["num_classes"],
                            one_step=True, natural_cfg=None,
                            guidance_note="none at inference: CFG was folded into the training target "
                                          "(CFG-in-training); cfg must be null")

    def average_velocity(self, z, t, r, y, settings):
        n = len(z)
        return self.net(z, self.times(t, n), y, h=self.times(t - r, n))

    def convert_flax(self, flat: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        state = flax_to_torch(flat)
        p = self.params
        state.setdefault("pos_embed", sincos_pos_embed(p["hidden"], p["input_size"] // p["patch"]))
        return state

    @classmethod
    def tiny(cls, **overrides: Any) -> MeanFlowLatentAdapter:
        return build_tiny(cls, {**TINY_ARCH, "learn_sigma": False, **overrides})




@register("imf")
class IMeanFlowAdapter(_AverageVelocityAdapter):
    family_defaults = {"hidden": 1024, "depth": 48, "heads": 16, "head_depth": 8, "mlp_ratio": 8 / 3,
                       "learn_sigma": False, "interval": [0.42, 0.62], "natural_cfg": 8.0,
                       "vae": {"repo": "stabilityai/sd-vae-ft-mse", "revision": "main"}}

    @classmethod
    def capabilities_for(cls, card: ModelCard) -> Capabilities:
        p = resolve_latent_params(card, cls.family_defaults)
        return Capabilities(conditioning="class", guidance="interval", min_steps=1, max_steps=p["max_steps"],
                            resolution=cls.resolution_of(p), samplers=("euler",), num_classes=p["num_classes"],
                            one_step=True, natural_cfg=float(p["natural_cfg"]), knobs=INTERVAL_KNOBS,
                            guidance_note="cfg = ω, a network input (no extra pass), active for t in "
                                          f"[t_min, t_max] (default {p['interval']}); ω = 1 is unguided")

    def make_network(self) -> torch.nn.Module:
        return MiT(**{k: self.params[k] for k in MIT_KEYS})

    def interval(self, settings: SamplerSettings) -> tuple[float, float]:
        lo, hi = self.params["interval"]
        t_min, t_max = settings.knob("t_min", lo), settings.knob("t_max", hi)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (t_min, t_max)) \
                or not 0 <= t_min <= t_max <= 1:
            raise ProtocolError(f"model {self.card.name!r}: guidance interval t_min={t_min!r}, t_max={t_max!r}; "
                                f"expected 0 <= t_min <= t_max <= 1")
        return float(t_min), float(t_max)

    def validate(self, settings: SamplerSettings) -> None:
        self.interval(settings)
        if settings.cfg < 1:
            raise ProtocolError(f"model {self.card.name!r}: cfg (ω) = {settings.cfg} < 1; iMF embeds 1 - 1/ω and "
                                f"was trained on ω >= 1")

    def average_velocity(self, z, t, r, y, settings):
        n = len(z)
        t_min, t_max = self.interval(settings)
        return self.net(z, self.times(t - r, n), self.times(settings.cfg, n), self.times(t_min, n),
                        self.times(t_max, n), y)

    def convert_flax(self, flat: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return flax_to_torch(flat, IMF_RENAMES, skip=IMF_TRAIN_ONLY)

    @classmethod
    def tiny(cls, **overrides: Any) -> IMeanFlowAdapter:
        return build_tiny(cls, {**TINY_ARCH, "hidden": 32, "depth": 3, "heads": 2, "head_depth": 1,
                                 "natural_cfg": 4.0, **overrides})
