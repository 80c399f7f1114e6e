"""The provisional CLIP-/PickScore-scaled FID and IS (harness/metrics/scaled.py, docs/metrics.md "Scaled FID and IS"):
values and replicates against the formulas written out here, the score stage's wiring on a real tiny run, the
refusals, and the cache key."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import harness
import harness.metrics as registry
from harness.errors import HarnessError, ProtocolError
from harness.metrics import get_metric, measured_metrics, metric_lines, with_components
from harness.metrics import scaled as scaled_module
from harness.metrics.base import MetricResult
from harness.plan.protocol import make_plan, protocol_from_dict
from harness.run.composites import Scored, composite_entry

COMPOSITES = ["csfid", "psfid", "csis", "psis", "csfid_shifted", "psfid_shifted", "csis_shifted", "psis_shifted"]
PICK_SCALE = 87.5  # not PickScore_v1's 100: the test sees whether the row's own logit_scale_exp is used
RESULTS = {"fid": MetricResult(12.5, None, None, 50), "is": MetricResult(7.25, None, None, 50),
           "clip_score": MetricResult(28.0, 27.0, 29.0, 50),
           "pickscore": MetricResult(21.0, 20.5, 21.5, 50, {"logit_scale_exp": PICK_SCALE})}


def expected(name: str, base: float, align_value: float) -> float:
    """The formulas as docs/metrics.md writes them, independently of the module's tables."""
    a = align_value / (100.0 if name.startswith("cs") else PICK_SCALE)
    t = (1 + a) / 2 if name.endswith("_shifted") else a
    return base * t if "is" in name.split("_")[0] else base / t


def basic_interval(value: float, reps: np.ndarray) -> tuple[float, float]:
    """The median-centred basic bootstrap interval, cut at 0: [T - (q97.5 - m), T - (q2.5 - m)]."""
    q_low, q_high, median = np.percentile(reps, 2.5), np.percentile(reps, 97.5), np.median(reps)
    return max(0.0, value - (q_high - median)), value - (q_low - median)


@pytest.mark.parametrize("name", COMPOSITES)
def test_value_is_the_formula_of_the_component_values_and_variant_says_provisional(name):
    metric = get_metric(name)
    base, align = metric.components
    result, reps = metric.combine(RESULTS, {})
    assert result.value == pytest.approx(expected(name, RESULTS[base].value, RESULTS[align].value), rel=1e-12)
    assert (result.ci_low, result.ci_high, reps) == (None, None, None)  # no replicates: no interval, none made up
    assert result.details["ci"].startswith("none:") and result.n == 50
    formula = "shifted" if name.endswith("_shifted") else "ratio"
    assert metric.variant.startswith("provisional (paper v2 formula unpublished here), formula " + formula)
    assert f"of {base}[{get_metric(base).variant}] and {align}[{get_metric(align).variant}]" in metric.variant
    assert "|" not in metric.variant and ";" not in metric.variant  # printed in markdown tables and "; " lists
    assert metric.higher_is_better == get_metric(base).higher_is_better
    assert metric.source == "provisional (paper v2 formula unpublished here)"
    line = next(line for line in metric_lines() if line.split()[0] == name)
    assert f"reads the rows of {base} and {align}" in line and line.endswith(f"source {metric.source}")


@pytest.mark.parametrize("name", ["csfid", "psis", "psfid_shifted"])
def test_replicate_b_is_the_formula_of_the_components_replicate_b_and_the_interval_holds_the_value(name):
    metric = get_metric(name)
    base, align = metric.components
    rng = np.random.default_rng(3)
    reps = {base: RESULTS[base].value * (1 + 0.1 * rng.standard_normal(200)) + (0.8 if base == "fid" else 0),
            align: RESULTS[align].value + 0.6 * rng.standard_normal(200)}
    result, composite = metric.combine(RESULTS, reps)
    np.testing.assert_allclose(composite, [expected(name, b, a) for b, a in zip(reps[base], reps[align],
                                                                                  strict=True)], rtol=1e-12)
    assert (result.ci_low, result.ci_high) == pytest.approx(basic_interval(result.value, composite), rel=1e-12)
    assert result.ci_low < result.value < result.ci_high
    assert "B=200" in result.details["ci_method"]
    with pytest.raises(HarnessError, match=f"{name}: {base} has \\(200,\\) bootstrap replicates, {align} \\(199,\\)"):
        metric.combine(RESULTS, {base: reps[base], align: reps[align][:199]})


