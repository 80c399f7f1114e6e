"""ImageNet-label datasets read from folders the user has: ImageNet-1k val, ImageNetV2, reLAIONet.

Where the data lives: ``$HARNESS_DATASET_<ID>`` (e.g. ``HARNESS_DATASET_IMAGENET_VAL=/data/imagenet/val``),
else ``$HARNESS_DATA/<default sub-path>`` (see ``DEFAULT_SUBPATH``). Each dataset is scanned once into a
manifest (ordered file list, labels, byte sizes, class histogram) and validated on load: a folder that
names no class, two folders naming one class, an image without a class folder (missing label), a
duplicated file name or a non-image file is an error naming the path, raised before any compute.

The sample order is the paper's: class by class (label id), file name within a class. Sample ``i`` asks for
the label of reference image ``i mod size`` (so N generated = N real gives the reference histogram), and
its prompt is the class prompt "a photo of a {name}" from the committed label table.

The digest covers (relative path, byte size, label) of every file plus the reference preprocessing spec;
re-encoding an image in place at the same byte size would go unnoticed (hashing 6 GB of JPEGs on every
plan is not affordable).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image, PngImagePlugin

from harness.datasets.base import Dataset, dataset_root, register_dataset
from harness.datasets.hf_parquet import parquet_shards, read_rows, scan_parquet
from harness.datasets.labels import LabelTable, imagenet_labels
from harness.datasets.preprocess import ReferencePreprocess, get_preprocess
from harness.errors import HarnessError, ProtocolError
from harness.hashing import digest
from harness.images import IMAGE_SUFFIXES, to_rgb_image
from harness.parallel import thread_map

# reLAIONet PNGs carry iCCP chunks above PIL's 1 MB default (the paper's loader raises it the same way).
PngImagePlugin.MAX_TEXT_CHUNK = 100 * 1024 * 1024


@dataclass(frozen=True)
class FolderManifest:
    root: str
    files: tuple[str, ...]  # paths relative to root, in sample order
    labels: tuple[int, ...]
    sizes: tuple[int, ...]

    @property
    def digest(self) -> str:
        return digest({"files": list(zip(self.files, self.sizes, self.labels, strict=True))}, length=32)

    def histogram(self) -> dict[int, int]:
        return dict(sorted(Counter(self.labels).items()))


def _image_files(folder: Path, where: str) -> list[Path]:
    files = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir() or path.suffix.lower() not in IMAGE_SUFFIXES:
            raise HarnessError(f"{where}{path}: expected only image files ({', '.join(sorted(IMAGE_SUFFIXES))}) "
                               f"inside a class folder")
        files.append(path)
    return files


# get_dataset is called per shard: reuse a scan while no folder changed (adding or removing a file changes
# its folder's mtime). Keyed by (dataset id, root, mtimes of the root and of each class folder).
_SCANS: dict[tuple[Any, ...], FolderManifest] = {}


def _listing_key(root: Path) -> tuple[Any, ...]:
    try:
        return (root.stat().st_mtime_ns, *((p.name, p.stat().st_mtime_ns) for p in sorted(root.iterdir())))
    except OSError as err:
        raise HarnessError(f"{root}: cannot list the dataset folder: {err}") from err


class ImageFolderDataset(Dataset):
    """Class folders under a root; subclasses say how a folder name maps to a label id."""

    num_classes = 1000  # the committed label table's classes (harness/data/imagenet_labels.tsv)
    provides = ("labels", "prompts", "images")  # prompts: "a photo of a {name}" from the label table
    BASE_ID: ClassVar[str] = ""  # the layout's id without the preprocessing suffix; names the root variable
    DEFAULT_SUBPATH: ClassVar[str] = ""
    PREPROCESS: ClassVar[str] = "squash-bicubic-256"
    unique_file_names: ClassVar[bool] = True  # ImageNet val / V2 file names are unique across classes

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else dataset_root(self.BASE_ID, self.DEFAULT_SUBPATH)
        self.table: LabelTable = imagenet_labels()

    def folder_label(self, folder: str, where: str) -> int:
        raise NotImplementedError

    @property
    def preprocess(self) -> ReferencePreprocess:
        return get_preprocess(self.PREPROCESS)

    @property
    def manifest(self) -> FolderManifest:
        if not self.root.is_dir():
            raise HarnessError(f"dataset {self.id!r}: {self.root} is not a directory")
        key = (self.id, str(self.root.resolve()), _listing_key(self.root))
        if key not in _SCANS:
            _SCANS[key] = self._scan()
        return _SCANS[key]

    def _scan(self) -> FolderManifest:
        where = f"dataset {self.id!r}: "
        entries, owner_of_label, owner_of_name = [], {}, {}
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith("."):
                continue
            if not folder.is_dir():
                raise HarnessError(f"{where}{folder}: image outside a class folder has no label; expected "
                                   f"{self.root}/<class>/<image> (missing label)")
            label = self.folder_label(folder.name, f"{where}{folder}: ")
            if label in owner_of_label:
                raise HarnessError(f"{where}{folder} and {owner_of_label[label]} both hold class "
                                   f"{self.table[label].describe()}; merge them")
            owner_of_label[label] = folder
            for path in _image_files(folder, where):
                if self.unique_file_names and path.name in owner_of_name:
                    raise HarnessError(f"{where}{path}: duplicate file; {owner_of_name[path.name]} has the "
                                       f"same name")
                owner_of_name[path.name] = path
                entries.append((label, path.relative_to(self.root).as_posix(), path.stat().st_size))
        if not entries:
            raise HarnessError(f"{where}{self.root} holds no images in class folders")
        entries.sort()
        labels, files, sizes = zip(*entries, strict=True)
        return FolderManifest(str(self.root), files, labels, sizes)

    @property
    def digest(self) -> str:
        return digest({"layout": self.BASE_ID, "files": self.manifest.digest,
                       "preprocess": self.preprocess.spec}, length=32)

    @property
    def size(self) -> int:
        return len(self.manifest.files)

    def label_for(self, index: int) -> int:
        return self.manifest.labels[index % self.size]

    def prompt_for(self, index: int) -> str:
        return self.table.prompt(self.label_for(index))

    def manifest_record(self) -> dict[str, Any]:
        """What a results folder records about the dataset: where, what, how preprocessed."""
        m = self.manifest
        return {"dataset": self.id, "root": m.root, "files": len(m.files), "file_list_digest": m.digest,
                "digest": self.digest, "preprocess": self.preprocess.name, "preprocess_spec": self.preprocess.spec,
                "classes_present": len(m.histogram()), "class_histogram": m.histogram()}

    def image_labels(self) -> np.ndarray:
        return np.asarray(self.manifest.labels, dtype=np.int64)

    def load_reference(self, indices: Sequence[int]) -> np.ndarray:
        return np.stack(self.load_images(indices))

    def load_images(self, indices: Sequence[int]) -> list[np.ndarray]:
        """Reference images ``indices``, decoded and preprocessed (on the shared thread pool, in order)."""

        def load(index: int) -> np.ndarray:
            path = self.root / self.manifest.files[index]
            try:
                with Image.open(path) as image:
                    return self.preprocess.apply(to_rgb_image(image, f"dataset {self.id!r}: {path}")[0])
            except (OSError, ValueError) as err:
                raise HarnessError(f"dataset {self.id!r}: {path}: cannot decode image: {err}") from err

        return thread_map(load, indices)

    def reference_images(self, n: int, batch_size: int = 256, start: int = 0) -> Iterator[np.ndarray]:
        if n > self.size:
            raise ProtocolError(f"dataset {self.id!r}: reference_n={n} exceeds the {self.size} images in {self.root}")
        for first in range(start, n, batch_size):
            yield np.stack(self.load_images(range(first, min(first + batch_size, n))))


class SynsetFolders(ImageFolderDataset):
    """``<wnid>/*.JPEG`` folders, or the Hugging Face parquet layout (harness/datasets/hf_parquet.py) when the root has
    ``validation-*.parquet`` shards (directly or under ``data/``)."""

    def folder_label(self, folder: str, where: str) -> int:
        return self.table.by_wnid(folder, where).index

    def _scan(self) -> FolderManifest:
        shards = parquet_shards(self.root)
        if not shards:
            return super()._scan()
        entries = scan_parquet(self.root, shards, len(self.table), f"dataset {self.id!r}: ")
        if not entries:
            raise HarnessError(f"dataset {self.id!r}: {self.root}: the parquet shards hold no rows")
        labels, files, sizes = zip(*entries, strict=True)
        return FolderManifest(str(self.root), files, labels, sizes)

    def load_images(self, indices: Sequence[int]) -> list[np.ndarray]:
        addresses = [self.manifest.files[i] for i in indices]
        if not addresses or "#" not in addresses[0]:
            return super().load_images(indices)
        images = read_rows(self.root, addresses)

        def load(item: tuple[str, Image.Image]) -> np.ndarray:
            where = f"dataset {self.id!r}: {self.root / item[0]}"
            return self.preprocess.apply(to_rgb_image(item[1], where)[0])

        try:
            return thread_map(load, list(zip(addresses, images, strict=True)))  # each decodes in its own thread
        finally:
            for image in images:
                image.close()


class IndexFolders(ImageFolderDataset):
    def folder_label(self, folder: str, where: str) -> int:
        if not folder.isdigit() or not 0 <= int(folder) < len(self.table) or folder != str(int(folder)):
            raise HarnessError(f"{where}ImageNetV2 class folders are named by label id 0..999, got {folder!r}")
        return int(folder)


class NamedFolders(ImageFolderDataset):
    unique_file_names = False  # web-scraped sets reuse names such as 0.jpg across classes

    def folder_label(self, folder: str, where: str) -> int:
        return self.table.match_folder(folder, where).index


LAYOUTS: dict[str, tuple[type[ImageFolderDataset], str, str]] = {
    # id: (layout, default sub-path under $HARNESS_DATA, what the user points at)
    "imagenet-val": (SynsetFolders, "imagenet/val", "ILSVRC2012 val arranged as <wnid>/*.JPEG"),
    # The training images as <wnid>/*.JPEG: the source of an ImageNet real-data floor (`real: [imagenet-train]`).
    "imagenet-train": (SynsetFolders, "imagenet/train", "ILSVRC2012 train arranged as <wnid>/*.JPEG"),
    "imagenetv2-mf": (IndexFolders, "imagenetv2/imagenetv2-matched-frequency-format-val",
                      "ImageNetV2 matched-frequency as <0..999>/*.jpeg"),
    "relaionet": (NamedFolders, "reLAIONet/reLAIONet-cleaned-v1/images",
                  "reLAIONet (HF layout) as <class name or wnid>/*"),
}


_CLASSES: dict[str, type[ImageFolderDataset]] = {}


def open_image_folder(dataset_id: str, root: str | Path) -> ImageFolderDataset:
    """A registered folder dataset (e.g. ``imagenet-val-admcrop``) on an explicit root, bypassing the environment."""
    if dataset_id not in _CLASSES:
        raise HarnessError(f"unknown folder dataset {dataset_id!r}; available: {', '.join(sorted(_CLASSES))}")
    return _CLASSES[dataset_id](root)


def _register_layouts() -> None:
    """Each layout under both reference preprocessings: ``<id>`` (paper squash) and ``<id>-admcrop``."""
    for dataset_id, (layout, subpath, about) in LAYOUTS.items():
        for suffix, preprocess in (("", "squash-bicubic-256"), ("-admcrop", "adm-center-crop-256")):
            cls = type(f"{layout.__name__}[{dataset_id}{suffix}]", (layout,),
                       {"BASE_ID": dataset_id, "DEFAULT_SUBPATH": subpath, "PREPROCESS": preprocess, "__doc__": about})
            _CLASSES[dataset_id + suffix] = register_dataset(dataset_id + suffix)(cls)


_register_layouts()
