"""ImageNet-label folder datasets built from small synthetic folders (PIL-written JPEG/PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.datasets import get_dataset
from harness.datasets.folders import open_image_folder
from harness.datasets.preprocess import adm_center_crop, get_preprocess
from harness.errors import HarnessError
from tests.support.image_files import png16


def _image(path: Path, size=(40, 30), value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _layout(name: str):
    return lambda root: open_image_folder(name, root)


def _imagenet_val(root: Path) -> Path:
    for wnid, count in (("n01440764", 3), ("n02012849", 2), ("n03126707", 1)):  # tench, crane bird, crane (machine)
        for k in range(count):
            _image(root / wnid / f"ILSVRC2012_val_{wnid}_{k}.JPEG", value=k)
    return root


def test_imagenet_val_synset_folders(tmp_path):
    ds = _layout("imagenet-val")(_imagenet_val(tmp_path / "val"))
    assert ds.size == 6
    assert [ds.label_for(i) for i in range(7)] == [0, 0, 0, 134, 134, 517, 0]  # wraps after the reference set
    assert ds.prompt_for(3) == "a photo of a crane bird" and ds.prompt_for(5) == "a photo of a construction crane"
    record = ds.manifest_record()
    assert record["class_histogram"] == {0: 3, 134: 2, 517: 1} and record["files"] == 6
    batches = list(ds.reference_images(6, batch_size=4))
    assert [b.shape for b in batches] == [(4, 256, 256, 3), (2, 256, 256, 3)] and batches[0].dtype == np.uint8


def test_imagenetv2_index_folders(tmp_path):
    root = tmp_path / "v2"
    for label in (0, 7, 999):
        for k in range(2):
            _image(root / str(label) / f"{label}_{k}abcdef.jpeg", value=label + k)
    ds = _layout("imagenetv2-mf")(root)
    assert ds.size == 6 and ds.manifest.histogram() == {0: 2, 7: 2, 999: 2}
    assert ds.label_for(5) == 999
    _image(root / "1000" / "x.jpeg")
    with pytest.raises(HarnessError, match=r"v2/1000: .*label id 0..999, got '1000'"):
        _ = _layout("imagenetv2-mf")(root).manifest


def test_relaionet_names_and_wnids(tmp_path):
    root = tmp_path / "images"
    _image(root / "great_white_shark" / "0.png")
    _image(root / "Tiger-Shark" / "0.png")  # file names repeat across classes in web-scraped sets
    _image(root / "n02012849" / "0.jpg")
    _image(root / "construction crane" / "1.jpg")
    ds = _layout("relaionet")(root)
    assert ds.manifest.histogram() == {2: 1, 3: 1, 134: 1, 517: 1}


def test_relaionet_crane_refused_with_both_candidates(tmp_path):
    _image(tmp_path / "images" / "crane" / "0.png")
    with pytest.raises(HarnessError) as err:
        _ = _layout("relaionet")(tmp_path / "images").manifest
    message = str(err.value)
    assert "images/crane" in message and "134 n02012849 (crane bird)" in message
    assert "517 n03126707 (construction crane)" in message


@pytest.mark.parametrize("make_bad, expected", [
    (lambda r: _image(r / "n99999999" / "a.JPEG"), r"val/n99999999: 'n99999999' is not one of the 1000"),
    (lambda r: _image(r / "flat.JPEG"), r"val/flat.JPEG: image outside a class folder has no label"),
    (lambda r: _image(r / "n01443537" / "ILSVRC2012_val_n01440764_0.JPEG"), r"duplicate file"),
    (lambda r: (r / "n01440764" / "notes.txt").write_text("x"), r"n01440764/notes.txt: expected only image"),
])
def test_imagenet_val_validation_names_the_path(tmp_path, make_bad, expected):
    root = _imagenet_val(tmp_path / "val")
    make_bad(root)
    with pytest.raises(HarnessError, match=expected):
        _ = _layout("imagenet-val")(root).manifest


def test_two_folders_for_one_class_refused(tmp_path):
    _image(tmp_path / "images" / "tench" / "0.png")
    _image(tmp_path / "images" / "n01440764" / "1.png")
    with pytest.raises(HarnessError, match="both hold class 0 n01440764"):
        _ = _layout("relaionet")(tmp_path / "images").manifest


def test_root_from_environment_and_digest(tmp_path, monkeypatch):
    monkeypatch.delenv("HARNESS_DATASET_IMAGENET_VAL", raising=False)
    monkeypatch.delenv("HARNESS_DATA", raising=False)
    with pytest.raises(HarnessError, match="set HARNESS_DATASET_IMAGENET_VAL=/path/to/it or HARNESS_DATA"):
        get_dataset("imagenet-val")
    _imagenet_val(tmp_path / "imagenet" / "val")
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path))
    squash, crop = get_dataset("imagenet-val"), get_dataset("imagenet-val-admcrop")
    assert squash.size == crop.size == 6
    assert squash.digest != crop.digest  # the preprocessing spec is part of the identity
    assert squash.digest == _layout("imagenet-val")(tmp_path / "imagenet" / "val").digest
    _image(tmp_path / "imagenet" / "val" / "n01440764" / "extra.JPEG")
    monkeypatch.setenv("HARNESS_DATASET_IMAGENET_VAL", str(tmp_path / "imagenet" / "val"))
    assert get_dataset("imagenet-val").size == 7  # a changed folder is rescanned, not served stale


def test_preprocess_squash_and_adm_crop():
    rng = np.random.default_rng(0)
    wide = Image.fromarray(rng.integers(0, 256, (300, 700, 3), dtype=np.uint8))
    squash = get_preprocess("squash-bicubic-256").apply(wide)
    assert np.array_equal(squash, np.asarray(wide.resize((256, 256), Image.Resampling.BICUBIC)))
    crop = adm_center_crop(wide, 256)
    # independent recomputation of guided-diffusion's rule for this size: no halving (300 < 512)
    scaled = wide.resize((round(700 * 256 / 300), 256), Image.Resampling.BICUBIC)
    left = (scaled.size[0] - 256) // 2
    assert crop.shape == (256, 256, 3) and np.array_equal(crop, np.asarray(scaled)[:, left:left + 256])
    big = Image.fromarray(rng.integers(0, 256, (1100, 1030, 3), dtype=np.uint8))
    assert adm_center_crop(big, 256).shape == (256, 256, 3)
    gray = Image.fromarray(rng.integers(0, 256, (50, 60), dtype=np.uint8))
    assert get_preprocess("adm-center-crop-256").apply(gray).shape == (256, 256, 3)


def _hf_shards(root: Path, rows_per_shard: list[list[tuple[str, int | None]]]) -> Path:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    (root / "data").mkdir(parents=True)
    for k, rows in enumerate(rows_per_shard):
        images = []
        for name, label in rows:
            buf = io.BytesIO()
            Image.fromarray(np.full((20, 30, 3), (label or 0) % 256, np.uint8)).save(buf, format="JPEG")
            images.append({"bytes": buf.getvalue(), "path": name})
        table = pa.table({"image": pa.array(images, type=image_type), "label": pa.array([r[1] for r in rows])})
        pq.write_table(table, root / "data" / f"validation-{k:05d}-of-{len(rows_per_shard):05d}.parquet",
                       row_group_size=2)
    return root


def test_imagenet_val_hf_parquet_layout(tmp_path):
    shards = [[("a.JPEG", 5), ("b.JPEG", 999), ("c.JPEG", 5)], [("d.JPEG", 0), ("e.JPEG", 7)]]
    root = _hf_shards(tmp_path / "hf", shards)
    ds = _layout("imagenet-val")(root)
    assert ds.size == 5 and [ds.label_for(i) for i in range(5)] == [5, 999, 5, 0, 7]  # parquet order
    assert ds.manifest.histogram() == {0: 1, 5: 2, 7: 1, 999: 1}
    batches = list(ds.reference_images(5, batch_size=3, start=1))  # crosses row groups and shards
    assert [b.shape for b in batches] == [(3, 256, 256, 3), (1, 256, 256, 3)]
    assert [int(im.mean().round()) for im in np.concatenate(batches)] == [999 % 256, 5, 0, 7]
    assert ds.prompt_for(1) == "a photo of a toilet paper"


@pytest.mark.parametrize("rows, expected", [
    ([("a.JPEG", 5), ("b.JPEG", None)], r"validation-00000-of-00001.parquet row 1 \(b.JPEG\): label None is missing"),
    ([("a.JPEG", 5), ("b.JPEG", 1000)], r"row 1 \(b.JPEG\): label 1000 is missing or outside 0..999"),
    ([("a.JPEG", 5), ("a.JPEG", 6)], r"row 1: duplicate file 'a.JPEG' \(also data/validation-00000-of-00001"),
])
def test_hf_parquet_validation(tmp_path, rows, expected):
    with pytest.raises(HarnessError, match=expected):
        _ = _layout("imagenet-val")(_hf_shards(tmp_path / "hf", [rows])).manifest


def test_cli_dataset_manifest(tmp_path, monkeypatch, capsys):
    import json

    from harness.cli import main

    _imagenet_val(tmp_path / "val")
    monkeypatch.setenv("HARNESS_DATASET_IMAGENETV2_MF", str(tmp_path / "val"))  # synset names: not a V2 layout
    monkeypatch.setenv("HARNESS_DATASET_IMAGENET_VAL", str(tmp_path / "val"))
    assert main(["dataset", "imagenet-val-admcrop"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["files"] == 6 and record["preprocess"] == "adm-center-crop-256"
    assert record["class_histogram"] == {"0": 3, "134": 2, "517": 1}
    assert main(["dataset", "imagenetv2-mf"]) == 2
    assert "val/n01440764: ImageNetV2 class folders are named by label id 0..999" in capsys.readouterr().err
    assert main(["dataset", "mnist-5k"]) == 0


def test_reference_folders_use_the_same_decoder(tmp_path):
    """ImageNet-layout reference folders decode a 16-bit PNG to the 8-bit image it widens, not to white."""
    digits = np.random.default_rng(14).integers(0, 256, (2, 32, 32)).astype(np.int64)
    root = tmp_path / "v2"
    (root / "0").mkdir(parents=True)
    wide = np.minimum(digits[0] * 257 + 100, 65535)  # +100 < 128.5: rounds back down to the 8-bit level
    (root / "0" / "a16.png").write_bytes(png16(wide, 0))
    Image.fromarray(digits[1].astype(np.uint8)).save(root / "0" / "b8.png")
    dataset = open_image_folder("imagenetv2-mf", root)
    rgb = np.repeat(digits.astype(np.uint8)[..., None], 3, axis=-1)
    expected = np.stack([dataset.preprocess.apply(Image.fromarray(image)) for image in rgb])
    got = next(dataset.reference_images(2, batch_size=2))
    np.testing.assert_array_equal(got, expected)


def test_folders_and_harness_score_accept_the_same_suffixes(tmp_path):
    """One suffix set for every image reader: a TIFF in a reference folder is read (it was refused as "not an
    image" while ``harness score`` read it), and decodes like the PNG of the same pixels."""
    pixels = np.random.default_rng(3).integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)
    root = tmp_path / "v2"
    (root / "0").mkdir(parents=True)
    Image.fromarray(pixels[0]).save(root / "0" / "a.tif")
    Image.fromarray(pixels[1]).save(root / "0" / "b.png")
    dataset = open_image_folder("imagenetv2-mf", root)
    assert dataset.size == 2
    expected = np.stack([dataset.preprocess.apply(Image.fromarray(image)) for image in pixels])
    np.testing.assert_array_equal(next(dataset.reference_images(2, batch_size=2)), expected)
