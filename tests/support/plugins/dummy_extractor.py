"""An extractor plugin: per-image channel means and standard deviations (no network, no weights)."""

from __future__ import annotations

import numpy as np

from harness.features import Extractor, ExtractorSpec, check_images, register_extractor


@register_extractor("plugin-moments")
class PluginMoments(Extractor):
    name = "plugin-moments"
    outputs = ("moments",)

    def __init__(self, batch_size: int = 64) -> None:
        super().__init__(batch_size)

    @property
    def spec(self) -> ExtractorSpec:
        return ExtractorSpec(name=self.name, weights_sha256="none", layer="moments", resize="none", crop="none",
                             normalisation="/255", input_rounding="uint8 PNG", dtype="float64", numerics="numpy")

    def load(self, device: str = "cpu") -> None:
        self._net = "numpy"

    def extract(self, images: np.ndarray) -> dict[str, np.ndarray]:
        self._require_loaded()
        x = check_images(images, self.name).astype(np.float64) / 255.0
        flat = x.reshape(len(x), -1, 3)
        return {"moments": np.concatenate([flat.mean(axis=1), flat.std(axis=1)], axis=1)}
