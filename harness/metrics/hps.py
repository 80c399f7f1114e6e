"""HPS v2.1: per image 100 * cos(E_img, E_txt) with the HPS v2.1 checkpoint, mean over images (docs/metrics.md).

100 x the cosine is the scale of the HPSv2 benchmark (``evaluation.py``); ``hpsv2.score`` returns the bare cosine.
The benchmark reports, per style, the mean of ten 80-prompt chunk means, which equals the mean over its 800 images;
here every cell is one mean over its samples. v2.0 and v2.1 scores are not comparable (another checkpoint). Prompts
longer than 77 tokens are truncated keeping the end-of-text token (count in the details).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.metrics.text_image import TextImageMetric


class HpsV21(TextImageMetric):
    name = "hps_v21"
    variant = ("HPS-v2.1/open_clip-ViT-H-14/fp32/100cos/hpsv2-preprocess_val"
               "(tensor-bicubic-antialias-longer-side-224,zero-pad)")
    source = ("Wu et al. 2023, Human Preference Score v2: A Solid Benchmark for Evaluating Human Preferences of "
              "Text-to-Image Synthesis (arXiv:2306.09341); checkpoint v2.1")
    higher_is_better = True
    value_range = (-100.0, 100.0)  # 100 x a cosine
    extractor = "hps-v2.1"

    def per_sample(self, cosines: np.ndarray, extractor: Any) -> tuple[np.ndarray, dict[str, Any]]:
        return 100.0 * cosines, {"scale": "100 x cos (HPSv2 benchmark)", "hps_version": "v2.1"}
