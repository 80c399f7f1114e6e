"""HPS v2.1 (Human Preference Score v2.1) image embeddings: open_clip ViT-H-14 with the HPS_v2.1 state dict.

The ``hpsv2`` package builds open_clip's ``ViT-H-14`` (GELU, 224 input, 1024-d embeddings), loads
``HPS_v2.1_compressed.pt``'s ``checkpoint['state_dict']`` strictly, and scores cos(E_img, E_txt) of the normalised
embeddings. Here the architecture is built from open_clip's model config, nothing is downloaded, the state dict is
read with ``weights_only`` and checked key by key and shape by shape before a strict load; fp32, TF32 off (the
reference runs under CUDA AMP, whose fp16 rounding ties many scores).

Images: ``preprocess_val`` of the hpsv2 score and benchmark code (``create_model_and_transforms(...,
light_augmentation=True)``): ToTensor (uint8 / 255 in float32), then torchvision's *tensor* resize of the longer side
to 224 (bicubic, aspect kept, sizes ``round(side * 224 / longer)``), zero padding to 224 x 224 centred (floor on the
left/top), OpenAI mean/std. No centre crop: a non-square image is padded, not cut. Resizing a float tensor is not
clamped, and its antialiasing follows torchvision's default: True since torchvision 0.17 (the pinned 0.29 included),
False before it (0.15/0.16 warned and did not antialias tensors). We resize with ``antialias=True`` explicitly, what
``hpsv2`` computes under the pinned torchvision, and record it in the spec. One deviation: hpsv2 pads only when it
resizes, so a non-square image whose longer side is already 224 crashes its model; here it is padded like the rest.

Text: open_clip's ViT-H-14 tokenizer (OpenAI BPE, 77 tokens, EOT kept on truncation, counted); the text tower and
its pooling are the inherited ``OpenClipExtractor`` ones. Output ``image_embeds`` (L2-normalised, float32).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.errors import HarnessError
from harness.features.base import ExtractorSpec, no_weight_init
from harness.features.clip import ClipModel, OpenClipExtractor, load_torch_file
from harness.hashing import digest
from harness.parallel import thread_map

ARCH = "ViT-H-14"
WEIGHTS = "hps-v2.1"
WEIGHTS_FILE = "HPS_v2.1_compressed.pt"
# torchvision's tensor-resize default since 0.17, which hpsv2's transform inherits (see the module docstring)
ANTIALIAS = True


def resize_longer_and_pad(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """hpsv2's validation geometry on float images (..., 3, H, W) in [0, 1]: the longer side to ``size`` (bicubic,
    antialiased, unclamped), then zero padding to ``size`` x ``size`` (floor of the spare pixels left and top)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as tvf

    height, width = pixels.shape[-2:]
    scale = size / float(max(height, width))
    if scale != 1.0:
        target = [round(height * scale), round(width * scale)]  # Python's round, as hpsv2's
        pixels = tvf.resize(pixels, target, InterpolationMode.BICUBIC, antialias=ANTIALIAS)
    pad_h, pad_w = size - pixels.shape[-2], size - pixels.shape[-1]
    if pad_h or pad_w:
        pixels = tvf.pad(pixels, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0.0)
    return pixels


def read_hps_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """``checkpoint['state_dict']`` of a published HPS file (a ``torch.save``'d dict), refused naming the file."""
    checkpoint = load_torch_file(path, "not a torch checkpoint readable with weights_only")
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        keys = sorted(map(str, checkpoint))[:5] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise HarnessError(f"{path}: expected a checkpoint dict with a 'state_dict' entry (the HPS file layout "
                           f"hpsv2 loads), found {keys}")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise HarnessError(f"{path}: 'state_dict' entry {bad[0]!r} is not a tensor ({len(bad)} such entries)")
    return state


def check_layout(path: Path, state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], arch: str) -> None:
    """Every key of the architecture present with its shape and no other key: else one line naming the file."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k} {tuple(state[k].shape)} (model {tuple(expected[k].shape)})" for k in sorted(expected)
              if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{len(found)} {what} (first: {found[0]})" for what, found in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("keys of another shape", shapes))
                 if found]
        raise HarnessError(f"{path}: 'state_dict' does not fit open_clip {arch}: {'; '.join(parts)}")


class HpsV21(OpenClipExtractor):
    """HPS v2.1's fine-tuned ViT-H-14 (hub xswu/HPSv2). v2.0's checkpoint scores on another scale: not registered."""

    name = "hps-v2.1"
    model = ClipModel(ARCH, "none (weights: HPS_v2.1 state dict)", WEIGHTS)

    def __init__(self, batch_size: int = 32, weights_path: str | Path | None = None,
                 model_cfg: dict[str, Any] | None = None) -> None:
        """``weights_path``: a file kept elsewhere (tests); ``model_cfg``: an open_clip model config replacing
        ViT-H-14's (tests: a tiny network of the same layout); it is part of the spec."""
        super().__init__(batch_size, weights_path)
        self._model_cfg = copy.deepcopy(model_cfg)
        self._size = 0  # the network's input side, set by load()
        self._mean_std: tuple[torch.Tensor, torch.Tensor] | None = None

    def _config(self) -> dict[str, Any]:
        import open_clip

        return copy.deepcopy(self._model_cfg) if self._model_cfg is not None else open_clip.get_model_config(ARCH)

    @property
    def spec(self) -> ExtractorSpec:
        arch = ARCH if self._model_cfg is None else f"custom-cfg-{digest(self._model_cfg, length=16)}"
        return ExtractorSpec(
            name=self.name, weights_sha256=self._weights_sha256(),
            layer="image_embeds(encode_image, l2-normalised)",
            resize=f"hpsv2 preprocess_val: ToTensor, torchvision tensor resize longer side -> 224 (bicubic, "
                   f"antialias={ANTIALIAS}, float unclamped), zero pad to 224x224 centred",
            crop="none (pad)", normalisation="OPENAI_DATASET_MEAN/STD", input_rounding="uint8 RGB",
            dtype="float32", numerics=f"tf32=off;arch={arch};gelu;checkpoint['state_dict'] strict")

    def load(self, device: str = "cpu") -> None:
        import open_clip
        from open_clip.model import CLIP

        path, _ = self._weights()
        state = read_hps_state_dict(path)
        config = self._config()
        with no_weight_init():  # every parameter comes from the file, loaded strictly below
            net = CLIP(**config)
        check_layout(path, state, net.state_dict(), ARCH if self._model_cfg is None else "model config")
        net.load_state_dict(state, strict=True)
        self._install(net, device)
        size = net.visual.image_size
        self._size = size[0] if isinstance(size, tuple) else int(size)
        self._tokenizer = open_clip.get_tokenizer(ARCH)
        self._mean_std = (torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(3, 1, 1),  # what hpsv2 normalises with
                          torch.tensor(open_clip.OPENAI_DATASET_STD).view(3, 1, 1))

    def _pixels(self, batch: np.ndarray) -> torch.Tensor:
        mean, std = self._mean_std

        def one(image: np.ndarray) -> torch.Tensor:
            # ToTensor's arithmetic (float32, / 255) on a writable copy (shards hand in read-only views)
            pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255)
            return (resize_longer_and_pad(pixels, self._size) - mean) / std

        # one image at a time on the CPU pool, as hpsv2 does (a resize is the same alone or batched; torch's
        # kernels release the GIL, so threads overlap the ~25 ms resize of a 1024 px image)
        return torch.stack(thread_map(one, batch))
