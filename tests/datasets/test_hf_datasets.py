"""Datasets through 🤗 datasets (harness/datasets/hf_hub.py, hf_spec.py), on sources built here in tmp dirs:
a dataset repository in the hub layout (parquet shards + README card), an ``imagefolder`` and a ``save_to_disk``
output. Nothing downloads: tests/conftest.py sets HF_HUB_OFFLINE / HF_DATASETS_OFFLINE and a private HF_HOME."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from harness.datasets import DataMissingError, dataset_class, get_dataset, plan_dataset
from harness.datasets.hf_spec import parse_spec
from harness.errors import HarnessError, ProtocolError
from harness.plan.protocol import protocol_from_dict
from tests.support.conformance_plugins import DatasetConformance

WNIDS = ("n01440764", "n02012849", "n03126707")  # ImageNet ids 0 (tench), 134 (crane bird), 517 (crane machine)
LABELS = (0, 134, 517, 0, 134)  # the rows' classes
ORDER = {"imagefolder": (0, 3, 1, 4, 2)}  # the library lists an imagefolder by path: class folder by class folder
SHA = "0123456789abcdef0123456789abcdef01234567"


def _pixels(row: int, tweak: bool = False) -> np.ndarray:
    pixels = np.random.default_rng(row).integers(0, 256, (24 + 4 * (row % 2), 32, 3), dtype=np.uint8)
    if tweak and row == 0:
        pixels[0, 0, 0] ^= 1  # one pixel of one image: another PNG
    return pixels


def _png(row: int, tweak: bool = False) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_pixels(row, tweak)).save(buffer, format="PNG")
    return buffer.getvalue()


def _table(tweak: bool = False) -> Any:
    import datasets

    features = datasets.Features({"jpeg": datasets.Image(), "cls": datasets.Value("int64"),
                                  "txt": datasets.Value("string")})
    rows = range(len(LABELS))
    prompts = [f"a photo, row {r}" + (" (edited)" if tweak and r == 0 else "") for r in rows]
    return datasets.Dataset.from_dict({"jpeg": [{"bytes": _png(r, tweak), "path": None} for r in rows],
                                       "cls": list(LABELS), "txt": prompts}, features=features)


CARD = """---
configs:
- config_name: default
  data_files:
  - split: test
    path: data/test-*.parquet
---
# A tiny dataset repository in the hub layout
"""


def _repository(root: Path, tweak: bool = False) -> None:
    """Two parquet shards under data/ and a README card naming them as the split 'test'. ``tweak``: one pixel of
    row 0's image and its prompt changed."""
    table = _table(tweak)
    (root / "data").mkdir(parents=True, exist_ok=True)
    for k in range(2):
        table.shard(2, k, contiguous=True).to_parquet(str(root / "data" / f"test-0000{k}-of-00002.parquet"))
    (root / "README.md").write_text(CARD)


def _imagefolder(root: Path, tweak: bool = False) -> None:
    """<wnid>/<file>.png class folders: the library's ClassLabel names are wnids, mapped to ImageNet ids."""
    for row, label in enumerate(LABELS):
        path = root / WNIDS[(0, 134, 517).index(label)] / f"img{row}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_png(row, tweak))


def _saved(root: Path, tweak: bool = False) -> None:
    staging = root.with_name(root.name + ".tmp")
    _table(tweak).save_to_disk(str(staging))
    shutil.rmtree(root, ignore_errors=True)
    staging.replace(root)


# kind -> (builder, the reference-set options, the prompt-set options)
KINDS: dict[str, tuple[Callable[..., None], str, str]] = {
    "repository": (_repository, "image=jpeg&label=cls", "image=none&label=none&prompt=txt"),
    "imagefolder": (_imagefolder, "", "image=none"),  # prompts: the ImageNet class prompt of each label
    "save_to_disk": (_saved, "image=jpeg&label=cls", "image=none&label=none&prompt=txt"),
}


def _spec(root: Path, options: str, revision: str = "") -> str:
    return f"hf:{root}{'@' + revision if revision else ''}{'?' + options if options else ''}"


