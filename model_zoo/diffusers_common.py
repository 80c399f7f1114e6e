"""Shared machinery of the diffusers text-to-image families (sd3.py, flux.py, ...).

A family subclasses ``DiffusersTextToImage`` and supplies: the pipeline class, its capabilities, the
pipeline keyword arguments of one setting (guidance), the declared NFE, and a tiny random pipeline of
the real architecture for offline tests. This module does the rest, identically for every family:

* weights: a hub card loads from the local Hugging Face cache only (``resolve_hub_snapshot`` +
  ``from_pretrained(folder, local_files_only=True)``); a card without weights builds the family's tiny
  random pipeline from ``params.init_seed`` (tests, demos);
* seeds: each image gets its own CPU ``torch.Generator`` seeded from ``SampleRequest.seed``;
* one pipeline call per image: diffusers computes the timestep/pooled-text conditioning as GEMMs whose
  row count is the batch size, so a batched call differs from single calls by ~1e-7 and flips uint8
  pixels. Calling per image makes every image a function of its own seed and prompt only (the
  harness contract: batch == singles, bit for bit), at the price of batch-level parallelism;
* NFE: a forward pre-hook on the denoiser counts rows actually evaluated per image (a CFG call on a
  doubled batch counts 2, two separate true-CFG calls count 2), and the count must equal the family's
  declared ``expected_nfe`` or the sample is refused;
* pixels: ``output_type="np"`` (floats in [0, 1]) → uint8 by ``to_uint8_images`` with value range (0, 1):
  rint(clip(x, 0, 1) * 255), round half to even, the same rule as diffusers' ``numpy_to_pil``.
"""

from __future__ import annotations

import json
import re
import time
from abc import abstractmethod
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from harness.errors import GenerationError, HarnessError, ProtocolError
from harness.models.adapters import Adapter, Capabilities, build_tiny, to_uint8_images
from harness.models.cards import WeightsMissingError, merge_params, params_where, resolve_hub_snapshot
from harness.types import HUB_SCHEME, ModelCard, SampleOutput, SampleRequest, SamplerSettings

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Card params every diffusers family understands (a family may add its own, e.g. max_sequence_length).
COMMON_PARAMS: dict[str, Any] = {
    "resolution": 1024,  # square generation size in pixels (the images the harness stores)
    "natural_cfg": None,  # the guidance value the model was released with ("natural" in protocols)
    "min_steps": 1,
    "max_steps": 1000,
    "one_step": False,  # a native one/few-step (distilled) model
    "init_seed": 0,  # only for cards without weights: seed of the tiny random pipeline
}
_INT_KEYS = ("resolution", "min_steps", "max_steps", "max_sequence_length", "init_seed")  # where present


def resolve_params(card: ModelCard, defaults: dict[str, Any]) -> dict[str, Any]:
    """Card params over ``defaults``; unknown keys and impossible values are refused with the card named."""
    where = params_where(card)
    p = merge_params(card, defaults, int_keys=tuple(k for k in _INT_KEYS if k in defaults and k != "init_seed"),
                     nonneg_keys=("init_seed",) if "init_seed" in defaults else ())
    if p["min_steps"] > p["max_steps"]:
        raise ProtocolError(f"{where}: min_steps={p['min_steps']} > max_steps={p['max_steps']}")
    nat = p["natural_cfg"]
    if nat is not None and (isinstance(nat, bool) or not isinstance(nat, (int, float)) or nat < 0):
        raise ProtocolError(f"{where}.natural_cfg={nat!r}; expected a number >= 0 or null")
    if not isinstance(p["one_step"], bool):
        raise ProtocolError(f"{where}.one_step={p['one_step']!r}; expected true or false")
    if card.dtype not in DTYPES:
        raise ProtocolError(f"{card.source or card.name}: dtype={card.dtype!r}; expected one of {', '.join(DTYPES)}")
    if card.weights is not None and card.hub is None:
        raise ProtocolError(f"{card.source or card.name}: family {card.family} loads diffusers folders from the "
                            f"Hugging Face cache; give 'hub: {{repo, revision}}' instead of a local weights file")
    return p


# ---------------------------------------------------------------- extra checkpoint files named in card params
# Some releases are a file on top of a base pipeline (DMD2's UNet, Hyper-SD's LoRA): the card's ``hub`` names
# the base repo and a param names the file as {repo, revision, file}, resolved from the local HF cache only.

HUB_FILE_KEYS = {"repo", "revision", "file"}


