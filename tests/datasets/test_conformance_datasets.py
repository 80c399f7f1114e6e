"""Every registered dataset through the dataset conformance suite (tests/conformance_plugins.py).

Datasets whose files are on this machine (the packaged MNIST sets) are used as they are; folder and prompt-file
datasets run on tiny folders/files written here, chosen by the layout class the dataset is built on (its class
names, so a new dataset on an existing layout is covered with no edit). A dataset with neither skips, saying so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from harness.datasets import available_datasets, dataset_class, plan_dataset
from tests.support.conformance_plugins import DatasetConformance


def _image(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


Changes = dict[str, Callable[[], None]]
Builder = Callable[[Path], tuple[Path, Changes]]


def _replace_image(path: Path) -> None:
    """Another image (other pixels and byte size) under the same name, written then renamed over the old one as
    atomic writers do. An in-place overwrite leaves the folder's mtime, which keys the per-process scan cache of
    the folder datasets: only a new process sees it."""
    fresh = path.with_name(f"new-{path.name}")
    _image(fresh, seed=98, size=(50, 50))
    fresh.replace(path)


def _class_folders(names: tuple[str, ...], suffix: str) -> Builder:
    """Class folders named ``names`` holding 3, 2, 1 images (unequal classes; two sizes, so resizing shows)."""
    def build(root: Path) -> tuple[Path, Changes]:
        for c, name in enumerate(names):
            for k in range(3 - c):
                _image(root / name / f"{name}_{k}{suffix}", seed=10 * c + k, size=(40, 30) if k else (24, 24))
        first = root / names[0] / f"{names[0]}_0{suffix}"
        return root, {"a reference image replaced": lambda: _replace_image(first),
                      "a reference image added": lambda: _image(root / names[-1] / f"new{suffix}", seed=99)}
    return build


def _prompt_table(suffix: str) -> Builder:
    def build(root: Path) -> tuple[Path, Changes]:
        sep = "\t" if suffix == ".tsv" else ","
        path = root / f"prompts{suffix}"
        root.mkdir(parents=True)
        rows = [f"a {c} cube{sep}{cat}" for c, cat in (("red", "colours"), ("blue", "colours"), ("big", "sizes"))]
        path.write_text("\n".join([f"Prompt{sep}Category", *rows]) + "\n")
        return path, {"a prompt added": lambda: path.write_text(path.read_text() + f"a green cube{sep}colours\n")}
    return build


def _coco(root: Path) -> tuple[Path, Changes]:
    images = [{"id": 100 + k, "file_name": f"COCO_val2014_{100 + k:012d}.jpg"} for k in range(5)]
    annotations = [{"id": 10 + k, "image_id": 100 + k, "caption": f"caption {k}"} for k in range(5)]
    path = root / "annotations" / "captions_val2014.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    for k in range(5):
        _image(root / "val2014" / images[k]["file_name"], seed=k, size=(64, 48))

    def caption() -> None:
        annotations[0]["caption"] = "another caption"
        path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path, {"a caption changed": caption,
                  "a reference image replaced": lambda: _replace_image(root / "val2014" / images[0]["file_name"])}


# layout class name -> builder(empty folder) -> (what the dataset class is opened on, a change of its content)
BUILDERS: dict[str, Builder] = {
    "SynsetFolders": _class_folders(("n01440764", "n02012849", "n03126707"), ".JPEG"),
    "IndexFolders": _class_folders(("0", "7", "999"), ".png"),
    "NamedFolders": _class_folders(("great_white_shark", "n02012849", "construction crane"), ".png"),
    "Coco2014Captions": _coco,
}


def _builder(cls: type) -> Builder | None:
    for base in cls.__mro__:
        if base.__name__ == "PromptTable":  # the sheet's format follows the dataset's default file name
            return _prompt_table(Path(cls.DEFAULT_SUBPATH).suffix or ".tsv")
        if base.__name__ in BUILDERS:
            return BUILDERS[base.__name__]
    return None


def _open(name: str, folder: Path) -> tuple[Callable[[], Any], Changes] | None:
    """(a fresh instance per call, {what: a change of its content}): the files on this machine, else tiny ones
    written under ``folder``; None when there are neither."""
    present, _ = plan_dataset(name)
    if present is not None:  # its files are here (a pinned wheel): content cannot change under the test
        return lambda: dataset_class(name)(), {}
    cls = dataset_class(name)
    build = _builder(cls)
    if build is None:
        return None
    where, changes = build(folder)
    return lambda: cls(where), changes


@pytest.fixture(params=available_datasets())
def dataset_case(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Callable[[], Any], Any]:
    opened = _open(request.param, tmp_path / "data")
    if opened is None:
        pytest.skip(f"dataset {request.param!r}: no files on this machine and no tiny builder for its layout")
    return opened


@pytest.fixture
def make(dataset_case: tuple[Callable[[], Any], Any]) -> Callable[[], Any]:
    return dataset_case[0]


# Known gaps, each a strict xfail of the digest test until fixed (a fix changes the dataset's cell ids).
DIGEST_GAPS: dict[str, str] = {}


@pytest.fixture
def changes(dataset_case: tuple[Callable[[], Any], Changes], request: pytest.FixtureRequest) -> Changes:
    name = request.node.callspec.params["dataset_case"]
    if name in DIGEST_GAPS:
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=DIGEST_GAPS[name]))
    return dataset_case[1]


@pytest.fixture
def small_n(make: Callable[[], Any]) -> int:
    return min(make().size, 5)


class TestDatasetConformance(DatasetConformance):
    pass


def test_registered_datasets_never_share_a_digest(tmp_path: Path) -> None:
    """Distinct datasets (another split, layout, preprocessing or selection rule), each here over the same tiny
    files as the others of its layout, must not share a digest: one's cached reference statistics would be
    reused for the other."""
    built: dict[Any, Path] = {}  # builder -> what it made (datasets of one layout share the files)
    digests: dict[str, str] = {}
    for name in available_datasets():
        present, _ = plan_dataset(name)
        build = _builder(dataset_class(name))
        if present is None and build is not None:
            if build not in built:
                built[build] = build(tmp_path / str(len(built)))[0]
            present = dataset_class(name)(built[build])
        if present is not None:
            digests[name] = present.digest
    owners: dict[str, list[str]] = {}
    for name, value in digests.items():
        owners.setdefault(value, []).append(name)
    assert len(digests) >= 4 and all(len(names) == 1 for names in owners.values()), owners


def test_every_registered_dataset_is_exercised() -> None:
    """Present here or built tiny: a dataset on a new layout (or a renamed layout class) must get a builder above
    rather than have the whole suite skip it."""
    uncovered = [name for name in available_datasets()
                 if plan_dataset(name)[0] is None and _builder(dataset_class(name)) is None]
    assert not uncovered, f"no files and no tiny builder for {uncovered}: add one to BUILDERS"
