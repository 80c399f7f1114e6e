"""Every registered metric through the metric conformance suite (tests/conformance_plugins.py), on seeded
synthetic extractor output: a metric reads features, so its contract can be checked without images."""

from __future__ import annotations

import pytest

from harness.features import get_extractor
from harness.metrics import Metric, available_metrics, get_metric
from tests.support.conformance_plugins import MetricCase, MetricConformance, metric_case, skip_if_weights_absent

# Offline stand-ins for weights this machine may lack (fixtures of tests/support/metric_fixtures.py,
# tests/support/clip_metric_fixtures.py and tests/support/imagereward_fixtures.py): random networks installed under
# the real entry names. Metrics on any other extractor whose weights are absent skip, saying so.
STAND_IN_WEIGHTS = {"inception-tf1": "tf1_weights", "inception-clean": "tf1_weights",
                    "clip-vit-b-16-openai": "installed", "clip-vit-l-14-openai": "installed",
                    "hps-v2.1": "hps_installed",
                    "imagereward-v1.0": "imagereward_installed"}
# How a replicate is defined where it is not "the metric on the resampled rows": recall rebuilds the generated
# manifold from the distinct resampled samples (harness/metrics/precision_recall.py says why).
RECOMPUTE_RULES = {"recall": "distinct rows"}


# Composites (harness/metrics/scaled.py) read no features; tests/metrics/test_scaled_metrics.py checks them.
@pytest.fixture(params=[name for name in available_metrics() if not get_metric(name).components])
def metric(request: pytest.FixtureRequest) -> Metric:
    m = get_metric(request.param)
    if m.extractor in STAND_IN_WEIGHTS:
        request.getfixturevalue(STAND_IN_WEIGHTS[m.extractor])
    return m


# n = 40 samples against 12-d (n >= d: FID's statistics route) and 64-d features (n < d: its Gram route)
@pytest.fixture(params=[12, 64], ids=["n>=d", "n<d"])
def case(metric: Metric, request: pytest.FixtureRequest) -> MetricCase:
    embed_dim = None
    if getattr(get_extractor(metric.extractor), "needs_prompts", False):  # its output is the per-sample score
        scored = metric_case(metric, request.param)
        scored.features = scored.features[:, :1].copy()
        return scored
    if not metric.needs_reference and hasattr(get_extractor(metric.extractor), "encode_text"):
        # a text-image metric: its features must be the image embeddings of the extractor's own text tower
        def text_width() -> int:
            extractor = get_extractor(metric.extractor)
            extractor.load("cpu")
            return int(extractor.encode_text(["a"]).shape[1])

        embed_dim = skip_if_weights_absent(text_width)
    return metric_case(metric, request.param, embed_dim)


@pytest.fixture
def recompute_rule(metric: Metric) -> str:
    return RECOMPUTE_RULES.get(metric.name, "all rows")


class TestMetricConformance(MetricConformance):
    pass


def test_registry_names_are_the_metrics_own() -> None:
    """A copied class that keeps its parent's ``name`` would write its rows under another metric's name."""
    assert {name: get_metric(name).name for name in available_metrics()} == {n: n for n in available_metrics()}
