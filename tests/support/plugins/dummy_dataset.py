"""A dataset plugin: 40 deterministic 28x28 images in 10 classes, generated from a seed (no files)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from harness.datasets import Dataset, register_dataset
from harness.hashing import digest

SIZE = 40


def _images() -> np.ndarray:
    rng = np.random.default_rng(1234)
    gray = rng.integers(0, 256, size=(SIZE, 28, 28), dtype=np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


@register_dataset("plugin-noise")
class PluginNoise(Dataset):
    num_classes = 10

    @property
    def digest(self) -> str:
        return digest({"plugin-noise": digest(_images().tobytes().hex())})

    @property
    def size(self) -> int:
        return SIZE

    def image_labels(self) -> np.ndarray:
        return np.arange(SIZE, dtype=np.int64) % 10

    def reference_images(self, n: int, batch_size: int = 256, start: int = 0) -> Iterator[np.ndarray]:
        if n > SIZE:
            raise ValueError(f"plugin-noise has {SIZE} images, asked for {n}")
        images = _images()
        for a in range(start, n, batch_size):
            yield images[a:min(a + batch_size, n)]