def check_hub_file(card: ModelCard, key: str, value: Any) -> dict[str, str] | None:
    """``params[key]``: null or {repo: ORG/NAME, revision: commit-or-branch, file: path in the repo}."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != HUB_FILE_KEYS or not all(
            isinstance(v, str) and v.strip() for v in value.values()) or value["repo"].count("/") != 1:
        raise ProtocolError(f"{card.source or card.name}: params.{key}={value!r}; expected a mapping with exactly "
                            f"repo (org/name), revision and file, all non-empty strings")
    if not value["file"].endswith((".safetensors", ".bin", ".pt")):
        raise ProtocolError(f"{card.source or card.name}: params.{key}.file={value['file']!r}; expected a "
                            f".safetensors, .bin or .pt state-dict file")
    return dict(value)


def resolve_hub_file(card: ModelCard, key: str, spec: dict[str, str]) -> Path:
    """The local path of ``spec['file']`` in ``spec['repo']@spec['revision']`` (HF cache; never downloads).

    Like the card's own hub revision (``require_pinned``), a branch would let the images change silently:
    loading refuses anything but a full commit id."""
    if re.fullmatch(r"[0-9a-f]{40}", spec["revision"]) is None:
        raise ProtocolError(f"model card {card.name!r} ({card.source}): params.{key}.revision {spec['revision']!r} is "
                            f"a branch or tag, not a commit; set it to the 40-hex commit of {spec['repo']} you have")
    holder = replace(card, weights=f"{HUB_SCHEME}{spec['repo']}@{spec['revision']}")
    path = resolve_hub_snapshot(holder) / spec["file"]
    if not path.is_file():
        raise WeightsMissingError(f"model card {card.name!r} ({card.source}): params.{key}: file {spec['file']!r} is "
                                  f"not in the cached snapshot of {spec['repo']}@{spec['revision']} ({path.parent}); "
                                  f"`huggingface-cli download {spec['repo']} {spec['file']} --revision "
                                  f"{spec['revision']}` on a machine with internet, then copy the cache here")
    return path


def read_state_dict(path: Path, who: str) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a ``torch.save``-d state dict (``.bin``/``.pt``, tensors only)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or foreign file: name it rather than surface a pickle/safetensors trace
        raise HarnessError(f"{who}: {path} is not a readable state dict ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HarnessError(f"{who}: {path} does not hold a flat mapping of parameter names to tensors")
    return state


# ---------------------------------------------------------------- per-image conditioning and accounting


def prompts_of(card: ModelCard, requests: list[SampleRequest]) -> list[str]:
    """The text condition of each request; a text model never runs on a missing prompt."""
    missing = [r.index for r in requests if not isinstance(r.prompt, str) or not r.prompt.strip()]
    if missing:
        raise ProtocolError(f"model {card.name!r} is text-conditioned but sample(s) {missing[:5]} have no prompt; "
                            f"use a dataset that provides prompts")
    return [r.prompt for r in requests]


def generator_for(request: SampleRequest) -> torch.Generator:
    """The image's own CPU generator: its noise depends on its seed only (not device, batch or position)."""
    return torch.Generator("cpu").manual_seed(request.seed)


