"""A one-step student distilled from the flow-matching teacher (trajectory distillation).

The teacher (a ``flow_matching`` card) solves its probability-flow ODE with Heun at a fixed guidance
scale; the student, a network of the same architecture (DiT or U-Net) initialised from the teacher, learns to jump from
any point x_t of those trajectories straight to the teacher's endpoint: x̂_1 = x_t + (1 - t) g(x_t, t, y)
(``model_zoo.training student``). Time convention as ``flow_matching`` (t = 0 noise, t = 1 data).

Sampling with ``steps`` = k takes k Euler steps along g (for k = 1: x̂_1 = noise + g(noise, 0, y)), one
evaluation each, no guidance at sampling time (the teacher's guidance is baked in): cfg must be null.
"""

from __future__ import annotations

from typing import Any

from harness.models.adapters import register
from model_zoo.flow_matching import FlowMatchingAdapter
from model_zoo.meanflow import MeanFlowAdapter


@register("fm_student")
class FlowStudentAdapter(FlowMatchingAdapter):
    FORMAT = "onestep-bench/fm_student/v1"
    ARCH_DEFAULTS = MeanFlowAdapter.ARCH_DEFAULTS  # the flow_matching keys minus label_dropout
    DEFAULTS: dict[str, Any] = MeanFlowAdapter.DEFAULTS
    TINY_PARAMS: dict[str, Any] = MeanFlowAdapter.TINY_PARAMS

    # same capabilities as MeanFlow: a native one-step model, no guidance input, Euler jumps only
    capabilities_for = classmethod(MeanFlowAdapter.capabilities_for.__func__)
