"""A model from a Python callable: benchmark your own generator without writing a family module.

Card (``family: callable``)::

    name: my-model
    family: callable
    weights: path/to/checkpoint.pt        # optional: the file your function loads (or its own .py file), with
    weights_sha256: "<64 hex>"            # its sha256: checked at load, and part of every cell id
    params:
      entry: "my_package.my_module:generate"
      options: {width: 64}                # optional keyword arguments for every call
      capabilities: {conditioning: class, guidance: cfg, min_steps: 1, max_steps: 50, resolution: 32,
                     num_classes: 10, natural_cfg: 1.5}
      nfe: {per_step: 1, cfg_doubles: true}   # NFE = steps x per_step (x2 when cfg is not None or 1) + extra

The function is called as ``generate(conditions, steps, cfg, generators, **options, **knobs)``: ``conditions``
holds one class label (int), prompt (str) or None per image, ``generators`` one CPU ``torch.Generator`` per
image, seeded from that sample's seed alone (draw each image's noise from its own generator), ``cfg`` is a
number or None. It returns uint8 images (N, H, W, 3), a numpy array or a torch tensor, at the declared
resolution. The capabilities are declared (the same fields as the external family's card) and everything
outside them (steps, cfg, samplers, knobs, labels) is refused at plan time. The NFE is the declared rule (the
function reports none).

Before the model generates anything, ``load`` runs the conformance checks every family's tests run
(tests/support/conformance.py) on a few requests: the same seeds give the same images, a batch equals the
same requests generated one by one, different seeds give different images. A function that fails one is
refused with the name of the check. A changed function under an unchanged card keeps its cell ids: point
``weights`` at the checkpoint (or the module file) so that new bytes make new cells.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import replace
from typing import Any

import numpy as np

from harness.errors import GenerationError, HarnessError, ProtocolError
from harness.hashing import sha256_file
from harness.models.adapters import Adapter, Capabilities, register
from harness.models.cards import card_from_dict
from harness.types import ModelCard, SampleOutput, SampleRequest, SamplerSettings
from model_zoo.external import (
    card_params,
    check_declared_capabilities,
    check_nfe_rule,
    declared_capabilities,
    nfe_of_rule,
)

PARAM_KEYS = {"entry", "options", "capabilities", "nfe"}
ENTRY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
CHECK_SEEDS = (101, 7, 2**40 + 3, 55)  # the last repeats the first's condition: only its seed differs
CHECK_PROMPTS = ("a red square", "a cat on a mat", "two blue circles")


def parse_params(card: ModelCard) -> dict[str, Any]:
    where, p = card_params(card, PARAM_KEYS, "callable")
    if not isinstance(p.get("entry"), str) or not ENTRY.fullmatch(p["entry"]):
        raise ProtocolError(f"{where}.entry={p.get('entry')!r}; expected 'package.module:function'")
    if not isinstance(p.get("options", {}), dict):
        raise ProtocolError(f"{where}.options={p['options']!r}; expected a mapping of keyword arguments")
    check_declared_capabilities(p.get("capabilities"), where)
    if "nfe" not in p:
        raise ProtocolError(f"{where}: missing 'nfe' (e.g. nfe: {{per_step: 1, cfg_doubles: true}})")
    check_nfe_rule(p["nfe"], where)
    return {**p, "options": p.get("options", {})}


def _images(value: Any, n: int, resolution: int, who: str) -> np.ndarray:
    """The callable's return value as uint8 (N, H, W, 3), or refused naming what is wrong with it."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise GenerationError(f"{who} returned a {type(value).__name__}; expected uint8 images (N, H, W, 3), a numpy "
                              f"array or torch tensor")
    expected = (n, resolution, resolution, 3)
    if value.dtype != np.uint8 or value.shape != expected:
        raise GenerationError(f"{who} returned {value.dtype} {value.shape}; expected uint8 {expected} (the card's "
                              f"capabilities.resolution, one image per condition)")
    return np.ascontiguousarray(value)


