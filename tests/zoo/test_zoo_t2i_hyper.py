"""Hyper-SD: LoRA files merged without peft equal a hand computation, and the adapter runs the upstream recipe."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionXLPipeline, TCDScheduler
from huggingface_hub import constants
from safetensors.torch import save_file

from harness.errors import HarnessError, ProtocolError
from harness.models.cards import card_from_dict, load_card
from harness.types import SamplerSettings
from model_zoo.hyper_sd import HyperSD15Adapter, HyperSDXLAdapter
from model_zoo.lora import merge_lora
from tests.support.zoo_t2i_support import (
    assert_matches_pipeline,
    assert_same_up_to_rounding,
    install_in_hub_cache,
    plan_cells,
    requests,
    to_uint8,
)

# (component, module name, kohya prefix) of the layers the tiny LoRA adapts: attention and projection
# Linears, a 3x3 resnet conv, and a layer of SDXL's second text encoder.
LAYERS = [("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", "lora_unet_"),
          ("unet", "down_blocks.1.attentions.0.proj_in", "lora_unet_"),
          ("unet", "down_blocks.0.resnets.0.conv1", "lora_unet_"),
          ("text_encoder_2", "text_model.encoder.layers.0.self_attn.q_proj", "lora_te2_")]
RANK, ALPHA = 4, 2.0


def tiny_lora(pipe, kohya: bool, seed: int = 5) -> tuple[dict[str, torch.Tensor], dict[str, tuple]]:
    """A LoRA in the kohya (lora_down/lora_up/alpha) or diffusers/peft (lora_A/lora_B) layout, and its factors."""
    g = torch.Generator().manual_seed(seed)
    state, factors = {}, {}
    for component, name, prefix in LAYERS:
        w = dict(getattr(pipe, component).named_modules())[name].weight
        down = torch.randn((RANK, *w.shape[1:]), generator=g)  # conv: (rank, in, kh, kw)
        up = torch.randn((w.shape[0], RANK) + ((1, 1) if w.ndim == 4 else ()), generator=g)
        if kohya:
            key = prefix + name.replace(".", "_")
            state |= {f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up, f"{key}.alpha": torch.tensor(ALPHA)}
        else:
            key = f"{component}.{name}"
            state |= {f"{key}.lora_A.weight": down, f"{key}.lora_B.weight": up}
        factors[(component, name)] = (down, up)
    return state, factors


def hand_merged(pipe, factors: dict, scale: float, alpha_over_rank: float) -> dict:
    """W + scale * alpha/rank * up @ down, per adapted layer, written with einsum."""
    out = {}
    for (component, name), (down, up) in factors.items():
        w = dict(getattr(pipe, component).named_modules())[name].weight.detach().clone()
        delta = torch.einsum("or,ri->oi", up.flatten(1), down.flatten(1)).reshape(w.shape)
        out[(component, name)] = w + scale * alpha_over_rank * delta
    return out


@pytest.mark.parametrize("kohya", [True, False])
def test_merged_weights_equal_hand_computation(kohya: bool) -> None:
    pipe = HyperSDXLAdapter.tiny().pipe
    state, factors = tiny_lora(pipe, kohya)
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    want = hand_merged(pipe, factors, 0.7, ALPHA / RANK if kohya else 1.0)
    assert merge_lora(pipe, state, 0.7, "test") == len(LAYERS)
    for (component, name), w in want.items():
        got = dict(getattr(pipe, component).named_modules())[name].weight
        torch.testing.assert_close(got, w, rtol=0, atol=1e-6)
    touched = {f"{n}.weight" for c, n, _ in LAYERS if c == "unet"}
    assert all(torch.equal(v, before[k]) for k, v in pipe.unet.state_dict().items() if k not in touched)


def test_foreign_or_broken_loras_are_refused() -> None:
    pipe = HyperSDXLAdapter.tiny().pipe
    sgm = {"lora_unet_input_blocks_4_1_proj_in.lora_down.weight": torch.zeros(4, 64),
           "lora_unet_input_blocks_4_1_proj_in.lora_up.weight": torch.zeros(64, 4)}
    with pytest.raises(HarnessError, match="match no module.*another base model"):
        merge_lora(pipe, sgm, 1.0, "test")
    with pytest.raises(HarnessError, match="neither the kohya"):
        merge_lora(pipe, {"model.diffusion_model.x.weight": torch.zeros(1)}, 1.0, "test")
    state, _ = tiny_lora(pipe, kohya=True)
    state = {k: v for k, v in state.items() if "lora_up" not in k or "to_q" not in k}
    with pytest.raises(HarnessError, match="lacks its up matrix"):
        merge_lora(pipe, state, 1.0, "test")
    bad = {"unet.down_blocks.1.attentions.0.proj_in.lora_A.weight": torch.zeros(4, 7),
           "unet.down_blocks.1.attentions.0.proj_in.lora_B.weight": torch.zeros(64, 4)}
    with pytest.raises(HarnessError, match="does not fit the weight"):
        merge_lora(pipe, bad, 1.0, "test")


def test_tiny_adapters_equal_their_pipelines() -> None:
    xl = HyperSDXLAdapter.tiny()
    assert type(xl.pipe.scheduler) is TCDScheduler
    assert_matches_pipeline(xl, SamplerSettings(steps=1, cfg=0.0, sampler="tcd"), calls_per_step=1, rows_per_step=1,
                            guidance_scale=0.0, eta=1.0)
    sd15 = HyperSD15Adapter.tiny(scheduler="ddim")
    assert type(sd15.pipe.scheduler) is DDIMScheduler and sd15.pipe.scheduler.config.timestep_spacing == "trailing"
    assert_matches_pipeline(sd15, SamplerSettings(steps=1, cfg=3.0, sampler="ddim"), calls_per_step=1,
                            rows_per_step=2, guidance_scale=3.0)


def test_release_lora_from_hub_cache_equals_upstream_recipe_by_hand() -> None:
    tag, commit = uuid.uuid4().hex[:8], uuid.uuid4().hex + "a" * 8
    base, lora_repo = f"onestep-bench-test/sdxl-{tag}", f"onestep-bench-test/hyper-{tag}"
    file = "Hyper-SDXL-1step-lora.safetensors"
    snapshot = install_in_hub_cache(HyperSDXLAdapter.tiny(), base, commit)
    reference = StableDiffusionXLPipeline.from_pretrained(snapshot, local_files_only=True)
    state, factors = tiny_lora(reference, kohya=True)
    lora_dir = Path(constants.HF_HUB_CACHE) / f"models--{lora_repo.replace('/', '--')}"
    (lora_dir / "snapshots" / commit).mkdir(parents=True)
    save_file(state, lora_dir / "snapshots" / commit / file)
    card = card_from_dict({"name": "hyper-test", "family": "hyper_sdxl", "hub": {"repo": base, "revision": commit},
                           "params": {**HyperSDXLAdapter.tiny_params, "lora_scale": 0.5,
                                      "lora": {"repo": lora_repo, "revision": commit, "file": file}}})
    adapter = HyperSDXLAdapter(card)
    adapter.load("cpu")
    # Upstream: base pipeline, LoRA fused, TCDScheduler from the base config, guidance 0, eta 1 -- by hand here.
    for (component, name), w in hand_merged(reference, factors, 0.5, ALPHA / RANK).items():
        dict(getattr(reference, component).named_modules())[name].weight.data.copy_(w)
    reference.scheduler = TCDScheduler.from_config(reference.scheduler.config)
    reference.set_progress_bar_config(disable=True)
    reqs = requests(SamplerSettings(steps=1, cfg=0.0, sampler="tcd"))
    got = adapter.sample(reqs)
    for r, g in zip(reqs, got):
        with torch.inference_mode():
            want = reference(prompt=r.prompt, height=64, width=64, num_inference_steps=1, guidance_scale=0, eta=1.0,
                             generator=torch.Generator("cpu").manual_seed(r.seed), output_type="np").images[0]
        assert_same_up_to_rounding(g.image, to_uint8(want))
        assert g.nfe == 1
    plain = HyperSDXLAdapter(card_from_dict({"name": "b", "family": "hyper_sdxl",
                                             "hub": {"repo": base, "revision": commit},
                                             "params": HyperSDXLAdapter.tiny_params}))
    plain.load("cpu")
    assert plain.sample(reqs[:1])[0].image.tobytes() != got[0].image.tobytes()


@pytest.mark.parametrize("params, fragment", [({"scheduler": "euler"}, "params.scheduler='euler'"),
                                              ({"eta": 1.5}, r"params.eta=1.5; expected a finite number in"),
                                              ({"lora_scale": "1"}, "params.lora_scale")])
def test_bad_card_params_are_refused(params: dict, fragment: str) -> None:
    card = card_from_dict({"name": "h", "family": "hyper_sdxl", "hub": {"repo": "a/b", "revision": "main"},
                           "params": params})
    with pytest.raises(ProtocolError, match=fragment):
        HyperSDXLAdapter.capabilities_for(card)
        HyperSDXLAdapter(card)


def test_shipped_cards() -> None:
    expect = {"hyper-sdxl-1step": ("hyper_sdxl", "Hyper-SDXL-1step-lora.safetensors", "tcd", 1),
              "hyper-sdxl-4step": ("hyper_sdxl", "Hyper-SDXL-4steps-lora.safetensors", "ddim", 4),
              "hyper-sd15-1step": ("hyper_sd15", "Hyper-SD15-1step-lora.safetensors", "tcd", 1)}
    for name, (family, file, sampler, steps) in expect.items():
        card = load_card(name)
        assert (card.family, card.params["lora"]["repo"], card.params["lora"]["file"]) == (family,
                                                                                           "ByteDance/Hyper-SD", file)
        assert card.recipes["official"]["citation"] and card.recipes["official"]["sampler"] == sampler
        assert plan_cells(name, "official") == [(steps, 0.0, "cfg", steps)]
        assert plan_cells(name, "matched") == [(1, 7.0, "cfg", 2), (1, 0.0, "cfg", 1), (25, 7.0, "cfg", 50),
                                               (25, 0.0, "cfg", 25)]
