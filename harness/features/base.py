"""The extractor interface: a named, digested preprocessing + network spec → features per image.

Feature caches and reference statistics are keyed by ``ExtractorSpec.key``, a hash of everything
that changes the numbers: weights sha256, layer, resize kernel / antialias / coordinate convention,
crop, normalisation, the uint8 rounding rule of the input, dtype and numerics flags.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import HarnessError
from ..hashing import digest


@dataclass(frozen=True)
class ExtractorSpec:
    name: str  # human name, e.g. "inception-fid-helper"; not the identity
    weights_sha256: str
    layer: str  # e.g. "pool3"; several outputs → "pool3+logits"
    resize: str  # e.g. "torch-bilinear(align_corners=False,antialias=False)->299" or "none"
    crop: str
    normalisation: str
    input_rounding: str  # how the uint8 input was produced, e.g. "uint8 PNG"
    dtype: str
    numerics: str  # e.g. "tf32=off"

    @property
    def key(self) -> str:
        return digest(self, length=24)


class Extractor(ABC):
    """Maps uint8 N x H x W x 3 images to named float feature arrays of N rows each."""

    name: str = ""
    outputs: tuple[str, ...] = ()  # names of the arrays ``extract`` returns

    def __init__(self, batch_size: int) -> None:
        if batch_size < 1:
            raise HarnessError(f"extractor {self.name!r}: batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self._net: Any = None  # set by load()
        self._device: Any = "cpu"

    def _require_loaded(self) -> None:
        if self._net is None:
            raise HarnessError(f"extractor {self.name!r}: call load() before extract()")

    @property
    @abstractmethod
    def spec(self) -> ExtractorSpec: ...

    @abstractmethod
    def load(self, device: str = "cpu") -> None: ...

    @abstractmethod
    def extract(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """images: uint8 (N, H, W, 3). Returns {output name: float array (N, ...)}."""
