"""FD-DINOv2: the Fréchet distance on DINOv2 ViT-L/14 class tokens (Stein et al. 2023, "Exposing flaws of
generative model evaluation metrics"), the feature space dgm-eval reports FD in by default.

Same streamed float64 statistics and eigh / Gram-route distance as ``fid``; only the feature space (1024-d,
dgm-eval's preprocessing, see ``harness/features/dinov2.py``) changes. Values are on their own scale: never
compare them with Inception FID numbers.
"""

from __future__ import annotations

from harness.metrics.fid import FID

DINOV2_FEATURE_DIM = 1024


class FDDinov2(FID):
    name = "fd_dinov2"
    variant = "dinov2-vit-l-14(dgm-eval preprocessing)/cls/float64-eigh"
    extractor = "dinov2-vit-l-14"
    output = "cls"
    min_reliable_n = DINOV2_FEATURE_DIM
