"""The SD-VAE decode path shared by the class-conditional latent families (SiT, DiT, MeanFlow, iMF, SoFlow).

Latents are ``scaling_factor``-scaled (0.18215 for the SD VAE, ``stabilityai/sd-vae-ft-mse`` or ``-ema``):
the image is ``vae.decode(z / 0.18215)``. Samples are decoded one at a time, so an image never depends on
which other samples shared its batch (and a 50k run never holds a 50k-image decode batch).

Rounding rule (SiT/DiT ``sample.py``, MeanFlow's LatentManager, SoFlow): ``clip(127.5 * x + 128, 0, 255)``
then truncation to uint8, i.e. round-half-up of 127.5 * (x + 1). ``harness.models.adapters.to_uint8_images`` rounds
half to even, which differs at exact ties and by float rounding near them, so the latent families use
``sd_vae_to_uint8`` to reproduce the upstream pixels. (RAE's decoder outputs [0, 1] images and uses its own
rule; see model_zoo/rae.py's card notes.)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.errors import GenerationError, HarnessError, ProtocolError
from harness.models.cards import is_pinned, resolve_hub_snapshot
from harness.types import HUB_SCHEME, ModelCard

SD_VAE_SCALE = 0.18215
SD_VAE_REPOS = ("stabilityai/sd-vae-ft-mse", "stabilityai/sd-vae-ft-ema")


def tiny_vae_config(latent_channels: int = 4, down: int = 2) -> dict[str, Any]:
    """An AutoencoderKL of the real class with tiny widths; ``down`` up-blocks give a 2**(down-1) scale."""
    return dict(in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=(8,) * down,
                layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * down,
                up_block_types=("UpDecoderBlock2D",) * down, norm_num_groups=4, sample_size=32,
                scaling_factor=SD_VAE_SCALE)


def build_tiny_vae(seed: int = 0, down: int = 2):
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
        torch.manual_seed(seed)
        return AutoencoderKL(**tiny_vae_config(down=down)).eval().requires_grad_(False)


def load_vae(card: ModelCard, spec: dict[str, Any]):
    """``spec``: ``{repo, revision}`` (local HF cache, never downloads), ``{path}`` (a diffusers folder)
    or ``{tiny_seed}`` (random tiny VAE for tests). The same ``from_pretrained`` path serves hub and folder."""
    from diffusers import AutoencoderKL

    if "tiny_seed" in spec:
        return build_tiny_vae(int(spec["tiny_seed"]))
    if "repo" in spec:
        # The VAE is part of the model's identity: same policy as the card's own hub checkpoint.
        vae_card = dataclasses.replace(card, weights=f"{HUB_SCHEME}{spec['repo']}@{spec['revision']}")
        if not is_pinned(vae_card):
            raise ProtocolError(f"model card {card.name!r} ({card.source}): params.vae.revision "
                                f"{spec['revision']!r} is a branch or tag, not a commit, so decoded images could "
                                f"silently change; set it to the 40-hex commit of {spec['repo']} you have")
        folder = resolve_hub_snapshot(vae_card)
    elif "path" in spec:
        folder = Path(spec["path"])
        if not (folder / "config.json").is_file():
            raise HarnessError(f"model card {card.name!r}: params.vae.path {str(folder)!r} is not a diffusers "
                               f"AutoencoderKL folder (no config.json)")
    else:
        raise ProtocolError(f"{card.source or card.name}: params.vae must give repo+revision, path or tiny_seed; "
                            f"got {spec!r}")
    return AutoencoderKL.from_pretrained(str(folder), local_files_only=True).eval().requires_grad_(False)


def check_vae_spec(spec: Any, where: str) -> None:
    ok = isinstance(spec, dict) and (set(spec) == {"repo", "revision"} or set(spec) in ({"path"}, {"tiny_seed"}))
    if not ok:
        raise ProtocolError(f"{where}.vae={spec!r}; expected {{repo, revision}}, {{path}} or {{tiny_seed}}")


def vae_scale(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def decode_latents(vae, latents: torch.Tensor, scale: float = SD_VAE_SCALE) -> np.ndarray:
    """(B, C, h, w) scaled latents -> (B, 3, H, W) float images in about [-1, 1], one sample per decode."""
    param = next(vae.parameters())
    with torch.inference_mode():
        out = [vae.decode(z[None].to(param.device, param.dtype) / scale).sample.float().cpu() for z in latents]
    return torch.cat(out).numpy()


def sd_vae_to_uint8(x: np.ndarray, indices: list[int]) -> np.ndarray:
    """NCHW float in [-1, 1] -> NHWC uint8 by the upstream rule ``uint8(clip(127.5 x + 128, 0, 255))``."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != 3:
        raise GenerationError(f"decoder returned an array of shape {x.shape}; expected N x 3 x H x W")
    bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
    if bad.any():  # refused before clipping could hide an Inf
        raise GenerationError(f"decoder produced NaN/Inf pixels for sample index "
                              f"{[indices[i] for i in np.flatnonzero(bad)]}; nothing was written")
    pixels = np.clip(127.5 * x + 128.0, 0.0, 255.0).astype(np.uint8)  # astype truncates, as torch's .to(uint8)
    return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))
