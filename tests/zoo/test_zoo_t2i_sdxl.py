"""SDXL and SD 1.x/2.x UNet families (SDXL base/Turbo, SD-Turbo): equal the pipeline called directly."""

from __future__ import annotations

import uuid

import pytest
from diffusers import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler

from harness.errors import HarnessError, ProtocolError
from harness.models.adapters import check_settings
from harness.models.cards import load_card
from harness.types import SamplerSettings
from model_zoo.sd import StableDiffusionAdapter
from model_zoo.sdxl import StableDiffusionXLAdapter
from tests.support.zoo_t2i_support import (
    assert_matches_pipeline,
    hub_card,
    install_in_hub_cache,
    reload_from_hub_cache,
    requests,
)

FAMILIES = [StableDiffusionXLAdapter, StableDiffusionAdapter]


@pytest.fixture(scope="module", params=FAMILIES, ids=lambda c: c.family)
def unet_adapter(request: pytest.FixtureRequest):
    return request.param.tiny()


def test_true_cfg_equals_pipeline(unet_adapter) -> None:
    # cfg > 1: one UNet call per step on a doubled batch.
    assert_matches_pipeline(unet_adapter, SamplerSettings(steps=3, cfg=4.0), calls_per_step=1, rows_per_step=2,
                            guidance_scale=4.0)


def test_turbo_recipe_cfg_zero_equals_pipeline(unet_adapter) -> None:
    assert_matches_pipeline(unet_adapter, SamplerSettings(steps=2, cfg=0.0), calls_per_step=1, rows_per_step=1,
                            guidance_scale=0.0)


@pytest.mark.parametrize("cls", FAMILIES, ids=lambda c: c.family)
def test_named_scheduler_is_built_from_the_checkpoint_config(cls) -> None:
    a = cls.tiny(scheduler="euler_ancestral")
    assert type(a.pipe.scheduler) is EulerAncestralDiscreteScheduler
    plain = cls.tiny()
    assert type(plain.pipe.scheduler) is EulerDiscreteScheduler
    assert a.pipe.scheduler.config.timestep_spacing == plain.pipe.scheduler.config.timestep_spacing
    s = SamplerSettings(steps=2, cfg=0.0, sampler="euler_ancestral")
    # Ancestral steps draw fresh noise: from each image's own generator, so the pipeline match still holds.
    assert_matches_pipeline(a, s, calls_per_step=1, rows_per_step=1, guidance_scale=0.0)
    with pytest.raises(ProtocolError, match="sampler='euler' is not supported"):
        a.sample(requests(SamplerSettings(steps=2, cfg=0.0, sampler="euler")))
    with pytest.raises(ProtocolError, match="params.scheduler='dpm'"):
        cls.capabilities_for(hub_card(cls.family, "org/x", "main", scheduler="dpm"))


@pytest.mark.parametrize("cls", FAMILIES, ids=lambda c: c.family)
def test_loads_from_hub_cache(cls) -> None:
    loaded = reload_from_hub_cache(cls.tiny(), SamplerSettings(steps=2, cfg=3.0))
    if cls is StableDiffusionAdapter:
        assert loaded.pipe.safety_checker is None  # never swaps flagged images for black frames


def test_guidance_embedded_unet_is_refused() -> None:
    # An LCM-distilled UNet (time_cond_proj_dim set): diffusers would skip CFG and feed cfg as an input.
    tiny = StableDiffusionAdapter.tiny()
    from diffusers import UNet2DConditionModel

    tiny.pipe.unet = UNet2DConditionModel.from_config(tiny.pipe.unet.config, time_cond_proj_dim=16)
    assert tiny.pipe.unet.config.time_cond_proj_dim == 16
    repo, commit = f"onestep-bench-test/lcm-{uuid.uuid4().hex[:8]}", "c" * 40
    install_in_hub_cache(tiny, repo, commit)
    with pytest.raises(HarnessError, match="guidance embedding"):
        StableDiffusionAdapter(hub_card("sd", repo, commit, **StableDiffusionAdapter.tiny_params)).load("cpu")


@pytest.mark.parametrize("name, family, res, natural, official", [
    ("sdxl-base", "sdxl", 1024, 5.0, (50, 5.0, "euler")),
    ("sdxl-turbo", "sdxl", 512, 0.0, (1, 0.0, "euler_ancestral")),
    ("sd-turbo", "sd", 512, 0.0, (1, 0.0, "euler"))])
def test_shipped_cards(name: str, family: str, res: int, natural: float, official: tuple) -> None:
    card = load_card(name)
    cls = {c.family: c for c in FAMILIES}[family]
    caps = cls.capabilities_for(card)
    assert card.family == family and card.hub[0].startswith("stabilityai/")
    assert (caps.resolution, caps.natural_cfg, caps.guidance, caps.samplers) == (res, natural, "cfg", (official[2],))
    recipe = card.recipes["official"]
    assert (recipe["steps"], recipe["cfg"], recipe["sampler"]) == official and recipe["citation"]
    matched = card.recipes["matched"]
    assert (matched["steps"], matched["cfg"], matched.get("sampler", "euler")) == ([1, 25], [7.0, "natural"],
                                                                                   official[2])
    check_settings(card, caps, SamplerSettings(steps=official[0], cfg=official[1], sampler=official[2]))
