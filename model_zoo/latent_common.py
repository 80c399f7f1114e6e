"""What every class-conditional latent family shares: card params, the SiT-layout network, checkpoints,
per-sample noise, an NFE counter on the network, and the SD-VAE decode (``sd_vae.py``).

Checkpoints, read by ``load`` through one code path (``read_checkpoint``):
- ``weights: FILE`` + ``weights_sha256`` (verified when the card is read): tests, local conversions;
- ``hub: {repo, revision}`` + ``params.checkpoint`` (a file inside that repo's snapshot, from the local
  HF cache only);
- ``params.checkpoint`` alone: a released file that no hub serves (Google Drive, Dropbox), looked up under
  ``$ONESTEP_WEIGHTS_DIR`` (default ``<repo>/weights``) and verified against ``params.checkpoint_sha256``,
  which the card must pin before it can run (plans work without it, as for unpinned hub revisions).
``.pt`` files hold torch state dicts; ``.npz`` files hold flattened JAX/Flax params (``flax_convert.py``).
"""

from __future__ import annotations

import hashlib
import os
import time
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from harness.errors import HarnessError, ProtocolError
from harness.models.adapters import Adapter
from harness.models.cards import WeightsMissingError, merge_params, params_where, require_float32, resolve_hub_snapshot
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
    where = params_where(card)
    p = merge_params(card, {**BASE_DEFAULTS, **family_defaults}, int_keys=(
        "vae_factor", "input_size", "patch", "in_channels", "hidden", "depth", "heads", "num_classes", "max_steps"))
    if p["input_size"] % p["patch"] or p["hidden"] % p["heads"] or p["hidden"] % 4:
        raise ProtocolError(f"{where}: input_size {p['input_size']} must be divisible by patch {p['patch']}, "
                            f"hidden {p['hidden']} by heads {p['heads']} and by 4")
    check_vae_spec(p["vae"], where)
    sha = p["checkpoint_sha256"]
    if sha is not None and not (isinstance(sha, str) and len(sha) == 64):
        raise ProtocolError(f"{where}.checkpoint_sha256={sha!r}; expected the 64-hex sha256 of {p['checkpoint']!r}")
    require_float32(card)
    return p


def weights_dir() -> Path:
    return Path(os.environ.get("ONESTEP_WEIGHTS_DIR", REPO / "weights"))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def checkpoint_path(card: ModelCard, p: dict[str, Any]) -> tuple[Path, str | None] | None:
    """Where the card's weights are, and the sha256 to verify (None: already verified or pinned by hub)."""
    if card.hub is not None:
        if p["checkpoint"] is None:
            raise ProtocolError(f"{card.source or card.name}: a hub card of family {card.family} must name the "
                                f"file inside the repo with params.checkpoint")
        return resolve_hub_snapshot(card) / p["checkpoint"], p["checkpoint_sha256"]
    if card.weights is not None:
        return Path(card.weights), None
    if p["checkpoint"] is None:
        return None  # seeded random init (tests)
    if p["checkpoint_sha256"] is None:
        raise ProtocolError(f"model card {card.name!r} ({card.source}): params.checkpoint_sha256 is not pinned, so "
                            f"the cells could not name the exact weights; set it to the sha256 of "
                            f"{p['checkpoint']!r} (`sha256sum` of the file you have)")
    return weights_dir() / p["checkpoint"], p["checkpoint_sha256"]


def read_checkpoint(card: ModelCard, path: Path, sha256: str | None) -> dict[str, Any]:
    """The raw contents: a torch state dict (plain, or under "ema"/"ema_model"/"model" as training
    checkpoints store it), or for ``.npz`` the flattened Flax params ("a/b/kernel" -> array)."""
    if not path.is_file():
        raise WeightsMissingError(f"model card {card.name!r} ({card.source}): checkpoint {str(path)!r} not found; "
                                  f"put the released file there (or set ONESTEP_WEIGHTS_DIR)")
    if sha256 is not None and (found := _sha256_file(path)) != sha256:
        raise HarnessError(f"{path}: sha256 mismatch: card {card.name!r} expects {sha256}, file has {found}")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unpickling failure means a corrupt or foreign file
        raise HarnessError(f"{path}: not a loadable checkpoint ({type(e).__name__}: {e})") from None
    for key in ("ema", "ema_model", "model"):
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
        self.net: torch.nn.Module | None = None
        self.vae = None
        self.counter: NFECounter | None = None
        self.device = "cpu"

    @classmethod
    def resolution_of(cls, p: dict[str, Any]) -> int:
        """Native image side: latent side x the VAE's upsampling factor (8 for the SD VAE)."""
        return p["input_size"] * p["vae_factor"]

    def _build(self) -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
            torch.manual_seed(self.params["init_seed"])
            return self.make_network()

    def make_network(self) -> torch.nn.Module:
        """The family's network from ``self.params`` (random init; ``load`` then fills in the weights)."""
        return LatentDiT(**{k: self.params[k] for k in ARCH_KEYS}, cond_scalars=self.cond_scalars)

    def load(self, device: str = "cpu") -> None:
        net = self._build()
        p = self.params
        where = checkpoint_path(self.card, p)
        if where is not None:
            raw = read_checkpoint(self.card, *where)
            is_flax = where[0].suffix == ".npz"
            state = self.convert_flax(raw) if is_flax else self.convert_state_dict(raw)
            try:
                net.load_state_dict(state, strict=True)
            except RuntimeError as e:
                raise HarnessError(f"model card {self.card.name!r}: checkpoint {where[0]} does not fit the card's "
                                   f"architecture: {' '.join(str(e).split())[:600]}") from None
        self.vae = load_vae(self.card, p["vae"]).to(device)
        if vae_scale(self.vae) != p["vae_factor"]:
            raise HarnessError(f"model card {self.card.name!r}: the VAE upsamples by {vae_scale(self.vae)}, "
                               f"not params.vae_factor={p['vae_factor']}")
        self.net = net.to(device).eval().requires_grad_(False)
        self.counter = NFECounter(self.net)
        self.device = device

    def convert_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Hook for families whose released torch layout differs from ours (identity for SiT)."""
        return state

    def convert_flax(self, flat: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        raise HarnessError(f"model card {self.card.name!r}: family {self.card.family} has no Flax converter; "
                           f"give a .pt state dict")

    def generators(self, requests: list[SampleRequest]) -> list[torch.Generator]:
        """One CPU generator per request, seeded from it: every draw is independent of batch and position."""
        return [torch.Generator("cpu").manual_seed(r.seed) for r in requests]

    def draw_noise(self, generators: list[torch.Generator]) -> torch.Tensor:
        p = self.params
        shape = (p["in_channels"], p["input_size"], p["input_size"])
        return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(self.device)

    def initial_noise(self, requests: list[SampleRequest]) -> torch.Tensor:
        return self.draw_noise(self.generators(requests))

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

    @abstractmethod
    def sample_latents(self, requests: list[SampleRequest]) -> tuple[torch.Tensor, list[int]]:
        """Family sampler: final latents (B, C, h, w) and the NFE each sample actually used."""
