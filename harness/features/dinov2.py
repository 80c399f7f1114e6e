"""DINOv2 ViT-L/14 class-token embeddings, for FD-DINOv2 (Stein et al. 2023; dgm-eval's default encoder).

dgm-eval's conventions, reproduced on transformers' ``Dinov2Model`` (weights: a transformers folder of
facebook/dinov2-large, found by ``harness.features.weights``; nothing is downloaded):
- image: PIL bicubic (antialiased) resize of the whole image to 224 x 224 — a squash, no crop — kept as
  uint8, then /255 and ImageNet mean/std;
- position embeddings: the 37 x 37 grid trained at 518 px is resampled to the 16 x 16 grid of a 224 input the
  way the DINOv2 release does it (bicubic, scale factor (16 + 0.1) / 37, no antialias), once at load.
  transformers resamples with ``size=16`` instead, which maps the grid with 37/16 rather than 37/16.1 and moves
  the features; the release's convention is what dgm-eval (torch.hub) ran;
- output ``cls``: the class token after the final LayerNorm (the release's ``x_norm_clstoken``, transformers'
  ``pooler_output``), float32, 1024-d for ViT-L/14.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from harness.errors import HarnessError
from harness.features import check_images
from harness.features.base import Extractor, ExtractorSpec
from harness.features.weights import folder_digests
from harness.hashing import digest
from harness.parallel import thread_map

WEIGHTS = "dinov2-vit-l-14"
INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
POSITION_OFFSET = 0.1  # the DINOv2 release's ``interpolate_offset``


def release_position_embeddings(position: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, 1 + M², d) trained position embeddings → (1, 1 + grid², d), resampled as the DINOv2 release does for
    an input of grid x grid patches (float32 bicubic, scale factor (grid + 0.1) / M, antialias off)."""
    cls_token, patches = position[:, :1].float(), position[:, 1:].float()
    side = math.isqrt(patches.shape[1])
    if side * side != patches.shape[1]:
        raise HarnessError(f"dinov2: {patches.shape[1]} patch position embeddings do not form a square grid")
    scale = (grid + POSITION_OFFSET) / side
    resampled = torch.nn.functional.interpolate(patches.reshape(1, side, side, -1).permute(0, 3, 1, 2),
                                                scale_factor=(scale, scale), mode="bicubic", antialias=False)
    if resampled.shape[-2:] != (grid, grid):
        raise HarnessError(f"dinov2: resampling a {side}x{side} grid gave {tuple(resampled.shape[-2:])}, "
                           f"expected {grid}x{grid}")
    patches = resampled.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)
    return torch.cat([cls_token, patches], dim=1).to(position.dtype)


def dgm_eval_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) → normalised float32 (N, 3, 224, 224): PIL bicubic squash to 224, /255, ImageNet stats."""
    resized = np.stack(thread_map(lambda im: np.asarray(Image.fromarray(im).resize((INPUT_SIZE, INPUT_SIZE),
                                                                                   Image.BICUBIC)), images))
    x = torch.from_numpy(resized).permute(0, 3, 1, 2).float() / 255.0
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class Dinov2VitL14(Extractor):
    name = "dinov2-vit-l-14"
    outputs = ("cls",)

    def __init__(self, batch_size: int = 32, model_dir: str | Path | None = None) -> None:
        """``model_dir`` overrides the look-up (tests, or a folder kept elsewhere)."""
        super().__init__(batch_size)
        self._model_dir = Path(model_dir) if model_dir is not None else None

    def _folder_and_digests(self) -> tuple[Path, dict[str, str]]:
        return folder_digests(WEIGHTS, self._model_dir, f"extractor {self.name!r}")

    @property
    def spec(self) -> ExtractorSpec:
        return ExtractorSpec(
            name=self.name, weights_sha256=digest(self._folder_and_digests()[1], length=64),
            layer="cls (final LayerNorm; x_norm_clstoken / pooler_output)",
            resize=f"PIL bicubic (antialiased) squash -> {INPUT_SIZE}x{INPUT_SIZE}, uint8", crop="none",
            normalisation="ImageNet mean/std", input_rounding="uint8 RGB", dtype="float32",
            numerics=f"tf32=off;position embeddings resampled as the DINOv2 release (offset {POSITION_OFFSET})")

    def load(self, device: str = "cpu") -> None:
        from transformers import Dinov2Model

        folder, _ = self._folder_and_digests()  # verifies the files before they are used
        try:
            net, info = Dinov2Model.from_pretrained(folder, local_files_only=True, output_loading_info=True)
        except (OSError, ValueError) as err:
            raise HarnessError(f"extractor {self.name!r}: cannot load a Dinov2Model from {folder}: {err}") from err
        absent = sorted(info["missing_keys"]) + [str(k) for k in info["mismatched_keys"]]
        if absent:  # transformers would leave them randomly initialised: numbers from no real network
            raise HarnessError(f"extractor {self.name!r}: {folder / 'model.safetensors'} lacks or misshapes "
                               f"{', '.join(absent)}")
        grid = INPUT_SIZE // net.config.patch_size
        embeddings = net.embeddings
        if embeddings.position_embeddings.shape[1] != 1 + grid * grid:
            embeddings.position_embeddings = torch.nn.Parameter(
                release_position_embeddings(embeddings.position_embeddings.detach(), grid), requires_grad=False)
        self._install(net, device)

    @torch.inference_mode()
    def extract(self, images: np.ndarray) -> dict[str, np.ndarray]:
        self._require_loaded()
        images = check_images(images, self.name)
        parts = [np.zeros((0, self._net.config.hidden_size), np.float32)]
        for start in range(0, len(images), self.batch_size):
            pixels = dgm_eval_pixels(images[start:start + self.batch_size]).to(self._device)
            parts.append(self._net(pixel_values=pixels).pooler_output.float().cpu().numpy())
        return {"cls": np.concatenate(parts)}
