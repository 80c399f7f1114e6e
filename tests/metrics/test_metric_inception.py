"""The Inception tf1/clean extractors: weights lookup, spec identity, agreement with torch-fidelity and
clean-fid preprocessing on identical inputs (non-299 sizes included)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.errors import HarnessError
from harness.features import get_extractor
from harness.features.inception_clean import clean_resize
from harness.features.inception_tf1 import WEIGHTS_ENTRY, WEIGHTS_FILE
from tests.support.metric_fixtures import image_set, use_inception_weights


def test_missing_weights_name_the_file_and_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_WEIGHTS", str(tmp_path / "empty"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(HarnessError, match=f"harness weights fetch inception-tf1.*needs {WEIGHTS_FILE}"):
        get_extractor("inception-tf1").spec  # noqa: B018


def test_spec_records_the_weights_sha256(tf1_weights, tmp_path, monkeypatch):
    from harness.hashing import sha256_file

    tf1, clean = get_extractor("inception-tf1").spec, get_extractor("inception-clean").spec
    assert tf1.weights_sha256 == sha256_file(tf1_weights) == clean.weights_sha256
    assert tf1.key != clean.key  # same network, other resize: never one cache entry
    other = tmp_path / WEIGHTS_ENTRY / WEIGHTS_FILE
    other.parent.mkdir()
    other.write_bytes(tf1_weights.read_bytes() + b"\0")
    monkeypatch.setenv("HARNESS_WEIGHTS", str(tmp_path))
    # a file that is not the pinned one is refused, naming the file and the command that replaces it
    with pytest.raises(HarnessError, match=f"{other}: sha256 .* does not match the expected "
                                           f".*harness weights fetch inception-tf1"):
        get_extractor("inception-tf1").spec  # noqa: B018
    use_inception_weights(monkeypatch, tmp_path)  # pinned to that file instead: another spec key
    assert get_extractor("inception-tf1").spec.key != tf1.key


def test_corrupt_weights_file_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / WEIGHTS_ENTRY).mkdir()
    (tmp_path / WEIGHTS_ENTRY / WEIGHTS_FILE).write_bytes(b"not a state dict")
    use_inception_weights(monkeypatch, tmp_path)  # even with a matching digest it must not half-load
    with pytest.raises(HarnessError, match="not a torch-fidelity Inception-v3 state dict"):
        get_extractor("inception-tf1").load()


@pytest.mark.parametrize("size", [32, 299])
def test_tf1_features_equal_torch_fidelity(tf1_weights, size):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    images = image_set(seed=size, n=4, size=size)
    ours = get_extractor("inception-tf1")
    ours.load()
    got = ours.extract(images)
    theirs = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                         feature_extractor_weights_path=str(tf1_weights))
    with torch.no_grad():
        pool3, logits = theirs(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
    assert got["pool3"].shape == (4, 2048) and got["logits_unbiased"].shape == (4, 1008)
    assert float(got["pool3"].std()) > 0.05  # Kaiming init: features are not collapsed
    np.testing.assert_allclose(got["pool3"], pool3.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["logits_unbiased"], logits.numpy(), rtol=1e-5, atol=1e-5)


def test_tf1_batch_size_invariance(tf1_weights):
    images = image_set(seed=3, n=5, size=48)
    one, many = get_extractor("inception-tf1"), get_extractor("inception-tf1")
    one.batch_size = 1
    one.load()
    many.load()
    a, b = one.extract(images), many.extract(images)
    np.testing.assert_allclose(a["pool3"], b["pool3"], rtol=1e-4, atol=1e-5)


def test_clean_resize_equals_cleanfid_and_changes_features(tf1_weights):
    from cleanfid.resize import make_resizer

    images = image_set(seed=7, n=3, size=64)
    resizer = make_resizer("PIL", False, "bicubic", (299, 299))
    for img in images:
        np.testing.assert_array_equal(clean_resize(img), resizer(img))
    clean, tf1 = get_extractor("inception-clean"), get_extractor("inception-tf1")
    clean.load()
    tf1.load()
    a, b = clean.extract(images)["pool3"], tf1.extract(images)["pool3"]
    assert np.abs(a - b).max() > 1e-3  # a different resize kernel is visible in the features
    np.testing.assert_allclose(a.mean(), b.mean(), rtol=0.2)  # but the same network: same scale
