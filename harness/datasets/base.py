"""The dataset contract and registry: the conditions a cell samples (class labels or prompts) and its reference images.

A dataset's ``digest`` is a hash of its content (the file's sha256), never of its name, so a changed
file never reuses cached reference statistics. Registered by decorator, like adapters.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from harness.errors import HarnessError, ProtocolError
from harness.plugins import load_plugins
from harness.suggest import did_you_mean
from harness.types import PROVISIONAL_DIGEST, DatasetRef

_DATASETS: dict[str, type[Dataset]] = {}


def register_dataset(name: str):
    """Class decorator: ``@register_dataset("name")`` on a ``Dataset`` subclass makes it a protocol's ``dataset:``.

    Adding a dataset: subclass ``Dataset`` (or a layout such as the folder and prompt-file datasets of
    ``harness/datasets/folders.py`` and ``harness/datasets/prompts.py``) with ``num_classes``, ``provides``, a
    content ``digest`` (never of names), ``size``, ``reference_images`` (uint8 (B, H, W, 3); reference_n > size
    refused by name) and, if the images carry classes, ``image_labels``; locate files with ``dataset_root``
    (raising ``DataMissingError`` keeps planning possible without them); import its module in the package's
    ``__init__`` (outside the package: a plugin module, harness/plugins.py).
    ``tests/datasets/test_conformance_datasets.py`` then runs it through the dataset conformance suite:
    on its files when present, else on tiny files for its layout (a new layout adds a builder there)."""

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
        label. Used to draw real images of a requested class (the real-data floor, harness/plan/real_floor.py)."""
        return None

    def load_reference(self, indices: Sequence[int]) -> np.ndarray:
        """Reference images at ``indices`` (any order) as uint8 (k, H, W, 3), preprocessed like the reference."""
        return np.stack([next(self.reference_images(i + 1, 1, i))[0] for i in indices])

    def ref(self) -> DatasetRef:
        return DatasetRef(id=self.id, digest=self.digest, num_classes=self.num_classes, provides=self.provided())


# prefix → builder of the dataset class a spec names (open-ended families such as "hf:", built on demand)
_SPEC_BUILDERS: dict[str, Callable[[str, str], type[Dataset]]] = {}


def register_dataset_spec(prefix: str):
    """Decorator: ``@register_dataset_spec("hf:")`` on ``builder(name, where) -> Dataset subclass`` makes every
    dataset name starting with ``prefix`` resolve through it (specs are open-ended: never listed)."""
    def wrap(builder: Callable[[str, str], type[Dataset]]) -> Callable[[str, str], type[Dataset]]:
        _SPEC_BUILDERS[prefix] = builder
        return builder
    return wrap


def dataset_class(name: str, where: str = "") -> type[Dataset]:
    for prefix, builder in _SPEC_BUILDERS.items():
        if name not in _DATASETS and name.startswith(prefix):  # e.g. a 🤗 datasets spec, built on demand
            return builder(name, f"{where}dataset {name!r}: ")
    if name not in _DATASETS:
        load_plugins()
    if name not in _DATASETS:
        raise ProtocolError(f"{where}unknown dataset {name!r}{did_you_mean(name, _DATASETS)}; "
                            f"available: {', '.join(sorted(_DATASETS))}; or a 🤗 datasets spec "
                            f"hf:SOURCE[@REVISION][?key=value&...] (README: Datasets through 🤗 datasets)")
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

