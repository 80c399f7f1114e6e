"""ImageReward: the mean over samples of ImageReward v1.0's reward of (image, prompt) (docs/metrics.md).

The reward is computed at extraction time (the extractor ``imagereward-v1.0`` reads the shard's prompts: the image
and the prompt meet inside BLIP's cross-attention); this metric averages it. The published normalisation makes
rewards roughly standard normal over the authors' data, so a mean near 0 is typical and it is unbounded. Prompts
longer than 35 tokens are cut by the model; the count is in the details.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.features import get_extractor
from harness.features.imagereward import CONTEXT_LENGTH
from harness.metrics.base import ShardFeatures
from harness.metrics.text_image import PromptScoreMetric, collect, truncation_counts


class ImageReward(PromptScoreMetric):
    name = "imagereward"
    variant = f"ImageReward-v1.0/BLIP-ViT-L-16@224/prompt-{CONTEXT_LENGTH}-token-truncation/fp32"
    source = "Xu et al. 2023, ImageReward: Learning and Evaluating Human Preferences for Text-to-Image Generation " \
             "(NeurIPS)"
    higher_is_better = True
    value_range = (None, None)  # a normalised linear head on BLIP features: unbounded
    extractor = "imagereward-v1.0"
    output = "reward"

    def sample_scores(self, shards: Iterable[ShardFeatures]) -> tuple[np.ndarray, dict[str, Any]]:
        # rewards are written (N,); as one column they go through the shared row-for-row checks
        columns = [replace(s, features=np.asarray(s.features).reshape(len(s.features), -1)) for s in shards]
        rewards, prompts = collect(columns, self.name, what="reward")
        if rewards.shape[1] != 1:
            raise HarnessError(f"{self.name}: features of {rewards.shape[1]} columns per sample; expected one "
                               f"reward per sample (extractor {self.extractor!r}, output {self.output!r})")
        truncation = truncation_counts(get_extractor(self.extractor), prompts)  # the tokenizer only, no network
        return rewards[:, 0], {**truncation, "distinct_prompts": len(set(prompts)), "context_length": CONTEXT_LENGTH}