@pytest.fixture(params=sorted(KINDS))
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.mark.parametrize("role", ["reference", "prompts"])
def test_loads_as_reference_and_prompt_set(tmp_path: Path, kind: str, role: str) -> None:
    build, reference, prompts = KINDS[kind]
    build(tmp_path / "src")
    ds = get_dataset(_spec(tmp_path / "src", reference if role == "reference" else prompts))
    order = ORDER.get(kind, range(len(LABELS)))
    labels = [LABELS[row] for row in order]
    assert ds.size == len(LABELS)
    if role == "reference":
        assert ds.provided() == ("labels", "prompts", "images") and ds.num_classes == 1000
        assert [ds.label_for(i) for i in range(6)] == [*labels, labels[0]]  # wraps after the reference set
        assert ds.image_labels().tolist() == labels
        assert ds.prompt_for(labels.index(134)) == "a photo of a crane bird"
        batches = list(ds.reference_images(5, batch_size=3))
        assert [b.shape for b in batches] == [(3, 256, 256, 3), (2, 256, 256, 3)] and batches[0].dtype == np.uint8
        expected = np.asarray(Image.fromarray(_pixels(order[3])).resize((256, 256), Image.Resampling.BICUBIC))
        assert np.array_equal(batches[1][0], expected)  # row order kept, the paper's squash preprocessing
        assert ds.manifest_record()["class_histogram"] == {0: 2, 134: 2, 517: 1}
        return
    assert "images" not in ds.provided() and "prompts" in ds.provided()
    text = [ds.prompt_for(i) for i in range(len(LABELS))]
    names = {0: "tench", 134: "crane bird", 517: "construction crane"}
    assert text == ([f"a photo, row {r}" for r in range(5)] if kind != "imagefolder" else
                    [f"a photo of a {names[label]}" for label in labels])
    with pytest.raises(ProtocolError, match="no image column"):
        next(iter(ds.reference_images(1)))


def test_imagefolder_captions_as_prompt_set(tmp_path: Path) -> None:
    """An imagefolder with a metadata.csv: the library gives (image, text); a text-to-image reference set."""
    _imagefolder(tmp_path / "src")
    lines = [f"{WNIDS[(0, 134, 517).index(label)]}/img{row}.png,caption {row}" for row, label in enumerate(LABELS)]
    (tmp_path / "src" / "metadata.csv").write_text("file_name,text\n" + "\n".join(lines) + "\n")
    ds = get_dataset(_spec(tmp_path / "src", "label=none&prompt=text"))
    assert ds.provided() == ("prompts", "images") and ds.num_classes is None
    assert sorted(ds.prompt_for(i) for i in range(5)) == [f"caption {r}" for r in range(5)]
    assert next(iter(ds.reference_images(2))).shape == (2, 256, 256, 3)


def test_digest_follows_revision_and_bytes_not_folder_name(tmp_path: Path, kind: str) -> None:
    build, options, _ = KINDS[kind]
    build(tmp_path / "a")
    base = get_dataset(_spec(tmp_path / "a", options, "v1")).digest
    assert get_dataset(_spec(tmp_path / "a", options, "v2")).digest != base  # the revision is recorded
    shutil.copytree(tmp_path / "a", tmp_path / "renamed")
    assert get_dataset(_spec(tmp_path / "renamed", options, "v1")).digest == base  # content, not names
    build(tmp_path / "b")
    build(tmp_path / "b", tweak=True)  # one image byte changed in place
    assert get_dataset(_spec(tmp_path / "b", options, "v1")).digest != base


def test_streaming_reads_the_same_rows(tmp_path: Path) -> None:
    """streaming: true gives the same conditions and images (start honoured) as the memory-mapped read."""
    _repository(tmp_path / "src")
    mapped = get_dataset(_spec(tmp_path / "src", "image=jpeg&label=cls"))
    streamed = get_dataset(_spec(tmp_path / "src", "image=jpeg&label=cls&streaming=true"))
    assert streamed.streaming and streamed.size == mapped.size and streamed.digest != mapped.digest
    assert [streamed.label_for(i) for i in range(5)] == [mapped.label_for(i) for i in range(5)]
    for start in (0, 2):
        assert np.array_equal(np.concatenate(list(streamed.reference_images(5, 2, start))),
                              np.concatenate(list(mapped.reference_images(5, 2, start))))
    before = streamed.digest
    _repository(tmp_path / "src", tweak=True)  # the images' content digest is the shards' sha256
    assert get_dataset(_spec(tmp_path / "src", "image=jpeg&label=cls&streaming=true")).digest != before


