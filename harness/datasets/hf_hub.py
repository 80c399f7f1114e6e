"""Reference and prompt sets read through 🤗 datasets: a hub id, a local dataset repository (hub layout: data
files + README card with ``configs``), a ``save_to_disk`` output or an ``imagefolder`` (spec syntax:
``harness/datasets/hf_spec.py``).

Rows keep the split's order; sample ``i`` asks for the label (and prompt) of row ``i mod size``, so N generated
= N real reproduces the reference histogram, as for the folder datasets. Labels are class ids
``0..classes-1``; with the default ``classes: 1000`` they are ImageNet-1k ids, and a ``ClassLabel`` column whose
names are wnids or class names (an imagefolder of ``<wnid>/`` folders) is mapped through the label table.

The digest hashes content, never names: every row's image bytes (sha256), label and prompt, plus the pinned
revision, the class count and the reference preprocessing. A renamed folder keeps it; one changed byte or
another revision changes it. It is computed in one pass over the rows without decoding images and reused in
the process while the library's cache files are unchanged. With ``streaming: true`` the rows are read as they
are needed (reference images by ``skip``/``take``); the scan then reads only labels and prompts, and the image
content is the sha256 of the split's data files (a local source) or the commit sha (a hub id).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from harness.datasets.base import DataMissingError, Dataset, register_dataset_spec
from harness.datasets.hf_spec import HubSpec, check_columns, label_map, parse_spec
from harness.datasets.labels import imagenet_labels
from harness.datasets.preprocess import get_preprocess
from harness.errors import HarnessError, ProtocolError
from harness.hashing import canonical_json, digest, sha256_file
from harness.images import to_rgb_image
from harness.parallel import thread_map
from harness.store import atomic_write_json, default_cache_dir

SCAN_BATCH = 512


@dataclass(frozen=True)
class Scan:
    """One pass over a split: row count, mapped labels, prompts and the content hash of the rows."""

    size: int
    labels: np.ndarray | None
    prompts: tuple[str, ...] | None
    rows_sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "labels": None if self.labels is None else self.labels.tolist(),
                "prompts": self.prompts, "rows_sha256": self.rows_sha256}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Scan:
        labels = data["labels"]
        return cls(int(data["size"]), None if labels is None else np.asarray(labels, dtype=np.int64),
                   None if data["prompts"] is None else tuple(data["prompts"]), str(data["rows_sha256"]))


# Scans reused in the process, and on disk under the harness cache (each worker process would otherwise hash
# every image once), keyed by the library's arrow cache files (path, size, mtime). Those files are written once
# per version of the data: a new hub revision, or a local folder with other files (``_local_cache_dir``), gets
# new ones; images kept as paths (an imagefolder) lie inside that local folder, so they are covered too.
_SCANS: dict[str, Scan] = {}


def _scan_memo(key: str, compute: Callable[[], Scan]) -> Scan:
    if key in _SCANS:
        return _SCANS[key]
    path = default_cache_dir() / "hf-scans" / f"{key}.json"
    try:
        scan = Scan.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        scan = compute()
        try:
            atomic_write_json(path, scan.to_json())
        except OSError:  # a read-only cache only costs the rescan
            pass
    _SCANS[key] = scan
    return scan
_FILE_SHA: dict[tuple[str, int, int], str] = {}


def _file_sha(path: str) -> str:
    stat = Path(path).stat()
    key = (path, stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_SHA:
        _FILE_SHA[key] = sha256_file(path)
    return _FILE_SHA[key]


def _load(spec: HubSpec, where: str) -> tuple[Any, str]:
    """(the split as a datasets.Dataset, or IterableDataset when streaming; what kind of source it was)."""
    import datasets

    try:
        if spec.local and any((Path(spec.source) / f).is_file() for f in ("state.json", "dataset_dict.json")):
            if spec.config is not None:
                raise HarnessError(f"{where}config {spec.config!r}: a save_to_disk folder has no configurations; "
                                   f"drop config=")
            loaded, kind = datasets.load_from_disk(spec.source), "save_to_disk"
            if isinstance(loaded, datasets.DatasetDict):
                loaded = _pick_split(loaded, spec, where)
            elif spec.split is not None and str(loaded.split) != spec.split:
                raise HarnessError(f"{where}split {spec.split!r} not found; the save_to_disk folder holds one "
                                   f"split ({loaded.split}): drop split= or name it")
            return loaded, kind  # memory-mapped arrow files already: streaming adds nothing, so it is not used
        if spec.local and not Path(spec.source).is_dir():
            raise DataMissingError(f"{where}{spec.source} is not a folder (a dataset repository in the hub layout, a "
                                   f"save_to_disk output or an image folder)")
        loaded = datasets.load_dataset(spec.source, spec.config, split=spec.split, revision=spec.revision,
                                       streaming=spec.streaming, cache_dir=_local_cache_dir(spec))
    except (ConnectionError, FileNotFoundError) as err:
        if spec.local:
            raise HarnessError(f"{where}{spec.source}: not a dataset the library can read: {err}") from err
        raise DataMissingError(f"{where}{spec.source}@{spec.revision} is not in the local 🤗 datasets cache and the "
                               f"hub cannot be reached ({type(err).__name__}: {err}); {_fetch_hint(spec)}") from err
    except ValueError as err:  # an unknown split or config: the library's message lists the available ones
        raise HarnessError(f"{where}{err}") from err
    if isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        loaded = _pick_split(loaded, spec, where)
    if not spec.local and not spec.streaming:
        # Offline, the library serves the latest revision it has cached, whatever revision was asked for; its
        # cache folder for a hub dataset is named by the commit, so anything but the pinned one is refused.
        held = sorted({Path(f["filename"]).parent.name for f in loaded.cache_files})
        if held != [spec.revision]:
            raise DataMissingError(f"{where}the local 🤗 datasets cache holds {spec.source} at {', '.join(held)}, "
                                   f"not at the pinned revision {spec.revision}; {_fetch_hint(spec)}")
    return loaded, getattr(loaded.info, "builder_name", None) or "dataset"


def _fetch_hint(spec: HubSpec) -> str:
    return (f"on a networked machine with the same HF_HOME run python -c \"import datasets; datasets.load_dataset("
            f"'{spec.source}', revision='{spec.revision}')\", or download the repository (hf download --repo-type "
            f"dataset {spec.source} --revision {spec.revision} --local-dir DIR) and name it as hf:DIR")


def _local_cache_dir(spec: HubSpec) -> str | None:
    """For a local folder, a library cache keyed by its files' (path, size, mtime): the library's own cache key
    for a local folder does not follow edits to its files, so a rewritten shard would be served stale."""
    if not spec.local:
        return None
    import datasets

    root = Path(spec.source)
    listing = sorted((p.relative_to(root).as_posix(), *_stat(str(p))) for p in root.rglob("*")
                     if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    return str(Path(datasets.config.HF_DATASETS_CACHE) / "onestep-local" / digest(listing, length=32))


def _pick_split(loaded: Any, spec: HubSpec, where: str) -> Any:
    splits = sorted(loaded)
    if spec.split is not None:
        if spec.split not in loaded:
            raise HarnessError(f"{where}split {spec.split!r} not found; available: {', '.join(splits)}")
        return loaded[spec.split]
    if len(splits) != 1:
        raise HarnessError(f"{where}{len(splits)} splits ({', '.join(splits)}); name one: split=<name>")
    return loaded[splits[0]]


def _image_sha(record: Any, where: str, row: int) -> str:
    """sha256 of a row's image bytes, from the undecoded {bytes, path} record (a path: an imagefolder's file)."""
    if record and record.get("bytes") is not None:
        return hashlib.sha256(record["bytes"]).hexdigest()
    if record and record.get("path"):
        return _file_sha(record["path"])
    raise HarnessError(f"{where}row {row}: no image")


def _scan(view: Any, spec: HubSpec, ids: np.ndarray | None, hash_images: bool, where: str) -> Scan:
    rows, labels, prompts, n = hashlib.sha256(), [], [], 0
    for batch in view.iter(batch_size=SCAN_BATCH):
        for i in range(len(next(iter(batch.values())))):
            entry: dict[str, Any] = {}
            if hash_images:
                entry["image"] = _image_sha(batch[spec.image][i], where, n)
            if spec.label:
                raw = batch[spec.label][i]
                label = None if raw is None else int(raw) if ids is None else int(ids[raw])
                if label is None or not 0 <= label < spec.classes:
                    raise HarnessError(f"{where}row {n}: label {raw!r} is missing or outside 0..{spec.classes - 1}")
                entry["label"] = label
                labels.append(label)
            if spec.prompt:
                text = batch[spec.prompt][i]
                if not isinstance(text, str) or not text.strip():
                    raise HarnessError(f"{where}row {n}: empty prompt in column {spec.prompt!r}")
                entry["prompt"] = text.strip()
                prompts.append(entry["prompt"])
            rows.update(canonical_json(entry).encode() + b"\n")
            n += 1
    if n == 0:
        raise HarnessError(f"{where}the split holds no rows")
    return Scan(n, np.asarray(labels, dtype=np.int64) if spec.label else None,
                tuple(prompts) if spec.prompt else None, rows.hexdigest())


class HubDataset(Dataset):
    """A dataset built from a spec; one subclass per canonical id (``hub_dataset_class``)."""

    spec: ClassVar[HubSpec]

    def __init__(self) -> None:
        self.where = f"dataset {self.id!r}: "
        self.data, self.kind = _load(self.spec, self.where)
        self.streaming = self.spec.streaming and self.kind != "save_to_disk"
        check_columns(self.data.features, self.spec, self.where)

    @cached_property
    def _scan(self) -> Scan:
        import datasets

        spec = self.spec
        columns = [c for c in (spec.image, spec.label, spec.prompt) if c]
        hash_images = bool(spec.image) and not (self.streaming and (spec.label or spec.prompt))
        view = self.data.select_columns(columns if hash_images else [c for c in columns if c != spec.image])
        if hash_images:
            view = view.cast_column(spec.image, datasets.Image(decode=False))
        ids = label_map(self.data.features[spec.label], spec, self.where) if spec.label else None

        def compute() -> Scan:
            return _scan(view, spec, ids, hash_images, self.where)

        if self.streaming or not self.data.cache_files:
            return compute()
        files = [(f["filename"], *_stat(f["filename"])) for f in self.data.cache_files]
        return _scan_memo(digest({"scan": 1, "id": self.id, "files": files}, length=32), compute)

    def _streamed_images_digest(self) -> str | None:
        """With streaming, the images' content: the data files' sha256 (local) or the pinned commit (hub)."""
        if not self.streaming or not self.spec.image:
            return None
        if not self.spec.local:
            return f"commit {self.spec.revision}"
        return digest(sorted(_file_sha(f) for f in _data_files(self.spec, self.where)), length=64)

    @property
    def preprocess(self):
        return get_preprocess(self.spec.preprocess)

    @property
    def digest(self) -> str:
        spec = self.spec
        return digest({"layout": "hf", "revision": spec.revision, "classes": spec.classes if spec.label else None,
                       "rows": self._scan.rows_sha256, "streamed_images": self._streamed_images_digest(),
                       "preprocess": self.preprocess.spec if spec.image else None}, length=32)

    @property
    def size(self) -> int:
        return self._scan.size

    def label_for(self, index: int) -> int | None:
        labels = self._scan.labels
        return None if labels is None else int(labels[index % self.size])

    def prompt_for(self, index: int) -> str | None:
        if self._scan.prompts is not None:
            return self._scan.prompts[index % self.size]
        label = self.label_for(index)
        return imagenet_labels().prompt(label) if label is not None and self.spec.classes == 1000 else None

    def image_labels(self) -> np.ndarray | None:
        return self._scan.labels

    def manifest_record(self) -> dict[str, Any]:
        """What ``harness dataset hf:...`` prints: where, which revision and columns, how many rows, the digest."""
        spec, scan = self.spec, self._scan
        split = getattr(self.data, "split", None) or spec.split
        record = {"dataset": self.id, "source": spec.source, "kind": self.kind, "revision": spec.revision,
                  "config": spec.config, "split": None if split is None else str(split),
                  "columns": {"image": spec.image, "label": spec.label, "prompt": spec.prompt},
                  "streaming": self.streaming, "rows": scan.size, "digest": self.digest,
                  "preprocess": self.preprocess.name if spec.image else None}
        if scan.labels is not None:
            histogram = Counter(scan.labels.tolist())
            record |= {"classes_present": len(histogram), "class_histogram": dict(sorted(histogram.items()))}
        return record

    # ----------------------------------------------------------------------------------------- images
    def _check_images(self, n: int) -> None:
        if not self.spec.image:
            raise ProtocolError(f"{self.where}no image column (image=none): prompts/labels only; drop "
                                f"reference-based metrics (fid) for it")
        if n > self.size:
            raise ProtocolError(f"{self.where}reference_n={n} exceeds the {self.size} rows of its split")

    def _decode(self, records: list[Any], first: int) -> list[np.ndarray]:
        def one(item: tuple[int, Any]) -> np.ndarray:
            row, record = item
            where = f"{self.where}row {row}"
            try:
                source = io.BytesIO(record["bytes"]) if record.get("bytes") is not None else record["path"]
                with Image.open(source) as image:
                    return self.preprocess.apply(to_rgb_image(image, where)[0])
            except (OSError, ValueError, TypeError) as err:
                raise HarnessError(f"{where}: cannot decode image: {err}") from err

        images = thread_map(one, list(enumerate(records, start=first)))
        for row, image in enumerate(images, start=first):  # only "native" keeps sizes, which must then agree
            if image.shape != images[0].shape:
                raise HarnessError(f"{self.where}row {row}: image is {image.shape[1]}x{image.shape[0]}, row {first} "
                                   f"{images[0].shape[1]}x{images[0].shape[0]}; preprocess=native needs one size "
                                   f"(or use squash-bicubic-256 / adm-center-crop-256)")
        return images

    @cached_property
    def _raw_images(self) -> Any:
        import datasets

        return self.data.select_columns([self.spec.image]).cast_column(self.spec.image, datasets.Image(decode=False))

    def load_reference(self, indices: Sequence[int]) -> np.ndarray:
        if self.streaming:
            return super().load_reference(indices)
        self._check_images(max(indices, default=0) + 1)
        records = self._raw_images[[int(i) for i in indices]][self.spec.image]
        images = [self._decode([r], int(i))[0] for r, i in zip(records, indices, strict=True)]
        if len({image.shape for image in images}) > 1:
            raise HarnessError(f"{self.where}rows {list(indices)} differ in size; preprocess=native needs one size")
        return np.stack(images)

    def reference_images(self, n: int, batch_size: int = 256, start: int = 0) -> Iterator[np.ndarray]:
        self._check_images(n)
        if not self.streaming:  # memory-mapped: each batch reads only its rows
            for first in range(start, n, batch_size):
                yield np.stack(self._decode(self._raw_images[first:min(first + batch_size, n)][self.spec.image], first))
            return
        batch, first = [], start  # streamed: read rows start..n-1 only, in order
        for row in self._raw_images.skip(start).take(n - start):
            batch.append(row[self.spec.image])
            if len(batch) == batch_size:
                yield np.stack(self._decode(batch, first))
                batch, first = [], first + batch_size
        if batch:
            yield np.stack(self._decode(batch, first))


def _stat(path: str) -> tuple[int, int]:
    stat = Path(path).stat()
    return stat.st_size, stat.st_mtime_ns


def _data_files(spec: HubSpec, where: str) -> list[str]:
    """The local data files behind the spec's split (for the streamed content digest)."""
    import datasets

    files = datasets.load_dataset_builder(spec.source, spec.config).config.data_files or {}
    split = spec.split or (next(iter(files)) if len(files) == 1 else None)
    if split not in files:
        raise HarnessError(f"{where}no data files for split {split!r}; available: {', '.join(files)}")
    return [str(f) for f in files[split]]


_CLASSES: dict[str, type[HubDataset]] = {}


@register_dataset_spec("hf:")
def hub_dataset_class(name: str | dict, where: str = "") -> type[HubDataset]:
    """The dataset class of a spec (either form), made once per canonical id. Not in the registry's listing:
    specs are open-ended, resolved by ``dataset_class`` when a name starts with ``hf:``."""
    spec = parse_spec(name, where)
    if spec.id not in _CLASSES:
        attrs = {"id": spec.id, "spec": spec, "num_classes": spec.classes if spec.label else None,
                 "provides": spec.provides(), "__doc__": f"🤗 dataset {spec.id}"}
        _CLASSES[spec.id] = type(f"HubDataset[{spec.id}]", (HubDataset,), attrs)
    return _CLASSES[spec.id]
