"""PickScore_v1 embeddings (CLIP-H/14 fine-tuned on Pick-a-Pic) through transformers, for PickScore.

Conventions of the PickScore authors and the paper's code: ``CLIPModel`` from the PickScore_v1 folder,
``CLIPProcessor`` from the laion/CLIP-ViT-H-14-laion2B-s32B-b79K folder (PIL bicubic resize + 224 centre
crop, the transformers < 5 default; text padded, truncated at 77 tokens). Both folders are found by
``harness.features.weights`` (or given explicitly); nothing is downloaded. Output ``image_embeds``: L2-normalised
``get_image_features``; text is embedded at score time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from harness.errors import HarnessError
from harness.features import check_images
from harness.features.base import ExtractorSpec
from harness.features.clip import ImageTextExtractor
from harness.features.weights import folders_and_digests
from harness.hashing import digest

MODEL_WEIGHTS = "pickscore-v1"
PROCESSOR_WEIGHTS = "clip-vit-h-14-laion2b-processor"
CONTEXT_LENGTH = 77


def _pooled(output) -> torch.Tensor:
    """transformers 5 returns a model output whose ``pooler_output`` is the projected embedding."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class PickScoreV1(ImageTextExtractor):
    name = "pickscore-v1"

    def __init__(self, batch_size: int = 32, model_dir: str | Path | None = None,
                 processor_dir: str | Path | None = None) -> None:
        super().__init__(batch_size)
        self._model_dir = Path(model_dir) if model_dir is not None else None
        self._processor_dir = Path(processor_dir) if processor_dir is not None else None
        self._processor = None

    def _folders_and_digests(self) -> tuple[Path, Path, dict[str, str]]:
        """Both folders, and the sha256 of every file the numbers depend on (checked against the pinned or
        recorded digest when the folders come from the look-up)."""
        (model, processor), digests = folders_and_digests(
            f"extractor {self.name!r}", (MODEL_WEIGHTS, self._model_dir), (PROCESSOR_WEIGHTS, self._processor_dir))
        return model, processor, digests

    @property
    def spec(self) -> ExtractorSpec:
        return ExtractorSpec(
            name=self.name, weights_sha256=digest(self._folders_and_digests()[2], length=64),
            layer="image_embeds(get_image_features, l2-normalised)",
            resize="CLIPImageProcessorPil (CLIP-H/14 preprocessor_config): PIL bicubic short side -> 224",
            crop="centre 224",
            normalisation="preprocessor_config image_mean/std", input_rounding="uint8 RGB",
            dtype="float32", numerics="tf32=off;transformers CLIPModel")

    def load(self, device: str = "cpu") -> None:
        from transformers import CLIPModel, CLIPProcessor
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        model_dir, processor_dir, _ = self._folders_and_digests()  # verifies the files before they are used
        try:
            net = CLIPModel.from_pretrained(model_dir, local_files_only=True)
            # The PIL image backend: transformers < 5's default, which the PickScore authors and the paper ran;
            # the v5 torchvision backend resizes in float and moves pixels by one uint8 level.
            image_processor = CLIPImageProcessorPil.from_pretrained(processor_dir, local_files_only=True)
            self._processor = CLIPProcessor.from_pretrained(processor_dir, local_files_only=True,
                                                            image_processor=image_processor)
        except (OSError, ValueError) as err:
            raise HarnessError(f"extractor {self.name!r}: cannot load {model_dir} / {processor_dir}: {err}") from err
        self._install(net, device)

    @torch.inference_mode()
    def extract(self, images: np.ndarray) -> dict[str, np.ndarray]:
        self._require_loaded()
        images = check_images(images, self.name)

        def embed(batch: np.ndarray) -> torch.Tensor:
            pil = [Image.fromarray(im) for im in batch]
            pixels = self._processor(images=pil, return_tensors="pt")["pixel_values"].to(self._device)
            return _pooled(self._net.get_image_features(pixel_values=pixels))

        return {"image_embeds": self._normalised(images, embed, self._net.config.projection_dim)}

    def truncated(self, prompts: list[str]) -> list[bool]:
        self._require_loaded()
        return [len(x) > CONTEXT_LENGTH for x in self._processor.tokenizer(prompts, truncation=False)["input_ids"]]

    @torch.inference_mode()
    def encode_text(self, prompts: list[str]) -> np.ndarray:
        self._require_loaded()

        def embed(batch: list[str]) -> torch.Tensor:
            tokens = self._processor(text=list(batch), padding=True, truncation=True, max_length=CONTEXT_LENGTH,
                                     return_tensors="pt").to(self._device)
            return _pooled(self._net.get_text_features(input_ids=tokens["input_ids"],
                                                       attention_mask=tokens["attention_mask"]))

        return self._normalised(prompts, embed, self._net.config.projection_dim)
