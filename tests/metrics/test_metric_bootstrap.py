"""Bootstrap CIs through the real pipeline: replicate files, paired indices, the interval methods, caching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.errors import HarnessError
from harness.executors import make_executor
from harness.metrics import get_metric
from harness.metrics.bootstrap import bootstrap_indices, calibrated_replicates, replicate_interval
from harness.metrics.class_alignment import wilson_interval
from harness.plan.protocol import load_protocol, make_plan
from harness.reports.mmhm import load_replicates
from harness.run.extract import _shard_features, cell_manifests
from harness.run.runner import run_plan
from harness.store import read_cell

REPO = Path(__file__).resolve().parents[2]
B = 25


def _run(run_dir: Path, cache: Path, bootstrap: int):
    plan = make_plan(load_protocol(REPO / "protocols" / "smoke.yaml", [
        "metrics=[class_alignment, is_mnist, fid]", "n=12", "steps=[1]", "cfg=[1.0]", f"bootstrap={bootstrap}"]))
    executor = make_executor("debug", None)
    try:
        run_plan(plan, run_dir, cache, executor)
    finally:
        executor.close()
    return plan, pd.read_parquet(run_dir / "results.parquet")


@pytest.fixture(scope="module")
def bootstrapped(tmp_path_factory, shared_cache):
    run_dir = tmp_path_factory.mktemp("boot") / "run"
    plan, frame = _run(run_dir, shared_cache, B)
    return run_dir, plan, frame


def test_replicates_are_written_and_give_the_ci(bootstrapped):
    run_dir, plan, frame = bootstrapped
    assert len(frame) == 3
    for row in frame.itertuples():
        values = load_replicates(run_dir, row.cell_id, row.metric)
        assert values is not None and values.dtype == np.float64 and values.shape == (B,)
        assert np.isfinite(values).all() and values.std() > 0  # resampling moves every metric
        if row.metric == "class_alignment":  # keeps its own Wilson interval; replicates are for pairing
            low, high = wilson_interval(round(row.value * row.n), row.n)
        else:  # median-centred basic bootstrap: the replicates' spread around their median, reflected onto T
            q_low, median, q_high = np.percentile(values, [2.5, 50, 97.5])
            low, high = row.value - (q_high - median), row.value - (q_low - median)
            floor, ceiling = get_metric(row.metric).value_range  # then cut to the values it can take (IS >= 1)
            low = low if floor is None else max(low, floor)
            high = high if ceiling is None else min(high, ceiling)
        assert (row.ci_low, row.ci_high) == (pytest.approx(low, rel=1e-12), pytest.approx(high, rel=1e-12))
        assert row.ci_low <= row.value <= row.ci_high
    assert load_replicates(run_dir, frame.cell_id[0], "kid") is None


def test_replicates_are_paired_across_metrics(bootstrapped, shared_cache):
    from harness.features import get_extractor

    run_dir, plan, frame = bootstrapped
    cell_id = frame.cell_id[0]
    directory = run_dir / "cells" / cell_id
    manifests = cell_manifests(directory, read_cell(directory), plan.protocol.shard_size)
    key = get_extractor("mnist-cnn").spec.key
    shards = list(_shard_features(shared_cache, key, "logits", manifests))
    logits = np.concatenate([s.features for s in shards])
    labels = np.array([lab for s in shards for lab in s.labels])
    correct = (logits.argmax(1) == labels).astype(np.float64)
    idx = bootstrap_indices(cell_id, len(labels), B)  # the contract: the same rows for every metric
    row = frame[(frame.cell_id == cell_id) & (frame.metric == "class_alignment")].iloc[0]
    # class alignment keeps its own (Wilson) interval, so its saved replicates are calibrated to it
    expected = calibrated_replicates(row.value, row.ci_low, row.ci_high, correct[idx].mean(1))
    np.testing.assert_allclose(load_replicates(run_dir, cell_id, "class_alignment"), expected)


def test_cached_rerun_and_disabled_bootstrap(bootstrapped, shared_cache, tmp_path):
    run_dir, plan, frame = bootstrapped
    again_dir = tmp_path / "again"
    _, again = _run(again_dir, shared_cache, B)  # scores and replicates come from the cache
    for row in frame.itertuples():
        np.testing.assert_array_equal(load_replicates(again_dir, row.cell_id, row.metric),
                                      load_replicates(run_dir, row.cell_id, row.metric))
    pd.testing.assert_series_equal(again.ci_low, frame.ci_low)
    off_dir = tmp_path / "off"
    _, off = _run(off_dir, shared_cache, 0)
    assert load_replicates(off_dir, off.cell_id[0], "fid") is None
    ca = off[off.metric == "class_alignment"].iloc[0]
    assert 0 <= ca.ci_low <= ca.value <= ca.ci_high <= 1  # the metric's own (Wilson) interval
    assert off[off.metric == "fid"].ci_low.isna().all()


@pytest.mark.parametrize("low, high", [(0.30, 0.52), (0.41, 0.43), (0.42, 0.42 + 1e-9), (0.25, 0.44)])
def test_calibrated_replicates_give_exactly_the_own_interval_and_keep_every_rank(low, high):
    """Pairing replicates of a metric with its own interval (coverage, Vendi, CLIP): the Δ/MMHM machinery reads
    their spread, so it must be the interval's, not the (too narrow, for coverage) bootstrap's."""
    reps = np.random.default_rng(3).gamma(4.0, 0.01, size=200) + 0.38  # skewed, median off the value
    value = 0.42
    calibrated = calibrated_replicates(value, low, high, reps)
    assert replicate_interval(value, calibrated) == pytest.approx((low, high), abs=1e-12)
    assert (np.diff(calibrated[np.argsort(reps)]) >= 0).all()  # monotone: replicate b keeps its rank


def test_calibrated_replicates_refuse_an_interval_without_its_value():
    with pytest.raises(HarnessError, match="does not contain its value"):
        calibrated_replicates(0.9, 0.1, 0.2, np.linspace(0, 1, 50))
