"""DMD2: a UNet state-dict file on an SDXL base, loaded from the HF cache, equals the upstream recipe run by hand."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import LCMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from huggingface_hub import constants

from harness.errors import HarnessError, ProtocolError
from harness.models.adapters import check_settings
from harness.models.cards import WeightsMissingError, card_from_dict, load_card
from harness.types import SamplerSettings
from model_zoo.dmd2 import DMD2Adapter
from tests.support.zoo_t2i_support import assert_matches_pipeline, install_in_hub_cache, plan_cells, requests, to_uint8

FOUR = [999, 749, 499, 249]


def write_unet_file(unet: UNet2DConditionModel, repo: str, commit: str, name: str) -> Path:
    """A DMD2-format release file (``torch.save`` of the diffusers UNet state dict in fp16) in the HF cache."""
    root = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
    path = root / "snapshots" / commit / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.half() for k, v in unet.state_dict().items()}, path)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return path


def dmd2_card(base: str, unet_repo: str, commit: str, file: str, timesteps: list[int]):
    return card_from_dict({"name": "dmd2-hub-test", "family": "dmd2", "hub": {"repo": base, "revision": commit},
                           "params": {"resolution": 64, "timesteps": timesteps,
                                      "unet": {"repo": unet_repo, "revision": commit, "file": file}}},
                          source="<dmd2 test card>")


@pytest.fixture(scope="module")
def release() -> tuple[str, str, str, Path]:
    """A tiny SDXL base pipeline and a differently initialised 'distilled' UNet file, both in the HF cache."""
    tag, commit = uuid.uuid4().hex[:8], uuid.uuid4().hex + "7" * 8
    base, unet_repo = f"onestep-bench-test/sdxl-base-{tag}", f"onestep-bench-test/dmd2-{tag}"
    tiny = DMD2Adapter.tiny()
    install_in_hub_cache(tiny, base, commit)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        student = UNet2DConditionModel.from_config(tiny.pipe.unet.config)
    path = write_unet_file(student, unet_repo, commit, "dmd2_sdxl_4step_unet_fp16.bin")
    return base, unet_repo, commit, path


def test_tiny_equals_pipeline_with_the_distilled_timesteps() -> None:
    adapter = DMD2Adapter.tiny()
    assert type(adapter.pipe.scheduler) is LCMScheduler
    assert_matches_pipeline(adapter, SamplerSettings(steps=4, cfg=None, sampler="lcm"), calls_per_step=1,
                            rows_per_step=1, guidance_scale=0.0, timesteps=FOUR)


def test_release_file_loads_and_equals_the_upstream_recipe_by_hand(release) -> None:
    base, unet_repo, commit, path = release
    adapter = DMD2Adapter(dmd2_card(base, unet_repo, commit, path.name, FOUR))
    adapter.load("cpu")
    saved = torch.load(path, weights_only=True)
    for key, value in adapter.pipe.unet.state_dict().items():
        assert torch.equal(value, saved[key].float()), key
    # The model card's recipe, written out independently of the adapter.
    snapshot = Path(constants.HF_HUB_CACHE) / f"models--{base.replace('/', '--')}" / "snapshots" / commit
    pipe = StableDiffusionXLPipeline.from_pretrained(snapshot, local_files_only=True)
    pipe.unet.load_state_dict(torch.load(path, weights_only=True))
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    reqs = requests(SamplerSettings(steps=4, cfg=None, sampler="lcm"))
    got = adapter.sample(reqs)
    for r, g in zip(reqs, got):
        with torch.inference_mode():
            want = pipe(prompt=r.prompt, height=64, width=64, num_inference_steps=4, guidance_scale=0,
                        timesteps=FOUR, generator=torch.Generator("cpu").manual_seed(r.seed), output_type="np").images
        assert np.array_equal(g.image, to_uint8(want[0])) and g.nfe == 4
    # The file's weights matter: the base UNet alone gives other images.
    plain = DMD2Adapter(card_from_dict({"name": "b", "family": "dmd2", "hub": {"repo": base, "revision": commit},
                                        "params": {"resolution": 64, "timesteps": FOUR}}))
    plain.load("cpu")
    assert plain.sample(reqs[:1])[0].image.tobytes() != got[0].image.tobytes()


def test_one_step_generator_uses_its_single_timestep() -> None:
    one = DMD2Adapter.tiny(timesteps=[399])
    assert_matches_pipeline(one, SamplerSettings(steps=1, cfg=None, sampler="lcm"), calls_per_step=1, rows_per_step=1,
                            guidance_scale=0.0, timesteps=[399])


def test_bad_release_files_are_refused(release) -> None:
    base, unet_repo, commit, path = release
    with pytest.raises(WeightsMissingError, match="no_such_unet.bin"):
        DMD2Adapter(dmd2_card(base, unet_repo, commit, "no_such_unet.bin", FOUR)).load("cpu")
    wrong = path.with_name("wrong_keys.bin")
    torch.save({"conv_in.weight": torch.zeros(3)}, wrong)
    with pytest.raises(HarnessError, match="wrong_keys.bin does not fit the UNet"):
        DMD2Adapter(dmd2_card(base, unet_repo, commit, wrong.name, FOUR)).load("cpu")
    unpinned = card_from_dict({"name": "u", "family": "dmd2", "hub": {"repo": base, "revision": commit},
                               "params": {"resolution": 64, "timesteps": FOUR,
                                          "unet": {"repo": unet_repo, "revision": "main", "file": path.name}}})
    with pytest.raises(ProtocolError, match="params.unet.revision 'main' is a branch"):
        DMD2Adapter(unpinned).load("cpu")


@pytest.mark.parametrize("params, fragment", [
    ({"timesteps": [249, 499]}, "strictly decreasing"),
    ({"timesteps": None}, "params.timesteps=None"),
    ({"timesteps": [399], "unet": {"repo": "a/b", "file": "x.bin"}}, "exactly repo"),
    ({"timesteps": [399], "unet": {"repo": "a/b", "revision": "main", "file": "x.ckpt"}}, "state-dict file"),
    ({"timesteps": [399], "natural_cfg": 7.0}, "without guidance"),
])
def test_bad_card_params_are_refused(params: dict, fragment: str) -> None:
    card = card_from_dict({"name": "d", "family": "dmd2", "hub": {"repo": "a/b", "revision": "main"},
                           "params": params})
    with pytest.raises(ProtocolError, match=fragment):
        DMD2Adapter.capabilities_for(card)
        DMD2Adapter(card)


def test_shipped_cards_plan_and_refuse_cfg_and_other_step_counts() -> None:
    for n, timesteps in ((1, [399]), (4, FOUR)):
        card = load_card(f"dmd2-sdxl-{n}step")
        assert card.hub == ("stabilityai/stable-diffusion-xl-base-1.0", "main")
        assert card.params["unet"]["file"] == f"dmd2_sdxl_{n}step_unet_fp16.bin"
        assert card.params["timesteps"] == timesteps and card.recipes["official"]["citation"]
        caps = DMD2Adapter.capabilities_for(card)
        assert (caps.guidance, caps.min_steps, caps.max_steps, caps.natural_cfg, caps.knobs) == ("none", n, n, None, ())
        assert plan_cells(card.name, "official") == plan_cells(card.name, "matched") == [(n, None, "none", n)]
        with pytest.raises(ProtocolError, match="cfg=7.0 asked of a model without guidance"):
            check_settings(card, caps, SamplerSettings(steps=n, cfg=7.0, sampler="lcm"))
        with pytest.raises(ProtocolError, match="steps=25 is outside"):
            check_settings(card, caps, SamplerSettings(steps=25, cfg=None, sampler="lcm"))
