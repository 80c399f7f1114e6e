"""CLIP Score: per image 100 * cos(E_img, E_txt), mean over images (docs/metrics.md).

- ``clip_score``: the paper's variant, OpenAI ViT-B/16, no clamp (a negative cosine stays negative);
- ``clip_score_clamped``: torchmetrics' convention, OpenAI ViT-L/14, max(100 * cos, 0) applied **per sample**
  (torchmetrics clamps the mean instead, a known bug; the number of clamped samples is in the details).
Prompts longer than 77 tokens are truncated keeping the end-of-text token; the count is in the details.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.metrics.text_image import TextImageMetric


class ClipScore(TextImageMetric):
    name = "clip_score"
    variant = "openai-ViT-B-16/open_clip/100cos/no-clamp"
    higher_is_better = True
    value_range = (-100.0, 100.0)  # 100 x a cosine
    extractor = "clip-vit-b-16-openai"

    def per_sample(self, cosines: np.ndarray, extractor: Any) -> tuple[np.ndarray, dict[str, Any]]:
        return 100.0 * cosines, {"clamp": "none"}


class ClipScoreClamped(TextImageMetric):
    name = "clip_score_clamped"
    variant = "openai-ViT-L-14/open_clip/max(100cos,0)-per-sample"
    higher_is_better = True
    value_range = (0.0, 100.0)  # 100 x a cosine, clamped at 0 per sample
    extractor = "clip-vit-l-14-openai"

    def per_sample(self, cosines: np.ndarray, extractor: Any) -> tuple[np.ndarray, dict[str, Any]]:
        raw = 100.0 * cosines
        return np.maximum(raw, 0.0), {"clamp": "per-sample at 0", "clamped_samples": int((raw < 0).sum())}
