"""Shared machinery of the per-sample prompt metrics (CLIP Score, PickScore, ImageReward).

Image embeddings come from the feature cache (one image pass per shard); the prompts of the samples are
embedded here, once per distinct prompt (ImageNet protocols repeat 1000 class prompts). The extractor's
text tower is loaded on the CPU: the image pass is the expensive part and ran on the run's device already.
The CI is the normal-approximation 95 % interval of the mean over samples (bootstrap CIs belong to the
metric engine's bootstrap stage).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.features import loaded_extractor
from harness.metrics.base import Metric, MetricResult, ShardFeatures

Z_95 = 1.959963984540054


def collect(shards: Iterable[ShardFeatures], who: str, what: str = "image embedding") -> tuple[np.ndarray, list[str]]:
    """All feature rows (``what`` they are, for messages) and prompts of a cell, checked row for row."""
    features, prompts = [], []
    for index, shard in enumerate(shards):
        feats = np.asarray(shard.features, dtype=np.float64)
        if feats.ndim != 2 or len(feats) != len(shard.prompts):
            raise HarnessError(f"{who}: shard {index} has {what} rows of shape {feats.shape} but "
                               f"{len(shard.prompts)} prompts; expected one prompt per sample")
        if not np.isfinite(feats).all():
            raise HarnessError(f"{who}: shard {index} has {int((~np.isfinite(feats)).sum())} non-finite {what} "
                               f"values (NaN/Inf); refusing to score them")
        missing = [k for k, p in enumerate(shard.prompts) if not p]
        if missing:
            raise HarnessError(f"{who}: shard {index} sample {missing[0]} has no prompt ({len(missing)} without); "
                               f"the dataset must give prompts or class prompts (e.g. an ImageNet dataset)")
        features.append(feats)
        prompts.extend(shard.prompts)
    if not prompts:
        raise HarnessError(f"{who}: no samples to score")
    return np.concatenate(features), prompts


def truncation_counts(extractor: Any, prompts: list[str]) -> dict[str, int]:
    """How many distinct prompts, and how many samples, the extractor's tokenizer cut (``extractor.truncated``)."""
    unique = sorted(set(prompts))
    cut = {p for p, flag in zip(unique, extractor.truncated(unique), strict=True) if flag}
    return {"truncated_prompts": len(cut), "truncated_samples": sum(p in cut for p in prompts)}


def text_embeddings(extractor: Any, prompts: list[str]) -> tuple[np.ndarray, dict[str, int]]:
    """(embedding per sample, truncation counts: distinct prompts and samples the tokenizer cut)."""
    unique = sorted(set(prompts))
    table = extractor.encode_text(unique).astype(np.float64)
    row = {p: k for k, p in enumerate(unique)}
    return table[[row[p] for p in prompts]], truncation_counts(extractor, prompts)


def mean_result(scores: np.ndarray, details: dict[str, Any]) -> MetricResult:
    n = len(scores)
    mean = float(scores.mean())
    half = Z_95 * float(scores.std(ddof=1)) / math.sqrt(n) if n > 1 else float("nan")
    low, high = (mean - half, mean + half) if n > 1 else (None, None)
    return MetricResult(value=mean, ci_low=low, ci_high=high, n=n,
                        details={**details, "ci": "normal-95 of the mean over samples", "std": float(scores.std())})


class PromptScoreMetric(Metric):
    """The mean over samples of a per-sample score of (image, prompt); subclasses give ``sample_scores``."""

    needs_reference = False
    requires = frozenset({"prompts"})

    def sample_scores(self, shards: Iterable[ShardFeatures]) -> tuple[np.ndarray, dict[str, Any]]:
        """One score per sample, in sample order, and the details the row records."""
        raise NotImplementedError

    def compute(self, shards: Iterable[ShardFeatures], reference: Any | None = None) -> MetricResult:
        return mean_result(*self.sample_scores(shards))

    def shard_replicates(self, shards: list[ShardFeatures], reference: Any | None, indices: np.ndarray) -> np.ndarray:
        """Exact and cheap: the scores are per sample, so replicate b is the mean of ``scores[indices[b]]``."""
        scores, _ = self.sample_scores(shards)
        labels = np.array([label for s in shards for label in s.labels], dtype=object)
        return np.array([self.aggregate(scores[idx], labels[idx]) for idx in indices], dtype=np.float64)

    def aggregate(self, scores: np.ndarray, labels: np.ndarray) -> float:
        """The row value from per-sample scores (the mean; per-class variants average class means)."""
        return float(scores.mean())


class TextImageMetric(PromptScoreMetric):
    """Per sample: a function of the cosine between the cached image embedding and the prompt's text embedding."""

    output = "image_embeds"

    def per_sample(self, cosines: np.ndarray, extractor: Any) -> tuple[np.ndarray, dict[str, Any]]:
        raise NotImplementedError

    def sample_scores(self, shards: Iterable[ShardFeatures]) -> tuple[np.ndarray, dict[str, Any]]:
        """One score per sample, in sample order, and the details every text-image row records."""
        images, prompts = collect(shards, self.name)
        extractor = loaded_extractor(self.extractor, "cpu")
        texts, truncation = text_embeddings(extractor, prompts)
        if texts.shape != images.shape:
            raise HarnessError(f"{self.name}: text embeddings {texts.shape} do not match image embeddings "
                               f"{images.shape}; were the features made by another model?")
        scores, details = self.per_sample((images * texts).sum(axis=1), extractor)
        return scores, {**details, **truncation, "distinct_prompts": len(set(prompts)), "context_length": 77}
