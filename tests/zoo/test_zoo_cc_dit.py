"""DiT through diffusers: the adapter equals calling the saved pipeline directly; NFE and refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from harness.errors import ProtocolError
from harness.models.cards import WeightsMissingError, card_from_dict
from harness.types import SamplerSettings
from model_zoo.dit import DiTAdapter, tiny_pipeline
from tests.support.conformance import requests_for


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dit") / "pipe"
    tiny_pipeline(seed=4).save_pretrained(folder)  # the folder layout of facebook/DiT-XL-2-256
    return folder


@pytest.mark.parametrize("sampler, cfg", [("dpm", 4.0), ("ddim", 1.0)])
def test_adapter_equals_the_pipeline_called_directly(saved: Path, sampler: str, cfg: float) -> None:
    import diffusers

    a = DiTAdapter(card_from_dict({"name": "dit-folder", "family": "dit",
                                   "params": {"resolution": 16, "path": str(saved)}}))
    a.load("cpu")
    s = SamplerSettings(3, cfg, sampler)
    reqs = requests_for(a, [21, 22, 23], s)
    outs = a.sample(reqs)

    pipe = diffusers.DiTPipeline.from_pretrained(str(saved), local_files_only=True)
    pipe.scheduler = {"dpm": diffusers.DPMSolverMultistepScheduler,
                      "ddim": diffusers.DDIMScheduler}[sampler].from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    calls = []
    pipe.transformer.register_forward_pre_hook(lambda _m, args: calls.append(len(args[0])))
    for r, o in zip(reqs, outs):
        calls.clear()
        direct = pipe(class_labels=[r.label], guidance_scale=cfg, num_inference_steps=3, output_type="np",
                      generator=torch.Generator("cpu").manual_seed(r.seed)).images[0]
        assert np.array_equal(o.image, np.rint(direct * 255).astype(np.uint8))
        assert len(calls) == 3 and o.nfe == sum(calls) == a.expected_nfe(s)  # steps == transformer calls


def test_cfg_below_one_refused_and_missing_hub_named() -> None:
    a = DiTAdapter.tiny()
    with pytest.raises(ProtocolError, match="cfg=0.5 < 1"):
        a.sample(requests_for(a, [1], SamplerSettings(2, 0.5, "dpm")))
    hub = DiTAdapter(card_from_dict({"name": "dit-xl2", "family": "dit",
                                     "hub": {"repo": "facebook/DiT-XL-2-256", "revision": "main"}}))
    with pytest.raises(WeightsMissingError, match="dit-xl2.*harness weights fetch dit-xl2"):
        hub.load("cpu")
    with pytest.raises(ProtocolError, match="num_classes"):
        DiTAdapter(card_from_dict({"name": "d", "family": "dit", "params": {"num_classes": 10}}))
