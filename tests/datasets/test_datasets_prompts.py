"""Prompt datasets from user files: COCO-2014 captions json, PartiPrompts tsv, DrawBench csv."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.datasets import get_dataset
from harness.errors import HarnessError, ProtocolError


def _coco(root: Path, n_images: int = 5) -> Path:
    images = [{"id": 100 + k, "file_name": f"COCO_val2014_{100 + k:012d}.jpg"} for k in range(n_images)]
    annotations = []
    for k in range(n_images):
        annotations.append({"id": 50 + k, "image_id": 100 + k, "caption": f" second caption {k} "})
        annotations.append({"id": 10 + k, "image_id": 100 + k, "caption": f"first caption {k}"})
    path = root / "annotations" / "captions_val2014.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


def test_coco_captions_selection(tmp_path, monkeypatch):
    path = _coco(tmp_path)
    monkeypatch.setenv("HARNESS_DATASET_COCO2014_30K", str(path))
    ds = get_dataset("coco2014-30k")
    assert ds.size == 5 and ds.num_classes is None and ds.label_for(0) is None
    order = np.random.default_rng(0).permutation(5)
    assert [ds.prompt_for(i) for i in range(5)] == [f"first caption {k}" for k in order]  # lowest annotation id
    with pytest.raises(HarnessError, match=r"val2014 \(COCO val2014\)"):
        next(ds.reference_images(2))
    (tmp_path / "val2014").mkdir()
    for k in range(5):
        pixels = np.random.default_rng(k).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "val2014" / f"COCO_val2014_{100 + k:012d}.jpg")
    batches = list(ds.reference_images(5, batch_size=3))
    assert [b.shape for b in batches] == [(3, 256, 256, 3), (2, 256, 256, 3)]


def test_coco_bad_json_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}],
                                "annotations": [{"id": 3, "image_id": 2, "caption": "x"}]}))
    monkeypatch.setenv("HARNESS_DATASET_COCO2014_30K", str(path))
    with pytest.raises(HarnessError, match=r"captions.json: annotation 3 refers to image 2"):
        _ = get_dataset("coco2014-30k").size
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(HarnessError, match=r"captions.json: expected a COCO captions json"):
        _ = get_dataset("coco2014-30k").size


def test_partiprompts_tsv_and_drawbench_csv(tmp_path, monkeypatch):
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "PartiPrompts.tsv").write_text(
        "Prompt\tCategory\tChallenge\tNote\nA red cube\tArtifacts\tBasic\t\nbird, flying\tAnimals\tBasic\t\n")
    (tmp_path / "prompts" / "DrawBench.csv").write_text(
        'Prompts,Category\n"A stop sign, upside down",Text\nA blue dog,Colors\nA green cat,Colors\n')
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path))
    parti, draw = get_dataset("partiprompts"), get_dataset("drawbench")
    assert [parti.prompt_for(i) for i in range(3)] == ["A red cube", "bird, flying", "A red cube"]
    assert draw.prompt_for(0) == "A stop sign, upside down"
    assert draw.manifest_record()["category_histogram"] == {"Colors": 2, "Text": 1}
    with pytest.raises(ProtocolError, match="prompts only and has no reference images"):
        next(draw.reference_images(1))
    before = parti.digest
    (tmp_path / "prompts" / "PartiPrompts.tsv").write_text("Prompt\nA red cube\n")
    assert get_dataset("partiprompts").digest != before


def test_prompt_file_errors(tmp_path, monkeypatch):
    bad = tmp_path / "p.csv"
    bad.write_text("Text2,Category\nx,y\n")
    monkeypatch.setenv("HARNESS_DATASET_DRAWBENCH", str(bad))
    with pytest.raises(HarnessError, match=r"p.csv: no prompt column; expected one of Prompt"):
        _ = get_dataset("drawbench").size
    bad.write_text("Prompts,Category\nok,a\n ,b\n")
    with pytest.raises(HarnessError, match=r"p.csv:3: empty 'Prompts'"):
        _ = get_dataset("drawbench").size
    monkeypatch.setenv("HARNESS_DATASET_DRAWBENCH", str(tmp_path / "missing.csv"))
    with pytest.raises(HarnessError, match="missing.csv does not exist"):
        get_dataset("drawbench")
