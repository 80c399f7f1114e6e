"""RAE (bytetriper/RAE, "Diffusion Transformers with Representation Autoencoders"): a DiT^DH velocity model
(``nets/ddt.py``) in the normalised DINOv2-B-with-registers feature space (768 x 16 x 16 per 256 px image),
decoded to pixels by the RAE ViT decoder (``nets/rae_decoder.py``).

Time convention (RAE's transport, "Linear" path, velocity prediction): x_t = (1 - t) * data + t * noise,
v = noise - data, t = 1 is noise. ``steps = N`` means N Euler steps over N + 1 time points: upstream's
``1 - linspace(0, 1 - 1/1000, N + 1)`` (float32) mapped through the resolution shift
``t' = s t / (1 + (s - 1) t)``, s = sqrt(C h w / 4096) = sqrt(48) ~ 6.93, so sampling stops at
t' ~ 0.0069, as upstream does. (Upstream's config key ``num_steps: 50`` counts the time points that
torchdiffeq's fixed-grid Euler steps between: 49 steps, 49 evaluations per network.)

Guidance on all 768 channels with the interval [t_min, t_max] (knobs, default [0, 1], compared in
float32 as upstream), knob ``guidance_method``:
- ``cfg`` (default; the paper's harness): v_u + w (v_c - v_u) with the null label, 2 evaluations per
  step inside the interval;
- ``autoguidance`` (the released best config, w = 1.42): v_g + w (v_c - v_g) with the weaker guide model
  (DiT^DH-S) on the same label; the guide's evaluation counts as one NFE (it is a network call).
Outside the interval only the conditional model runs (NFE 1 for that step): upstream evaluates the
unused branch anyway and throws it away, with the same images. cfg = 1 is unguided (N evaluations);
upstream applies guidance only when w > 1, so cfg < 1 would silently run unguided there and is refused.
Upstream's autoguidance script also runs both models on the null-label half of its doubled batch and
discards it; only the conditional rows are computed here.

Decode rule (``sample_ddp.py``): ``uint8(clamp(decode(z), 0, 1) * 255)``, i.e. truncation, not rounding
(so pixel values are on average 0.5 lower than ``to_uint8_images`` would give). Samples are decoded one
at a time, so an image never depends on its batch.

Weights: ``hub: {repo: nyu-visionx/RAE-collections, revision}`` and ``params.*_checkpoint`` / ``stats_file``
naming files inside that snapshot (the layout of ``hf download ... --local-dir models``), read from the
local HF cache only; a card without ``hub`` is a seeded random model (tests).

Fidelity: with the same weights and noise, latents match upstream's ``DiTwDDTHead`` + transport (torchdiffeq
Euler, ``num_steps = steps + 1``) + ``forward_with_cfg`` / ``forward_with_autoguidance`` to ~1e-6 and the
images are pixel-identical (opt-in test ``test_matches_upstream_sampler_and_decoder``, RAE_UPSTREAM_SRC).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.errors import GenerationError, HarnessError, ProtocolError
from harness.models.adapters import Adapter, Capabilities, build_tiny, register
from harness.models.cards import merge_params, params_where, require_float32, resolve_hub_snapshot
from harness.models.knobs import INTERVAL_KNOBS, Knob
from harness.types import ModelCard, SampleOutput, SampleRequest, SamplerSettings
from model_zoo import ode_solvers
from model_zoo.latent_common import NFECounter, read_checkpoint
from model_zoo.nets.ddt import DiTDH
from model_zoo.nets.rae_decoder import LatentStats, RAEDecoder, check_stats

METHODS = ("cfg", "autoguidance")
KNOBS = (Knob("guidance_method", "choice", choices=METHODS), *INTERVAL_KNOBS)  # t_min < t_max: at sampling
LAST_TIME = 1 - 1 / 1000  # upstream check_interval: t1 = 1 - 1/1000 for a velocity model's ODE
FILE_KEYS = ("dit_checkpoint", "decoder_checkpoint", "stats_file", "guide_checkpoint")  # the last is optional
DEFAULTS: dict[str, Any] = {
    # DiT^DH-XL on DINOv2-B (configs/stage2/sampling/ImageNet256/DiTDHXL-DINOv2-B.yaml), ViT-XL decoder.
    "latent_channels": 768, "latent_size": 16, "num_classes": 1000, "mlp_ratio": 4.0,
    "dit_hidden": [1152, 2048], "dit_depth": [28, 2], "dit_heads": [16, 16],
    "guide_hidden": [384, 2048], "guide_depth": [12, 2], "guide_heads": [6, 16],  # DiT^DH-S (autoguidance)
    "decoder_hidden": 1152, "decoder_depth": 28, "decoder_heads": 16, "decoder_intermediate": 4096,
    "decoder_patch": 16, "shift_base": 4096, "natural_cfg": 1.42, "max_steps": 1000, "init_seed": 0,
    "dit_checkpoint": None, "decoder_checkpoint": None, "stats_file": None, "guide_checkpoint": None,
}
INT_KEYS = ("latent_channels", "latent_size", "num_classes", "decoder_hidden", "decoder_depth", "decoder_heads",
            "decoder_intermediate", "decoder_patch", "shift_base", "max_steps")
TINY_PARAMS: dict[str, Any] = {
    "latent_channels": 8, "latent_size": 4, "num_classes": 10, "dit_hidden": [32, 48], "dit_depth": [2, 1],
    "dit_heads": [2, 2], "guide_hidden": [16, 48], "guide_depth": [1, 1], "guide_heads": [1, 2],
    "decoder_hidden": 32, "decoder_depth": 1, "decoder_heads": 2, "decoder_intermediate": 64, "decoder_patch": 4,
    "shift_base": 16,
}


def resolve_params(card: ModelCard) -> dict[str, Any]:
    """Card params over the release defaults; unknown keys and impossible values refused with the key."""
    where = params_where(card)
    p = merge_params(card, DEFAULTS, int_keys=INT_KEYS, nonneg_keys=("init_seed",))
    for key in ("dit_hidden", "dit_depth", "dit_heads", "guide_hidden", "guide_depth", "guide_heads"):
        v = p[key]
        if not (isinstance(v, list) and len(v) == 2 and all(isinstance(i, int) and i >= 1 for i in v)):
            raise ProtocolError(f"{where}.{key}={v!r}; expected [encoder, head]: two ints >= 1")
    for key in FILE_KEYS:
        if p[key] is not None and not (isinstance(p[key], str) and p[key]):
            raise ProtocolError(f"{where}.{key}={p[key]!r}; expected a file path inside the hub snapshot")
    if not (isinstance(p["natural_cfg"], (int, float)) and p["natural_cfg"] >= 1):
        raise ProtocolError(f"{where}.natural_cfg={p['natural_cfg']!r}; expected a number >= 1")
    if time_shift(p) < 1:  # upstream asserts this too
        raise ProtocolError(f"{where}.shift_base={p['shift_base']}: the time shift sqrt(C*h*w / shift_base) = "
                            f"{time_shift(p):.4g} must be >= 1")
    require_float32(card)
    return p


def time_shift(p: dict[str, Any]) -> float:
    return math.sqrt(p["latent_channels"] * p["latent_size"] ** 2 / p["shift_base"])


def time_grid(steps: int, shift: float) -> list[float]:
    """The N + 1 Euler time points, from 1 (noise) down to the shifted 1/1000, in float32 as upstream."""
    t = 1 - torch.linspace(0.0, LAST_TIME, steps + 1)
    return (shift * t / (1 + (shift - 1) * t)).tolist()


def _float32(x: float) -> float:
    return float(np.float32(x))


def uint8_truncating(images: torch.Tensor, indices: list[int]) -> np.ndarray:
    """RAE's rule: (B, 3, H, W) in about [0, 1] -> NHWC ``uint8(clamp(x, 0, 1) * 255)`` (truncation)."""
    bad = ~torch.isfinite(images).reshape(len(images), -1).all(dim=1)
    if bad.any():  # refused before clamping could hide a NaN
        raise GenerationError(f"decoder produced NaN/Inf pixels for sample index "
                              f"{[indices[i] for i in torch.nonzero(bad).flatten().tolist()]}; nothing was written")
    pixels = images.clamp(0, 1).mul(255).permute(0, 2, 3, 1).to(torch.uint8)
    return np.ascontiguousarray(pixels.cpu().numpy())


