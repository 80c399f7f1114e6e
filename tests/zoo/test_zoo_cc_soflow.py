"""SoFlow: the released checkpoint layout, the jump-and-renoise sampler, and its refusal of cfg."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from harness.errors import ProtocolError
from harness.models.adapters import check_settings
from harness.models.cards import card_from_dict
from harness.types import SamplerSettings
from model_zoo.soflow import SoFlowAdapter
from tests.support.conformance import images, requests_for


@pytest.fixture(scope="module")
def soflow() -> SoFlowAdapter:
    return SoFlowAdapter.tiny()


def test_released_checkpoint_layout_loads(soflow: SoFlowAdapter, tmp_path: Path) -> None:
    trained = {f"network.{k}": v + 0.01 for k, v in soflow.net.state_dict().items()}
    path = tmp_path / "1200000.pt"
    torch.save({"ema_model": trained, "step": 1200000}, path)  # what SoFlow's train.py writes
    card = card_from_dict({"name": "soflow-ckpt", "family": "soflow", "weights": str(path),
                           "weights_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                           "params": dict(soflow.card.params)})
    loaded = SoFlowAdapter(card)
    loaded.load("cpu")
    assert all(torch.equal(loaded.net.state_dict()[k[len("network."):]], v) for k, v in trained.items())
    reqs = requests_for(soflow, [1, 2], SamplerSettings(2, None, "renoise"))
    assert images(loaded.sample(reqs)) != images(soflow.sample(reqs))


def test_jump_to_zero_then_renoise(soflow: SoFlowAdapter) -> None:
    reqs = requests_for(soflow, [5, 6], SamplerSettings(3, None, "renoise"))
    with torch.inference_mode():
        got, nfe = soflow.sample_latents(reqs)
        gens = [torch.Generator().manual_seed(r.seed) for r in reqs]
        shape = (4, 8, 8)
        x = torch.stack([torch.randn(shape, generator=g) for g in gens])
        y = soflow.labels(reqs)
        for t, t_next in ((1.0, 2 / 3), (2 / 3, 1 / 3), (1 / 3, None)):
            x = x - t * soflow.net(x, torch.full((2,), t), y, s=torch.full((2,), t))  # f(x, t, 0)
            if t_next is not None:
                x = (1 - t_next) * x + t_next * torch.stack([torch.randn(shape, generator=g) for g in gens])
    assert torch.allclose(got, x, atol=1e-6) and nfe == [3, 3]


@pytest.mark.parametrize("cfg", [7.0, 2.0, 1.0])
def test_cfg_refused_at_plan_time_and_in_sample(soflow: SoFlowAdapter, cfg: float) -> None:
    s = SamplerSettings(1, cfg, "renoise")
    with pytest.raises(ProtocolError, match="without guidance"):
        check_settings(soflow.card, soflow.capabilities, s)
    with pytest.raises(ProtocolError, match="without guidance"):
        soflow.sample(requests_for(soflow, [1], s))
    caps = soflow.capabilities
    assert (caps.guidance, caps.natural_cfg, caps.one_step) == ("none", None, True)
    assert "distilled" in caps.guidance_note
