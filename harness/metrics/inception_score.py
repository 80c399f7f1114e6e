"""Inception Score on any logits output: exp(E_x KL(p(y|x) ‖ p(y))), per split, float64.

Rows arrive in sample-index order (the pipeline's, or sorted file names for ``harness score``); they are
shuffled with ``numpy.random.RandomState(seed).permutation`` (seed 2020, torch-fidelity's default, so the
split assignment is reproducible and equals torch-fidelity's on the same row order) and cut into
``splits`` contiguous chunks ``[i*N//splits, (i+1)*N//splits)``. The value is the mean over splits; the
std over splits is reported with ddof=0 (as torch-fidelity and the original code).

``is`` reads the 1008-way ``logits_unbiased`` of the tf1 Inception (the published definition).
``is_mnist`` reads the packaged MNIST CNN's 10 logits: a *domain* score for the offline MNIST world,
an MNIST-CNN proxy whose values are not comparable with Inception IS (max 10, not 1000).
``is_proxy_mobilenetv2`` reads the packaged MobileNetV2's 1000 ImageNet logits: the offline stand-in for IS
on ImageNet-like images, same formula, another network, so never reported or compared as "IS".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from harness.errors import HarnessError
from harness.metrics.base import Metric, MetricResult, ShardFeatures

SPLITS = 10
SPLIT_SEED = 2020
STD_DDOF = 0


def _log_probs(logits: np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    if x.ndim != 2 or x.shape[1] < 2:
        raise HarnessError(f"inception_score: expected (n, classes >= 2) logits, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise HarnessError("inception_score: logits contain NaN/Inf")
    return x.log_softmax(dim=1)


def _split_scores(log_p: torch.Tensor, order: np.ndarray, splits: int) -> np.ndarray:
    n = len(order)
    scores = np.empty(splits, dtype=np.float64)
    for i in range(splits):
        chunk = log_p[order[i * n // splits:(i + 1) * n // splits]]
        p = chunk.exp()
        log_marginal = p.mean(dim=0).log()
        scores[i] = float((p * (chunk - log_marginal)).sum(dim=1).mean().exp())
    return scores


def inception_score(logits: np.ndarray, splits: int = SPLITS, seed: int | None = SPLIT_SEED
                    ) -> tuple[float, float, np.ndarray]:
    """(mean, std with ddof=0, per-split scores). ``seed=None`` keeps the given row order."""
    n = len(logits)
    if splits < 1 or n < splits:
        raise HarnessError(f"inception_score: needs n >= splits >= 1, got n={n}, splits={splits}")
    order = np.arange(n) if seed is None else np.random.RandomState(seed).permutation(n)
    scores = _split_scores(_log_probs(logits), order, splits)
    return float(scores.mean()), float(scores.std(ddof=STD_DDOF)), scores


class InceptionScore(Metric):
    name = "is"
    variant = f"inception-tf1/logits_unbiased(1008)/splits={SPLITS},seed={SPLIT_SEED},float64"
    higher_is_better = True
    value_range = (1.0, None)  # exp of a mean KL divergence
    extractor = "inception-tf1"
    output = "logits_unbiased"
    needs_reference = False
    splits = SPLITS

    def _splits_for(self, n: int) -> int:
        if n < self.splits:
            raise HarnessError(f"{self.name}: needs at least {self.splits} samples for {self.splits} splits, got {n}")
        return self.splits

    def compute(self, shards: Iterable[ShardFeatures], reference: Any | None = None) -> MetricResult:
        logits = np.concatenate([np.asarray(s.features) for s in shards])
        mean, std, scores = inception_score(logits, self._splits_for(len(logits)), SPLIT_SEED)
        return MetricResult(value=mean, ci_low=None, ci_high=None, n=len(logits), details={
            "std": std, "std_ddof": STD_DDOF, "splits": self.splits, "split_scores": scores.tolist(),
            "split_policy": f"numpy RandomState({SPLIT_SEED}).permutation of rows in sample-index order",
            "classes": int(logits.shape[1])})

    def replicates(self, features: np.ndarray, labels: tuple[int | None, ...], reference: Any | None,
                   indices: np.ndarray) -> np.ndarray:
        # log-softmax once; each replicate only gathers rows (same shuffle rule as compute)
        log_p = _log_probs(features)
        splits = self._splits_for(indices.shape[1])
        perm = np.random.RandomState(SPLIT_SEED).permutation(indices.shape[1])
        return np.array([_split_scores(log_p, idx[perm], splits).mean() for idx in indices])


class InceptionScoreMnist(InceptionScore):
    name = "is_mnist"
    variant = (f"MNIST-CNN proxy (digit-recognizer-py, 10 classes; not Inception IS)/logits/"
               f"splits={SPLITS},seed={SPLIT_SEED},float64")
    extractor = "mnist-cnn"
    output = "logits"


class ISProxyMobileNetV2(InceptionScore):
    name = "is_proxy_mobilenetv2"
    variant = (f"IS proxy on MobileNetV2 ImageNet-1k (torchvision IMAGENET1K_V1, 1000 classes; not Inception IS)/"
               f"logits/splits={SPLITS},seed={SPLIT_SEED},float64")
    extractor = "mobilenet-v2-imagenet"
    output = "logits"
