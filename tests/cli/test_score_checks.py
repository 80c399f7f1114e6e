"""``harness score``: odd image files decoded by the one decoder and counted in the rows, every flag checked
before any compute, one-line warnings (small n, lossy files) printed and saved, progress on a terminal."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import harness.api.scoring as score  # the engine behind `harness score`
from harness.cli.score import score_images
from harness.errors import HarnessError
from harness.features import get_extractor
from harness.metrics import get_metric
from harness.metrics.base import ShardFeatures
from harness.references.artefacts import ReferenceStats
from tests.support.image_files import png16

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """30 real MNIST digits, grey (N, 28, 28) uint8."""
    from harness.datasets import get_dataset

    return np.concatenate(list(get_dataset("mnist-5k").reference_images(30)))[..., 0]


def _folder(path: Path, grey: np.ndarray, sixteen_bit: bool = False) -> Path:
    path.mkdir(parents=True)
    for i, g in enumerate(grey):
        if sixteen_bit:
            (path / f"{i:03d}.png").write_bytes(png16(g.astype(np.int64) * 257, 0))
        else:
            Image.fromarray(g).save(path / f"{i:03d}.png")
    return path


def test_sixteen_bit_pngs_score_as_the_8bit_images_they_widen(tmp_path, digits, shared_cache):
    """Main converted 16-bit PNGs with PIL's convert("RGB"): every value above 255 became white."""
    eight = score_images(_folder(tmp_path / "8", digits), ["is_mnist"], None, shared_cache)[0]
    sixteen = score_images(_folder(tmp_path / "16", digits, sixteen_bit=True), ["is_mnist"], None, shared_cache)[0]
    assert sixteen.value == eight.value
    assert sixteen.details["decoded"] == {"I;16→RGB (÷257)": 30}
    assert eight.details["decoded"] == {"L→RGB": 30}


@pytest.fixture()
def no_compute(monkeypatch):
    """Any decoding pass or reference computation fails the test: the checks must come first."""

    def computed(*args, **kwargs):
        raise AssertionError("computed before the input was checked")

    monkeypatch.setattr(score, "extract_all", computed)
    monkeypatch.setattr(score, "metric_reference", computed)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"reference": "mnist", "reference_n": 20_000},
     r"^--reference-n 20000: dataset 'mnist' has 10000 reference images; ask for at most 10000$"),
    ({"reference": "mnist", "reference_n": 0}, r"^--reference-n 0: must be a positive number"),
    ({"reference": "mnist", "reference_n": -4}, r"^--reference-n -4: must be a positive number"),
    ({"reference": "mnist", "bootstrap": -5}, r"^--bootstrap -5: must be 0 \(no bootstrap CIs\) or a positive"),
    ({"reference": "REF", "reference_n": 5}, r"^--reference-n 5: the reference .*ref is used whole \(12 images\)"),
])
def test_flags_are_checked_before_any_compute(tmp_path, digits, no_compute, kwargs, message):
    images = _folder(tmp_path / "gen", digits[:12])
    if kwargs.get("reference") == "REF":
        kwargs = {**kwargs, "reference": str(_folder(tmp_path / "ref", digits[12:24]))}
    with pytest.raises(HarnessError, match=message):
        score_images(images, ["fid_mnist"], cache=tmp_path / "cache", **kwargs)


def test_files_are_checked_before_any_compute(tmp_path, digits, no_compute):
    images = _folder(tmp_path / "gen", digits[:3])
    Image.new("LAB", (28, 28)).save(images / "zz.tif")
    with pytest.raises(HarnessError, match=r"gen/zz.tif: image mode LAB is not supported"):
        score_images(images, ["fid_mnist"], "mnist", tmp_path / "cache")
    one = _folder(tmp_path / "one", digits[:1])
    with pytest.raises(HarnessError, match=r"one: 1 image; fid_mnist need at least 2"):
        score_images(one, ["fid_mnist"], "mnist", tmp_path / "cache")


def test_metric_errors_name_the_metric_the_user_asked_for():
    metric = get_metric("fid_mnist")
    reference = ReferenceStats(mu=np.zeros(256), sigma=np.eye(256), n=10, source_digest="test",
                               extractor_key=get_extractor(metric.extractor).spec.key, spec={"output": metric.output})
    with pytest.raises(HarnessError, match=r"^fid_mnist: needs at least 2 samples, got 1$"):
        metric.compute([ShardFeatures(np.zeros((1, 256)), (None,))], reference)


def test_small_n_and_lossy_warnings_are_one_line_and_saved(tmp_path, digits):
    images = _folder(tmp_path / "gen", digits[:20])
    Image.fromarray(digits[20]).save(images / "z.jpg", quality=95)
    reference = _folder(tmp_path / "ref", digits[:24])
    out = tmp_path / "rows.parquet"
    done = subprocess.run([sys.executable, "-m", "harness.cli", "score", str(images), "--metrics", "fid_mnist",
                           "--reference", str(reference), "--out", str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert "UserWarning" not in done.stderr and "warnings.warn" not in done.stderr
    lossy = [line for line in lines if "lossy-compressed" in line]
    small = [line for line in lines if "fid_mnist: samples n=21, reference n=24 < 256" in line]
    assert len(lossy) == 1 and lossy[0].startswith("warning: ") and "1 of 21 images" in lossy[0]
    assert len(small) == 1 and small[0].startswith("warning: fid_mnist: ")
    details = json.loads(pd.read_parquet(out).details[0])
    assert details["decoded"] == {"L→RGB": 21} and "rank-deficient" in details["warning"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_only(tmp_path, digits, shared_cache, monkeypatch):
    images = _folder(tmp_path / "gen", digits[:30])
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setenv("HARNESS_PROGRESS", "1")
    score_images(images, ["is_mnist"], None, shared_cache)
    assert "decode + mnist-cnn: gen" in terminal.getvalue() and "30/30" in terminal.getvalue()
    for env, stream in (("0", _Terminal()), ("1", io.StringIO())):  # switched off, or not a terminal
        monkeypatch.setattr(sys, "stderr", stream)
        monkeypatch.setenv("HARNESS_PROGRESS", env)
        score_images(images, ["is_mnist"], None, shared_cache)
        assert stream.getvalue() == ""
