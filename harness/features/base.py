"""The extractor interface: a named, digested preprocessing + network spec → features per image.

Feature caches and reference statistics are keyed by ``ExtractorSpec.key``, a hash of everything
that changes the numbers: weights sha256, layer, resize kernel / antialias / coordinate convention,
crop, normalisation, the uint8 rounding rule of the input, dtype and numerics flags.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

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

    def _install(self, net: torch.nn.Module, device: str) -> None:
        """Every spec promises float32 with TF32 off: set both, move the network to ``device``, eval mode."""
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        self._device = torch.device(device)
        self._net = net.float().to(self._device).eval()

    @property
    @abstractmethod
    def spec(self) -> ExtractorSpec: ...

    @abstractmethod
    def load(self, device: str = "cpu") -> None: ...

    @abstractmethod
    def extract(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """images: uint8 (N, H, W, 3). Returns {output name: float array (N, ...)}."""


_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                   "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
                   "sparse_")
_INIT_LOCK = threading.Lock()


@contextmanager
def no_weight_init() -> Iterator[None]:
    """Build a network whose every parameter a checkpoint overwrites right after: skip torch.nn.init's random
    fill (about 1 s for a ViT-B/16, many seconds for a ViT-H/14 on CPU; transformers' ``from_pretrained`` skips
    it the same way). Parameters hold uninitialised memory until loaded, so the caller must load *strictly*
    (every parameter and buffer present) inside or right after the block. torch.nn.init is restored on exit,
    also on error; a lock keeps two threads from interleaving the swap."""
    with _INIT_LOCK:
        saved = {name: getattr(torch.nn.init, name) for name in _INIT_FUNCTIONS if hasattr(torch.nn.init, name)}
        try:
            for name in saved:
                setattr(torch.nn.init, name, _leave_as_is)
            yield
        finally:
            for name, fn in saved.items():
                setattr(torch.nn.init, name, fn)


def _leave_as_is(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return tensor
