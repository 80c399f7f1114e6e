"""Prompt datasets from files the user has: COCO-2014 30k captions, PartiPrompts, DrawBench.

None of these ships in a package, so each is read from the user's file, found as
``$HARNESS_DATASET_<ID>`` or ``$HARNESS_DATA/<default sub-path>``. The digest is the file's sha256 plus the
selection rule, so an edited file never reuses cached statistics or scores.

- ``coco2014-30k``: ``captions_val2014.json``. One caption per image (the lowest annotation id), images by
  id, then a numpy ``default_rng(0)`` permutation, first 30,000. Reference images (for FID) come from the
  ``val2014/`` folder next to the json's ``annotations/`` folder, ADM centre-cropped to 256; the digest also covers
  (file name, byte size) of every selected image there (the folder datasets' rule: hashing 30k JPEGs per plan is
  not affordable), so replaced reference images never reuse cached reference statistics.
- ``partiprompts`` / ``drawbench``: a .tsv or .csv with a prompt column (``Prompt`` in PartiPrompts.tsv,
  ``Prompts`` in the DrawBench sheet) and an optional ``Category`` column. Text only: no reference images.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from harness.datasets.base import Dataset, dataset_root, register_dataset
from harness.datasets.preprocess import get_preprocess
from harness.errors import HarnessError, ProtocolError
from harness.hashing import digest, sha256_file
from harness.images import to_rgb_image
from harness.parallel import thread_map

PROMPT_COLUMNS = ("Prompt", "Prompts", "prompt", "prompts", "text", "caption")


class PromptDataset(Dataset):
    num_classes = None
    provides = ("prompts",)
    DEFAULT_SUBPATH: ClassVar[str] = ""
    RULE: ClassVar[str] = ""  # how samples are selected from the file; part of the digest

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else dataset_root(self.id, self.DEFAULT_SUBPATH)
        if not self.path.is_file():
            raise HarnessError(f"dataset {self.id!r}: {self.path} is not a file")

    @cached_property
    def _entries(self) -> tuple[list[str], list[str]]:
        """(prompts, categories) in sample order."""
        raise NotImplementedError

    @property
    def prompts(self) -> list[str]:
        return self._entries[0]

    @property
    def digest(self) -> str:
        return digest({"dataset": self.id, "file_sha256": sha256_file(self.path), "rule": self.RULE}, length=32)

    @property
    def size(self) -> int:
        return len(self.prompts)

    def prompt_for(self, index: int) -> str:
        return self.prompts[index % self.size]

    def manifest_record(self) -> dict[str, Any]:
        return {"dataset": self.id, "file": str(self.path), "prompts": self.size, "digest": self.digest,
                "category_histogram": dict(sorted(Counter(self._entries[1]).items()))}

    def reference_images(self, n: int, batch_size: int = 256, start: int = 0) -> Iterator[np.ndarray]:
        raise ProtocolError(f"dataset {self.id!r} is prompts only and has no reference images; "
                            f"drop reference-based metrics (fid) for it")


class PromptTable(PromptDataset):
    """A .tsv/.csv prompt sheet: one prompt per row from the first of PROMPT_COLUMNS, Category if present."""

    RULE = "every row in file order; prompt column = first of " + ",".join(PROMPT_COLUMNS)

    @cached_property
    def _entries(self) -> tuple[list[str], list[str]]:
        delimiter = "\t" if self.path.suffix.lower() == ".tsv" else ","
        with open(self.path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            columns = reader.fieldnames or []
            column = next((c for c in PROMPT_COLUMNS if c in columns), None)
            if column is None:
                raise HarnessError(f"dataset {self.id!r}: {self.path}: no prompt column; expected one of "
                                   f"{', '.join(PROMPT_COLUMNS)}, found {columns}")
            prompts, categories = [], []
            for line, row in enumerate(reader, start=2):
                text = (row.get(column) or "").strip()
                if not text:
                    raise HarnessError(f"dataset {self.id!r}: {self.path}:{line}: empty {column!r}")
                prompts.append(text)
                categories.append((row.get("Category") or "").strip() or "uncategorised")
        if not prompts:
            raise HarnessError(f"dataset {self.id!r}: {self.path}: no prompts")
        return prompts, categories


register_dataset("partiprompts")(type("PartiPrompts", (PromptTable,), {"DEFAULT_SUBPATH": "prompts/PartiPrompts.tsv"}))
register_dataset("drawbench")(type("DrawBench", (PromptTable,), {"DEFAULT_SUBPATH": "prompts/DrawBench.csv"}))


_IMAGE_SIZES: dict[tuple[Any, ...], list[tuple[str, int]]] = {}  # the last listing (see Coco2014Captions)


@register_dataset("coco2014-30k")
class Coco2014Captions(PromptDataset):
    """captions_val2014.json: lowest-id caption per image, images by id, default_rng(0) permutation, first 30000."""

    DEFAULT_SUBPATH = "coco2014/annotations/captions_val2014.json"
    provides = ("prompts", "images")  # reference images from val2014/ beside annotations/
    COUNT = 30_000
    RULE = (f"lowest-id caption per image, images by id, default_rng(0) permutation, first {COUNT}; "
            f"reference {get_preprocess('adm-center-crop-256').spec}")

    @cached_property
    def _selection(self) -> list[tuple[str, str]]:
        """(caption, image file name) of the selected samples, in sample order."""
        where = f"dataset {self.id!r}: {self.path}: "
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            files = {int(im["id"]): str(im["file_name"]) for im in data["images"]}
            first: dict[int, tuple[int, str]] = {}
            for ann in data["annotations"]:
                image_id, ann_id, text = int(ann["image_id"]), int(ann["id"]), str(ann["caption"]).strip()
                if image_id not in files:
                    raise HarnessError(f"{where}annotation {ann_id} refers to image {image_id}, not in 'images'")
                if image_id not in first or ann_id < first[image_id][0]:
                    first[image_id] = (ann_id, text)
        except (ValueError, KeyError, TypeError) as err:
            raise HarnessError(f"{where}expected a COCO captions json with 'images' (id, file_name) and "
                               f"'annotations' (id, image_id, caption): {err!r}") from err
        ids = sorted(first)
        if not ids:
            raise HarnessError(f"{where}no captions")
        order = np.random.default_rng(0).permutation(len(ids))[:self.COUNT]
        return [(first[ids[k]][1], files[ids[k]]) for k in order]

    @cached_property
    def _entries(self) -> tuple[list[str], list[str]]:
        return [caption for caption, _ in self._selection], ["coco-caption"] * len(self._selection)

    @property
    def image_dir(self) -> Path:
        return self.path.parent.parent / "val2014"

    @property
    def digest(self) -> str:
        return digest({"captions": super().digest, "images": self._image_sizes()}, length=32)

    def _image_sizes(self) -> list[tuple[str, int]] | None:
        """(file name, byte size; -1 if missing) of the selected reference images, None without ``val2014/``.
        Listed once per process while the folder and the json are unchanged (a replace-by-rename, as atomic
        writers do, changes the folder's mtime)."""
        try:
            key = (str(self.image_dir), self.image_dir.stat().st_mtime_ns, str(self.path), self.path.stat().st_mtime_ns)
        except OSError:
            return None
        if key not in _IMAGE_SIZES:
            def size(name: str) -> int:
                try:
                    return (self.image_dir / name).stat().st_size
                except OSError:
                    return -1
            _IMAGE_SIZES.clear()
            _IMAGE_SIZES[key] = [(name, size(name)) for _, name in self._selection]
        return _IMAGE_SIZES[key]

    def reference_images(self, n: int, batch_size: int = 256, start: int = 0) -> Iterator[np.ndarray]:
        if n > self.size:
            raise ProtocolError(f"dataset {self.id!r}: reference_n={n} exceeds its {self.size} captions")
        if not self.image_dir.is_dir():
            raise HarnessError(f"dataset {self.id!r}: reference images expected in {self.image_dir} (COCO val2014)")
        preprocess = get_preprocess("adm-center-crop-256")

        def load(name: str) -> np.ndarray:
            path = self.image_dir / name
            if not path.is_file():
                raise HarnessError(f"dataset {self.id!r}: {path}: image listed in {self.path} is missing")
            with Image.open(path) as image:
                return preprocess.apply(to_rgb_image(image, f"dataset {self.id!r}: {path}")[0])

        for first in range(start, n, batch_size):
            yield np.stack(thread_map(load, [name for _, name in self._selection[first:min(first + batch_size, n)]]))
