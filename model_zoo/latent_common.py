"""What every class-conditional latent family shares: card params, the SiT-layout network, checkpoints,
per-sample noise, an NFE counter on the network, and the SD-VAE decode (``sd_vae.py``).

Checkpoints: a card either names a local file (``weights:`` + ``weights_sha256``, verified when the card is
read) or, for a released model whose file cannot be on every machine, ``params.checkpoint`` (a file name
looked up under ``$ONESTEP_WEIGHTS_DIR``, default ``<repo>/weights``) with ``params.checkpoint_sha256``
(which enters the cell id through the params). Both go through ``read_state_dict``.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any, ClassVar

import torch

from harness.adapters import Adapter
from harness.cards import WeightsMissingError
from harness.errors import HarnessError, ProtocolError
from harness.types import ModelCard, SampleOutput, SampleRequest
from model_zoo.nets.latent_dit import LatentDiT
from model_zoo.sd_vae import check_vae_spec, decode_latents, load_vae, sd_vae_to_uint8, vae_scale

REPO = Path(__file__).resolve().parent.parent
ARCH_KEYS = ("input_size", "patch", "in_channels", "hidden", "depth", "heads", "num_classes", "mlp_ratio",
             "learn_sigma")
BASE_DEFAULTS: dict[str, Any] = {
    # SiT-XL/2 at 256 px: 32x32x4 SD-VAE latents, 2x2 patches, 28 blocks of width 1152, 16 heads.
    "input_size": 32, "patch": 2, "in_channels": 4, "hidden": 1152, "depth": 28, "heads": 16,
    "num_classes": 1000, "mlp_ratio": 4.0, "learn_sigma": True,
    "vae": {"repo": "stabilityai/sd-vae-ft-ema", "revision": "main"}, "vae_factor": 8,
    "checkpoint": None, "checkpoint_sha256": None, "init_seed": 0, "max_steps": 1000,
}
TINY_ARCH: dict[str, Any] = {"input_size": 8, "patch": 2, "in_channels": 4, "hidden": 32, "depth": 2, "heads": 2,
                             "num_classes": 10, "vae": {"tiny_seed": 0}, "vae_factor": 2}


def resolve_latent_params(card: ModelCard, family_defaults: dict[str, Any]) -> dict[str, Any]:
    """Card params over the family defaults; unknown keys and impossible values refused with the key."""
    defaults = {**BASE_DEFAULTS, **family_defaults}
    where = f"{card.source or card.name}: params"
    unknown = sorted(set(card.params) - set(defaults))
    if unknown:
        raise ProtocolError(f"{where}: unknown key(s) {unknown} for family {card.family}; "
                            f"allowed: {', '.join(sorted(defaults))}")
    p = {**defaults, **card.params}
    for key in ("vae_factor", "input_size", "patch", "in_channels", "hidden", "depth", "heads", "num_classes",
                "max_steps"):
        if not isinstance(p[key], int) or isinstance(p[key], bool) or p[key] < 1:
            raise ProtocolError(f"{where}.{key}={p[key]!r}; expected an int >= 1")
    if p["input_size"] % p["patch"] or p["hidden"] % p["heads"] or p["hidden"] % 4:
        raise ProtocolError(f"{where}: input_size {p['input_size']} must be divisible by patch {p['patch']}, "
                            f"hidden {p['hidden']} by heads {p['heads']} and by 4")
    check_vae_spec(p["vae"], where)
    if p["checkpoint"] is not None and not (isinstance(p["checkpoint_sha256"], str)
                                            and len(p["checkpoint_sha256"]) == 64):
        raise ProtocolError(f"{where}.checkpoint_sha256={p['checkpoint_sha256']!r}; a card naming "
                            f"params.checkpoint={p['checkpoint']!r} must pin its 64-hex sha256")
    if card.dtype != "float32":
        raise ProtocolError(f"{card.source or card.name}: dtype={card.dtype!r}; {card.family} supports float32 only")
    return p


def weights_dir() -> Path:
    return Path(os.environ.get("ONESTEP_WEIGHTS_DIR", REPO / "weights"))


def read_state_dict(card: ModelCard, path: Path, sha256: str | None) -> dict[str, torch.Tensor]:
    """A ``.pt`` state dict in the official layout (plain, or under "ema"/"model" as training checkpoints
    store it), verified against ``sha256`` when given (cards read ``weights:`` files and verify there)."""
    if not path.is_file():
        raise WeightsMissingError(f"model card {card.name!r} ({card.source}): checkpoint {str(path)!r} not found; "
                                  f"put the released file there (or set ONESTEP_WEIGHTS_DIR)")
    if sha256 is not None:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
        if h.hexdigest() != sha256:
            raise HarnessError(f"{path}: sha256 mismatch: card {card.name!r} expects {sha256}, "
                               f"file has {h.hexdigest()}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unpickling failure means a corrupt or foreign file
        raise HarnessError(f"{path}: not a loadable checkpoint ({type(e).__name__}: {e})") from None
    for key in ("ema", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise HarnessError(f"{path}: expected a state dict of tensors")
    return obj


class NFECounter:
    """Counts rows the network evaluated (a forward pre-hook); per sample = rows / samples in flight."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.rows = 0
        net.register_forward_pre_hook(self._hook)

    def _hook(self, _module: torch.nn.Module, args: tuple) -> None:
        self.rows += len(args[0])

    def per_sample(self, start_rows: int, samples: int) -> int:
        done = self.rows - start_rows
        if done % samples:
            raise HarnessError(f"network evaluated {done} rows for {samples} samples: uneven NFE")
        return done // samples