@pytest.mark.parametrize("options, expected", [
    ("image=img&label=cls", r"image column 'img' not found; available columns: jpeg, cls, txt"),
    ("image=jpeg&label=klass", r"label column 'klass' not found; available columns: jpeg, cls, txt"),
    ("image=jpeg&label=cls&prompt=caption", r"prompt column 'caption' not found; available columns: jpeg, cls, txt"),
    ("image=txt&label=cls", r"image column 'txt' is .*string.*; expected an Image feature"),
    ("image=jpeg&label=txt", r"label column 'txt' is .*; expected a ClassLabel or integer column"),
    ("image=jpeg&label=cls&split=train", r"Unknown split \"train\". Should be one of \['test'\]"),
    ("image=jpeg&label=cls&classes=100", r"row 1: label 134 is missing or outside 0..99"),
])
def test_column_mapping_errors_name_the_column(tmp_path: Path, options: str, expected: str) -> None:
    _repository(tmp_path / "src")
    with pytest.raises(HarnessError, match=expected):
        _ = get_dataset(_spec(tmp_path / "src", options)).digest


def test_imagefolder_of_non_imagenet_classes(tmp_path: Path) -> None:
    """Folder names that are not ImageNet classes are refused under the default 1000 ImageNet ids (each id would
    silently mean another class); with classes=K they are the dataset's own ids, and carry no class prompt."""
    for k, name in enumerate(("cat", "dog")):
        (tmp_path / "src" / name).mkdir(parents=True)
        (tmp_path / "src" / name / "0.png").write_bytes(_png(k))
    with pytest.raises(HarnessError, match=r"'label' is a ClassLabel of 2 names .*folder 'cat' matches no .*classes=2"):
        _ = get_dataset(_spec(tmp_path / "src", "")).digest
    ds = get_dataset(_spec(tmp_path / "src", "classes=2"))
    assert ds.num_classes == 2 and ds.image_labels().tolist() == [0, 1] and ds.provided() == ("labels", "images")


def test_spec_forms_and_refusals(tmp_path: Path) -> None:
    mapping = {"hf": "vaishaal/ImageNetV2", "revision": SHA, "split": "train", "image": "jpeg", "label": "cls"}
    shorthand = f"hf:vaishaal/ImageNetV2@{SHA}?label=cls&split=train&image=jpeg"
    canonical = f"hf:vaishaal/ImageNetV2@{SHA}?split=train&image=jpeg&label=cls"
    assert parse_spec(mapping).id == parse_spec(shorthand).id == canonical
    with pytest.raises(ProtocolError, match=r"'vaishaal/ImageNetV2' has no revision; pin it .*ImageNetV2@<sha>"):
        dataset_class("hf:vaishaal/ImageNetV2")
    with pytest.raises(ProtocolError, match=r"revision 'main' is not a commit sha"):
        parse_spec({"hf": "vaishaal/ImageNetV2", "revision": "main"})
    with pytest.raises(ProtocolError, match=r"unknown key 'lable'.*did you mean 'label'"):
        parse_spec({**mapping, "lable": "cls"})
    with pytest.raises(ProtocolError, match=r"unknown option 'colums'"):
        parse_spec(f"hf:{tmp_path}?colums=x")
    with pytest.raises(ProtocolError, match=r"'streaming' has value 'yes'; expected true or false"):
        parse_spec({"hf": str(tmp_path), "streaming": "yes"})
    with pytest.raises(ProtocolError, match=r"'revision' has value 83; .*YAML read it as a number: quote it"):
        parse_spec({"hf": str(tmp_path), "revision": 0o123})  # `revision: 0123` in YAML 1.1 is octal 83
    with pytest.raises(ProtocolError, match=r"no column is used"):
        parse_spec(f"hf:{tmp_path}?image=none&label=none")