def test_an_alignment_at_or_below_zero_is_refused_by_the_ratio_formula_and_scored_by_shifted():
    negative = {**RESULTS, "clip_score": MetricResult(-3.0, None, None, 50)}
    with pytest.raises(HarnessError, match=r"csfid: formula 'ratio' needs an alignment term t = a > 0, but "
                                           r"clip_score gives a = -0\.03 \(value\).*use csfid_shifted"):
        get_metric("csfid").combine(negative, {})
    assert get_metric("csfid_shifted").combine(negative, {})[0].value == pytest.approx(12.5 / 0.485)
    reps = {"is": np.full(4, 7.0), "clip_score": np.array([30.0, 1.0, -2.0, 25.0])}  # one replicate a <= 0
    with pytest.raises(HarnessError, match=r"csis: .* a = -0\.02 \(a bootstrap replicate\)"):
        get_metric("csis").combine(RESULTS, reps)
    bare = {**RESULTS, "pickscore": MetricResult(21.0, None, None, 50)}
    with pytest.raises(HarnessError, match="pickscore: its result carries logit_scale_exp=None"):
        get_metric("psfid").combine(bare, {})


MNIST = {"name": "p", "models": [{"card": "student-mnist", "cfg": [None]}], "datasets": ["mnist"], "steps": [1],
         "n": 8, "reference_n": 100}


@pytest.mark.parametrize(("name", "component"), [("csfid", "clip_score"), ("psis", "pickscore"),
                                                  ("csis_shifted", "clip_score")])
def test_a_composite_whose_component_cannot_be_computed_is_refused_at_plan_time(name, component):
    with pytest.raises(ProtocolError, match=f"models\\[0\\]: metric '{name}': its component '{component}' needs "
                                            "prompts for every sample; dataset 'mnist' provides labels, images"):
        make_plan(protocol_from_dict({**MNIST, "metrics": [name]}))


def test_components_are_added_before_their_composite_and_never_extracted_for_it():
    assert with_components(["csfid"]) == ("fid", "clip_score", "csfid")
    assert with_components(["psis", "fid_mnist", "is"]) == ("is", "pickscore", "psis", "fid_mnist")
    assert with_components(["csfid", "fid", "csis"]) == ("fid", "clip_score", "csfid", "is", "csis")
    assert protocol_from_dict({**MNIST, "metrics": ["csfid"]}).metrics == ("fid", "clip_score", "csfid")
    assert measured_metrics(["fid", "clip_score", "csfid"]) == ["fid", "clip_score"]


def test_harness_score_refuses_a_composite_before_reading_images(tmp_path):
    images = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(HarnessError, match=r"--metrics csfid: a composite of fid and clip_score, computed per cell "
                                           r"by `harness run`"):
        harness.score(images, metrics=["csfid"], cache=tmp_path)


def _scored(**keys: str) -> dict[str, Scored]:
    return {c: Scored(keys.get(c, f"key-{c}"), RESULTS[c], None, "ref") for c in RESULTS}


