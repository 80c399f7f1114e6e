"""FLUX.1-dev / schnell: equal the diffusers pipeline called directly; guidance semantics; HF-cache loading."""

from __future__ import annotations

import pytest

from harness.errors import ProtocolError
from harness.models.adapters import check_settings
from harness.models.cards import load_card
from harness.types import SamplerSettings
from model_zoo.flux import FluxDevAdapter, FluxSchnellAdapter
from tests.support.zoo_t2i_support import (
    assert_matches_pipeline,
    direct_images,
    hub_card,
    reload_from_hub_cache,
    requests,
)

SEQ = FluxDevAdapter.tiny_params["max_sequence_length"]


@pytest.fixture(scope="module")
def dev() -> FluxDevAdapter:
    return FluxDevAdapter.tiny()


@pytest.fixture(scope="module")
def schnell() -> FluxSchnellAdapter:
    return FluxSchnellAdapter.tiny()


def test_dev_embedded_guidance_equals_pipeline(dev: FluxDevAdapter) -> None:
    # cfg is an input of the transformer: one single-row call per step.
    assert_matches_pipeline(dev, SamplerSettings(steps=3, cfg=4.0), calls_per_step=1, rows_per_step=1,
                            guidance_scale=4.0, max_sequence_length=SEQ)


def test_dev_true_cfg_knob_equals_pipeline(dev: FluxDevAdapter) -> None:
    # true_cfg_scale > 1: a second (negative) call per step, so NFE doubles.
    s = SamplerSettings(steps=2, cfg=3.5, knobs={"true_cfg_scale": 2.0})
    assert dev.expected_nfe(s) == 4
    assert_matches_pipeline(dev, s, calls_per_step=2, rows_per_step=2, guidance_scale=3.5, true_cfg_scale=2.0,
                            negative_prompt="", max_sequence_length=SEQ)


def test_dev_guidance_value_changes_the_image_but_not_the_nfe(dev: FluxDevAdapter) -> None:
    outs = {cfg: dev.sample(requests(SamplerSettings(steps=2, cfg=cfg))[:1])[0] for cfg in (1.0, 7.0)}
    assert outs[1.0].image.tobytes() != outs[7.0].image.tobytes()
    assert outs[1.0].nfe == outs[7.0].nfe == 2


def test_dev_true_cfg_at_or_below_one_is_off(dev: FluxDevAdapter) -> None:
    reqs = requests(SamplerSettings(steps=2, cfg=3.5))[:1]
    off = dev.sample(reqs)[0]
    same = dev.sample(requests(SamplerSettings(steps=2, cfg=3.5, knobs={"true_cfg_scale": 1.0}))[:1])[0]
    assert same.image.tobytes() == off.image.tobytes() and same.nfe == off.nfe == 2


@pytest.mark.parametrize("value", ["2", -1.0, float("nan"), True])
def test_dev_bad_true_cfg_value_refused(dev: FluxDevAdapter, value: object) -> None:
    s = SamplerSettings(steps=2, cfg=3.5, knobs={"true_cfg_scale": value})
    with pytest.raises(ProtocolError, match="true_cfg_scale"):
        dev.expected_nfe(s)


def test_schnell_equals_pipeline_and_ignores_nothing(schnell: FluxSchnellAdapter) -> None:
    assert_matches_pipeline(schnell, SamplerSettings(steps=2, cfg=None), calls_per_step=1, rows_per_step=1,
                            max_sequence_length=SEQ)
    # Why cfg is refused: the pipeline silently ignores guidance_scale on schnell (identical images).
    reqs = requests(SamplerSettings(steps=2, cfg=None))[:1]
    low, _ = direct_images(schnell, reqs, guidance_scale=0.0, max_sequence_length=SEQ)
    high, _ = direct_images(schnell, reqs, guidance_scale=7.0, max_sequence_length=SEQ)
    assert low[0].tobytes() == high[0].tobytes()
    with pytest.raises(ProtocolError, match="without guidance"):
        schnell.sample(requests(SamplerSettings(steps=2, cfg=7.0)))
    with pytest.raises(ProtocolError, match="knob 'true_cfg_scale' is not honoured"):
        schnell.sample(requests(SamplerSettings(steps=2, cfg=None, knobs={"true_cfg_scale": 2.0})))


def test_dev_loads_from_hub_cache(dev: FluxDevAdapter) -> None:
    reload_from_hub_cache(dev, SamplerSettings(steps=2, cfg=3.5))  # reloaded text encoders differ by ~1e-7


def test_schnell_card_with_a_guidance_value_is_refused() -> None:
    with pytest.raises(ProtocolError, match="has no guidance"):
        FluxSchnellAdapter.capabilities_for(hub_card("flux_schnell", "org/x", "main", natural_cfg=3.5))


def test_shipped_cards() -> None:
    dev_card, schnell_card = load_card("flux1-dev"), load_card("flux1-schnell")
    caps = FluxDevAdapter.capabilities_for(dev_card)
    assert dev_card.hub[0] == "black-forest-labs/FLUX.1-dev" and dev_card.family == "flux"
    assert (caps.guidance, caps.natural_cfg, caps.knobs, caps.resolution) == ("embedded", 3.5, ("true_cfg_scale",),
                                                                               1024)
    assert (dev_card.recipes["official"]["steps"], dev_card.recipes["official"]["cfg"]) == (50, 3.5)
    assert dev_card.recipes["matched"] == {"steps": [1, 25], "cfg": [7.0, "natural"]}
    scaps = FluxSchnellAdapter.capabilities_for(schnell_card)
    assert schnell_card.hub[0] == "black-forest-labs/FLUX.1-schnell" and schnell_card.family == "flux_schnell"
    assert (scaps.guidance, scaps.natural_cfg, scaps.knobs, scaps.one_step) == ("none", None, (), True)
    recipe = schnell_card.recipes["official"]
    assert (recipe["steps"], recipe["cfg"]) == (4, None) and recipe["citation"]
    for card, c in ((dev_card, caps), (schnell_card, scaps)):
        official = card.recipes["official"]
        check_settings(card, c, SamplerSettings(steps=official["steps"], cfg=official["cfg"]))