def test_hub_id_not_in_cache_plans_provisional_and_names_the_fetch(no_data: None) -> None:
    """Offline and not cached: planning goes on (provisional), and the message names the id and how to fetch it."""
    dataset, ref = plan_dataset(f"hf:vaishaal/ImageNetV2@{SHA}?image=jpeg&label=cls")
    assert dataset is None and ref.provisional and ref.num_classes == 1000
    assert ref.provides == ("labels", "prompts", "images")
    assert f"vaishaal/ImageNetV2@{SHA} is not in the local" in ref.missing
    assert f"datasets.load_dataset('vaishaal/ImageNetV2', revision='{SHA}')" in ref.missing
    with pytest.raises(DataMissingError, match="name it as hf:DIR"):
        get_dataset(f"hf:harvardairobotics/reLAIONet@{SHA}")
    dataset, ref = plan_dataset("hf:/nonexistent/folder")  # a local folder that is not here: the same
    assert dataset is None and "/nonexistent/folder is not a folder" in ref.missing


def test_save_to_disk_refuses_a_config(tmp_path: Path) -> None:
    _saved(tmp_path / "src")
    with pytest.raises(HarnessError, match=r"config 'x': a save_to_disk folder has no configurations"):
        get_dataset(_spec(tmp_path / "src", "config=x&image=jpeg&label=cls"))


def test_protocol_datasets_accept_both_forms(tmp_path: Path) -> None:
    _repository(tmp_path / "src")
    raw = {"name": "hf", "models": [{"card": "fm-mnist"}], "steps": [1], "n": 4,
           "datasets": [{"hf": str(tmp_path / "src"), "image": "jpeg", "label": "cls", "revision": "v1"},
                        f"hf:{tmp_path / 'src'}@v1?image=jpeg&label=cls", "mnist-5k"]}
    protocol = protocol_from_dict(raw, "p.yaml")
    canonical = f"hf:{tmp_path / 'src'}@v1?image=jpeg&label=cls"
    assert protocol.datasets == (canonical, canonical, "mnist-5k")
    with pytest.raises(ProtocolError, match=r"p.yaml: datasets\[0\]: unknown key 'colour'"):
        protocol_from_dict({**raw, "datasets": [{"hf": str(tmp_path), "colour": "red"}]}, "p.yaml")


# ------------------------------------------------------------------------------- the dataset conformance suite
CONFORMANCE = {  # case -> (builder, options); the prompt-only and streamed reads included
    **{kind: (build, options) for kind, (build, options, _) in KINDS.items()},
    "repository-prompts": (_repository, KINDS["repository"][2]),
    "repository-streaming": (_repository, "image=jpeg&label=cls&streaming=true"),
}


@pytest.fixture(params=sorted(CONFORMANCE))
def hub_case(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Callable[[], Any], dict[str, Callable[[], None]]]:
    build, options = CONFORMANCE[request.param]
    root = tmp_path / "src"
    build(root)
    what = "row 0's prompt edited" if "prompt" in request.param else "one image byte changed"
    return (lambda: get_dataset(_spec(root, options))), {what: lambda: build(root, tweak=True)}


@pytest.fixture
def make(hub_case: tuple[Callable[[], Any], Any]) -> Callable[[], Any]:
    return hub_case[0]


@pytest.fixture
def changes(hub_case: tuple[Any, dict[str, Callable[[], None]]]) -> dict[str, Callable[[], None]]:
    return hub_case[1]


@pytest.fixture
def small_n() -> int:
    return len(LABELS)


class TestHubDatasetConformance(DatasetConformance):
    pass


def test_native_preprocess_keeps_size_and_refuses_mixed_sizes(tmp_path: Path) -> None:
    """preprocess=native: images at their own size (28x28 digits stay 28x28); a batch of two sizes is refused."""
    _repository(tmp_path / "src")
    ds = get_dataset(_spec(tmp_path / "src", "image=jpeg&label=cls&preprocess=native"))
    assert np.array_equal(next(iter(ds.reference_images(1)))[0], _pixels(0))
    assert ds.digest != get_dataset(_spec(tmp_path / "src", "image=jpeg&label=cls")).digest
    with pytest.raises(HarnessError, match=r"row 1: image is 32x28, row 0 32x24; preprocess=native needs one size"):
        next(iter(ds.reference_images(2)))


