"""InstaFlow / 2-Rectified Flow: the adapter's Euler sampler equals a hand-written reference loop, bit for bit."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler

from harness.errors import ProtocolError
from harness.models.adapters import check_settings
from harness.models.cards import load_card
from harness.types import SampleRequest, SamplerSettings
from model_zoo.instaflow import InstaFlowAdapter
from tests.support.zoo_t2i_support import (
    CallCounter,
    assert_hub_checkpoint_refused,
    hub_card,
    install_in_hub_cache,
    plan_cells,
    requests,
    to_uint8,
)


@pytest.fixture(scope="module")
def flow() -> InstaFlowAdapter:
    return InstaFlowAdapter.tiny()


def clip_states(pipe, text: str) -> torch.Tensor:
    ids = pipe.tokenizer(text, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids
    return pipe.text_encoder(ids)[0]


@torch.inference_mode()
def reference(pipe, request: SampleRequest, size: int) -> np.ndarray:
    """InstaFlow's published sampler written out: x += v(x, 1000 (1 - i/N)) / N, CFG on velocities."""
    steps, w = request.settings.steps, request.settings.cfg
    cond = clip_states(pipe, request.prompt)
    x = torch.randn((1, 4, size // 8, size // 8), generator=torch.Generator("cpu").manual_seed(request.seed))
    for i in range(steps):
        t = 1000.0 * (1 - i / steps)
        if w > 1:
            v_uncond = pipe.unet(x, torch.tensor([t]), encoder_hidden_states=clip_states(pipe, "")).sample
            v_cond = pipe.unet(x, torch.tensor([t]), encoder_hidden_states=cond).sample
            v = v_uncond + w * (v_cond - v_uncond)
        else:
            v = pipe.unet(x, torch.tensor([t]), encoder_hidden_states=cond).sample
        x = x + v / steps
    image = pipe.vae.decode(x / pipe.vae.config.scaling_factor).sample
    return to_uint8((image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()[0])


def assert_equals_reference(flow: InstaFlowAdapter, settings: SamplerSettings, tolerance: int) -> None:
    reqs = requests(settings)
    counter = CallCounter(flow.denoiser)
    try:
        got = flow.sample(reqs)
    finally:
        counter.handle.remove()
    per_step = 2 if settings.cfg > 1 else 1
    assert [o.nfe for o in got] == [settings.steps * per_step] * len(reqs)
    assert counter.calls == settings.steps * len(reqs)  # CFG doubles the batch, not the calls
    for r, g in zip(reqs, got):
        diff = np.abs(g.image.astype(int) - reference(flow.pipe, r, 64).astype(int))
        assert diff.max() <= tolerance, f"sample {r.index}: max diff {diff.max()}"
    assert [o.image.tobytes() for o in flow.sample(reqs[::-1])[::-1]] == [o.image.tobytes() for o in got]


@pytest.mark.parametrize("steps", [1, 2])
def test_unguided_euler_equals_reference_loop(flow: InstaFlowAdapter, steps: int) -> None:
    assert_equals_reference(flow, SamplerSettings(steps=steps, cfg=0.0), tolerance=0)


def test_cfg_on_velocities_equals_reference_loop(flow: InstaFlowAdapter) -> None:
    # The adapter runs both branches in one doubled-batch call; the reference runs them separately, so
    # kernels may round differently (~1e-7) and move a pixel by one level.
    assert_equals_reference(flow, SamplerSettings(steps=2, cfg=3.0), tolerance=1)
    outs = {w: flow.sample(requests(SamplerSettings(steps=1, cfg=w))[:1])[0] for w in (0.0, 1.0, 3.0)}
    assert outs[0.0].image.tobytes() == outs[1.0].image.tobytes() != outs[3.0].image.tobytes()


def test_released_folder_layout_loads_and_wrong_noise_scale_is_refused(flow: InstaFlowAdapter) -> None:
    repo, commit = f"onestep-bench-test/instaflow-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex + "9" * 8
    snapshot = install_in_hub_cache(flow, repo, commit)
    index = json.loads((snapshot / "model_index.json").read_text())
    (snapshot / "model_index.json").write_text(json.dumps({**index, "_class_name": "RectifiedFlowPipeline"}))
    loaded = InstaFlowAdapter(hub_card("instaflow", repo, commit, **InstaFlowAdapter.tiny_params))
    loaded.load("cpu")
    reqs = requests(SamplerSettings(steps=2, cfg=0.0))
    for a, b in zip(loaded.sample(reqs), flow.sample(reqs)):
        assert np.abs(a.image.astype(int) - b.image.astype(int)).max() <= 1
    other = InstaFlowAdapter.tiny()
    other.pipe.scheduler = EulerDiscreteScheduler.from_config(other.pipe.scheduler.config)
    assert_hub_checkpoint_refused(other, "not an InstaFlow checkpoint")


def test_shipped_cards() -> None:
    one, two = load_card("instaflow-0.9b"), load_card("2-rectified-flow-sd15")
    assert one.hub == ("XCLiu/instaflow_0_9B_from_sd_1_5", "main")
    assert two.hub == ("XCLiu/2_rectified_flow_from_sd_1_5", "main")
    caps = InstaFlowAdapter.capabilities_for(one)
    assert (caps.guidance, caps.natural_cfg, caps.max_steps, caps.resolution, caps.one_step) == ("cfg", 0.0, 1, 512,
                                                                                                 True)
    assert plan_cells("instaflow-0.9b", "official") == [(1, 0.0, "cfg", 1)]
    assert plan_cells("instaflow-0.9b", "matched") == [(1, 7.0, "cfg", 2), (1, 0.0, "cfg", 1)]
    with pytest.raises(ProtocolError, match="steps=25 is outside"):
        check_settings(one, caps, SamplerSettings(steps=25, cfg=0.0))
    assert plan_cells("2-rectified-flow-sd15", "official") == [(25, 1.5, "cfg", 50)]
    assert plan_cells("2-rectified-flow-sd15", "matched") == [(1, 7.0, "cfg", 2), (1, 1.5, "cfg", 2),
                                                              (25, 7.0, "cfg", 50), (25, 1.5, "cfg", 50)]
