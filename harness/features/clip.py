"""CLIP image and text embeddings through open_clip, for CLIP Score.

Each extractor is an (open_clip architecture, pretrained tag, weights entry). Weights come from a local file
found by ``harness.features.weights`` (never downloaded here); OpenAI's files are TorchScript archives whose state dict
open_clip rebuilds with ``build_model_from_openai_state_dict`` (QuickGELU, fp32 on every device).

Images: open_clip's own evaluation transform on PIL images (bicubic resize of the short side to the model's
input size, centre crop, OpenAI mean/std), the same as transformers' CLIPProcessor up to float rounding.
Text: open_clip's tokenizer, 77 tokens; a longer prompt is cut to 75 tokens between SOT and EOT (the EOT is
kept, so the pooled embedding stays the end-of-text one) and counted as truncated.

Outputs ``image_embeds``: L2-normalised image embeddings (float32). Text is embedded at score time from the
samples' prompts (``encode_text``), so one cached image pass serves any prompt set.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from harness.errors import HarnessError
from harness.features import check_images
from harness.features.base import Extractor, ExtractorSpec, no_weight_init
from harness.features.weights import file_sha256, get_entry, verified_file
from harness.parallel import thread_map

CONTEXT_LENGTH = 77


@dataclass(frozen=True)
class ClipModel:
    arch: str  # open_clip architecture (selects the tokenizer)
    pretrained: str  # open_clip pretrained tag
    weights: str  # harness.features.weights entry


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """State dict of an OpenAI TorchScript archive or of a plain ``torch.save``'d state dict."""
    try:
        with warnings.catch_warnings():  # torch marks jit.load deprecated; OpenAI ships only TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu").state_dict()
    except RuntimeError:
        pass
    state = load_torch_file(path, "neither a TorchScript archive nor a torch state dict")
    return state.get("state_dict", state)


def load_torch_file(path: Path, what: str) -> Any:
    """``torch.load`` with ``weights_only`` (tensors and plain containers only: no code runs from the file); an
    unreadable file is a HarnessError naming it and ``what`` it should have been."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same user-facing error
        raise HarnessError(f"{path}: {what}: {err}") from err


class ImageTextExtractor(Extractor):
    """An image-text model (CLIP, PickScore): L2-normalised image embeddings; text is embedded at score time."""

    outputs = ("image_embeds",)

    @property
    def logit_scale(self) -> float:
        self._require_loaded()
        return float(self._net.logit_scale.detach().exp())

    def _normalised(self, items: Sequence[Any], embed: Callable[[Sequence[Any]], torch.Tensor],
                    dim: int) -> np.ndarray:
        """``embed`` over batches of ``items`` (images or prompts), each row L2-normalised, float32 (n, dim)."""
        parts = [np.zeros((0, dim), np.float32)]
        for start in range(0, len(items), self.batch_size):
            emb = embed(items[start:start + self.batch_size]).float()
            parts.append(torch.nn.functional.normalize(emb, dim=-1).cpu().numpy())
        return np.concatenate(parts)


class OpenClipExtractor(ImageTextExtractor):
    model: ClassVar[ClipModel]

    def __init__(self, batch_size: int = 64, weights_path: str | Path | None = None) -> None:
        """``weights_path`` overrides the look-up (tests, or a file kept elsewhere)."""
        super().__init__(batch_size)
        self._weights_path = Path(weights_path) if weights_path is not None else None
        self._tokenizer = None
        self._preprocess = None

    def _weights(self) -> tuple[Path, str]:
        if self._weights_path is not None:
            if not self._weights_path.is_file():
                raise HarnessError(f"extractor {self.name!r}: weights file {self._weights_path} does not exist")
            return self._weights_path, file_sha256(self._weights_path)
        entry = get_entry(self.model.weights)
        return verified_file(entry.name, entry.files[0].relative, needed_by=f"extractor {self.name!r}")

    def _weights_sha256(self) -> str:
        """The pinned digest when the entry has one (no hashing); else the file's own (an unpinned entry, or an
        explicit path), so the spec key always follows the weights' bytes."""
        pinned = None if self._weights_path is not None else get_entry(self.model.weights).files[0].sha256
        return pinned or self._weights()[1]

    @property
    def spec(self) -> ExtractorSpec:
        return ExtractorSpec(
            name=self.name, weights_sha256=self._weights_sha256(), layer="image_embeds(l2-normalised)",
            resize="open_clip image_transform: PIL bicubic short side -> input size", crop="centre",
            normalisation="OPENAI_DATASET_MEAN/STD", input_rounding="uint8 RGB",
            dtype="float32", numerics=f"tf32=off;arch={self.model.arch};tag={self.model.pretrained}")

    def load(self, device: str = "cpu") -> None:
        import open_clip
        from open_clip.model import build_model_from_openai_state_dict
        from open_clip.transform import image_transform

        path, _ = self._weights()
        state = {k: v for k, v in read_state_dict(path).items()
                 if k not in ("input_resolution", "context_length", "vocab_size")}
        try:
            with no_weight_init():  # every parameter comes from the file: the builder loads strictly
                net = build_model_from_openai_state_dict(state, quick_gelu=True, cast_dtype=None)
        except (KeyError, RuntimeError) as err:
            raise HarnessError(f"{path}: not an OpenAI-layout CLIP state dict: {err}") from err
        self._install(net, device)
        self._preprocess = image_transform(net.visual.image_size, is_train=False,
                                           mean=open_clip.OPENAI_DATASET_MEAN, std=open_clip.OPENAI_DATASET_STD)
        self._tokenizer = open_clip.get_tokenizer(self.model.arch)

    def _dim(self) -> int:
        return self._net.text_projection.shape[1]

    @torch.inference_mode()
    def extract(self, images: np.ndarray) -> dict[str, np.ndarray]:
        self._require_loaded()
        images = check_images(images, self.name)
        return {"image_embeds": self._normalised(
            images, lambda batch: self._net.encode_image(self._pixels(batch).to(self._device)), self._dim())}

    def _pixels(self, batch: np.ndarray) -> torch.Tensor:
        """The network's float input (B, 3, S, S) for uint8 images (B, H, W, 3): open_clip's PIL transform."""
        return torch.stack(thread_map(lambda im: self._preprocess(Image.fromarray(im)), batch))

    def truncated(self, prompts: list[str]) -> list[bool]:
        """Per prompt: longer than the context once SOT and EOT are added (so the tokenizer cuts it)."""
        self._require_loaded()
        return [len(self._tokenizer.encode(p)) + 2 > CONTEXT_LENGTH for p in prompts]

    @torch.inference_mode()
    def encode_text(self, prompts: list[str]) -> np.ndarray:
        """L2-normalised text embeddings; open_clip's tokenizer keeps the EOT when it truncates."""
        self._require_loaded()
        return self._normalised(prompts, lambda batch: self._net.encode_text(
            self._tokenizer(list(batch), context_length=CONTEXT_LENGTH).to(self._device)), self._dim())


class ClipVitB16OpenAI(OpenClipExtractor):
    """The paper's CLIP (openai/clip-vit-base-patch16), here through open_clip on OpenAI's own file."""

    name = "clip-vit-b-16-openai"
    model = ClipModel("ViT-B-16", "openai", "clip-vit-b-16-openai")


class ClipVitL14OpenAI(OpenClipExtractor):
    """torchmetrics' default CLIPScore model (openai/clip-vit-large-patch14)."""

    name = "clip-vit-l-14-openai"
    model = ClipModel("ViT-L-14", "openai", "clip-vit-l-14-openai")
