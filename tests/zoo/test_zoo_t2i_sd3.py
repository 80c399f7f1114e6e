"""Stable Diffusion 3.5 family: equals the diffusers pipeline called directly; loads from the HF cache."""

from __future__ import annotations

import uuid

import pytest

from harness.errors import HarnessError, ProtocolError
from harness.models.adapters import check_settings
from harness.models.cards import WeightsMissingError, is_pinned, load_card
from harness.types import SampleRequest, SamplerSettings
from model_zoo.sd3 import StableDiffusion3Adapter
from tests.support.zoo_t2i_support import (
    assert_matches_pipeline,
    assert_same_up_to_rounding,
    hub_card,
    install_in_hub_cache,
    requests,
)

SEQ = StableDiffusion3Adapter.tiny_params["max_sequence_length"]


@pytest.fixture(scope="module")
def sd3() -> StableDiffusion3Adapter:
    return StableDiffusion3Adapter.tiny()


def test_true_cfg_equals_pipeline(sd3: StableDiffusion3Adapter) -> None:
    # cfg > 1: one transformer call per step on a doubled batch (negative + positive rows).
    assert_matches_pipeline(sd3, SamplerSettings(steps=3, cfg=4.0), calls_per_step=1, rows_per_step=2,
                            guidance_scale=4.0, negative_prompt="", max_sequence_length=SEQ)


@pytest.mark.parametrize("cfg", [1.0, 0.0])
def test_no_guidance_at_or_below_one_equals_pipeline(sd3: StableDiffusion3Adapter, cfg: float) -> None:
    # cfg <= 1 (the Turbo recipe uses 0): conditional branch only, one row per step.
    assert_matches_pipeline(sd3, SamplerSettings(steps=2, cfg=cfg), calls_per_step=1, rows_per_step=1,
                            guidance_scale=cfg, max_sequence_length=SEQ)


def test_guidance_and_prompt_change_the_image(sd3: StableDiffusion3Adapter) -> None:
    base = requests(SamplerSettings(steps=2, cfg=1.0))[0]
    img = {(cfg, p): sd3.sample([SampleRequest(0, base.seed, SamplerSettings(2, cfg), prompt=p)])[0].image.tobytes()
           for cfg in (1.0, 5.0) for p in ("a cat", "a dog")}
    assert img[(1.0, "a cat")] != img[(5.0, "a cat")]
    assert img[(5.0, "a cat")] != img[(5.0, "a dog")]


def test_missing_prompt_is_refused(sd3: StableDiffusion3Adapter) -> None:
    for prompt in (None, "  "):
        with pytest.raises(ProtocolError, match="no prompt"):
            sd3.sample([SampleRequest(3, 1, SamplerSettings(2, 1.0), prompt=prompt)])


def test_loads_from_hub_cache_through_the_real_path(sd3: StableDiffusion3Adapter) -> None:
    repo, commit = f"onestep-bench-test/sd3-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex + "0" * 8
    install_in_hub_cache(sd3, repo, commit)
    params = dict(StableDiffusion3Adapter.tiny_params)
    for revision in (commit, "main"):  # a pinned commit, and a branch resolved through refs/main
        loaded = StableDiffusion3Adapter(hub_card("sd3", repo, revision, **params))
        loaded.load("cpu")
        reqs = requests(SamplerSettings(steps=2, cfg=3.0))
        for a, b in zip(loaded.sample(reqs), sd3.sample(reqs)):
            # Reloading changes the pooled CLIP embedding by ~1e-7 (diffusers; weights bitwise equal).
            assert_same_up_to_rounding(a.image, b.image)
    assert is_pinned(hub_card("sd3", repo, commit)) and not is_pinned(hub_card("sd3", repo, "main"))


def test_missing_checkpoint_names_card_and_command() -> None:
    card = hub_card("sd3", "onestep-bench-test/not-downloaded", "a" * 40)
    with pytest.raises(WeightsMissingError, match="harness weights fetch sd3-hub-test"):
        StableDiffusion3Adapter(card).load("cpu")


def test_folder_of_another_pipeline_is_refused(sd3: StableDiffusion3Adapter, tmp_path) -> None:
    repo, commit = f"onestep-bench-test/wrong-{uuid.uuid4().hex[:8]}", "b" * 40
    snapshot = install_in_hub_cache(sd3, repo, commit)
    index = snapshot / "model_index.json"
    index.write_text(index.read_text().replace("StableDiffusion3Pipeline", "FluxPipeline"))
    with pytest.raises(HarnessError, match="holds a FluxPipeline checkpoint"):
        StableDiffusion3Adapter(hub_card("sd3", repo, commit)).load("cpu")


@pytest.mark.parametrize("name, natural, official", [
    ("sd35-large", 3.5, (28, 3.5)), ("sd35-medium", 4.5, (40, 4.5)), ("sd35-large-turbo", 0.0, (4, 0.0))])
def test_shipped_cards(name: str, natural: float, official: tuple[int, float]) -> None:
    card = load_card(name)
    caps = StableDiffusion3Adapter.capabilities_for(card)
    assert card.family == "sd3" and card.hub[0].startswith("stabilityai/stable-diffusion-3.5-")
    assert card.dtype == "bfloat16" and caps.resolution == 1024 and caps.conditioning == "text"
    assert caps.guidance == "cfg" and caps.natural_cfg == natural and "true CFG" in caps.guidance_note
    recipe = card.recipes["official"]
    assert (recipe["steps"], recipe["cfg"]) == official and recipe["citation"]
    assert card.recipes["matched"] == {"steps": [1, 25], "cfg": [7.0, "natural"]}
    check_settings(card, caps, SamplerSettings(steps=recipe["steps"], cfg=recipe["cfg"]))
    with pytest.raises(ProtocolError, match="knob 'true_cfg_scale' is not honoured"):
        check_settings(card, caps, SamplerSettings(steps=4, cfg=3.5, knobs={"true_cfg_scale": 2.0}))


@pytest.mark.parametrize("params, match", [
    ({"resolution": 0}, "resolution"), ({"natural_cfg": -1}, "natural_cfg"), ({"stepz": 3}, "unknown key"),
    ({"min_steps": 5, "max_steps": 4}, "min_steps"), ({"one_step": "yes"}, "one_step")])
def test_bad_params_refused(params: dict, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        StableDiffusion3Adapter.capabilities_for(hub_card("sd3", "org/name", "main", **params))
