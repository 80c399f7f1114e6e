"""The shard writer: resume, verification, and refusal of garbage (never written, never scored)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.errors import GenerationError, ShardError
from harness.plan.protocol import load_protocol, make_plan
from harness.run import generate as sampling
from harness.run.extract import ExtractTask, extract_shard
from harness.run.generate import generate_shard, shard_is_complete
from harness.store import manifest_path, read_manifest, verified_images, write_cell
from harness.types import SampleOutput, ShardTask


@pytest.fixture
def shard(tmp_path):
    """The first shard (samples 0..3) of the first smoke cell, planned into a fresh run dir."""
    plan = make_plan(load_protocol("protocols/smoke.yaml", ["metrics=[]"]))
    cell = plan.cells[0]
    return ShardTask(cell_dir=str(write_cell(tmp_path, cell)), start=0, stop=4, batch_size=4)


def png_bytes(task) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((Path(task.cell_dir) / "images").glob("*.png"))}


def test_generate_then_skip(shard):
    first = generate_shard(shard)
    assert (first.generated, first.reused) == (4, 0)
    assert shard_is_complete(shard)
    manifest = read_manifest(manifest_path(Path(shard.cell_dir), shard.start, shard.stop))
    assert [s.index for s in manifest.samples] == [0, 1, 2, 3]
    assert [s.label for s in manifest.samples] == [0, 1, 2, 3]
    assert all(s.nfe == 1 and s.seconds > 0 for s in manifest.samples)  # smoke cell 0: steps 1, cfg 1
    again = generate_shard(shard)
    assert (again.generated, again.reused) == (0, 4)
    assert not list(Path(shard.cell_dir).rglob("*.journal"))


def test_truncated_png_is_detected_and_regenerated(shard):
    generate_shard(shard)
    before = png_bytes(shard)
    victim = Path(shard.cell_dir) / "images" / "0000002.png"
    victim.write_bytes(victim.read_bytes()[:40])
    assert not shard_is_complete(shard)
    with pytest.raises(ShardError, match="0000002.png: sha256 does not match"):
        verified_images(Path(shard.cell_dir), read_manifest(manifest_path(Path(shard.cell_dir), 0, 4)))
    result = generate_shard(shard)
    assert (result.generated, result.reused) == (1, 3)
    assert png_bytes(shard) == before


def test_manifest_sha_mismatch_is_never_scored_and_is_repaired(shard, tmp_path):
    generate_shard(shard)
    before = png_bytes(shard)
    mpath = manifest_path(Path(shard.cell_dir), 0, 4)
    data = json.loads(mpath.read_text())
    data["samples"][1]["sha256"] = "0" * 64
    mpath.write_text(json.dumps(data))
    task = ExtractTask(shard.cell_dir, 0, 4, ("mnist-cnn",), str(tmp_path / "cache"))
    with pytest.raises(ShardError, match="0000001.png: sha256 does not match its manifest"):
        extract_shard(task)
    assert not (tmp_path / "cache" / "features").exists()
    assert generate_shard(shard).generated == 1
    assert png_bytes(shard) == before and shard_is_complete(shard)


def test_resume_from_journal_keeps_verified_samples_only(shard):
    generate_shard(shard)
    before = png_bytes(shard)
    directory = Path(shard.cell_dir)
    mpath = manifest_path(directory, 0, 4)
    records = json.loads(mpath.read_text())["samples"]
    mpath.unlink()  # as if killed before the manifest: journal has samples 0, 1 (the last line cut short)
    journal = mpath.with_suffix(".journal")
    journal.write_text(json.dumps(records[0]) + "\n" + json.dumps(records[1]) + "\n" + json.dumps(records[2])[:30])
    (directory / records[1]["file"]).write_bytes(b"\x89PNG truncated")
    result = generate_shard(shard)
    assert (result.generated, result.reused) == (3, 1)  # only sample 0 was written and still verifies
    assert png_bytes(shard) == before
    assert not journal.exists()


class _Broken:
    """Stands in for a loaded adapter that returns garbage."""

    def __init__(self, image_fn, nfe: int = 1) -> None:
        self.image_fn, self.nfe = image_fn, nfe

    class capabilities:  # noqa: N801 - mimics the attribute of a real adapter
        resolution = 28

    def expected_nfe(self, settings) -> int:
        return 1

    def sample(self, requests):
        return [SampleOutput(image=self.image_fn(r.index), nfe=self.nfe, seconds=0.0) for r in requests]


def _noise(index: int) -> np.ndarray:
    return np.random.default_rng(index).integers(0, 256, (28, 28, 3), dtype=np.uint8)


@pytest.mark.parametrize("image_fn, nfe, message", [
    (lambda i: np.zeros((28, 28, 3), np.uint8) if i == 2 else _noise(i), 1, "sample 2: generator returned a constant"),
    (lambda i: _noise(i)[:20], 1, r"sample 0: generator returned uint8 \(20, 28, 3\)"),
    (lambda i: _noise(i).astype(np.float32), 1, "expected uint8"),
    (_noise, 3, "reported NFE 3 but declares 1"),
])
def test_garbage_is_refused_with_the_sample_index(shard, monkeypatch, image_fn, nfe, message):
    monkeypatch.setattr(sampling, "loaded_adapter", lambda cell, device: _Broken(image_fn, nfe))
    with pytest.raises(GenerationError, match=message):
        generate_shard(shard)
    assert not manifest_path(Path(shard.cell_dir), 0, 4).exists()
    assert png_bytes(shard) == {}  # a batch is checked whole before any of it is written


def test_nan_pixels_are_refused_before_writing(shard, monkeypatch):
    from harness.models.adapters import to_uint8_images

    def nan_image(index: int) -> np.ndarray:
        x = np.zeros((1, 28, 28, 1), np.float32)
        x[0, 3, 3, 0] = np.nan if index == 1 else 0.5
        return to_uint8_images(x, [index])[0]

    monkeypatch.setattr(sampling, "loaded_adapter", lambda cell, device: _Broken(nan_image))
    with pytest.raises(GenerationError, match=r"NaN/Inf pixels for sample index \[1\]"):
        generate_shard(shard)
    assert not (Path(shard.cell_dir) / "images" / "0000001.png").exists()
