"""Latent consistency models: embedded guidance, one UNet pass per step, equal the pipeline called directly."""

from __future__ import annotations

import pytest
from diffusers import LCMScheduler, UNet2DConditionModel

from harness.errors import ProtocolError
from harness.models.adapters import check_settings
from harness.models.cards import load_card
from harness.types import SamplerSettings
from model_zoo.lcm import LatentConsistencyAdapter
from tests.support.zoo_t2i_support import (
    assert_hub_checkpoint_refused,
    assert_matches_pipeline,
    reload_from_hub_cache,
    requests,
)


@pytest.fixture(scope="module")
def lcm() -> LatentConsistencyAdapter:
    return LatentConsistencyAdapter.tiny()


def test_embedded_guidance_equals_pipeline(lcm: LatentConsistencyAdapter) -> None:
    # cfg is a UNet input: one single-row call per step, whatever the value.
    assert_matches_pipeline(lcm, SamplerSettings(steps=3, cfg=8.0, sampler="lcm"), calls_per_step=1,
                            rows_per_step=1, guidance_scale=8.0)


def test_guidance_value_changes_the_image_not_the_nfe(lcm: LatentConsistencyAdapter) -> None:
    outs = {cfg: lcm.sample(requests(SamplerSettings(steps=2, cfg=cfg, sampler="lcm"))[:1])[0] for cfg in (1.0, 8.0)}
    assert outs[1.0].image.tobytes() != outs[8.0].image.tobytes()
    assert outs[1.0].nfe == outs[8.0].nfe == 2


def test_loads_from_hub_cache_and_refuses_a_plain_unet(lcm: LatentConsistencyAdapter) -> None:
    loaded = reload_from_hub_cache(lcm, SamplerSettings(steps=2, cfg=8.0, sampler="lcm"))
    assert type(loaded.pipe.scheduler) is LCMScheduler
    plain = LatentConsistencyAdapter.tiny()
    plain.pipe.unet = UNet2DConditionModel.from_config(plain.pipe.unet.config, time_cond_proj_dim=None)
    assert_hub_checkpoint_refused(plain, "not an LCM-distilled checkpoint")


def test_shipped_card() -> None:
    card = load_card("lcm-dreamshaper-v7")
    caps = LatentConsistencyAdapter.capabilities_for(card)
    assert card.hub[0] == "SimianLuo/LCM_Dreamshaper_v7" and card.family == "lcm"
    assert (caps.guidance, caps.natural_cfg, caps.samplers, caps.resolution, caps.max_steps) == \
        ("embedded", 8.0, ("lcm",), 768, 50)
    recipe = card.recipes["official"]
    assert (recipe["steps"], recipe["cfg"]) == (4, 8.0) and recipe["citation"]
    matched = card.recipes["matched"]
    assert (matched["steps"], matched["cfg"], matched["sampler"]) == ([1, 25], [7.0, "natural"], "lcm")
    check_settings(card, caps, SamplerSettings(steps=4, cfg=8.0, sampler="lcm"))
    with pytest.raises(ProtocolError, match="steps=51"):
        check_settings(card, caps, SamplerSettings(steps=51, cfg=8.0, sampler="lcm"))
