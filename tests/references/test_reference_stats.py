"""ReferenceStats artefacts: round trip, atomic writes, corrupt files, identity; real streamed statistics."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from harness.datasets import get_dataset
from harness.errors import HarnessError, ProtocolError
from harness.features import get_extractor
from harness.references.artefacts import ReferenceStats, compute_reference_stats


def _stats(n: int = 50, key: str = "k" * 24) -> ReferenceStats:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6))
    return ReferenceStats(mu=x.mean(0), sigma=np.cov(x, rowvar=False), n=n, extractor_key=key,
                          source_digest="abc123", spec={"output": "pool3", "extractor": {"layer": "pool3"}})


def test_save_load_round_trip_is_exact(tmp_path):
    stats = _stats()
    path = stats.save(tmp_path / "sub" / "ref.npz")
    loaded = ReferenceStats.load(path)
    assert loaded == stats
    assert loaded.mu.dtype == np.float64 and loaded.sigma.dtype == np.float64
    assert loaded.reference_id == stats.reference_id
    assert loaded != dataclasses.replace(stats, mu=stats.mu + 1e-12)


def test_save_is_atomic_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "ref.npz"
    _stats(n=50).save(path)
    _stats(n=60).save(path)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.npz"]
    assert ReferenceStats.load(path).n == 60

    def broken_savez(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        _stats(n=70).save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.npz"]  # temp removed, old file intact
    assert ReferenceStats.load(path).n == 60


def test_missing_and_corrupt_files_name_the_path(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(HarnessError, match=str(missing)):
        ReferenceStats.load(missing)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(HarnessError, match=f"{corrupt}.*corrupt"):
        ReferenceStats.load(corrupt)
    truncated = tmp_path / "truncated.npz"
    _stats().save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(HarnessError, match=str(truncated)):
        ReferenceStats.load(truncated)
    foreign = tmp_path / "adm.npz"
    np.savez(foreign, mu=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(HarnessError, match=f"{foreign}.*missing"):
        ReferenceStats.load(foreign)


def test_reference_id_tracks_n_extractor_and_source():
    base = _stats()
    ids = {base.reference_id,
           dataclasses.replace(base, n=51).reference_id,
           dataclasses.replace(base, extractor_key="j" * 24).reference_id,
           dataclasses.replace(base, source_digest="other").reference_id,
           dataclasses.replace(base, spec={**base.spec, "output": "another-layer"}).reference_id}
    assert len(ids) == 5
    renamed = dataclasses.replace(base, spec={**base.spec, "dataset": "a-different-name"})
    assert renamed.reference_id == base.reference_id  # names are labels, not identity


def test_compute_reference_stats_streams_real_features(tmp_path):
    dataset = get_dataset("mnist-5k")
    extractor = get_extractor("mnist-cnn")
    extractor.load()
    stats = compute_reference_stats(dataset, 300, extractor, output="penultimate", progress=False)
    # The same batches as the streamed pass: on some CPUs (AVX-512 Xeon) oneDNN's result depends on the batch size
    # at the float32 rounding level (3.7e-8 here), and this test is about the float64 statistics, not that.
    feats = np.concatenate([extractor.extract(batch)["penultimate"]
                            for batch in dataset.reference_images(300)]).astype(np.float64)
    assert stats.n == 300 and stats.source_digest == dataset.digest
    assert stats.extractor_key == extractor.spec.key and stats.spec["output"] == "penultimate"
    np.testing.assert_allclose(stats.mu, feats.mean(0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(stats.sigma, np.cov(feats, rowvar=False), rtol=1e-8, atol=1e-8)
    assert ReferenceStats.load(stats.save(tmp_path / "r.npz")) == stats
    with pytest.raises(ProtocolError, match="no output 'pool3'"):
        compute_reference_stats(dataset, 10, extractor, output="pool3", progress=False)


def test_parallel_chunks_equal_one_stream(tmp_path):
    """The runner's chunked reference (merged in index order) equals one streamed pass over the images."""
    from harness.features.mnist_cnn import MnistCnn
    from harness.references.cache import REFERENCE_CHUNK, reference_chunks, reference_stats

    n = 2 * REFERENCE_CHUNK + 44  # a short last chunk too
    assert [(t.start, t.stop) for t in reference_chunks("mnist-5k", "mnist-cnn", "penultimate", n)] == [
        (0, 128), (128, 256), (256, 300)]
    chunked = reference_stats(tmp_path, "mnist-5k", "mnist-cnn", "penultimate", n)
    extractor = MnistCnn()
    extractor.load()
    streamed = compute_reference_stats(get_dataset("mnist-5k"), n, extractor, output="penultimate", progress=False)
    assert chunked.n == streamed.n == n and chunked.reference_id == streamed.reference_id
    # Chunks of 128 vs the stream's batches of 256: on some CPUs (AVX-512 Xeon) oneDNN's features depend on the
    # batch size at float32 rounding (~4e-8); a wrong merge would be off by orders of magnitude more.
    np.testing.assert_allclose(chunked.mu, streamed.mu, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(chunked.sigma, streamed.sigma, rtol=1e-6, atol=1e-6)
    assert reference_stats(tmp_path, "mnist-5k", "mnist-cnn", "penultimate", n) == chunked  # loaded, not redone