class LatentAdapter(Adapter):
    """Base of the latent families: builds/loads the network + VAE, makes noise, decodes, reports."""

    family_defaults: ClassVar[dict[str, Any]] = {}
    cond_scalars: ClassVar[tuple[str, ...]] = ()

    def __init__(self, card: ModelCard) -> None:
        super().__init__(card)
        self.params = resolve_latent_params(card, self.family_defaults)
        self.net: LatentDiT | None = None
        self.vae = None
        self.counter: NFECounter | None = None
        self.device = "cpu"

    @classmethod
    def resolution_of(cls, p: dict[str, Any]) -> int:
        """Native image side: latent side x the VAE's upsampling factor (8 for the SD VAE)."""
        return p["input_size"] * p["vae_factor"]

    def _build(self) -> LatentDiT:
        with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
            torch.manual_seed(self.params["init_seed"])
            return LatentDiT(**{k: self.params[k] for k in ARCH_KEYS}, cond_scalars=self.cond_scalars)

    def load(self, device: str = "cpu") -> None:
        net = self._build()
        p = self.params
        state = None
        if self.card.weights is not None and self.card.hub is None:
            state = read_state_dict(self.card, Path(self.card.weights), None)  # sha verified by the card reader
        elif p["checkpoint"] is not None:
            state = read_state_dict(self.card, weights_dir() / p["checkpoint"], p["checkpoint_sha256"])
        if state is not None:
            state = self.convert_state_dict(state)
            try:
                net.load_state_dict(state, strict=True)
            except RuntimeError as e:
                raise HarnessError(f"model card {self.card.name!r}: checkpoint does not fit the card's "
                                   f"architecture: {str(e).splitlines()[0]} ...") from None
        self.vae = load_vae(self.card, p["vae"]).to(device)
        if vae_scale(self.vae) != p["vae_factor"]:
            raise HarnessError(f"model card {self.card.name!r}: the VAE upsamples by {vae_scale(self.vae)}, "
                               f"not params.vae_factor={p['vae_factor']}")
        self.net = net.to(device).eval().requires_grad_(False)
        self.counter = NFECounter(self.net)
        self.device = device

    def convert_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Hook for families whose released layout differs from ours (identity for SiT)."""
        return state

    def initial_noise(self, requests: list[SampleRequest]) -> torch.Tensor:
        """Per-sample latent noise from each request's own CPU generator: independent of batch and position."""
        p = self.params
        shape = (p["in_channels"], p["input_size"], p["input_size"])
        noise = [torch.randn(shape, generator=torch.Generator("cpu").manual_seed(r.seed)) for r in requests]
        return torch.stack(noise).to(self.device)

    def labels(self, requests: list[SampleRequest]) -> torch.Tensor:
        return torch.tensor([r.label for r in requests], dtype=torch.long, device=self.device)

    def null_labels(self, n: int) -> torch.Tensor:
        return torch.full((n,), self.params["num_classes"], dtype=torch.long, device=self.device)

    def times(self, value: float | torch.Tensor, n: int) -> torch.Tensor:
        return torch.full((n,), float(value), dtype=torch.float32, device=self.device)

    def _sample_batch(self, requests: list[SampleRequest]) -> list[SampleOutput]:
        if self.net is None or self.counter is None:
            raise HarnessError(f"model {self.card.name!r}: load() before sample()")
        start = time.perf_counter()
        with torch.inference_mode():
            latents, nfe = self.sample_latents(requests)
        images = sd_vae_to_uint8(decode_latents(self.vae, latents), [r.index for r in requests])
        seconds = (time.perf_counter() - start) / len(requests)
        return [SampleOutput(image=img, nfe=int(n), seconds=seconds) for img, n in zip(images, nfe, strict=True)]

    def sample_latents(self, requests: list[SampleRequest]) -> tuple[torch.Tensor, list[int]]:
        """Family sampler: final latents (B, C, h, w) and the NFE each sample actually used."""
        raise NotImplementedError