def test_the_cache_key_covers_the_formula_and_the_components():
    key, compute = composite_entry(get_metric("csfid"), "cell", _scored(), 0)
    shifted, _ = composite_entry(get_metric("csfid_shifted"), "cell", _scored(), 0)
    assert key != shifted and get_metric("csfid").variant != get_metric("csfid_shifted").variant
    assert composite_entry(get_metric("csfid"), "cell", _scored(), 0)[0] == key  # deterministic
    for changed in (_scored(fid="other"), _scored(clip_score="other")):
        assert composite_entry(get_metric("csfid"), "cell", changed, 0)[0] != key
    assert composite_entry(get_metric("csfid"), "cell", _scored(), 50)[0] != key
    assert compute()[0].value == pytest.approx(12.5 / 0.28)
    without = {k: v for k, v in _scored().items() if k != "clip_score"}
    with pytest.raises(HarnessError, match="metric 'csfid': its component 'clip_score' must be scored before it"):
        composite_entry(get_metric("csfid"), "cell", without, 0)


def test_a_real_run_scores_the_composite_from_its_component_rows_and_replicates(tmp_path, monkeypatch, shared_cache):
    """The score stage's wiring on a quickstart-like run: CLIP / PickScore weights are not available offline, so the
    composite under test scales fid_mnist by class_alignment (a proportion in [0, 1] like the mean cosine), built
    with the same factory and combine as csFID. The random-init fm-tiny keeps the alignment well below 1 (a trained
    model's 1.000 would make any formula return FID); ``shifted`` keeps t >= 1/2 when it is 0."""
    from harness.metrics.class_alignment import ClassAlignment
    from harness.metrics.fid_mnist import FIDMnist

    monkeypatch.setitem(scaled_module.ALIGNMENTS, "class_alignment", ("class_alignment", lambda result: 1.0))
    cls = scaled_module._scaled("TestCaFID", "test_cafid", FIDMnist, ClassAlignment, "shifted")
    monkeypatch.setitem(registry._METRICS, "test_cafid", cls)
    raw = {**MNIST, "models": ["fm-tiny"], "cfg": [1.0], "metrics": ["test_cafid"], "n": 24, "shard_size": 8,
           "batch_size": 8, "bootstrap": 40}
    run = harness.run(raw, results=tmp_path / "run", executor="debug", cache=shared_cache)
    rows = run.results.set_index("metric")
    assert list(run.results.metric) == ["fid_mnist", "class_alignment", "test_cafid"]  # components added, first
    fid, align, composite = (rows.loc[m] for m in ("fid_mnist", "class_alignment", "test_cafid"))
    assert align.value < 0.5
    assert composite.value == pytest.approx(fid.value / ((1 + align.value) / 2), rel=1e-12)
    assert composite.variant.startswith("provisional (paper v2 formula unpublished here), formula shifted")
    assert (composite.extractor_id, composite.reference_id) == ("", fid.reference_id)
    boot = run.dir / "bootstrap" / composite.cell_id
    reps = {m: np.load(boot / f"{m}.npy") for m in ("fid_mnist", "class_alignment", "test_cafid")}
    assert len(reps["test_cafid"]) == 40 and np.ptp(reps["class_alignment"]) > 0  # the alignment varies: paired
    np.testing.assert_allclose(reps["test_cafid"], reps["fid_mnist"] / ((1 + reps["class_alignment"]) / 2),
                               rtol=1e-12)
    assert (composite.ci_low, composite.ci_high) == pytest.approx(basic_interval(composite.value,
                                                                                 reps["test_cafid"]), rel=1e-12)
    assert composite.ci_low <= composite.value <= composite.ci_high
    again = harness.run(raw, results=tmp_path / "run", executor="debug", cache=shared_cache)  # from the score cache
    pd.testing.assert_frame_equal(again.results.drop(columns="created_at"), run.results.drop(columns="created_at"))


def test_missing_alignment_weights_are_refused_by_the_component_before_any_compute(tmp_path, monkeypatch):
    from harness.api.checks import require_for_metrics
    from harness.features.weights import WeightsNotFound

    monkeypatch.setenv("HARNESS_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    require_for_metrics(["csfid"])  # the composite itself needs no weights
    with pytest.raises(WeightsNotFound, match=r"metric 'clip_score' \(extractor 'clip-vit-b-16-openai'\): not "
                                              r"computed: weights not found"):
        require_for_metrics(protocol_from_dict({**MNIST, "metrics": ["csfid"]}).metrics)
