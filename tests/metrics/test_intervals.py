"""Interval methods (docs/metrics.md): each valid for its statistic, each containing its own value, and printed
alike in every view. Regressions of issue 14: percentile intervals above the value, class alignment's Wilson CI
replaced by bootstrap percentiles, exact-equality "identical", FID-only small-n note, KID's variant string."""

from __future__ import annotations

import numpy as np
import pytest

import harness.run.score as pipeline
from harness.errors import HarnessError
from harness.metrics import get_metric
from harness.metrics.base import MetricResult, ShardFeatures
from harness.metrics.class_alignment import wilson_interval
from harness.reports import load_runs, results_from_frame
from harness.reports.board import build_boards
from harness.reports.compare import compare_runs
from harness.reports.tables import fmt_ci
from tests.support.report_rows import frame_of, make_run


def test_wilson_of_zero_of_six_is_zero_to_039():
    low, high = wilson_interval(0, 6)
    assert low == 0.0 and high == pytest.approx(3.841459 / (6 + 3.841459), rel=1e-6) and high == pytest.approx(0.39,
                                                                                                            abs=5e-3)


def test_class_alignment_keeps_wilson_when_bootstrapped(monkeypatch):
    """0 of 6 correct: every bootstrap replicate is 0, so the percentile CI was [0, 0]; Wilson says [0, 0.39]."""
    logits = np.tile(np.eye(10)[[1]], (6, 1))  # the classifier says 1 ...
    shard = ShardFeatures(logits, (0,) * 6)  # ... and every sample asked for 0
    monkeypatch.setattr(pipeline, "_shard_features", lambda *args: iter([shard]))
    metric = get_metric("class_alignment")
    result = metric.compute([shard])
    indices = np.random.default_rng(0).integers(0, 6, (50, 6))
    out, replicates = pipeline._bootstrap(metric, result, [], None, "", None, indices)
    assert (out.value, out.ci_low) == (0.0, 0.0) and out.ci_high == pytest.approx(0.3903, abs=1e-4)
    assert replicates is not None and (replicates == 0).all()  # still saved: MMHM pairs them with other metrics


def test_biased_replicates_give_an_interval_around_the_value():
    """FID-like: every replicate above the value (resampling duplicates rows); the interval still contains it
    and is the median-centred basic interval [T − (q97.5 − med), T − (q2.5 − med)]."""
    from harness.metrics.bootstrap import replicate_interval

    reps = 849.0 + np.random.default_rng(1).gamma(4.0, 8.0, 400)
    low, high = replicate_interval(847.5, reps)
    q_low, med, q_high = np.percentile(reps, [2.5, 50, 97.5])
    assert (low, high) == pytest.approx((847.5 - (q_high - med), 847.5 - (q_low - med)))
    assert low < 847.5 < high and reps.min() > 847.5


def test_an_interval_that_excludes_its_value_is_refused_by_name():
    from harness.metrics.bootstrap import checked_interval

    with pytest.raises(HarnessError, match=r"metric fid_mnist: interval \[849.3, 978.5\] does not contain .*847.5"):
        checked_interval(847.5, 849.3, 978.5, "metric fid_mnist")
    assert checked_interval(1.0, 1.0 + 1e-15, 2.0) == (1.0, 2.0)  # float rounding is snapped, not refused


def test_value_and_bounds_are_printed_with_the_same_decimals():
    assert fmt_ci(0.989, 0.9618, 0.9949) == "0.9890 [0.9618, 0.9949]"
    assert fmt_ci(0.1065, 0.04494, 0.1703) == "0.1065 [0.0449, 0.1703]"
    assert fmt_ci(1571.0, 1558.2, 1595.0) == "1571 [1558, 1595]"
    assert fmt_ci(0.0, 0.0, 0.3903) == "0.0000 [0.0000, 0.3903]"


