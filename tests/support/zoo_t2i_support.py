"""Checks shared by the diffusers text-to-image family tests (tests/zoo/test_zoo_t2i_*.py).

Independent of the adapter's own code: images are recomputed by calling the diffusers pipeline
directly, network calls are counted by a separate hook, and checkpoints are installed in the Hugging
Face cache layout that ``huggingface-cli download`` produces.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from huggingface_hub import constants

from harness.errors import HarnessError
from harness.models.adapters import get_adapter_class
from harness.models.cards import card_from_dict
from harness.plan.protocol import make_plan, protocol_from_dict
from harness.types import SampleRequest, SamplerSettings
from model_zoo.diffusers_common import DiffusersTextToImage

PROMPTS = ("a red square", "a cat on a mat", "two blue circles")


def requests(settings: SamplerSettings, seeds: tuple[int, ...] = (7, 2**40 + 1)) -> list[SampleRequest]:
    return [SampleRequest(index=10 + i, seed=s, settings=settings, prompt=PROMPTS[i % len(PROMPTS)])
            for i, s in enumerate(seeds)]


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """diffusers' own float → uint8 rule (``numpy_to_pil``): round(x * 255)."""
    return (pixels * 255).round().astype(np.uint8)


class CallCounter:
    """Counts forward calls (not rows) of a module, so CFG-by-doubling and true CFG can be told apart."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls, self.rows = 0, 0
        self.handle = module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _m: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        self.calls += 1
        self.rows += (kwargs.get("hidden_states") if "hidden_states" in kwargs else args[0]).shape[0]


def direct_images(adapter: DiffusersTextToImage, reqs: list[SampleRequest], **pipe_kwargs: Any
                  ) -> tuple[list[np.ndarray], CallCounter]:
    """Each request through the pipeline itself, with its own CPU generator, counted."""
    size = adapter.capabilities.resolution
    counter = CallCounter(adapter.denoiser)
    try:
        out = [to_uint8(adapter.pipe(prompt=r.prompt, height=size, width=size,
                                     num_inference_steps=r.settings.steps,
                                     generator=torch.Generator("cpu").manual_seed(r.seed), output_type="np",
                                     **pipe_kwargs).images[0]) for r in reqs]
    finally:
        counter.handle.remove()
    return out, counter


def batched_direct_images(adapter: DiffusersTextToImage, reqs: list[SampleRequest], **pipe_kwargs: Any
                          ) -> list[np.ndarray]:
    """All requests in one pipeline call with diffusers' list-of-generators convention."""
    size = adapter.capabilities.resolution
    pixels = adapter.pipe(prompt=[r.prompt for r in reqs], height=size, width=size,
                          num_inference_steps=reqs[0].settings.steps,
                          generator=[torch.Generator("cpu").manual_seed(r.seed) for r in reqs], output_type="np",
                          **pipe_kwargs).images
    return list(to_uint8(pixels))


def assert_matches_pipeline(adapter: DiffusersTextToImage, settings: SamplerSettings, calls_per_step: int,
                            rows_per_step: int, **pipe_kwargs: Any) -> None:
    """Adapter output == the pipeline called directly (per image, bit for bit), == batched (±1 level),
    NFE == transformer rows per image, and the steps ran as ``calls_per_step`` transformer calls each."""
    reqs = requests(settings)
    got = adapter.sample(reqs)
    want, counter = direct_images(adapter, reqs, **pipe_kwargs)
    for r, g, w in zip(reqs, got, want):
        assert g.image.dtype == np.uint8 and np.array_equal(g.image, w), f"sample {r.index} differs from the pipeline"
    assert counter.calls == len(reqs) * settings.steps * calls_per_step
    assert [o.nfe for o in got] == [settings.steps * rows_per_step] * len(reqs)
    assert counter.rows == sum(o.nfe for o in got)
    # diffusers' batched list-of-generators call draws the same noise per image (up to kernel rounding).
    for g, b in zip(got, batched_direct_images(adapter, reqs, **pipe_kwargs)):
        assert_same_up_to_rounding(g.image, b)
    # Singles equal the batch, in any order (the adapter never mixes images inside a pipeline call).
    assert [o.image.tobytes() for o in adapter.sample(reqs[::-1])[::-1]] == [o.image.tobytes() for o in got]


def assert_same_up_to_rounding(a: np.ndarray, b: np.ndarray) -> None:
    """Equal but for float kernel rounding (~1e-7) that may move a pixel by one level."""
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99, f"max diff {diff.max()}, equal {(diff == 0).mean():.4f}"


def install_in_hub_cache(adapter: DiffusersTextToImage, repo: str, commit: str) -> Path:
    """Save the adapter's pipeline as ``repo@commit`` in the local HF cache (the layout of a real download)."""
    root = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    adapter.pipe.save_pretrained(snapshot)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot


def hub_card(family: str, repo: str, revision: str, **params: Any):
    return card_from_dict({"name": f"{family}-hub-test", "family": family, "hub": {"repo": repo, "revision": revision},
                           "params": params}, source="<test card>")


def reload_from_hub_cache(adapter: DiffusersTextToImage, settings: SamplerSettings) -> DiffusersTextToImage:
    """The adapter's pipeline saved in the local HF cache under a fresh repo and commit, loaded back by a card naming
    them through the family's real loading path; it must sample the same images under ``settings`` (reloaded
    components differ by float rounding only)."""
    cls = type(adapter)
    repo, commit = f"onestep-bench-test/{cls.family}-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex + "0" * 8
    install_in_hub_cache(adapter, repo, commit)
    loaded = cls(hub_card(cls.family, repo, commit, **cls.tiny_params))
    loaded.load("cpu")
    reqs = requests(settings)
    for a, b in zip(loaded.sample(reqs), adapter.sample(reqs), strict=True):
        assert_same_up_to_rounding(a.image, b.image)
    return loaded


def assert_hub_checkpoint_refused(other: DiffusersTextToImage, match: str) -> None:
    """``other`` (a tiny pipeline altered into what the family must not load) installed in the hub cache: loading
    it through a card of its family is refused with ``match``."""
    cls = type(other)
    repo = f"onestep-bench-test/{cls.family}-other-{uuid.uuid4().hex[:8]}"
    install_in_hub_cache(other, repo, "f" * 40)
    with pytest.raises(HarnessError, match=match):
        cls(hub_card(cls.family, repo, "f" * 40)).load("cpu")


def plan_cells(card: str, recipe: str) -> list[tuple[int, float | None, str, int]]:
    # a prompt dataset (text models are refused on label-only ones); planning needs no prompt file
    raw = {"name": "p", "models": [{"card": card, "recipe": recipe}], "datasets": ["partiprompts"], "steps": [1],
           "n": 4}
    cells = make_plan(protocol_from_dict(raw, source="p.yaml")).cells
    out = []
    for c in cells:
        adapter = get_adapter_class(c.model.family)(c.model)  # plan-time: no weights loaded
        out.append((c.settings.steps, c.settings.cfg, adapter.capabilities.guidance, adapter.expected_nfe(c.settings)))
    return out