@register("rae")
class RAEAdapter(Adapter):
    def __init__(self, card: ModelCard) -> None:
        super().__init__(card)
        self.params = resolve_params(card)
        self.net: DiTDH | None = None
        self.guide: DiTDH | None = None
        self.decoder: RAEDecoder | None = None
        self.stats: LatentStats | None = None
        self.counters: list[NFECounter] = []
        self.device = "cpu"

    @classmethod
    def capabilities_for(cls, card: ModelCard) -> Capabilities:
        p = resolve_params(card)
        return Capabilities(
            conditioning="class", guidance="cfg", min_steps=1, max_steps=p["max_steps"],
            resolution=p["latent_size"] * p["decoder_patch"], samplers=("euler",), num_classes=p["num_classes"],
            natural_cfg=float(p["natural_cfg"]), knobs=KNOBS,
            guidance_note="guidance_method=cfg: v_u + cfg*(v_c - v_u) on all latent channels (null label); "
                          "=autoguidance: v_g + cfg*(v_c - v_g) with the DiT^DH-S guide; only for t in "
                          "[t_min, t_max] (default [0, 1]); 2 evaluations per guided step, cfg=1 unguided")

    # ------------------------------------------------------------------ loading

    def _files(self) -> dict[str, Path] | None:
        """Where each released file is (None: a seeded random model), from the local HF cache only."""
        p, card = self.params, self.card
        named = [k for k in FILE_KEYS if p[k] is not None]
        if card.hub is None:
            if card.weights is not None:
                raise ProtocolError(f"{card.source or card.name}: family rae loads several files from a hub "
                                    f"snapshot; give hub: {{repo, revision}} and params {', '.join(FILE_KEYS)}")
            if named:
                raise ProtocolError(f"{params_where(card)}: {named} name files inside a hub snapshot, but the "
                                    f"card has no hub: {{repo, revision}}")
            return None
        missing = [k for k in FILE_KEYS[:3] if p[k] is None]
        if missing:
            raise ProtocolError(f"{params_where(card)}: a hub card of family rae must name {missing} (paths "
                                f"inside {card.hub[0]})")
        root = resolve_hub_snapshot(card)
        return {k: root / p[k] for k in named}

    def _fill(self, module: torch.nn.Module, path: Path, key: str) -> None:
        state = read_checkpoint(self.card, path, None)
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise HarnessError(f"model card {self.card.name!r}: params.{key} = {str(path)!r} does not fit the "
                               f"card's architecture: {' '.join(str(e).split())[:600]}") from None

    def _build(self, offset: int, make: Any) -> Any:
        with torch.random.fork_rng(devices=[]):  # seeded init that leaves the caller's global RNG untouched
            torch.manual_seed(self.params["init_seed"] + offset)
            return make()

    def _ddt(self, prefix: str) -> DiTDH:
        p = self.params
        return DiTDH(p["latent_size"], p["latent_channels"], p[f"{prefix}_hidden"], p[f"{prefix}_depth"],
                     p[f"{prefix}_heads"], p["num_classes"], p["mlp_ratio"])

    def _random_stats(self) -> LatentStats:
        shape = (self.params["latent_channels"], self.params["latent_size"], self.params["latent_size"])
        return LatentStats(0.3 * torch.randn(shape), 0.5 + torch.rand(shape))

    def load(self, device: str = "cpu") -> None:
        p, files = self.params, self._files()
        net = self._build(0, lambda: self._ddt("dit"))
        decoder = self._build(2, lambda: RAEDecoder(p["latent_channels"], p["latent_size"], p["decoder_hidden"],
                                                    p["decoder_depth"], p["decoder_heads"],
                                                    p["decoder_intermediate"], p["decoder_patch"]))
        guide = None
        if files is None or "guide_checkpoint" in files:
            guide = self._build(1, lambda: self._ddt("guide"))
        if files is None:
            stats = self._build(3, self._random_stats)
        else:
            self._fill(net, files["dit_checkpoint"], "dit_checkpoint")
            self._fill(decoder, files["decoder_checkpoint"], "decoder_checkpoint")
            if guide is not None:
                self._fill(guide, files["guide_checkpoint"], "guide_checkpoint")
            stats_path = files["stats_file"]
            shape = (p["latent_channels"], p["latent_size"], p["latent_size"])
            try:
                stats = LatentStats(*check_stats(read_checkpoint(self.card, stats_path, None), shape,
                                                 f"{stats_path} (params.stats_file)"))
            except ValueError as e:
                raise HarnessError(f"model card {self.card.name!r}: {e}") from None
        self.net, self.guide, self.decoder, self.stats = (
            None if m is None else m.to(device).eval().requires_grad_(False) for m in (net, guide, decoder, stats))
        self.counters = [NFECounter(m) for m in (self.net, self.guide) if m is not None]
        self.device = device

    # ------------------------------------------------------------------ guidance and sampling

    def guidance(self, settings: SamplerSettings) -> tuple[str | None, float, float]:
        """(method or None when unguided, t_min, t_max), checked before any compute."""
        who = f"model {self.card.name!r}"
        method = settings.knob("guidance_method", "cfg")
        if method not in METHODS:
            raise ProtocolError(f"{who}: knob guidance_method={method!r}; expected one of {', '.join(METHODS)}")
        t_min, t_max = settings.knob("t_min", 0.0), settings.knob("t_max", 1.0)
        for name, v in (("t_min", t_min), ("t_max", t_max)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ProtocolError(f"{who}: knob {name}={v!r}; expected a number in [0, 1]")
        if t_min >= t_max:
            raise ProtocolError(f"{who}: knobs t_min={t_min} >= t_max={t_max}; the guidance interval is empty")
        cfg = settings.cfg
        if cfg is not None and cfg < 1:
            raise ProtocolError(f"{who}: cfg={cfg} < 1; RAE's sampler guides only when cfg > 1 and would run "
                                f"unguided, so it is refused (cfg=1 is the unguided model)")
        if method == "autoguidance" and self.card.hub is not None and self.params["guide_checkpoint"] is None:
            raise ProtocolError(f"{who}: guidance_method=autoguidance needs a guide model; set "
                                f"params.guide_checkpoint in {self.card.source or 'the card'}")
        return (None if cfg is None or cfg == 1 else method), _float32(t_min), _float32(t_max)

    def guided_steps(self, settings: SamplerSettings) -> list[bool]:
        """For each Euler step: is guidance applied at its start time?"""
        method, t_min, t_max = self.guidance(settings)
        grid = time_grid(settings.steps, time_shift(self.params))[:-1]
        return [method is not None and t_min <= t <= t_max for t in grid]

    def expected_nfe(self, settings: SamplerSettings) -> int:
        return settings.steps + sum(self.guided_steps(settings))

    def velocity(self, x: torch.Tensor, t: float, y: torch.Tensor, cfg: float, method: str | None) -> torch.Tensor:
        n = len(x)
        times = torch.full((n,), t, dtype=torch.float32, device=self.device)
        if method is None:
            return self.net(x, times, y)
        if method == "cfg":
            null = torch.full_like(y, self.params["num_classes"])
            cond, weak = self.net(torch.cat([x, x]), torch.cat([times, times]), torch.cat([y, null])).chunk(2)
        else:
            cond, weak = self.net(x, times, y), self.guide(x, times, y)
        return weak + cfg * (cond - weak)

    def sample_latents(self, requests: list[SampleRequest]) -> tuple[torch.Tensor, list[int]]:
        s = requests[0].settings
        method, _, _ = self.guidance(s)
        guided = self.guided_steps(s)
        p = self.params
        shape = (p["latent_channels"], p["latent_size"], p["latent_size"])
        x = torch.stack([torch.randn(shape, generator=torch.Generator("cpu").manual_seed(r.seed))
                         for r in requests]).to(self.device)
        y = torch.tensor([r.label for r in requests], dtype=torch.long, device=self.device)
        grid = time_grid(s.steps, time_shift(p))
        on = dict(zip(grid[:-1], guided))  # guided_steps, looked up by each step's start time (f sees only t)
        start = [c.rows for c in self.counters]
        x = ode_solvers.sample_euler(lambda z, t: self.velocity(z, t, y, s.cfg, method if on[t] else None), x, grid)
        rows = sum(c.rows - r0 for c, r0 in zip(self.counters, start))
        if rows % len(requests):
            raise HarnessError(f"networks evaluated {rows} rows for {len(requests)} samples: uneven NFE")
        return x, [rows // len(requests)] * len(requests)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Generated (normalised) latents -> images in about [0, 1], one sample per decoder call."""
        return torch.cat([self.decoder(self.stats.denormalize(z[None])) for z in latents])

    def _sample_batch(self, requests: list[SampleRequest]) -> list[SampleOutput]:
        if self.net is None:
            raise HarnessError(f"model {self.card.name!r}: load() before sample()")
        start = time.perf_counter()
        with torch.inference_mode():
            latents, nfe = self.sample_latents(requests)
            images = uint8_truncating(self.decode(latents), [r.index for r in requests])
        seconds = (time.perf_counter() - start) / len(requests)
        return [SampleOutput(image=img, nfe=n, seconds=seconds) for img, n in zip(images, nfe, strict=True)]

    @classmethod
    def tiny(cls, **overrides: Any) -> RAEAdapter:
        return build_tiny(cls, {**TINY_PARAMS, **overrides})
