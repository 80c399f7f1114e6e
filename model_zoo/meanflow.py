"""MeanFlow (Geng et al., 2025): a native one-step generator that learns the AVERAGE velocity.

Time convention (the paper's, opposite to ``flow_matching``): z_t = (1 - t) * data + t * noise, so t = 1
is pure noise, t = 0 is data, and the instantaneous velocity is v = noise - data. The network predicts
the average velocity over [r, t], u(z_t, r, t) = 1/(t - r) ∫_r^t v(z_τ, τ) dτ, conditioned on t and
the interval t - r (``time_inputs=2`` of the DiT or the U-Net, ``params.arch``). One jump
z_r = z_t - (t - r) * u(z_t, r, t) replaces an ODE solve, so sampling with ``steps`` = k walks t = 1 → 0
in k uniform jumps, one evaluation each (NFE = k). Training (``model_zoo.training meanflow``) uses the MeanFlow identity
u = v - (t - r) d/dt u, with the total derivative taken by ``torch.func.jvp``.

Guidance is folded into training, not applied at sampling: ``model_zoo.training meanflow --omega W
--label-dropout P`` trains the null label and replaces v in the target by the CFG-mixed velocity
ω v + (1 - ω) u(z_t, t, t | null), as the MeanFlow paper does (the card's comment records ω). Sampling has
no guidance input and no second branch (NFE = k), so cfg must be null and is refused at plan time.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.models.adapters import Capabilities, register
from harness.types import ModelCard, SampleOutput, SampleRequest
from model_zoo import ode_solvers
from model_zoo.flow_matching import TINY_PARAMS as FM_TINY
from model_zoo.flow_matching import FlowMatchingAdapter

NO_GUIDANCE = "label_dropout"  # the flow_matching key these families do not have


def without_guidance(archs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The flow_matching defaults of every architecture minus ``label_dropout``."""
    return {arch: {k: v for k, v in d.items() if k != NO_GUIDANCE} for arch, d in archs.items()}


@register("meanflow")
class MeanFlowAdapter(FlowMatchingAdapter):
    """One- and few-step sampling by average-velocity jumps of a (t, t - r)-conditioned DiT."""

    FORMAT = "onestep-bench/meanflow/v1"
    ARCH_DEFAULTS = without_guidance(FlowMatchingAdapter.ARCH_DEFAULTS)
    DEFAULTS: dict[str, Any] = ARCH_DEFAULTS["dit"]
    TINY_PARAMS: dict[str, Any] = {k: v for k, v in FM_TINY.items() if k != NO_GUIDANCE}
    TIME_INPUTS = 2

    @classmethod
    def capabilities_for(cls, card: ModelCard) -> Capabilities:
        p = cls.resolve(card)
        return Capabilities(conditioning="class", guidance="none", min_steps=1, max_steps=p["max_steps"],
                            resolution=p["resolution"], samplers=("euler",), num_classes=p["num_classes"],
                            one_step=True, natural_cfg=None)

    def average_velocity(self, z: torch.Tensor, r: float, t: float, y: torch.Tensor) -> torch.Tensor:
        assert self.net is not None
        tt = torch.tensor(t, dtype=torch.float32, device=self.device)
        interval = torch.tensor(t - r, dtype=torch.float32, device=self.device)
        return self.net(z, tt, y, interval)

    def _sample_batch(self, requests: list[SampleRequest]) -> list[SampleOutput]:
        z, y, start = self.prepare(requests)
        steps = requests[0].settings.steps
        with torch.inference_mode():  # u(z, t0, t1) over [t1, t0]: this net takes (r, t) = (t1, t0)
            z = ode_solvers.sample_average_velocity(lambda x, t0, t1: self.average_velocity(x, t1, t0, y), z,
                                                    [1.0 - i / steps for i in range(steps + 1)])
        return self.finish(requests, z, steps, start)
