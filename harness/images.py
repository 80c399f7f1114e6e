"""One image decoder for every path that reads images: a file or PIL image → uint8 RGB, and what it did.

PIL's ``convert("RGB")`` is right for 8-bit modes only: it clips 16-bit and float values at 255 (a 16-bit
PNG becomes black and white), drops alpha and palette transparency, and its CMYK rule depends on the Pillow
version. Every mode is handled here with a stated rule, and each decode returns a label naming the
conversion (``"I;16→RGB (÷257)"``), which ``harness score`` counts into its rows' details:

- ``RGB``: as is. ``L``: grey replicated. ``1``: 0/1 → 0/255. ``RGBX``: padding byte dropped.
- ``P`` / ``PA``: palette expanded; palette or per-pixel transparency follows the alpha rule.
- alpha (``RGBA``, ``LA``, ``PA``, ``P`` with transparency): an image whose alpha is 255 everywhere has it
  dropped (exact); otherwise the colour is composited over WHITE, ``round((c·a + 255·(255 − a)) / 255)``
  (what a viewer shows on a white page). Premultiplied ``RGBa`` / ``La`` are refused.
- 16-bit (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``; ``I`` read from 16-bit samples): ``round(v / 257)``,
  the nearest 8-bit level (v = 257·k ↦ k exactly). 16-bit *colour* PNGs are reduced by Pillow's decoder to
  the high byte ``⌊v / 256⌋`` before we see them (within one level of ``round(v / 257)``); the label says so.
- ``I`` (32-bit signed integer): full scale 2³¹ − 1, ``round(v · 255 / (2³¹ − 1))``; negative values refused.
- ``F`` (32-bit float): the [0, 1] convention, ``round(255 · v)``; values outside [0, 1] or NaN refused
  (a [0, 255] float image would otherwise be silently clipped).
- ``CMYK``: ``round((255 − c)(255 − k) / 255)`` per channel (no ICC colour management).
- ``YCbCr``: JFIF full-range BT.601, ``R = Y + 1.402 (Cr − 128)``, ``G = Y − 0.344136 (Cb − 128) −
  0.714136 (Cr − 128)``, ``B = Y + 1.772 (Cb − 128)``, rounded and clipped to 0..255.
- anything else (``LAB``, ``HSV``, multi-frame files...) is refused with the file name and mode.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from harness.errors import HarnessError

ALPHA_BACKGROUND = 255  # white: see the module docstring
SUPPORTED_MODES = ("RGB", "L", "1", "RGBX", "RGBA", "LA", "PA", "P", "I;16", "I;16L", "I;16B", "I;16N", "I", "F",
                   "CMYK", "YCbCr")
_INT32_MAX = 2**31 - 1


class ImageModeError(HarnessError):
    """An image mode (or value range) that has no stated conversion to 8-bit RGB."""


# The file suffixes every image reader accepts (folder datasets, ``harness score``): formats PIL decodes and
# ``decode_file`` converts (TIFF included: 16-bit and float modes go through the same range checks).
IMAGE_SUFFIXES = frozenset({".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"})


def _grey(values: np.ndarray) -> np.ndarray:
    return np.repeat(values.astype(np.uint8)[..., None], 3, axis=-1)


def _round_div(numerator: np.ndarray, denominator: int) -> np.ndarray:
    """round(numerator / denominator) for non-negative integers and an odd denominator (no ties)."""
    return (numerator + denominator // 2) // denominator


def _over_background(rgb: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, str]:
    if (alpha == 255).all():
        return rgb.astype(np.uint8), "opaque alpha dropped"
    c, a = rgb.astype(np.int64), alpha.astype(np.int64)[..., None]
    return _round_div(c * a + ALPHA_BACKGROUND * (255 - a), 255).astype(np.uint8), "alpha over white"


def _sixteen_bit_rawmode(image: Image.Image) -> str | None:
    """The raw sample layout of a file still to be decoded, when it is 16 bits per sample (else None)."""
    for tile in getattr(image, "tile", None) or ():
        args = tile[3] if len(tile) > 3 else None
        raw = args[0] if isinstance(args, tuple) and args else args
        if isinstance(raw, str) and (raw.startswith("I;16") or re.search(r";16[BLN]$", raw)):
            return raw  # not BMP's packed "BGR;16" (5-6-5 bits per pixel, expanded exactly by Pillow)
    return None


def _check_range(values: np.ndarray, low: float, high: float, mode: str, rule: str, where: str) -> None:
    if values.size and not (np.isfinite(values).all() and values.min() >= low and values.max() <= high):
        finite = values[np.isfinite(values)]
        found = f"{finite.min():g}..{finite.max():g}" if finite.size else "no finite values"
        nan = ", with NaN/Inf" if finite.size < values.size else ""
        raise ImageModeError(f"{where}: mode {mode} values {found}{nan}; {rule} expects {low:g}..{high:g} "
                             f"(save the image as 8-bit RGB)")


def _convert(image: Image.Image, where: str) -> tuple[np.ndarray, str]:
    mode, raw16 = image.mode, _sixteen_bit_rawmode(image)
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8), f"{raw16}→RGB (high byte ⌊v/256⌋)" if raw16 else "RGB"
    if mode == "L":
        return _grey(np.asarray(image)), "L→RGB"
    if mode == "1":
        return _grey(np.asarray(image, dtype=np.uint8) * 255), "1→RGB (×255)"
    if mode == "RGBX":
        return np.asarray(image)[..., :3].astype(np.uint8), "RGBX→RGB (padding dropped)"
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and ("transparency" in image.info
                                                          or (image.palette and image.palette.mode == "RGBA"))):
        if mode == "LA":  # grey and alpha read directly
            la = np.asarray(image)
            rgba = np.concatenate([_grey(la[..., 0]), la[..., 1:2]], axis=-1)
        else:  # PIL's palette expansion applies the palette's alpha or the tRNS transparency
            rgba = np.asarray(image if mode == "RGBA" else image.convert("RGBA"))
        out, how = _over_background(rgba[..., :3], rgba[..., 3])
        return out, f"{raw16 or mode}→RGB ({how}{', high byte ⌊v/256⌋' if raw16 else ''})"
    if mode == "P":
        return np.asarray(image.convert("RGB"), dtype=np.uint8), "P→RGB (palette)"
    if mode.startswith("I;16") or (mode == "I" and raw16):
        values = np.asarray(image).astype(np.int64)
        if mode == "I":
            _check_range(values, 0, 65535, f"I (from {raw16})", "16-bit", where)
        return _grey(_round_div(values, 257)), f"{mode if mode != 'I' else raw16}→RGB (÷257)"
    if mode == "I":
        values = np.asarray(image).astype(np.int64)
        _check_range(values, 0, _INT32_MAX, mode, "32-bit integer full scale", where)
        return _grey(_round_div(values * 255, _INT32_MAX)), "I→RGB (×255/(2³¹−1))"
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        _check_range(values, 0.0, 1.0, mode, "float [0, 1]", where)
        return _grey(np.rint(values * 255.0)), "F→RGB (×255, [0,1])"
    if mode == "CMYK":
        cmyk = 255 - np.asarray(image).astype(np.int64)
        return _round_div(cmyk[..., :3] * cmyk[..., 3:4], 255).astype(np.uint8), "CMYK→RGB ((255−c)(255−k)/255)"
    if mode == "YCbCr":
        y, cb, cr = (np.asarray(image)[..., i].astype(np.float64) for i in range(3))
        rgb = np.stack([y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
                        y + 1.772 * (cb - 128)], axis=-1)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "YCbCr→RGB (JFIF BT.601)"
    raise ImageModeError(f"{where}: image mode {mode} is not supported (no stated conversion to 8-bit RGB); "
                         f"save it as RGB, L, P, RGBA, LA, 1, I;16, I, F, CMYK or YCbCr")


def _check_header(image: Image.Image, where: str) -> None:
    if getattr(image, "n_frames", 1) > 1:
        raise ImageModeError(f"{where}: {image.n_frames} frames (animated or multi-page); give single images")
    if image.mode not in SUPPORTED_MODES:
        _convert(image, where)  # raises, naming the mode


def check_file(path: Path | str) -> None:
    """Refuse an unreadable file or an unsupported mode from its header alone (no pixels decoded): lets
    ``harness score`` reject a folder before any compute. Value ranges (I, F) are checked when decoded."""
    try:
        with Image.open(path) as image:
            _check_header(image, str(path))
    except (OSError, UnidentifiedImageError) as err:
        raise HarnessError(f"{path}: unreadable image ({err})") from err


def to_rgb(image: Image.Image, where: str) -> tuple[np.ndarray, str]:
    """uint8 (H, W, 3) and the label of the conversion; ``where`` names the image in error messages."""
    _check_header(image, where)
    try:
        array, label = _convert(image, where)
    except (OSError, ValueError) as err:
        raise HarnessError(f"{where}: cannot decode image ({err})") from err
    return np.ascontiguousarray(array), label


def to_rgb_image(image: Image.Image, where: str) -> tuple[Image.Image, str]:
    """The same conversion as a PIL RGB image (for reference preprocessing, which resizes in PIL)."""
    array, label = to_rgb(image, where)
    return Image.fromarray(array, "RGB"), label


def decode_file(path: Path | str) -> tuple[np.ndarray, str]:
    """Open and decode one image file: uint8 (H, W, 3) and the conversion label."""
    try:
        with Image.open(path) as image:
            return to_rgb(image, str(path))
    except (OSError, UnidentifiedImageError) as err:
        raise HarnessError(f"{path}: unreadable image ({err})") from err


def decode_bytes(data: bytes, where: str) -> tuple[np.ndarray, str]:
    """Decode an image held in memory (run-directory PNGs after their sha256 check, parquet rows)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return to_rgb(image, where)
    except (OSError, UnidentifiedImageError) as err:
        raise HarnessError(f"{where}: unreadable image ({err})") from err