class DenoiserCalls:
    """Context manager counting network evaluations per image on ``module`` (a transformer or UNet).

    Each call adds its batch rows; rows / images is the NFE per image, so one call on a CFG-doubled
    batch counts 2 and two separate passes (FLUX true CFG) count 2 as well."""

    def __init__(self, module: torch.nn.Module, images: int) -> None:
        self.module, self.images, self.rows = module, images, 0

    def _hook(self, _module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        x = kwargs.get("hidden_states", kwargs.get("sample", args[0] if args else None))
        self.rows += int(x.shape[0])

    def __enter__(self) -> DenoiserCalls:
        self._handle = self.module.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()

    @property
    def per_image(self) -> int:
        if self.rows % self.images:
            raise GenerationError(f"denoiser evaluated {self.rows} rows for {self.images} image(s): not a whole "
                                  f"number of evaluations per image")
        return self.rows // self.images


def eval_mode(pipe: Any) -> Any:
    """Freeze every module of ``pipe``: components built from configs start in training mode (dropout on)."""
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_pipeline_folder(pipeline_class: type, folder: Path, dtype: torch.dtype, who: str,
                         also_accept: tuple[str, ...] = (), **overrides: Any) -> Any:
    """``pipeline_class.from_pretrained`` on a local diffusers folder, never touching the network.

    ``also_accept``: other ``model_index.json`` class names whose components ``pipeline_class`` can hold
    (a custom pipeline such as InstaFlow's RectifiedFlowPipeline over standard SD components).
    ``overrides`` replace components (e.g. ``safety_checker=None``)."""
    index = folder / "model_index.json"
    try:
        found = json.loads(index.read_text()).get("_class_name")
    except (OSError, ValueError) as e:
        raise HarnessError(f"{who}: {index} is not a readable diffusers model_index.json ({e})") from None
    if found != pipeline_class.__name__ and found not in also_accept:
        raise HarnessError(f"{who}: {folder} holds a {found} checkpoint; this family loads {pipeline_class.__name__}")
    return eval_mode(pipeline_class.from_pretrained(folder, dtype=dtype, local_files_only=True, **overrides))


# Sampler names a card may declare for UNet pipelines → the diffusers scheduler class that runs them.
SCHEDULERS = {"euler": "EulerDiscreteScheduler", "euler_ancestral": "EulerAncestralDiscreteScheduler",
              "lcm": "LCMScheduler", "ddim": "DDIMScheduler"}


def check_scheduler_name(card: ModelCard, name: Any) -> str:
    if name not in SCHEDULERS:
        raise ProtocolError(f"{card.source or card.name}: params.scheduler={name!r}; expected one of "
                            f"{', '.join(SCHEDULERS)}")
    return name


def use_scheduler(pipe: Any, name: str) -> None:
    """Run ``pipe`` with the named scheduler, built from the checkpoint's own scheduler config (its betas,
    timestep spacing, ...) when the checkpoint ships a different class."""
    import diffusers

    wanted = getattr(diffusers, SCHEDULERS[name])
    if type(pipe.scheduler) is not wanted:
        pipe.scheduler = wanted.from_config(pipe.scheduler.config)


# ---------------------------------------------------------------- the base adapter


class DiffusersTextToImage(Adapter):
    """A text-to-image diffusers pipeline, one call per image. Subclasses declare what the knobs mean."""

    pipeline_class_name: ClassVar[str] = ""  # e.g. "StableDiffusion3Pipeline" (imported lazily)
    load_overrides: ClassVar[dict[str, Any]] = {}  # components replaced when loading a checkpoint
    also_accept: ClassVar[tuple[str, ...]] = ()  # other checkpoint pipeline class names it can load
    defaults: ClassVar[dict[str, Any]] = COMMON_PARAMS
    tiny_params: ClassVar[dict[str, Any]] = {}

    def __init__(self, card: ModelCard) -> None:
        super().__init__(card)
        self.params = resolve_params(card, self.defaults)
        self.pipe: Any = None

    @classmethod
    def pipeline_class(cls) -> type:
        import diffusers

        return getattr(diffusers, cls.pipeline_class_name)

    @classmethod
    @abstractmethod
    def build_tiny_pipeline(cls, params: dict[str, Any]) -> Any:
        """A pipeline of the real classes with tiny random components (global RNG already seeded)."""

    @abstractmethod
    def call_kwargs(self, settings: SamplerSettings) -> dict[str, Any]:
        """Pipeline keyword arguments that carry the guidance of ``settings`` (beyond steps and size)."""

    @property
    def denoiser(self) -> torch.nn.Module:
        return getattr(self.pipe, "transformer", None) or self.pipe.unet

    def load(self, device: str = "cpu") -> None:
        who = f"model card {self.card.name!r} ({self.card.source})"
        if self.card.hub is not None:
            pipe = load_pipeline_folder(self.pipeline_class(), resolve_hub_snapshot(self.card), DTYPES[self.card.dtype],
                                        who, also_accept=self.also_accept, **self.load_overrides)
        else:
            if self.card.dtype != "float32":
                raise ProtocolError(f"{who}: a tiny random pipeline (no weights) is float32 only")
            with torch.random.fork_rng(devices=[]):  # construction draws from the global RNG: leave it untouched
                torch.manual_seed(self.params["init_seed"])
                pipe = eval_mode(self.build_tiny_pipeline(self.params))
        self.prepare(pipe, who)
        self.pipe = pipe.to(device)

    def prepare(self, pipe: Any, who: str) -> None:
        """Family hook after loading: check the checkpoint matches the declared semantics, set the scheduler."""

    def _sample_batch(self, requests: list[SampleRequest]) -> list[SampleOutput]:
        if self.pipe is None:
            raise HarnessError(f"model {self.card.name!r}: load() before sample()")
        settings = requests[0].settings
        prompts = prompts_of(self.card, requests)
        expected = self.expected_nfe(settings)
        outputs = []
        for request, prompt in zip(requests, prompts):
            start = time.perf_counter()
            with DenoiserCalls(self.denoiser, images=1) as calls, torch.inference_mode():
                pixels = self.generate(prompt, generator_for(request), settings)
            if calls.per_image != expected:
                raise GenerationError(f"model {self.card.name!r}: sample {request.index} ran {calls.per_image} "
                                      f"network evaluations but the family declares {expected} for {settings}")
            image = to_uint8_images(pixels, [request.index], value_range=(0.0, 1.0))[0]
            outputs.append(SampleOutput(image=image, nfe=calls.per_image, seconds=time.perf_counter() - start))
        return outputs

    def generate(self, prompt: str, generator: torch.Generator, settings: SamplerSettings) -> Any:
        """Float images in [0, 1], N x H x W x 3, of one prompt: the pipeline's own call (a family without a
        diffusers pipeline for its sampler overrides this with its loop over the loaded components)."""
        size = self.params["resolution"]
        # No ode_solvers sampler: the diffusers scheduler owns the step loop (timesteps, update, re-noising).
        return self.pipe(prompt=prompt, height=size, width=size, num_inference_steps=settings.steps,
                         generator=generator, output_type="np", **self.call_kwargs(settings)).images

    @classmethod
    def tiny(cls, **overrides: Any) -> DiffusersTextToImage:
        return build_tiny(cls, {**cls.tiny_params, **overrides})


TRUE_CFG_NOTE = ("true CFG (diffusers guidance_scale) against the pipeline's default unconditional input (empty "
                 "negative prompt): two denoiser passes per step (one call on a doubled batch) when cfg > 1; "
                 "cfg <= 1 runs the conditional pass only")


class TrueCFGTextToImage(DiffusersTextToImage):
    """Pipelines whose guidance_scale is classifier-free guidance, on only when > 1 (SD, SDXL, SD3)."""

    guidance_note: ClassVar[str] = TRUE_CFG_NOTE

    @classmethod
    def samplers(cls, card: ModelCard, params: dict[str, Any]) -> tuple[str, ...]:
        return ("euler",)

    @classmethod
    def capabilities_for(cls, card: ModelCard) -> Capabilities:
        p = resolve_params(card, cls.defaults)
        return Capabilities(conditioning="text", guidance="cfg", min_steps=p["min_steps"], max_steps=p["max_steps"],
                            resolution=p["resolution"], samplers=cls.samplers(card, p), one_step=p["one_step"],
                            natural_cfg=p["natural_cfg"], guidance_note=cls.guidance_note)

    def expected_nfe(self, settings: SamplerSettings) -> int:
        return settings.steps * (2 if settings.cfg > 1 else 1)

    def call_kwargs(self, settings: SamplerSettings) -> dict[str, Any]:
        # No negative prompt: the pipeline's own unconditional input ("" encoded; SDXL checkpoints with
        # force_zeros_for_empty_prompt use zero embeddings), as upstream examples run it.
        return {"guidance_scale": settings.cfg}


class EmbeddedGuidanceTextToImage(DiffusersTextToImage):
    """Pipelines whose guidance_scale is a network input (distilled guidance): one pass per step, any cfg."""

    guidance_note: ClassVar[str] = ""
    sampler_names: ClassVar[tuple[str, ...]] = ("euler",)

    @classmethod
    def capabilities_for(cls, card: ModelCard) -> Capabilities:
        p = resolve_params(card, cls.defaults)
        return Capabilities(conditioning="text", guidance="embedded", min_steps=p["min_steps"],
                            max_steps=p["max_steps"], resolution=p["resolution"], samplers=cls.sampler_names,
                            one_step=p["one_step"], natural_cfg=p["natural_cfg"], guidance_note=cls.guidance_note)

    def expected_nfe(self, settings: SamplerSettings) -> int:
        return settings.steps


class UNetTextToImage(TrueCFGTextToImage):
    """Stable Diffusion UNet pipelines (SD 1.x/2.x, SDXL): true CFG, sampler = a named diffusers scheduler."""

    defaults = {**COMMON_PARAMS, "scheduler": "euler"}

    @classmethod
    def samplers(cls, card: ModelCard, params: dict[str, Any]) -> tuple[str, ...]:
        return (check_scheduler_name(card, params["scheduler"]),)

    def prepare(self, pipe: Any, who: str) -> None:
        if pipe.unet.config.time_cond_proj_dim is not None:
            # An LCM-distilled UNet takes guidance as an embedded input, and diffusers then skips CFG.
            raise HarnessError(f"{who}: the UNet has a guidance embedding (time_cond_proj_dim="
                               f"{pipe.unet.config.time_cond_proj_dim}), so cfg would not be classifier-free "
                               f"guidance; family {self.card.family} does not run it")
        use_scheduler(pipe, self.params["scheduler"])
