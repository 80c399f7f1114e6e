"""Declared preprocessing of real reference images (the resize that happens before any extractor).

Two specs, both recorded in the dataset digest, so reference statistics made under one are never reused
under the other:
- ``squash-bicubic-256``: the paper's code, ``PIL.Image.resize((256, 256), BICUBIC)`` of the whole image,
  aspect ratio not kept (non-square images are squashed);
- ``adm-center-crop-256``: guided-diffusion's ``center_crop_arr`` (the ADM / DiT / SiT training and
  reference-batch convention): halve with BOX while the short side is >= 2x the target, bicubic-resize
  the short side to 256 (rounded), then take the centre 256x256.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from harness.errors import HarnessError


@dataclass(frozen=True)
class ReferencePreprocess:
    name: str
    size: int = 256

    @property
    def spec(self) -> str:
        if self.name == "native":
            return "RGB uint8 at the image's own size, no resize (every image of the set must share it)"
        if self.name == "squash-bicubic-256":
            return f"PIL.resize(({self.size},{self.size}),BICUBIC) of the full image, aspect not kept; RGB uint8"
        return (f"ADM center_crop_arr: BOX-halve while min side >= {2 * self.size}, BICUBIC short side -> "
                f"{self.size} (rounded), centre crop {self.size}x{self.size}; RGB uint8")

    def apply(self, image: Image.Image) -> np.ndarray:
        image = image.convert("RGB")
        if self.name == "native":
            return np.asarray(image)
        if self.name == "squash-bicubic-256":
            return np.asarray(image.resize((self.size, self.size), Image.Resampling.BICUBIC))
        return adm_center_crop(image, self.size)


def adm_center_crop(image: Image.Image, size: int) -> np.ndarray:
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.Resampling.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.Resampling.BICUBIC)
    array = np.asarray(image)
    top, left = (array.shape[0] - size) // 2, (array.shape[1] - size) // 2
    return array[top:top + size, left:left + size]


# "native" (no resize) is for sets stored at the size their metric reads, e.g. MNIST-like 28x28 digits.
PREPROCESS = {p.name: p for p in (ReferencePreprocess("squash-bicubic-256"),
                                  ReferencePreprocess("adm-center-crop-256"), ReferencePreprocess("native"))}


def get_preprocess(name: str) -> ReferencePreprocess:
    if name not in PREPROCESS:
        raise HarnessError(f"unknown reference preprocessing {name!r}; available: {', '.join(sorted(PREPROCESS))}")
    return PREPROCESS[name]
