"""Class-conditional flow matching with a compact network: ``params.arch`` picks a DiT (``dit``, the default,
``model_zoo/nets/tiny_dit.py``) or a small U-Net (``unet``, ``model_zoo/nets/unet.py``).

Time convention (rectified flow): x_t = (1 - t) * noise + t * data, so the network predicts the velocity
v = data - noise, and sampling integrates dx/dt = v(x, t, y) with Euler from t = 0 (pure noise) to
t = 1 (data) over ``steps`` uniform steps t_i = i / steps. Pixels live in [-1, 1]. Sampler ``heun``
(second order, Heun's trapezoid correction on every step) costs 2 evaluations per step.

Classifier-free guidance: the class embedding has one extra "null" label (index ``num_classes``), which
a model trained with label dropout (``label_dropout > 0``) learned as the unconditional branch. Such a
model has guidance "cfg": v = v_u + cfg * (v_c - v_u), evaluated as one doubled batch when cfg != 1.
A model trained with ``label_dropout: 0`` never saw the null label, so it has no guidance and cfg must
be null.
"""

from __future__ import annotations

import functools
import io
import os
import time
from pathlib import Path
from typing import Any

import torch

from harness.errors import HarnessError, ProtocolError
from harness.hashing import sha256_bytes, sha256_file
from harness.models.adapters import Adapter, Capabilities, build_tiny, register, to_uint8_images
from harness.models.cards import merge_params, params_where, require_float32
from harness.types import ModelCard, SampleOutput, SampleRequest, SamplerSettings
from model_zoo import ode_solvers
from model_zoo.nets.tiny_dit import MIN_TOKENS, TinyDiT
from model_zoo.nets.unet import UNet

CHECKPOINT_FORMAT = "onestep-bench/flow_matching/v1"
ARCH_KEYS = ("resolution", "channels", "num_classes", "hidden", "depth", "heads", "patch")
UNET_KEYS = ("arch", "resolution", "channels", "num_classes", "base", "mults", "blocks", "groups")
DEFAULTS: dict[str, Any] = {"arch": "dit", "resolution": 28, "channels": 1, "num_classes": 10, "hidden": 96,
                            "depth": 4, "heads": 4, "patch": 4, "label_dropout": 0.1, "init_seed": 0,
                            "max_steps": 1000}
UNET_DEFAULTS: dict[str, Any] = {"arch": "unet", "resolution": 28, "channels": 1, "num_classes": 10, "base": 16,
                                 "mults": [1, 2, 4], "blocks": 1, "groups": 8, "label_dropout": 0.1,
                                 "init_seed": 0, "max_steps": 1000}
TINY_PARAMS: dict[str, Any] = {"resolution": 16, "channels": 1, "num_classes": 10, "hidden": 32, "depth": 2,
                               "heads": 2, "patch": 4, "label_dropout": 0.1, "init_seed": 0, "max_steps": 1000}
NOT_INT = ("arch", "mults", "label_dropout", "init_seed")  # checked by hand below
Net = TinyDiT | UNet


