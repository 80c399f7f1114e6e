"""An adapter that runs a user-supplied command in the model's own environment (a conda env, a JAX or TPU
stack, another Python), for models that cannot be imported here: Scale-RAE's LLM + diffusion head, RAE until
it is ported. Same contract as every adapter: the harness's seeds, labels and settings go in, uint8 RGB
images at the declared resolution and per-sample NFE come out, and the manifests are written as usual.

Exchange through files, in a fresh temporary folder per call (format ``onestep-bench/external/v1``):
- ``requests.json`` (written here): ``{"format", "model", "params", "settings": {steps, cfg, sampler,
  knobs}, "samples": [{index, seed, label, prompt}, ...]}``; the runner must seed each sample from its
  ``seed`` alone, so a sample never depends on which others shared the call;
- the runner writes ``<index:07d>.png`` per sample (RGB, resolution x resolution) and ``results.json``:
  ``{"samples": [{"index": i, "nfe": n}, ...]}`` with every network evaluation it made for sample i.

Card params: ``command`` (argv list; ``{requests}``, ``{out}`` and ``{python}`` are substituted, ``$VARS``
expanded when the model is loaded, so a card can say ``$SCALE_RAE_PYTHON``), optional ``cwd``,
``timeout_s``, ``capabilities`` (the Capabilities fields, declared by the card since nothing can be
introspected) and ``nfe``: ``{per_step, cfg_doubles, extra}`` for a fixed count the outputs are checked
against, or ``reported`` (adaptive/autoregressive: whatever the runner reports, >= 1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from harness.errors import GenerationError, HarnessError, ProtocolError
from harness.models.adapters import Adapter, Capabilities, register
from harness.models.cards import card_from_dict
from harness.models.knobs import knob_from_declaration
from harness.types import ModelCard, SampleOutput, SampleRequest, SamplerSettings

FORMAT = "onestep-bench/external/v1"
PARAM_KEYS = {"command", "cwd", "timeout_s", "capabilities", "nfe", "runner_params"}
CAP_TYPES: dict[str, tuple[type, ...]] = {
    "conditioning": (str,), "guidance": (str,), "min_steps": (int,), "max_steps": (int,), "resolution": (int,),
    "samplers": (list,), "num_classes": (int, type(None)), "one_step": (bool,),
    "natural_cfg": (int, float, type(None)), "knobs": (list,), "guidance_note": (str,)}
REQUIRED_CAPS = ("conditioning", "guidance", "min_steps", "max_steps", "resolution")
DEMO_RUNNER = Path(__file__).resolve().parent / "external_demo.py"


def card_params(card: ModelCard, allowed: set[str], family: str) -> tuple[str, dict[str, Any]]:
    """(where, the card's params) after refusing keys the family does not read (a typo would be ignored)."""
    where = f"{card.source or card.name}: params"
    p = dict(card.params)
    unknown = sorted(set(p) - allowed)
    if unknown:
        raise ProtocolError(f"{where}: unknown key(s) {unknown} for family {family}; allowed: {sorted(allowed)}")
    return where, p


def parse_params(card: ModelCard) -> dict[str, Any]:
    where, p = card_params(card, PARAM_KEYS, "external")
    cmd = p.get("command")
    if not (isinstance(cmd, list) and cmd and all(isinstance(a, str) for a in cmd)):
        raise ProtocolError(f"{where}.command={cmd!r}; expected a non-empty list of strings (argv)")
    if not any("{requests}" in a for a in cmd) or not any("{out}" in a for a in cmd):
        raise ProtocolError(f"{where}.command must pass {{requests}} and {{out}} to the runner; got {cmd!r}")
    check_declared_capabilities(p.get("capabilities"), where)
    nfe = p.get("nfe", "reported")
    if nfe != "reported":
        check_nfe_rule(nfe, where, "'reported' or ")
    timeout = p.get("timeout_s", 3600)
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ProtocolError(f"{where}.timeout_s={timeout!r}; expected a positive number of seconds")
    return {**p, "nfe": nfe, "timeout_s": timeout}


def check_declared_capabilities(caps: Any, where: str) -> None:
    """A card's ``capabilities`` mapping (the Capabilities fields, declared since nothing can be introspected)."""
    if not isinstance(caps, dict):
        raise ProtocolError(f"{where}.capabilities: expected a mapping of Capabilities fields, got {caps!r}")
    for key, value in caps.items():
        if key not in CAP_TYPES:
            raise ProtocolError(f"{where}.capabilities: unknown field {key!r}; allowed: {sorted(CAP_TYPES)}")
        if not isinstance(value, CAP_TYPES[key]) or (isinstance(value, bool) and bool not in CAP_TYPES[key]):
            raise ProtocolError(f"{where}.capabilities.{key}={value!r} has the wrong type")
    missing = [k for k in REQUIRED_CAPS if k not in caps]
    if missing:
        raise ProtocolError(f"{where}.capabilities: missing {missing}")


def declared_capabilities(card: ModelCard, caps: dict[str, Any]) -> Capabilities:
    """Capabilities from a checked ``capabilities`` mapping of ``card``'s params."""
    caps = dict(caps)
    for key in ("samplers", "knobs"):
        if key in caps:
            caps[key] = tuple(caps[key])
    # a knob is a name, or {name, kind, minimum, maximum, choices} (values then checked at plan time)
    caps["knobs"] = tuple(knob_from_declaration(k, f"{card.source or card.name}: params.capabilities.knobs: ")
                          for k in caps.get("knobs", ()))
    try:
        return Capabilities(**caps)
    except TypeError as e:
        raise ProtocolError(f"{card.source or card.name}: params.capabilities: {e}") from None


def check_nfe_rule(nfe: Any, where: str, also: str = "") -> None:
    """A fixed NFE rule ``{per_step, cfg_doubles, extra}`` (``also``: the other forms a family allows)."""
    if not (isinstance(nfe, dict) and set(nfe) <= {"per_step", "cfg_doubles", "extra"}
            and isinstance(nfe.get("per_step", 1), int) and isinstance(nfe.get("extra", 0), int)
            and isinstance(nfe.get("cfg_doubles", False), bool)):
        raise ProtocolError(f"{where}.nfe={nfe!r}; expected {also}{{per_step, cfg_doubles, extra}}")


def nfe_of_rule(rule: dict[str, Any], settings: SamplerSettings) -> int:
    """steps × per_step, doubled when ``cfg_doubles`` and cfg is neither None nor 1, plus ``extra``."""
    doubled = rule.get("cfg_doubles", False) and settings.cfg is not None and settings.cfg != 1.0
    return settings.steps * rule.get("per_step", 1) * (2 if doubled else 1) + rule.get("extra", 0)


@register("external")
class ExternalAdapter(Adapter):
    """Generation by an out-of-process runner, through files."""

    def __init__(self, card: ModelCard) -> None:
        super().__init__(card)
        self.params = parse_params(card)
        self.argv: list[str] | None = None

    @classmethod
    def capabilities_for(cls, card: ModelCard) -> Capabilities:
        return declared_capabilities(card, parse_params(card)["capabilities"])

    def load(self, device: str = "cpu") -> None:
        argv = []
        for arg in self.params["command"]:
            expanded = os.path.expandvars(arg.replace("{python}", sys.executable))
            if "$" in expanded:
                raise HarnessError(f"model card {self.card.name!r}: params.command argument {arg!r} names an "
                                   f"environment variable that is not set; export it (the runner's python, "
                                   f"script or checkpoint path) before running")
            argv.append(expanded)
        self.argv = argv
        self.device = device

    def expected_nfe(self, settings: SamplerSettings) -> int | None:
        rule = self.params["nfe"]
        if rule == "reported":
            return None
        return nfe_of_rule(rule, settings)

    def _sample_batch(self, requests: list[SampleRequest]) -> list[SampleOutput]:
        if self.argv is None:
            raise HarnessError(f"model {self.card.name!r}: load() before sample()")
        start = time.perf_counter()
        s = requests[0].settings
        with tempfile.TemporaryDirectory(prefix="onestep-external-") as tmp:
            folder = Path(tmp)
            out = folder / "out"
            out.mkdir()
            (folder / "requests.json").write_text(json.dumps({
                "format": FORMAT, "model": self.card.name, "params": self.params.get("runner_params", {}),
                "settings": {"steps": s.steps, "cfg": s.cfg, "sampler": s.sampler, "knobs": dict(s.knobs)},
                "samples": [{"index": r.index, "seed": r.seed, "label": r.label, "prompt": r.prompt}
                            for r in requests]}))
            # No ode_solvers sampler: the step loop runs inside the model's own environment (the runner).
            self._run(folder / "requests.json", out)
            outputs = self._collect(out, requests, s)
        seconds = (time.perf_counter() - start) / len(requests)
        return [SampleOutput(image=img, nfe=nfe, seconds=seconds) for img, nfe in outputs]

    def _run(self, requests_file: Path, out: Path) -> None:
        argv = [a.replace("{requests}", str(requests_file)).replace("{out}", str(out)) for a in self.argv]
        try:
            res = subprocess.run(argv, cwd=self.params.get("cwd"), capture_output=True, text=True,
                                 timeout=self.params["timeout_s"])
        except FileNotFoundError:
            raise GenerationError(f"model {self.card.name!r}: runner {argv[0]!r} not found") from None
        except subprocess.TimeoutExpired:
            raise GenerationError(f"model {self.card.name!r}: runner exceeded timeout_s="
                                  f"{self.params['timeout_s']}") from None
        if res.returncode != 0:
            raise GenerationError(f"model {self.card.name!r}: runner exited with {res.returncode}: "
                                  f"{res.stderr.strip()[-2000:]}")

    def _collect(self, out: Path, requests: list[SampleRequest], s: SamplerSettings) -> list[tuple[np.ndarray, int]]:
        who = f"model {self.card.name!r} runner"
        try:
            reported = {int(e["index"]): e["nfe"] for e in json.loads((out / "results.json").read_text())["samples"]}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise GenerationError(f"{who}: no valid results.json ({type(e).__name__}: {e})") from None
        expected, res = self.expected_nfe(s), self.capabilities.resolution
        results = []
        for r in requests:
            path = out / f"{r.index:07d}.png"
            try:
                with Image.open(path) as im:
                    if im.mode != "RGB":
                        raise GenerationError(f"{who}: {path.name} is {im.mode}, expected RGB")
                    image = np.asarray(im, dtype=np.uint8).copy()
            except OSError as e:
                raise GenerationError(f"{who}: sample {r.index}: cannot read {path.name} ({e})") from None
            if image.shape != (res, res, 3):
                raise GenerationError(f"{who}: sample {r.index} is {image.shape}; expected ({res}, {res}, 3)")
            nfe = reported.get(r.index)
            if not isinstance(nfe, int) or isinstance(nfe, bool) or nfe < 1:
                raise GenerationError(f"{who}: sample {r.index}: nfe={nfe!r}; expected an int >= 1")
            if expected is not None and nfe != expected:
                raise GenerationError(f"{who}: sample {r.index} reports nfe={nfe} but the card declares "
                                      f"{expected} for {s}")
            results.append((image, nfe))
        return results

    @classmethod
    def tiny(cls, **overrides: Any) -> ExternalAdapter:
        """The demo runner (``external_demo.py``): a seeded numpy generator in a separate Python process."""
        params = {"command": ["{python}", str(DEMO_RUNNER), "{requests}", "{out}"], "timeout_s": 120,
                  "capabilities": {"conditioning": "class", "guidance": "cfg", "min_steps": 1, "max_steps": 50,
                                   "resolution": 16, "samplers": ["euler"], "num_classes": 10,
                                   "natural_cfg": 1.5, "guidance_note": "demo: contrast x cfg"},
                  "nfe": {"per_step": 1, "cfg_doubles": True}, **overrides}
        card = card_from_dict({"name": "external-tiny-test", "family": "external", "params": params},
                              source="<ExternalAdapter.tiny>")
        adapter = cls(card)
        adapter.load("cpu")
        return adapter
