"""Inception-v3 ``tf1`` (ADM-compatible): torch-fidelity's port of the TF 2015-12-05 graph.

Preprocessing reproduces the TF1 graph exactly as torch-fidelity does: uint8 -> float32, TF1-legacy
bilinear resize to 299 (``interpolate_bilinear_2d_like_tensorflow1x``, no antialias, always applied),
then (x - 128) / 128. Outputs: ``pool3`` (2048-d, FID/KID/P-R) and ``logits_unbiased`` (1008-way
pool3·Wᵀ without the bias, IS). The weights file (torch-fidelity's format, 566 tensors) is found by
``harness.features.weights`` (entry ``inception-tf1``: $HARNESS_WEIGHTS, then the torch hub cache) and checked against
the pinned sha256 before use; the sha256 is part of the spec, so other weights make other keys.

The state dict is read with ``weights_only=True`` and loaded strictly after the network is built:
torch-fidelity's own constructor would unpickle the file with ``weights_only=False``.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from harness.errors import HarnessError
from harness.features import check_images
from harness.features.base import Extractor, ExtractorSpec, no_weight_init
from harness.features.weights import INCEPTION_TF1_FILE, INCEPTION_TF1_SHA256, verified_file

WEIGHTS_FILE = INCEPTION_TF1_FILE  # torch-fidelity's release file name
WEIGHTS_ENTRY = "inception-tf1"  # harness.features.weights entry (``harness weights fetch inception-tf1``)
OFFICIAL_SHA256_PREFIX = INCEPTION_TF1_SHA256[:8]  # torch.hub convention: the file name carries this prefix
SIZE = 299
_PLACEHOLDER: list[Path] = []


def _placeholder_state() -> Path:
    """An empty state dict file: lets torch-fidelity's constructor build the modules without the weights."""
    if not _PLACEHOLDER:
        folder = tempfile.mkdtemp(prefix="inception-tf1-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)  # one per process; never left in /tmp
        path = Path(folder) / "empty.pth"
        torch.save({}, path)
        _PLACEHOLDER.append(path)
    return _PLACEHOLDER[0]


def build_network(path: Path) -> torch.nn.Module:
    """torch-fidelity's FeatureExtractorInceptionV3 holding the weights of ``path`` (strict, weights-only)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _DeferredLoad(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # type: ignore[override]
            if not state_dict:  # the placeholder passed to the constructor
                return None
            return super().load_state_dict(state_dict, strict=strict, assign=assign)

    with no_weight_init():  # the strict load below overwrites every parameter and buffer
        net = _DeferredLoad("inception-v3-compat", ["2048", "logits_unbiased"],
                            feature_extractor_weights_path=str(_placeholder_state()))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except Exception as err:  # unpickling or key/shape mismatch: name the file, never run half-loaded
        raise HarnessError(f"{path}: not a torch-fidelity Inception-v3 state dict ({type(err).__name__}: "
                           f"{str(err)[:300]})") from err
    return net.eval()


@torch.no_grad()
def trunk(net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised float (N, 3, 299, 299) -> (pool3 (N, 2048), logits_unbiased (N, 1008)), float32."""
    for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1",
                 "Conv2d_4a_3x3", "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
                 "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool"):
        x = getattr(net, name)(x)
    pool3 = torch.flatten(x, 1)
    return pool3, pool3.mm(net.fc.weight.T)


class InceptionTF1(Extractor):
    name = "inception-tf1"
    outputs = ("pool3", "logits_unbiased")
    resize_spec = ("tf1-legacy-bilinear(torch_fidelity.interpolate_bilinear_2d_like_tensorflow1x,"
                   f"align_corners=False,antialias=False,float32,no-requantise)->{SIZE}x{SIZE};always")

    def __init__(self, batch_size: int = 32) -> None:
        super().__init__(batch_size)

    def _weights(self) -> tuple[Path, str]:
        return verified_file(WEIGHTS_ENTRY, WEIGHTS_FILE, needed_by=f"extractor {self.name!r}")

    def weights_path(self) -> Path:
        return self._weights()[0]

    @property
    def spec(self) -> ExtractorSpec:
        # Needs the weights file (its verified sha256 is the identity): a missing or altered file is a clear
        # error here, before any compute is planned.
        return ExtractorSpec(
            name=self.name, weights_sha256=self._weights()[1], layer="pool3+logits_unbiased",
            resize=self.resize_spec, crop="none", normalisation="(x-128)/128", input_rounding="uint8",
            dtype="float32", numerics="tf32=off")

    def load(self, device: str = "cpu") -> None:
        self._install(build_network(self.weights_path()), device)

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> normalised float32 (N, 3, 299, 299) on the device."""
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

        x = torch.from_numpy(np.ascontiguousarray(images)).to(self._device)
        x = x.permute(0, 3, 1, 2).contiguous().to(torch.float32)
        x = interpolate_bilinear_2d_like_tensorflow1x(x, size=(SIZE, SIZE), align_corners=False)
        return (x - 128) / 128

    @torch.inference_mode()
    def extract(self, images: np.ndarray) -> dict[str, np.ndarray]:
        self._require_loaded()
        images = check_images(images, self.name)
        n = len(images)
        pool3 = np.empty((n, 2048), dtype=np.float32)
        logits = np.empty((n, 1008), dtype=np.float32)
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            p, lg = trunk(self._net, self.preprocess(images[start:stop]))
            pool3[start:stop], logits[start:stop] = p.float().cpu().numpy(), lg.float().cpu().numpy()
        return {"pool3": pool3, "logits_unbiased": logits}
