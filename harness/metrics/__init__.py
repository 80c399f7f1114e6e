"""Metric registry. Metric modules are imported lazily, by name.

Adding a metric:
1. one module here with a ``Metric`` subclass (``base.py``): ``name``, ``variant`` (recorded in every row),
   ``source`` (the paper, listed by ``harness ls metrics``), ``higher_is_better``, ``value_range`` ((None, None)
   if unbounded), the ``extractor`` and ``output`` it reads,
   ``needs_reference`` / ``reference_kind``, and ``compute(shards, reference)``; override ``replicates`` only
   with an exact faster form of "the metric on the resampled rows";
2. one line ``"name": ".module:Class"`` in ``_METRICS`` below (a metric outside the package: decorate the class
   with ``@register_metric("name")`` in a plugin module, harness/plugins.py);
3. nothing else: ``tests/metrics/test_conformance_metrics.py`` runs it through the metric conformance suite (one shard
   == k shards, fast replicates == recompute, foreign references and non-finite features refused, interval
   inside ``value_range``); add a test of its formula against an independent computation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.errors import ProtocolError
from harness.metrics.base import Metric, MetricResult, ShardFeatures
from harness.registry import LazyRegistry

# registry name -> "module:Class" (relative to this package), or the class a plugin registered
_METRICS: dict[str, Any] = {
    "fid": ".fid:FID",
    "class_alignment": ".class_alignment:ClassAlignment",
    "clip_score": ".clip_score:ClipScore",
    "clip_score_clamped": ".clip_score:ClipScoreClamped",
    "clip_score_per_class": ".per_class:ClipScorePerClass",
    "pickscore_per_class": ".per_class:PickScorePerClass",
    "pickscore": ".pickscore:PickScore",
    "hps_v21": ".hps:HpsV21",
    "imagereward": ".imagereward:ImageReward",
    "fid_mnist": ".fid_mnist:FIDMnist",
    "fid_tf1": ".fid:FIDTF1",
    "fid_clean": ".fid:FIDClean",
    "is": ".inception_score:InceptionScore",
    "is_mnist": ".inception_score:InceptionScoreMnist",
    "is_proxy_mobilenetv2": ".inception_score:ISProxyMobileNetV2",
    "kid": ".kid:KID",
    "precision": ".precision_recall:Precision",
    "recall": ".precision_recall:Recall",
    "fd_dinov2": ".fd_dinov2:FDDinov2",
    "cmmd": ".cmmd:CMMD",
    "density": ".density_coverage:Density",
    "coverage": ".density_coverage:Coverage",
    "density_mnist": ".density_coverage:DensityMnist",
    "coverage_mnist": ".density_coverage:CoverageMnist",
    "vendi": ".vendi:Vendi",
    "vendi_mnist": ".vendi:VendiMnist",
    "sfid": ".sfid:SFID",
    # provisional composites (docs/metrics.md, "Scaled FID and IS"): one entry per formula
    "csfid": ".scaled:CsFID",
    "psfid": ".scaled:PsFID",
    "csis": ".scaled:CsIS",
    "psis": ".scaled:PsIS",
    "csfid_shifted": ".scaled:CsFIDShifted",
    "psfid_shifted": ".scaled:PsFIDShifted",
    "csis_shifted": ".scaled:CsISShifted",
    "psis_shifted": ".scaled:PsISShifted",
}

__all__ = ["Metric", "MetricResult", "ShardFeatures", "available_metrics", "get_metric", "measured_metrics",
           "metric_lines", "register_metric", "with_components"]


_REGISTRY = LazyRegistry("metric", __name__, _METRICS, ProtocolError)


def register_metric(name: str):
    """Class decorator: ``@register_metric("name")`` makes a ``Metric`` subclass a protocol's ``metrics:`` entry."""
    return _REGISTRY.register(name)


def available_metrics() -> list[str]:
    return _REGISTRY.names()


def get_metric(name: str) -> Metric:
    return _REGISTRY.get_class(name)()


def measured_metrics(names: Sequence[str]) -> list[str]:
    """The metrics among ``names`` that read features (what extraction and weights checks need): composites read
    none, they are computed from their components' results."""
    return [name for name in names if not get_metric(name).components]


def with_components(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` with each composite's components placed before it (added when not listed, moved forward when
    listed after it): a composite is computed from the cell's own component results, so they are scored and
    reported too, first. Unknown names are kept for the plan to refuse with their position."""
    out: list[str] = []
    for name in names:
        try:
            components = get_metric(name).components
        except ProtocolError:
            components = ()
        out += [c for c in (*components, name) if c not in out]
    return tuple(out)


def metric_lines() -> list[str]:
    """One line per metric for ``harness ls metrics``: what it reads, its direction, its reference, its variant
    and, where the metric names one, its source (the paper)."""
    lines = []
    for name in available_metrics():
        m = get_metric(name)
        reference = ("no reference" if not m.needs_reference else
                     "reference rows" if m.reference_kind == "features" else "reference statistics")
        reads = f"{m.extractor}/{m.output}" if not m.components else f"the rows of {' and '.join(m.components)}"
        lines.append(f"{name:<22} reads {reads:<40} {'higher' if m.higher_is_better else 'lower'} is better, "
                     f"{reference}; variant {m.variant}" + (f"; source {m.source}" if m.source else ""))
    return lines
