"""The MF-B/4 card (the public MeanFlow release) plans, refuses cfg, and builds a DiT-B/4-sized network."""

from __future__ import annotations

import pytest
import torch

from harness.errors import ProtocolError
from harness.models.adapters import check_settings
from harness.models.cards import load_card
from harness.plan.protocol import make_plan, protocol_from_dict
from harness.types import SamplerSettings
from model_zoo.imeanflow import MeanFlowLatentAdapter


@pytest.fixture(autouse=True)
def imagenet_classes(fake_imagenet: str) -> None:
    """A 1000-class dataset for planning (no images are read)."""


def plan_cells(recipe: str) -> list[tuple[int, float | None, str, int]]:
    raw = {"name": "p", "models": [{"card": "meanflow-b4", "recipe": recipe}], "datasets": ["test-imagenet"],
           "steps": [1], "n": 4}
    cells = make_plan(protocol_from_dict(raw, source="p.yaml")).cells
    adapters = [MeanFlowLatentAdapter(c.model) for c in cells]  # plan time: no weights loaded
    return [(c.settings.steps, c.settings.cfg, a.capabilities.guidance, a.expected_nfe(c.settings))
            for c, a in zip(cells, adapters)]


def test_card_is_b4_and_plans_without_guidance() -> None:
    card = load_card("meanflow-b4")
    caps = MeanFlowLatentAdapter.capabilities_for(card)
    assert (caps.guidance, caps.resolution, caps.num_classes, caps.one_step) == ("none", 256, 1000, True)
    assert plan_cells("official") == [(1, None, "none", 1)]
    assert plan_cells("matched") == [(1, None, "none", 1), (25, None, "none", 25)]
    with pytest.raises(ProtocolError, match="without guidance"):
        check_settings(card, caps, SamplerSettings(steps=1, cfg=7.0))


def test_architecture_is_dit_b4() -> None:
    adapter = MeanFlowLatentAdapter(load_card("meanflow-b4"))
    with torch.random.fork_rng(devices=[]):
        net = adapter.make_network()
    # DiT-B/4 has 130.3M parameters (Peebles & Xie, Table 4); MeanFlow adds the h embedder (~0.7M).
    count = sum(p.numel() for p in net.parameters())
    assert 130.0e6 < count < 132.0e6, count
    tokens = torch.zeros(1, 4, 32, 32)
    out = net(tokens, torch.zeros(1), torch.zeros(1, dtype=torch.long), h=torch.zeros(1))
    assert out.shape == (1, 4, 32, 32)
