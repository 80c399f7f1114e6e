"""sFID (Nash et al. 2021, "Generating Images with Sparse Representations"; the ADM evaluator's number): the
Fréchet distance on spatial Inception features, the first 7 channels of ``mixed_6/conv`` (17·17·7 = 2023-d, see
``harness/features/inception_fid_helper_spatial.py``).

Same streamed float64 statistics, eigh / Gram-route distance and bootstrap as ``fid``; only the feature space
changes. The coordinate order of the flattened maps does not change a Fréchet distance (it is invariant under a
permutation of coordinates applied to both sides), but the features are flattened in ADM's (H, W, C) order anyway.
"""

from __future__ import annotations

from harness.features.inception_fid_helper_spatial import SPATIAL_DIM
from harness.metrics.fid import FID


class SFID(FID):
    name = "sfid"
    variant = f"inception-fid-helper/mixed_6/conv[:7](17x17x7={SPATIAL_DIM},NHWC)/float64-eigh"
    source = "Nash et al. 2021, Generating Images with Sparse Representations (ICML); as in ADM's evaluator"
    extractor = "inception-fid-helper-spatial"
    output = "mixed_6_conv"
    min_reliable_n = SPATIAL_DIM  # below the feature dimension the covariance is rank-deficient
