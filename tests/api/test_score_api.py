"""``harness.score``: images as a folder, a numpy array, a torch tensor or PIL images give the numbers
``harness score`` gives on the same pixels; bad inputs are refused by name before any compute."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import harness
from harness.errors import HarnessError

REPO = Path(__file__).resolve().parents[2]
METRICS = ["is_mnist", "fid_mnist"]
REFERENCE_N = 200


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """40 MNIST training digits, uint8 (N, 28, 28, 3) (grey replicated, as decoded from files)."""
    from harness.datasets import get_dataset

    return np.concatenate(list(get_dataset("mnist-train").reference_images(40)))


@pytest.fixture(scope="module")
def folder(digits, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    for i, image in enumerate(digits):
        Image.fromarray(image[..., 0], "L").save(out / f"{i:03d}.png")  # grey PNGs: decoded L→RGB
    return out


@pytest.fixture(scope="module")
def cli_rows(folder, tmp_path_factory, shared_cache) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("cli") / "rows.parquet"
    done = subprocess.run([sys.executable, "-m", "harness.cli", "score", str(folder), "--metrics", ",".join(METRICS),
                           "--reference", "mnist", "--reference-n", str(REFERENCE_N), "--bootstrap", "20",
                           "--out", str(out),
                           "--cache", str(shared_cache)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return pd.read_parquet(out)


def _same_numbers(api: pd.DataFrame, cli: pd.DataFrame) -> None:
    assert list(api.columns) == list(cli.columns)  # the results.parquet columns plus details
    keep = ["cell_id", "metric", "variant", "n", "dataset", "value", "ci_low", "ci_high", "extractor_id",
            "reference_id"]
    pd.testing.assert_frame_equal(api[keep].reset_index(drop=True), cli[keep].reset_index(drop=True))


@pytest.mark.parametrize("kind", ["folder", "uint8 array", "grey array", "uint8 tensor NCHW", "float tensor",
                                  "float array", "PIL list", "array list"])
def test_every_input_kind_scores_as_the_cli(kind, digits, folder, cli_rows, shared_cache):
    images = {
        "folder": folder,
        "uint8 array": digits,
        "grey array": digits[..., 0],
        "uint8 tensor NCHW": torch.from_numpy(digits).permute(0, 3, 1, 2),
        "float tensor": torch.from_numpy(digits).permute(0, 3, 1, 2).double() / 255.0,
        "float array": digits.astype(np.float32) / 255.0,
        "PIL list": [Image.fromarray(d[..., 0], "L") for d in digits],
        "array list": iter(list(digits)),  # any iterable, consumed once
    }[kind]
    rows = harness.score(images, "mnist", metrics=METRICS, reference_n=REFERENCE_N, bootstrap=20, cache=shared_cache)
    _same_numbers(rows, cli_rows)  # the bootstrap intervals too: resamples are keyed by the decoded pixels
    assert cli_rows.value.notna().all() and (cli_rows.value > 0).all() and cli_rows.ci_low.notna().all()


def test_a_reference_in_memory_equals_the_same_reference_folder(digits, folder, shared_cache):
    from_folder = harness.score(digits[:20], folder, metrics="fid_mnist", cache=shared_cache)
    in_memory = harness.score(digits[:20], list(digits), metrics="fid_mnist", cache=shared_cache)
    assert in_memory.value[0] == from_folder.value[0] and from_folder.value[0] > 0


@pytest.fixture()
def no_compute(monkeypatch):
    import harness.api.scoring as scoring

    def computed(*args, **kwargs):
        raise AssertionError("computed before the input was checked")

    monkeypatch.setattr(scoring, "extract_all", computed)
    monkeypatch.setattr(scoring, "metric_reference", computed)


@pytest.mark.parametrize(("images", "message"), [
    (lambda d: [d[0], d[1], d[2][:20]], r"^images\[2\]: size \(20, 28\) \(H, W\) but images\[0\] is \(28, 28\)"),
    (lambda d: d.astype(np.int16), r"^images: array of dtype int16; expected uint8 \(0\.\.255\) or float in \[0, 1\]"),
    (lambda d: torch.from_numpy(d).float(), r"^images: float tensor with values 0\.\.255; float images must lie in "
                                            r"\[0, 1\]"),
    (lambda d: np.full((3, 8, 8, 3), np.nan), r"^images: float array with values no finite values, with NaN/Inf"),
    (lambda d: [], r"^images: no images \(an empty list\)"),
    (lambda d: d[:0], r"^images: no images \(an empty array\)"),
    (lambda d: d[:1], r"^<images: array of 1 images \(28, 28\)>: 1 image; is_mnist, fid_mnist need at least 2"),
    (lambda d: d[..., :2], r"^images: array of shape \(40, 28, 28, 2\); expected \(N, H, W, 3\)"),
    (lambda d: [d[0], "x.png"], r"^images\[1\]: a str; expected a PIL image"),
    (lambda d: 3.5, r"^images: a float; expected a folder or \.npz path"),
    (lambda d: Image.fromarray(d[0]), r"^images: a Image; expected a folder or \.npz path"),
])
def test_bad_images_are_refused_by_name(images, message, digits, no_compute, shared_cache):
    with pytest.raises(HarnessError, match=message):
        harness.score(images(digits), "mnist", metrics=METRICS, cache=shared_cache)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"metrics": None}, r"^metrics=None: expected a list of metric names"),
    ({"metrics": []}, r"^metrics: give at least one metric name"),
    ({"metrics": ["fid_mnistt"]}, r"fid_mnistt"),
    ({"metrics": METRICS, "bootstrap": 2.5}, r"^bootstrap=2\.5: expected an integer$"),
    ({"metrics": METRICS, "reference_n": "10"}, r"^reference_n='10': expected an integer or None$"),
    ({"metrics": METRICS, "device": "tpu"}, r"^device 'tpu': not a device; expected cpu, cuda or cuda:N$"),
    ({"metrics": METRICS, "reference": np.zeros((4, 9, 9), np.int64)}, r"^reference: array of dtype int64"),
])
def test_bad_arguments_are_refused_by_name(kwargs, message, digits, no_compute, shared_cache):
    with pytest.raises(HarnessError, match=message):
        harness.score(digits, **{"reference": "mnist", **kwargs}, cache=shared_cache)
