"""Resizing generated images to a protocol's common evaluation size, before they are saved.

The paper generates SD3.5 and FLUX.1 at 1024 px and downsamples with PIL LANCZOS to 256 px before any
metric, while the class-conditional models are native 256 px. A protocol says so with
``image_size: {size: 256, filter: lanczos}``; a cell whose model is not native at that size records
``resize = (size, filter)`` in its identity, so resized and native images never share a cache entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from harness.errors import ProtocolError

FILTERS = {"lanczos": Image.Resampling.LANCZOS, "bicubic": Image.Resampling.BICUBIC,
           "bilinear": Image.Resampling.BILINEAR, "box": Image.Resampling.BOX}


@dataclass(frozen=True)
class ImageSize:
    size: int
    filter: str = "lanczos"


def parse_image_size(src: str, raw: Any) -> ImageSize | None:
    """``image_size``: null, an int (LANCZOS), or {size, filter}; errors name the file, key and value."""
    if raw is None:
        return None
    spec = {"size": raw} if isinstance(raw, int) and not isinstance(raw, bool) else raw
    if not isinstance(spec, dict) or set(spec) - {"size", "filter"} or "size" not in spec:
        raise ProtocolError(f"{src}: key 'image_size' has value {raw!r}; expected null, a size in pixels, or "
                            f"{{size: 256, filter: lanczos}}")
    size, name = spec["size"], spec.get("filter", "lanczos")
    if not isinstance(size, int) or isinstance(size, bool) or not 8 <= size <= 8192:
        raise ProtocolError(f"{src}: key 'image_size.size' has value {size!r}; expected an integer in [8, 8192]")
    if name not in FILTERS:
        raise ProtocolError(f"{src}: key 'image_size.filter' has value {name!r}; expected one of "
                            f"{', '.join(FILTERS)}")
    return ImageSize(size, name)


def resize_for(native: int, wanted: ImageSize | None) -> tuple[int, str] | None:
    """What a cell records: None when the model already makes images of the wanted size."""
    return None if wanted is None or wanted.size == native else (wanted.size, wanted.filter)


def apply_resize(image: np.ndarray, resize: tuple[int, str] | None) -> np.ndarray:
    """uint8 H×W×3 → size×size×3 with the named PIL filter (on uint8, as the paper's PIL call does)."""
    if resize is None:
        return image
    size, name = resize
    return np.asarray(Image.fromarray(image).resize((size, size), FILTERS[name]), dtype=np.uint8)