@register("callable")
class CallableAdapter(Adapter):
    """Generation by a user's function, imported by its ``module:function`` name."""

    def __init__(self, card: ModelCard) -> None:
        super().__init__(card)
        self.params = parse_params(card)
        self.fn: Any = None

    @property
    def who(self) -> str:
        return f"model {self.card.name!r} (callable {self.params['entry']})"

    @classmethod
    def capabilities_for(cls, card: ModelCard) -> Capabilities:
        return declared_capabilities(card, parse_params(card)["capabilities"])

    def expected_nfe(self, settings: SamplerSettings) -> int:
        return nfe_of_rule(self.params["nfe"], settings)

    def load(self, device: str = "cpu") -> None:
        if self.card.weights is not None and sha256_file(self.card.weights) != self.card.weights_digest:
            raise HarnessError(f"{self.card.weights}: sha256 mismatch: card {self.card.source or self.card.name!r} "
                               f"expects {self.card.weights_digest}; the file changed: update weights_sha256 (new "
                               f"cell ids) or restore the file")
        module_name, _, function = self.params["entry"].partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise HarnessError(f"{self.who}: cannot import {module_name!r} ({e}); put its package on PYTHONPATH "
                               f"or install it") from None
        fn = getattr(module, function, None)
        if not callable(fn):
            raise HarnessError(f"{self.who}: {module_name} has no function {function!r}")
        self.fn, self.device = fn, device
        self._check_conformance()

    def _generate(self, requests: list[SampleRequest]) -> np.ndarray:
        import torch

        s, caps = requests[0].settings, self.capabilities
        conditions = [r.label if caps.conditioning == "class" else r.prompt if caps.conditioning == "text" else None
                      for r in requests]
        generators = [torch.Generator("cpu").manual_seed(r.seed) for r in requests]
        value = self.fn(conditions, s.steps, s.cfg, generators, **self.params["options"], **dict(s.knobs))
        return _images(value, len(requests), caps.resolution, self.who)

    def _check_conformance(self) -> None:
        """Same seeds → same images, batch == singles, different seeds → different images; refused by name."""
        caps = self.capabilities
        cfg = None if caps.guidance == "none" else (caps.natural_cfg or (2.0 if caps.guidance == "cfg" else 1.0))
        settings = SamplerSettings(steps=caps.min_steps, cfg=cfg, sampler=caps.samplers[0])
        conditions = [((3 * i + 1) % (caps.num_classes or 1), CHECK_PROMPTS[i]) for i in range(3)]
        requests = [SampleRequest(index=i, seed=seed, settings=settings,
                                  label=conditions[i % 3][0] if caps.conditioning == "class" else None,
                                  prompt=conditions[i % 3][1] if caps.conditioning == "text" else None)
                    for i, seed in enumerate(CHECK_SEEDS)]
        requests[-1] = replace(requests[-1], label=requests[0].label, prompt=requests[0].prompt)
        batch = self._generate(requests)
        fail = f"{self.who} failed the conformance check"
        if batch.tobytes() != self._generate(requests).tobytes():
            raise GenerationError(f"{fail} 'same seed → same images': a second call with the same seeds, conditions "
                                  f"and settings returned other pixels; draw all randomness from the generators")
        for i, r in enumerate(requests):
            if self._generate([r])[0].tobytes() != batch[i].tobytes():
                raise GenerationError(f"{fail} 'batch == singles': image {i} of a batch of {len(requests)} differs "
                                      f"from the same request generated alone; draw each image's noise from its "
                                      f"own generator (generators[i]) and keep images independent in the batch")
        if batch[0].tobytes() == batch[-1].tobytes():
            raise GenerationError(f"{fail} 'different seeds → different images': two requests that differ only in "
                                  f"their seed returned the same image; draw the noise from the generators")

    def _sample_batch(self, requests: list[SampleRequest]) -> list[SampleOutput]:
        import time

        if self.fn is None:
            raise HarnessError(f"{self.who}: load() before sample()")
        start = time.perf_counter()
        images = self._generate(requests)
        seconds = (time.perf_counter() - start) / len(requests)
        nfe = self.expected_nfe(requests[0].settings)
        return [SampleOutput(image=image, nfe=nfe, seconds=seconds) for image in images]

    @classmethod
    def tiny(cls, **overrides: Any) -> CallableAdapter:
        """The demo generator below, as a card would name it."""
        params = {"entry": "model_zoo.callable_model:demo_generator",
                  "capabilities": {"conditioning": "class", "guidance": "cfg", "min_steps": 1, "max_steps": 50,
                                   "resolution": 16, "num_classes": 10, "natural_cfg": 1.5},
                  "nfe": {"per_step": 1, "cfg_doubles": True}, **overrides}
        card = card_from_dict({"name": "callable-tiny-test", "family": "callable", "params": params},
                              source="<CallableAdapter.tiny>")
        adapter = cls(card)
        adapter.load("cpu")
        return adapter


def demo_generator(conditions: list[Any], steps: int, cfg: float | None, generators: list[Any],
                   side: int = 16) -> np.ndarray:
    """A stand-in generator (class colour + smoothed seeded noise, contrast x cfg): each image depends only
    on its own generator, label, steps and cfg, so it passes the conformance checks."""
    import torch

    images = []
    for label, generator in zip(conditions, generators):
        x = torch.randn((side, side, 3), generator=generator, dtype=torch.float64)
        for _ in range(steps):  # a few smoothing passes: steps visibly matter
            x = (x + torch.roll(x, 1, 0) + torch.roll(x, 1, 1)) / 3
        label = int(label or 0)
        colour = torch.tensor([(label * 37) % 255, (label * 91) % 255, (label * 53) % 255], dtype=torch.float64)
        image = 0.5 + 0.5 * colour / 255.0 + (cfg or 1.0) * 0.2 * x
        images.append((image.clamp(0, 1) * 255).round().to(torch.uint8))
    return torch.stack(images).numpy()