def test_compare_calls_float_noise_identical(tmp_path):
    """Executors and thread counts move float64 sums by ~1e-9 relative: that is no difference between runs."""
    a = make_run(tmp_path / "a", {"c": {"model": "m", "steps": 1, "cfg": 1.0, "fid": 12.5}}, run="a")
    b = make_run(tmp_path / "b", {"c": {"model": "m", "steps": 1, "cfg": 1.0, "fid": 12.5 * (1 + 1e-9)}}, run="b")
    diff = compare_runs(load_runs([a]), load_runs([b]))
    assert diff.delta.iloc[0] != 0 and list(diff.verdict) == ["identical"]


def _board(tmp_path, metric: str, n: int = 100, ci: tuple[float, float] | None = None):
    frame = frame_of({"c": {"model": "m", "steps": 1, "cfg": 1.0, metric: 847.5}}, n=n, ci=ci)
    return build_boards(results_from_frame(tmp_path, frame.assign(higher_is_better=False)))[0]


def _board_notes(tmp_path, metric: str, n: int) -> list[str]:
    return _board(tmp_path, metric, n).notes


@pytest.mark.parametrize("metric", ["fid_mnist", "fid_tf1", "fd_dinov2"])
def test_small_n_note_goes_by_metric_kind_not_name(tmp_path, metric):
    assert any(f"{metric} here uses n = 100" in note for note in _board_notes(tmp_path, metric, 100))


def test_no_small_n_note_for_a_non_frechet_metric_or_enough_samples(tmp_path):
    assert not any("here uses n" in note for note in _board_notes(tmp_path, "kid", 100))
    assert not any("here uses n" in note for note in _board_notes(tmp_path, "fid_mnist", 1000))


def test_a_stored_interval_that_excludes_its_value_is_never_printed(tmp_path):
    board = _board(tmp_path, "fid", ci=(849.3, 978.5))
    assert board.table.fid_ci_low.isna().all()
    assert any("exclude their own value" in note and "847.5 [849.3, 978.5]" in note for note in board.notes)


def test_kid_variant_does_not_claim_a_subset_size_the_cell_may_not_have():
    variant = get_metric("kid").variant
    assert "x1000" not in variant and "min(1000,n,reference_n)" in variant


def test_metric_result_with_own_interval_is_kept_but_checked():
    from harness.metrics.bootstrap import bootstrap_interval

    assert bootstrap_interval("clip_score", 30.0, (29.0, 31.0), np.full(10, 50.0))[:2] == (29.0, 31.0)
    with pytest.raises(HarnessError, match="metric clip_score"):
        bootstrap_interval("clip_score", 30.0, (31.0, 32.0), np.full(10, 50.0))
    assert MetricResult(1.0, None, None, 1).ci_low is None


def test_bootstrap_interval_is_cut_to_the_values_the_statistic_can_take():
    """A small FID with right-skewed replicates: the basic bootstrap reflects them to below 0, which no FID can be."""
    from harness.metrics.bootstrap import bootstrap_interval

    value = 0.4
    replicates = np.linspace(0.5, 6.0, 200)  # median 3.25, q97.5 ≈ 5.86: reflected low ≈ 0.4 − 2.61 < 0
    uncut = bootstrap_interval("fid", value, (None, None), replicates)
    cut = bootstrap_interval("fid", value, (None, None), replicates, get_metric("fid").value_range)
    assert uncut[0] < 0 and cut[0] == 0.0 and cut[1] == uncut[1] and cut[0] <= value <= cut[1]
    # the same cut at the top: a precision of 0.99 cannot have an upper bound above 1
    top = bootstrap_interval("precision", 0.99, (None, None), np.linspace(0.90, 0.99, 200),
                             get_metric("precision").value_range)
    assert top[1] == 1.0 and top[0] <= 0.99 <= top[1]


@pytest.mark.parametrize("name, low", [("fid", 0.0), ("fid_mnist", 0.0), ("fd_dinov2", 0.0), ("cmmd", 0.0),
                                       ("is", 1.0), ("kid", None)])
def test_metrics_declare_the_values_they_can_take(name, low):
    assert get_metric(name).value_range[0] == low  # KID's unbiased estimate can be negative: no floor