def arch_of(params: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint records (and must match) of the architecture; DiT records as before ``arch`` existed."""
    if params["arch"] == "unet":
        return {k: params[k] for k in UNET_KEYS}
    return {k: params[k] for k in ARCH_KEYS}


def _check_unet(where: str, cfg: dict[str, Any]) -> None:
    mults = cfg["mults"]
    if not (isinstance(mults, list) and mults
            and all(isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in mults)):
        raise ProtocolError(f"{where}.mults={mults!r}; expected a non-empty list of ints >= 1")
    if cfg["resolution"] % 2 ** (len(mults) - 1):
        raise ProtocolError(f"{where}: resolution {cfg['resolution']} cannot be halved {len(mults) - 1} times "
                            f"(mults {mults})")
    if any(cfg["base"] * m % cfg["groups"] for m in mults):
        raise ProtocolError(f"{where}: every width base*mult ({[cfg['base'] * m for m in mults]}) must be "
                            f"divisible by groups {cfg['groups']}")
    problem = _unet_shape_problem(cfg["resolution"], cfg["channels"], cfg["num_classes"], cfg["base"],
                                  tuple(mults), cfg["blocks"], cfg["groups"])
    if problem:
        raise ProtocolError(f"{where}: {problem}")


@functools.lru_cache(maxsize=256)
def _unet_shape_problem(resolution: int, channels: int, num_classes: int, base: int, mults: tuple[int, ...],
                        blocks: int, groups: int) -> str | None:
    """The shape rules of the net itself (batch invariance), on a throwaway instance built once per config
    (~10 ms: planning and every adapter's capabilities ask again)."""
    try:
        UNet(resolution, channels, num_classes, base, mults, blocks, groups)
    except ValueError as e:
        return str(e)
    return None


def _check_dit(where: str, cfg: dict[str, Any]) -> None:
    if cfg["resolution"] % cfg["patch"] or cfg["hidden"] % cfg["heads"]:
        raise ProtocolError(f"{where}: resolution {cfg['resolution']} must be divisible by patch {cfg['patch']} "
                            f"and hidden {cfg['hidden']} by heads {cfg['heads']}")
    if (cfg["resolution"] // cfg["patch"]) ** 2 < MIN_TOKENS:
        raise ProtocolError(f"{where}: (resolution/patch)^2 = {(cfg['resolution'] // cfg['patch']) ** 2} tokens; "
                            f"need >= {MIN_TOKENS} so that batched and single samples match bit for bit")


def resolve_params(card: ModelCard, archs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Card params merged over the defaults of its ``arch`` (a key of ``archs``); unknown keys and impossible
    values are refused, not ignored."""
    where = params_where(card)
    arch = card.params.get("arch", "dit")
    if arch not in archs:
        raise ProtocolError(f"{where}.arch={arch!r}; expected one of {sorted(archs)}")
    defaults = archs[arch]
    ints = tuple(k for k in defaults if k not in NOT_INT)
    cfg = merge_params(card, defaults, int_keys=ints, nonneg_keys=("init_seed",))
    dropout = cfg.get("label_dropout", 0.0)  # one-step families have no null label to train
    if not (isinstance(dropout, (int, float)) and not isinstance(dropout, bool) and 0 <= dropout < 1):
        raise ProtocolError(f"{where}.label_dropout={dropout!r}; expected a number in [0, 1)")
    if cfg["channels"] not in (1, 3):
        raise ProtocolError(f"{where}.channels={cfg['channels']}; expected 1 or 3")
    (_check_unet if arch == "unet" else _check_dit)(where, cfg)
    require_float32(card)
    return cfg


@register("flow_matching")
class FlowMatchingAdapter(Adapter):
    """Euler or Heun sampling of a class-conditional rectified-flow DiT, with optional true CFG.

    Also the base of the other TinyDiT families (``meanflow``, ``fm_student``): they override the class
    attributes below, ``capabilities_for`` and ``_sample_batch``, and share loading, checkpoints and noise.
    """

    FORMAT = CHECKPOINT_FORMAT
    DEFAULTS = DEFAULTS
    ARCH_DEFAULTS = {"dit": DEFAULTS, "unet": UNET_DEFAULTS}
    TINY_PARAMS = TINY_PARAMS
    TIME_INPUTS = 1  # 2 for nets conditioned on (t, t - r)

    def __init__(self, card: ModelCard) -> None:
        super().__init__(card)
        self.params = self.resolve(card)
        self.net: Net | None = None
        self.device = "cpu"

    @classmethod
    def resolve(cls, card: ModelCard) -> dict[str, Any]:
        return resolve_params(card, cls.ARCH_DEFAULTS)

    @classmethod
    def capabilities_for(cls, card: ModelCard) -> Capabilities:
        p = cls.resolve(card)
        guided = p["label_dropout"] > 0  # the null label is only meaningful if it was trained
        return Capabilities(conditioning="class", guidance="cfg" if guided else "none", min_steps=1,
                            max_steps=p["max_steps"], resolution=p["resolution"], samplers=("euler", "heun"),
                            num_classes=p["num_classes"], one_step=False, natural_cfg=1.0 if guided else None)

    def build_net(self) -> Net:
        """The architecture of the card with its seeded initial weights (what training starts from)."""
        arch = arch_of(self.params)
        # Module construction draws from the global RNG: fork it so callers' RNG state is untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.params["init_seed"])
            if arch.pop("arch", "dit") == "unet":
                return UNet(**{**arch, "mults": tuple(arch["mults"])}, time_inputs=self.TIME_INPUTS)
            return TinyDiT(**arch, time_inputs=self.TIME_INPUTS)

    def load(self, device: str = "cpu") -> None:
        net = self.build_net()
        if self.card.weights is not None:
            net.load_state_dict(self._read_checkpoint(Path(self.card.weights)))
        self.net = net.to(device).eval().requires_grad_(False)
        self.device = device

    def _read_checkpoint(self, path: Path) -> dict[str, torch.Tensor]:
        try:
            data = path.read_bytes()  # hash exactly the bytes we load
        except OSError as e:
            raise HarnessError(f"{self.card.source or self.card.name}: cannot read weights {path}: "
                               f"{e.strerror}") from None
        found = sha256_bytes(data)
        if found != self.card.weights_digest:
            raise HarnessError(f"{path}: sha256 mismatch: card {self.card.source or self.card.name!r} expects "
                               f"{self.card.weights_digest}, file has {found}")
        try:
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:  # any unpickling failure is a corrupt or foreign file
            raise HarnessError(f"{path}: not a loadable checkpoint ({type(e).__name__}: {e})") from None
        if not isinstance(obj, dict) or obj.get("format") != self.FORMAT:
            raise HarnessError(f"{path}: not a {self.FORMAT} checkpoint (found format {obj.get('format')!r})"
                               if isinstance(obj, dict) else f"{path}: not a {self.FORMAT} checkpoint")
        arch = arch_of(self.params)
        if obj.get("arch") != arch:
            raise HarnessError(f"{path}: checkpoint architecture {obj.get('arch')} does not match "
                               f"card params {arch}")
        return obj["state_dict"]

    def save_checkpoint(self, path: str | Path, extra: dict[str, Any] | None = None) -> str:
        """Write the loaded weights in this family's format; returns the file's sha256 (for a card).

        ``extra`` (e.g. the training recipe) is stored alongside; loading ignores it."""
        if self.net is None:
            raise HarnessError(f"model {self.card.name!r}: load() before save_checkpoint()")
        path = Path(path)
        obj = {"format": self.FORMAT, "arch": arch_of(self.params), **(extra or {}),
               "state_dict": {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}}
        tmp = path.with_name(path.name + ".tmp")
        torch.save(obj, tmp)
        os.replace(tmp, path)  # never leave a half-written checkpoint under the final name
        return sha256_file(path)

    def _guided(self, settings: SamplerSettings) -> bool:
        return self.capabilities.guidance == "cfg" and settings.cfg is not None and settings.cfg != 1.0

    def expected_nfe(self, settings: SamplerSettings) -> int:
        per_step = ode_solvers.get_sampler(settings.sampler, f"model {self.card.name!r}").evals_per_step
        return settings.steps * per_step * (2 if self._guided(settings) else 1)

    def initial_noise(self, requests: list[SampleRequest]) -> torch.Tensor:
        """Per-sample noise from each request's own CPU generator: independent of batch and position."""
        shape = (self.params["channels"], self.params["resolution"], self.params["resolution"])
        return torch.stack([torch.randn(shape, generator=torch.Generator("cpu").manual_seed(r.seed))
                            for r in requests])

    def velocity(self, x: torch.Tensor, t: float, y: torch.Tensor, cfg: float | None) -> tuple[torch.Tensor, int]:
        """v(x, t, y), guided when cfg != 1 (one doubled batch); returns (v, evaluations spent per sample)."""
        assert self.net is not None
        tt = torch.tensor(t, dtype=torch.float32, device=self.device)  # one t for the whole batch
        if self.capabilities.guidance == "cfg" and cfg is not None and cfg != 1.0:
            null = torch.full_like(y, self.params["num_classes"])
            v_c, v_u = self.net(torch.cat([x, x]), tt, torch.cat([y, null])).chunk(2)  # conditional rows, then null
            return v_u + cfg * (v_c - v_u), 2
        return self.net(x, tt, y), 1

    def integrate(self, x: torch.Tensor, y: torch.Tensor, settings: SamplerSettings) -> tuple[torch.Tensor, int]:
        """Solve dx/dt = v from t = 0 to 1 over uniform steps (Euler or Heun); returns (x1, NFE per sample)."""
        sampler = ode_solvers.get_sampler(settings.sampler, f"model {self.card.name!r}")
        nfe = 0

        def field(z: torch.Tensor, t: float) -> torch.Tensor:
            nonlocal nfe
            v, cost = self.velocity(z, t, y, settings.cfg)
            nfe += cost
            return v

        dt = 1.0 / settings.steps  # t_i = i * dt, not i / steps: the grid the pinned images were made on
        with torch.inference_mode():
            x = sampler.run(field, x, [i * dt for i in range(settings.steps + 1)])
        return x, nfe

    def finish(self, requests: list[SampleRequest], x: torch.Tensor, nfe: int, start: float) -> list[SampleOutput]:
        images = to_uint8_images(x.cpu().numpy(), [r.index for r in requests], value_range=(-1.0, 1.0))
        seconds = (time.perf_counter() - start) / len(requests)
        return [SampleOutput(image=img, nfe=nfe, seconds=seconds) for img in images]

    def prepare(self, requests: list[SampleRequest]) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(initial noise, labels, start time) for one batch."""
        if self.net is None:
            raise HarnessError(f"model {self.card.name!r}: load() before sample()")
        start = time.perf_counter()
        y = torch.tensor([r.label for r in requests], dtype=torch.long, device=self.device)
        return self.initial_noise(requests).to(self.device), y, start

    def _sample_batch(self, requests: list[SampleRequest]) -> list[SampleOutput]:
        x, y, start = self.prepare(requests)
        x, nfe = self.integrate(x, y, requests[0].settings)
        return self.finish(requests, x, nfe, start)

    @classmethod
    def tiny(cls, **overrides: Any) -> FlowMatchingAdapter:
        return build_tiny(cls, {**cls.TINY_PARAMS, **overrides})
