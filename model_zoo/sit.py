"""SiT (Scalable Interpolant Transformers, willisma/SiT): the Linear interpolant with velocity prediction.

Time convention (SiT's transport): x_t = t * data + (1 - t) * noise, the network predicts v = data - noise,
and sampling integrates dx/dt = v from t = 0 (noise) to t = 1 (data). ``steps = N`` means N solver steps
on the uniform grid t_i = i / N for the fixed-step samplers ``euler`` (N evaluations) and ``heun``
(2N); ``dopri5`` is adaptive (SiT's and the paper's ODE default, atol 1e-6, rtol 1e-3): ``steps`` only
sets the output grid upstream and does not change the trajectory here, the NFE is whatever the solver
executed (``expected_nfe`` is None). Each sample is integrated on its own, so its step sizes (and NFE)
never depend on which other samples shared the batch, unlike upstream's batch-wide error norm.

Guidance: true CFG with the null label 1000, batch doubled (NFE x 2) whenever cfg != 1. Upstream applies
it to the first 3 of the 4 latent channels only (the legacy DiT ``forward_with_cfg``); knob ``cfg_channels``
(default 3, the official behaviour) can be set to 4 for CFG on every channel.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from harness.errors import ProtocolError
from harness.models.adapters import Capabilities, build_tiny, register
from harness.models.knobs import Knob
from harness.types import ModelCard, SampleRequest, SamplerSettings
from model_zoo import ode_solvers
from model_zoo.latent_common import TINY_ARCH, LatentAdapter, resolve_latent_params

SAMPLERS = ("euler", "heun", "dopri5")
KNOBS = (Knob("cfg_channels", "choice", choices=(3, 4)), Knob("atol", "number", 0.0, 1.0, min_open=True, max_open=True),
         Knob("rtol", "number", 0.0, 1.0, min_open=True, max_open=True))
DOPRI5_TOLERANCES = {"atol": 1e-6, "rtol": 1e-3}  # SiT sample.py / the paper's harness defaults


@register("sit")
class SiTAdapter(LatentAdapter):
    family_defaults = {"natural_cfg": 1.5}

    @classmethod
    def capabilities_for(cls, card: ModelCard) -> Capabilities:
        p = resolve_latent_params(card, cls.family_defaults)
        return Capabilities(
            conditioning="class", guidance="cfg", min_steps=1, max_steps=p["max_steps"],
            resolution=cls.resolution_of(p), samplers=SAMPLERS, num_classes=p["num_classes"],
            natural_cfg=float(p["natural_cfg"]), knobs=KNOBS,
            guidance_note="true CFG v_u + cfg*(v_c - v_u) on the first cfg_channels (default 3 of 4, as upstream) "
                          "latent channels; null label; batch doubled when cfg != 1")

    def _guided(self, settings: SamplerSettings) -> bool:
        return settings.cfg is not None and settings.cfg != 1.0

    def expected_nfe(self, settings: SamplerSettings) -> int | None:
        per_step = ode_solvers.get_sampler(settings.sampler, f"model {self.card.name!r}").evals_per_step
        if per_step is None:  # adaptive (dopri5): whatever the solver executes
            return None
        return settings.steps * per_step * (2 if self._guided(settings) else 1)

    def _knobs(self, settings: SamplerSettings) -> tuple[int, float, float]:
        channels = settings.knob("cfg_channels", 3)
        if channels not in (3, 4) or isinstance(channels, bool):
            raise ProtocolError(f"model {self.card.name!r}: knob cfg_channels={channels!r}; expected 3 or 4")
        tol = {k: settings.knob(k, v) for k, v in DOPRI5_TOLERANCES.items()}
        for k, v in tol.items():
            if not isinstance(v, (int, float)) or not 0 < v < 1:
                raise ProtocolError(f"model {self.card.name!r}: knob {k}={v!r}; expected a number in (0, 1)")
        if settings.sampler != "dopri5" and any(k in dict(settings.knobs) for k in tol):
            raise ProtocolError(f"model {self.card.name!r}: atol/rtol only apply to sampler dopri5, "
                                f"not {settings.sampler!r}")
        return channels, float(tol["atol"]), float(tol["rtol"])

    def velocity(self, x: torch.Tensor, t: float, y: torch.Tensor, cfg: float | None, channels: int) -> torch.Tensor:
        n = len(x)
        if cfg is None or cfg == 1.0:
            return self.net(x, self.times(t, n), y)
        out = self.net(torch.cat([x, x]), self.times(t, 2 * n), torch.cat([y, self.null_labels(n)]))
        cond, uncond = out.chunk(2)
        guided = cond.clone()  # channels past cfg_channels keep the conditional prediction, as upstream
        guided[:, :channels] = uncond[:, :channels] + cfg * (cond[:, :channels] - uncond[:, :channels])
        return guided

    def sample_latents(self, requests: list[SampleRequest]) -> tuple[torch.Tensor, list[int]]:
        s = requests[0].settings
        channels, atol, rtol = self._knobs(s)
        x, y = self.initial_noise(requests), self.labels(requests)
        sampler = ode_solvers.get_sampler(s.sampler, f"model {self.card.name!r}")
        if sampler.evals_per_step is None:  # adaptive: one trajectory per sample, its own steps and NFE
            outs, nfes = [], []
            for i in range(len(requests)):
                start = self.counter.rows
                f = partial(self.velocity, y=y[i:i + 1], cfg=s.cfg, channels=channels)
                outs.append(sampler.run(f, x[i:i + 1], (0.0, 1.0), atol=atol, rtol=rtol))
                nfes.append(self.counter.per_sample(start, 1))
            return torch.cat(outs), nfes
        start = self.counter.rows
        x = sampler.run(partial(self.velocity, y=y, cfg=s.cfg, channels=channels), x,
                        [i / s.steps for i in range(s.steps + 1)])
        return x, [self.counter.per_sample(start, len(requests))] * len(requests)

    @classmethod
    def tiny(cls, **overrides: Any) -> SiTAdapter:
        return build_tiny(cls, {**TINY_ARCH, **overrides})
