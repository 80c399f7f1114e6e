"""CLIP ViT-L/14@336px image embeddings with CMMD's preprocessing (Jayasumana et al. 2024, "Rethinking FID").

CMMD's reference code (google-research's cmmd and its PyTorch port) centre-crops each image to a square,
resizes it to 336 x 336 with PIL bicubic (uint8), divides by 255, resizes again with torch bicubic to 336 (the
identity at equal size), normalises with CLIP's mean/std (the processor neither crops nor resizes) and embeds it
with transformers' CLIPVisionModelWithProjection of openai/clip-vit-large-patch14-336; rows are L2-normalised.
Here the same network comes from OpenAI's own release of those weights (ViT-L-14-336px.pt, its sha256 pinned by
OpenAI's URL) through open_clip, as for CLIP Score.

CMMD crops first and then resizes, where open_clip's transform (CLIP Score) resizes the short side first and
then crops: the two differ on non-square images, so this is its own extractor with its own spec key.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import numpy as np
import torch
from PIL import Image

from harness.features.base import ExtractorSpec
from harness.features.clip import ClipModel, OpenClipExtractor


def cmmd_pixels(image: Image.Image, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """PIL RGB → float32 (3, size, size): centre square crop, PIL bicubic resize, /255, (x - mean) / std."""
    width, height = image.size
    side = min(width, height)
    top, left = (height - side) // 2, (width - side) // 2
    square = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(square, dtype=np.float32) / np.float32(255.0)).permute(2, 0, 1)
    return (x - mean) / std


class ClipVitL14x336Cmmd(OpenClipExtractor):
    name = "clip-vit-l-14-336-cmmd"
    model = ClipModel("ViT-L-14-336", "openai", "clip-vit-l-14-336-openai")

    @property
    def spec(self) -> ExtractorSpec:
        return dataclasses.replace(
            super().spec, resize="centre square crop, then PIL bicubic -> input size (336), uint8; /255",
            crop="centre square (before the resize)")

    def load(self, device: str = "cpu") -> None:
        import open_clip

        super().load(device)
        size = self._net.visual.image_size
        self._preprocess = partial(cmmd_pixels, size=size[0] if isinstance(size, tuple) else size,
                                   mean=torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(3, 1, 1),
                                   std=torch.tensor(open_clip.OPENAI_DATASET_STD).view(3, 1, 1))
