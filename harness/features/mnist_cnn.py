"""A real MNIST classifier (``digit-recognizer-py==0.1.0``, 99.06 % on the MNIST test set).

Used for class alignment (argmax of ``logits`` vs the requested digit) and as a domain feature space
(``penultimate``, the 256-d ReLU activation feeding the last linear layer).

The ``CNN`` class is loaded from the wheel's ``model.py`` alone: importing ``digit_recognizer.model``
normally would run the package ``__init__``, which imports torchvision and PIL (~1.3 s) for a
recogniser we do not use. The package's own preprocessing is PIL ``convert("L")``, torchvision
``Resize((28, 28))``, ``ToTensor`` (/255) and ``Normalize((0.1307,), (0.3081,))``; we match it for the
replicated-gray images the harness produces.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F

from harness.errors import HarnessError
from harness.features import check_images, verified_package_file
from harness.features.base import Extractor, ExtractorSpec

PACKAGE = "digit_recognizer"
WEIGHTS_FILE = "models/handwriting_model.pth"
WEIGHTS_SHA256 = "325e0773529babe8ebb6adf35a82c64e57c5f3518c2adb975865355c74bc4786"
PIN = "digit-recognizer-py==0.1.0"
SIZE = 28
MEAN, STD = 0.1307, 0.3081  # the package's Normalize constants (MNIST train mean/std)
_MODULE_NAME = "_onestep_bench_digit_recognizer_model"


def _load_model_module() -> ModuleType:
    """Execute the wheel's ``model.py`` (it imports only torch.nn) without the package ``__init__``."""
    if _MODULE_NAME in sys.modules:
        return sys.modules[_MODULE_NAME]
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise HarnessError(f"package {PACKAGE!r} is not installed; install {PIN} (requirements-nodeps.txt)")
    path = f"{list(spec.submodule_search_locations)[0]}/model.py"
    module_spec = importlib.util.spec_from_file_location(_MODULE_NAME, path)
    if module_spec is None or module_spec.loader is None:
        raise HarnessError(f"{path}: cannot load the CNN definition of {PIN}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    sys.modules[_MODULE_NAME] = module
    return module


def to_network_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 1, 28, 28): channel mean, resize if needed, MNIST normalisation."""
    x = images.to(torch.float32).mean(dim=-1).unsqueeze(1)  # equals PIL "L" for gray-replicated RGB
    if x.shape[-2:] != (SIZE, SIZE):
        # torchvision Resize's tensor path: bilinear, antialiased, half-pixel centres; kept in float.
        x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True)
    return (x / 255.0 - MEAN) / STD


class MnistCnn(Extractor):
    name = "mnist-cnn"
    outputs = ("logits", "penultimate")

    def __init__(self, batch_size: int = 512) -> None:
        super().__init__(batch_size)

    @property
    def spec(self) -> ExtractorSpec:
        return ExtractorSpec(
            name=self.name,
            weights_sha256=WEIGHTS_SHA256,
            layer="logits+penultimate",
            resize=f"torch-bilinear(align_corners=False,antialias=True,float)->{SIZE}x{SIZE};"
                   f"skipped-if-already-{SIZE}x{SIZE}",
            crop="none",
            normalisation=f"gray=mean(R,G,B);(x/255-{MEAN})/{STD}",
            input_rounding="uint8",
            dtype="float32",
            numerics="tf32=off",
        )

    def load(self, device: str = "cpu") -> None:
        path = verified_package_file(PACKAGE, WEIGHTS_FILE, WEIGHTS_SHA256, PIN)
        net = _load_model_module().CNN()
        try:
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except (RuntimeError, KeyError) as err:
            raise HarnessError(f"{path}: state dict does not fit the CNN of {PIN}: {err}") from err
        self._install(net, device)

    @torch.inference_mode()
    def extract(self, images: np.ndarray) -> dict[str, np.ndarray]:
        self._require_loaded()
        images = check_images(images, self.name)
        n = len(images)
        logits = np.empty((n, 10), dtype=np.float32)
        penultimate = np.empty((n, 256), dtype=np.float32)
        fc_hidden, fc_relu, fc_out = self._net.fc_layers  # Linear(1152, 256), ReLU, Linear(256, 10)
        for start in range(0, n, self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start:start + self.batch_size]))
            x = to_network_input(batch.to(self._device))
            h = fc_relu(fc_hidden(self._net.conv_layers(x).flatten(1)))
            stop = start + len(batch)
            penultimate[start:stop] = h.cpu().numpy()
            logits[start:stop] = fc_out(h).cpu().numpy()
        return {"logits": logits, "penultimate": penultimate}