def test_datasets_library_is_pinned_for_a_fresh_clone() -> None:
    """`make venv` installs requirements.txt under requirements.lock: both pin the version this code is tested on."""
    from importlib.metadata import version

    repo = Path(__file__).resolve().parents[2]
    pins = [next((line.split("==")[1].split()[0] for line in (repo / name).read_text().splitlines()
                  if line.startswith("datasets==")), None) for name in ("requirements.txt", "requirements.lock")]
    assert pins == [version("datasets")] * 2, pins
    assert "datasets" in (repo / "pyproject.toml").read_text()


def test_scan_reused_from_the_harness_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process (here: the in-process memo cleared) reads the scan back instead of hashing every image."""
    from harness.datasets import hf_hub

    _repository(tmp_path / "src")
    spec = _spec(tmp_path / "src", "image=jpeg&label=cls")
    first = get_dataset(spec).digest
    monkeypatch.setattr(hf_hub, "_SCANS", {})
    monkeypatch.setattr(hf_hub, "_scan", lambda *a: pytest.fail("rescanned although the scan is cached"))
    assert get_dataset(spec).digest == first


def test_hub_id_served_from_the_cache_only_at_its_pinned_revision(tmp_path: Path) -> None:
    """A hub dataset the library prepared earlier (its cache folder is named by the commit) loads offline at that
    commit. Offline, the library hands back the latest cached revision whatever revision is asked for (checked
    here): another pinned commit must be refused as missing, not scored on the cached one's rows."""
    import datasets

    _repository(tmp_path / "src")
    prepared = Path(datasets.load_dataset(str(tmp_path / "src"), split="test").cache_files[0]["filename"]).parent
    hub = Path(datasets.config.HF_DATASETS_CACHE) / "onestep___tiny" / "default" / "0.0.0" / SHA
    shutil.copytree(prepared, hub)
    for arrow in hub.glob("*.arrow"):
        arrow.rename(arrow.with_name("tiny-" + arrow.name.split("-", 1)[1]))
    ds = get_dataset(f"hf:onestep/tiny@{SHA}?split=test&image=jpeg&label=cls")
    assert ds.size == 5 and ds.image_labels().tolist() == list(LABELS) and ds.manifest_record()["revision"] == SHA
    assert ds.digest == get_dataset(_spec(tmp_path / "src", "image=jpeg&label=cls", SHA)).digest  # same rows
    other = "f" * 40
    assert datasets.load_dataset("onestep/tiny", split="test", revision=other).cache_files  # the library's answer
    with pytest.raises(DataMissingError, match=rf"holds onestep/tiny at {SHA}, not at the pinned revision {other}"):
        get_dataset(f"hf:onestep/tiny@{other}?split=test&image=jpeg&label=cls")


def test_plan_cells_on_an_hf_dataset(tmp_path: Path) -> None:
    """A protocol naming a local hf: set plans cells keyed by its canonical id and content digest; what the
    spec declares (classes) drives the model x dataset refusals as for the registered datasets."""
    import datasets

    from harness.plan.protocol import make_plan

    digits = datasets.Dataset.from_dict(
        {"image": [{"bytes": _png(r), "path": None} for r in range(10)], "digit": list(range(10))},
        features=datasets.Features({"image": datasets.Image(), "digit": datasets.Value("int64")}))
    digits.save_to_disk(str(tmp_path / "digits"))
    entry = {"hf": str(tmp_path / "digits"), "label": "digit", "classes": 10, "preprocess": "native"}
    raw = {"name": "hf", "models": [{"card": "fm-mnist", "cfg": [1.0]}], "steps": [1], "n": 10,
           "metrics": ["class_alignment"], "datasets": [entry]}
    plan = make_plan(protocol_from_dict(raw, "p.yaml"))
    (cell,) = plan.cells
    ds = get_dataset(cell.dataset.id)
    assert cell.dataset.id == f"hf:{tmp_path / 'digits'}?label=digit&classes=10&preprocess=native"
    assert cell.dataset.digest == ds.digest and not cell.provisional and cell.dataset.num_classes == 10
    with pytest.raises(ProtocolError, match="1000"):  # the same rows declared as ImageNet ids: a 10-class model
        make_plan(protocol_from_dict({**raw, "datasets": [{**entry, "classes": 1000}]}, "p.yaml"))
