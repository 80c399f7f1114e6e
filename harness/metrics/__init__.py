"""Metric registry. Metric modules are imported lazily, by name.

Adding a metric:
1. one module here with a ``Metric`` subclass (``base.py``): ``name``, ``variant`` (recorded in every row),
   ``source`` (the paper, listed by ``harness ls metrics``), ``higher_is_better``, ``value_range`` ((None, None)
   if unbounded), the ``extractor`` and ``output`` it reads,
   ``needs_reference`` / ``reference_kind``, and ``compute(shards, reference)``; override ``replicates`` only
   with an exact faster form of "the metric on the resampled rows";
2. one line ``"name": ".module:Class"`` in ``_METRICS`` below;
3. nothing else: ``tests/metrics/test_conformance_metrics.py`` runs it through the metric conformance suite (one shard
   == k shards, fast replicates == recompute, foreign references and non-finite features refused, interval
   inside ``value_range``); add a test of its formula against an independent computation.
"""

from __future__ import annotations

import importlib

from harness.errors import ProtocolError
from harness.metrics.base import Metric, MetricResult, ShardFeatures
from harness.suggest import did_you_mean

# registry name -> "module:Class" (relative to this package)
_METRICS: dict[str, str] = {
    "fid": ".fid:FID",
    "class_alignment": ".class_alignment:ClassAlignment",
    "clip_score": ".clip_score:ClipScore",
    "clip_score_clamped": ".clip_score:ClipScoreClamped",
    "clip_score_per_class": ".per_class:ClipScorePerClass",
    "pickscore_per_class": ".per_class:PickScorePerClass",
    "pickscore": ".pickscore:PickScore",
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
}

__all__ = ["Metric", "MetricResult", "ShardFeatures", "available_metrics", "get_metric", "metric_lines"]


def available_metrics() -> list[str]:
    return sorted(_METRICS)


def get_metric(name: str) -> Metric:
    if name not in _METRICS:
        raise ProtocolError(f"unknown metric {name!r}{did_you_mean(name, _METRICS)}; "
                            f"available: {', '.join(available_metrics())}")
    module_name, cls_name = _METRICS[name].split(":")
    return getattr(importlib.import_module(module_name, __name__), cls_name)()


def metric_lines() -> list[str]:
    """One line per metric for ``harness ls metrics``: what it reads, its direction, its reference, its variant
    and, where the metric names one, its source (the paper)."""
    lines = []
    for name in available_metrics():
        m = get_metric(name)
        reference = ("no reference" if not m.needs_reference else
                     "reference rows" if m.reference_kind == "features" else "reference statistics")
        reads = f"{m.extractor}/{m.output}"
        lines.append(f"{name:<22} reads {reads:<40} {'higher' if m.higher_is_better else 'lower'} is better, "
                     f"{reference}; variant {m.variant}" + (f"; source {m.source}" if m.source else ""))
    return lines
