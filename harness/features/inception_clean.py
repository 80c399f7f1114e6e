"""Inception-v3 ``clean`` (clean-fid's default mode) on the same torch-fidelity network as ``tf1``.

clean-fid resizes each channel separately as a float32 PIL image with antialiased bicubic to 299,
clips to [0, 255] and does *not* re-quantise; then (x - 128) / 128. Only the preprocessing differs
from ``inception-tf1``; the spec says so, so features of the two never share a cache key.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from harness.features.inception_tf1 import SIZE, InceptionTF1
from harness.parallel import thread_map


def clean_resize(image: np.ndarray, size: int = SIZE) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (size, size, 3): per-channel PIL bicubic on floats, clipped, not rounded."""
    channels = [np.asarray(Image.fromarray(image[:, :, c].astype(np.float32)).resize((size, size), Image.BICUBIC))
                for c in range(3)]
    return np.stack(channels, axis=-1).clip(0, 255).astype(np.float32)


class InceptionClean(InceptionTF1):
    name = "inception-clean"
    resize_spec = (f"PIL-bicubic(antialiased,float32 per channel 'F' mode,clip[0,255],no-requantise)"
                   f"->{SIZE}x{SIZE};always")

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        x = np.stack(thread_map(clean_resize, images))
        x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().to(self._device)
        return (x - 128) / 128
