"""SANA-Sprint: embedded guidance, one transformer pass per step, equal to the pipeline called directly."""

from __future__ import annotations

import pytest
from diffusers import SanaTransformer2DModel, SCMScheduler

from harness.errors import ProtocolError
from harness.models.adapters import check_settings
from harness.models.cards import load_card
from harness.types import SamplerSettings
from model_zoo.sana_sprint import SanaSprintAdapter
from tests.support.zoo_t2i_support import (
    assert_hub_checkpoint_refused,
    assert_matches_pipeline,
    plan_cells,
    reload_from_hub_cache,
    requests,
)

SEQ = SanaSprintAdapter.tiny_params["max_sequence_length"]


@pytest.fixture(scope="module")
def sana() -> SanaSprintAdapter:
    return SanaSprintAdapter.tiny()


@pytest.mark.parametrize("steps, intermediate", [(1, None), (2, 1.3), (3, None)])
def test_embedded_guidance_equals_pipeline(sana: SanaSprintAdapter, steps: int, intermediate: float | None) -> None:
    # cfg is a transformer input: one single-row call per step; two steps use the upstream intermediate time.
    assert_matches_pipeline(sana, SamplerSettings(steps=steps, cfg=4.5, sampler="scm"), calls_per_step=1,
                            rows_per_step=1, guidance_scale=4.5, use_resolution_binning=False,
                            intermediate_timesteps=intermediate, max_sequence_length=SEQ)


def test_guidance_value_changes_the_image_not_the_nfe(sana: SanaSprintAdapter) -> None:
    outs = {cfg: sana.sample(requests(SamplerSettings(steps=1, cfg=cfg, sampler="scm"))[:1])[0] for cfg in (1.0, 7.0)}
    assert outs[1.0].image.tobytes() != outs[7.0].image.tobytes()
    assert outs[1.0].nfe == outs[7.0].nfe == 1


def test_cfg_null_and_knobs_are_refused(sana: SanaSprintAdapter) -> None:
    with pytest.raises(ProtocolError, match="cfg=null but the model has embedded guidance"):
        sana.sample(requests(SamplerSettings(steps=1, cfg=None, sampler="scm")))
    with pytest.raises(ProtocolError, match="knob 'true_cfg_scale' is not honoured"):
        sana.sample(requests(SamplerSettings(steps=1, cfg=4.5, sampler="scm", knobs={"true_cfg_scale": 2.0})))


def test_loads_from_hub_cache_and_refuses_a_transformer_without_guidance_input(sana: SanaSprintAdapter) -> None:
    loaded = reload_from_hub_cache(sana, SamplerSettings(steps=2, cfg=4.5, sampler="scm"))
    assert type(loaded.pipe.scheduler) is SCMScheduler
    plain = SanaSprintAdapter.tiny()
    plain.pipe.transformer = SanaTransformer2DModel.from_config(plain.pipe.transformer.config, guidance_embeds=False)
    assert_hub_checkpoint_refused(plain, "no guidance embedding")


def test_shipped_card_plans_both_recipes() -> None:
    card = load_card("sana-sprint-1.6b")
    caps = SanaSprintAdapter.capabilities_for(card)
    assert card.hub == ("Efficient-Large-Model/Sana_Sprint_1.6B_1024px_diffusers", "main")
    assert (caps.guidance, caps.natural_cfg, caps.samplers, caps.resolution, caps.one_step, caps.knobs) == \
        ("embedded", 4.5, ("scm",), 1024, True, ())
    assert "citation" in card.recipes["official"]
    assert plan_cells("sana-sprint-1.6b", "official") == [(2, 4.5, "embedded", 2)]
    assert plan_cells("sana-sprint-1.6b", "matched") == [(1, 7.0, "embedded", 1), (1, 4.5, "embedded", 1),
                                                         (25, 7.0, "embedded", 25), (25, 4.5, "embedded", 25)]
    with pytest.raises(ProtocolError, match="sampler='euler'"):
        check_settings(card, caps, SamplerSettings(steps=2, cfg=4.5, sampler="euler"))
