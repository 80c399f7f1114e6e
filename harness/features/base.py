"""The extractor interface: a named, digested preprocessing + network spec → features per image.

Feature caches and reference statistics are keyed by ``ExtractorSpec.key``, a hash of everything
that changes the numbers: weights sha256, layer, resize kernel / antialias / coordinate convention,
crop, normalisation, the uint8 rounding rule of the input, dtype, numerics flags and the CPU intra-op
thread count every extraction runs with (oneDNN's float32 reductions are split by thread count, so 1 and 2
threads differ by ~3e-6): fixed, not inherited from the executor or worker count, so debug, local, any
number of workers and concurrent runs on one cache all write the same features.
"""

from __future__ import annotations

import functools
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from harness.errors import HarnessError
from harness.hashing import digest


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
    cpu_threads: int = field(default_factory=lambda: extraction_threads())  # torch intra-op threads while extracting

    @property
    def key(self) -> str:
        return digest(self, length=24)


EXTRACT_THREADS_ENV = "HARNESS_EXTRACT_THREADS"
_THREADS_LOCK = threading.RLock()


def extraction_threads() -> int:
    """Torch intra-op threads for every extraction: ``$HARNESS_EXTRACT_THREADS``, default 1 (the local executor
    runs one extraction per worker, so parallelism comes from workers). Part of every spec, hence of every
    feature cache key: features computed under another count are never mixed in."""
    env = os.environ.get(EXTRACT_THREADS_ENV, "1")
    try:
        threads = int(env)
    except ValueError:
        threads = 0
    if threads < 1:
        raise HarnessError(f"{EXTRACT_THREADS_ENV}={env!r}: expected a whole number >= 1 (torch threads per "
                           f"feature extraction; part of the extractor spec)")
    return threads


@contextmanager
def fixed_threads(threads: int) -> Iterator[None]:
    """Run the block with torch's intra-op thread count set to ``threads``; the caller's count is restored
    after, also on error. The lock keeps two threads of one process from interleaving the swap. The CPU
    thread pool (harness.parallel) keeps the caller's size meanwhile: PIL work is exact at any count."""
    import harness.parallel as parallel

    with _THREADS_LOCK:
        saved, outer = torch.get_num_threads(), parallel._UNPINNED_TORCH_THREADS
        parallel._UNPINNED_TORCH_THREADS = outer or saved
        if saved != threads:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            if torch.get_num_threads() != saved:
                torch.set_num_threads(saved)
            parallel._UNPINNED_TORCH_THREADS = outer


def _at_spec_threads(extract: Callable[..., dict[str, np.ndarray]]) -> Callable[..., dict[str, np.ndarray]]:
    @functools.wraps(extract)
    def wrapper(self: Extractor, images: np.ndarray, *args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        # extraction_threads(), not self.spec (some specs hash weight folders): the spec's default reads it too
        with fixed_threads(extraction_threads()):
            return extract(self, images, *args, **kwargs)

    wrapper.at_spec_threads = True  # type: ignore[attr-defined]
    return wrapper


class Extractor(ABC):
    """Maps uint8 N x H x W x 3 images to named float feature arrays of N rows each.

    Every subclass's ``extract`` is wrapped to run at the spec's ``cpu_threads`` (so no caller, executor or
    ``harness score`` can compute features under a count its cache key does not record)."""

    name: str = ""
    outputs: tuple[str, ...] = ()  # names of the arrays ``extract`` returns
    # True for an extractor that scores (image, prompt) pairs (ImageReward): ``extract(images, prompts=[...])``
    # with one prompt per image; its cached features are keyed by the prompts too (harness/run/extract.py).
    needs_prompts: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("extract")
        if own is not None and not getattr(own, "__isabstractmethod__", False) \
                and not getattr(own, "at_spec_threads", False):
            cls.extract = _at_spec_threads(own)

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
