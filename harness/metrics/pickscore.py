"""PickScore: per image exp(logit_scale) * cos(E_img, E_txt) with PickScore_v1, mean over images (docs/metrics.md).

Typical values are about 20-23. Prompts longer than 77 tokens are truncated (count in the details).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.metrics.text_image import TextImageMetric


class PickScore(TextImageMetric):
    name = "pickscore"
    variant = "PickScore_v1/CLIP-H-14-processor/exp(logit_scale)cos"
    higher_is_better = True
    value_range = (None, None)  # ±exp(logit_scale) x a cosine: the bound is a property of the loaded weights
    extractor = "pickscore-v1"

    def per_sample(self, cosines: np.ndarray, extractor: Any) -> tuple[np.ndarray, dict[str, Any]]:
        scale = extractor.logit_scale
        return scale * cosines, {"logit_scale_exp": scale}
