"""The images ``score`` reads: a folder or an ADM-style .npz on disk (``harness score``), or images in memory
(the Python API): a uint8 or float numpy array, a torch tensor, or an iterable of PIL images / arrays.

In-memory images become one uint8 (N, H, W, 3) array under the rules stated here, so a number never depends
on how the same pixels were handed in:
- uint8: as is; (N, H, W) and (N, H, W, 1) grey are replicated to RGB (as harness/images.py does for ``L``);
- float (numpy or torch): the [0, 1] convention, ``round(255 · v)`` (round half to even, as the adapters'
  ``to_uint8_images``); NaN/Inf or values outside [0, 1] are refused (a [0, 255] float array would otherwise
  be clipped silently);
- torch tensors are channels-first (N, C, H, W) when C ∈ {1, 3} (torch's convention), else (N, H, W, C);
  numpy arrays are channels-last (N, H, W, C);
- PIL images go through the same decoder as files (harness/images.py ``to_rgb``: every mode's rule);
- other dtypes (int16, bool, ...), other shapes, an empty input and images of different sizes are refused,
  naming the input.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections import Counter
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.images import IMAGE_SUFFIXES, check_file, decode_file, to_rgb
from harness.parallel import prefetched_map, thread_map

BATCH = 64
LOSSY = {".jpg", ".jpeg", ".webp"}
NPZ_DECODED = "uint8 RGB array (.npz arr_0)"


def warn(message: str) -> None:
    """One line on stderr, ``warning: ...`` (not a Python UserWarning with its source line)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


class ImageSource:
    """A folder (recursive, sorted by relative path: file order never changes a number) or an ADM-style
    .npz whose ``arr_0`` is uint8 (N, H, W, 3); ``from_array`` wraps images already in memory."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.label = str(self.path)  # names the images in messages and in the rows' ``model`` column
        self.pixel_digest: str | None = None
        self.decoded: Counter[str] = Counter()
        self.array_decoded: Counter[str] = Counter()
        if self.path.is_dir():
            self.files = sorted(p for p in self.path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.files:
                raise HarnessError(f"{self.path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
            lossy = sum(p.suffix.lower() in LOSSY for p in self.files)
            if lossy:
                warn(f"{self.path}: {lossy} of {len(self.files)} images are lossy-compressed; "
                     f"metrics of re-encoded images differ from those of the originals")
            self.array = None
        elif self.path.suffix == ".npz":
            with np.load(self.path, allow_pickle=False) as data:
                if "arr_0" not in data.files:
                    raise HarnessError(f"{self.path}: expected images under key 'arr_0' (ADM format)")
                self.array = data["arr_0"]
            if self.array.dtype != np.uint8 or self.array.ndim != 4 or self.array.shape[-1] != 3:
                raise HarnessError(f"{self.path}: arr_0 is {self.array.dtype} {self.array.shape}; expected "
                                   f"uint8 (N, H, W, 3)")
            self.files = []
            self.array_decoded = Counter({NPZ_DECODED: len(self.array)})
        else:
            raise HarnessError(f"{self.path}: not a folder of images or an .npz of images")

    @classmethod
    def from_array(cls, array: np.ndarray, label: str, decoded: Counter[str]) -> ImageSource:
        """uint8 (N, H, W, 3) images held in memory; ``decoded`` counts how each was converted."""
        source = cls.__new__(cls)
        source.path, source.label, source.files, source.array = Path(label), label, [], array
        source.decoded, source.array_decoded, source.pixel_digest = Counter(), decoded, None
        return source

    def __len__(self) -> int:
        return len(self.files) if self.array is None else len(self.array)

    @property
    def name(self) -> str:
        return self.path.name if self.files else self.label

    @cached_property
    def digest(self) -> str:
        """Content digest: relative paths and bytes of every file (or the array's bytes); never names alone."""
        h = hashlib.sha256()
        if self.array is None:
            for p in self.files:
                h.update(str(p.relative_to(self.path)).encode() + b"\0" + p.read_bytes())
        else:
            h.update(np.ascontiguousarray(self.array).tobytes())
        return h.hexdigest()[:24]

    def check_files(self) -> None:
        """Unreadable files and unsupported modes, refused from their headers before any compute."""
        thread_map(check_file, self.files)

    def batches(self) -> Iterator[np.ndarray]:
        """uint8 (B, H, W, 3) batches in order; a batch never mixes image sizes. ``decoded`` counts the
        conversion of each image (harness/images.py) over this pass; after a whole pass ``pixel_digest`` is a
        digest of the decoded images in order, the same for a folder and an array of the same pixels."""
        pixels = hashlib.sha256()
        for batch in self._batches():
            for image in batch:
                pixels.update(str(image.shape).encode() + np.ascontiguousarray(image).tobytes())
            yield batch
        self.pixel_digest = pixels.hexdigest()[:24]

    def _batches(self) -> Iterator[np.ndarray]:
        self.decoded = Counter()
        if self.array is not None:
            self.decoded = Counter(self.array_decoded)
            for start in range(0, len(self.array), BATCH):
                yield self.array[start:start + BATCH]
            return
        pending: list[np.ndarray] = []
        for image, how in prefetched_map(decode_file, self.files, ahead=BATCH):  # decoding overlaps extraction
            self.decoded[how] += 1
            if pending and (image.shape != pending[0].shape or len(pending) == BATCH):
                yield np.stack(pending)
                pending = []
            pending.append(image)
        yield np.stack(pending)


def _is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")  # a tensor exists only if torch was imported: never import it here
    return torch is not None and isinstance(value, torch.Tensor)


def _to_uint8(x: np.ndarray, where: str, kind: str) -> tuple[np.ndarray, str]:
    """A channels-last (N, H, W, C) or (N, H, W) array of an allowed dtype → uint8 (N, H, W, 3)."""
    if x.dtype == np.uint8:
        how = "uint8"
    elif np.issubdtype(x.dtype, np.floating):
        values = x.astype(np.float64)
        if x.size and not (np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0):
            finite = values[np.isfinite(values)]
            found = f"{finite.min():g}..{finite.max():g}" if finite.size else "no finite values"
            raise HarnessError(f"{where}: float {kind} with values {found}"
                               f"{', with NaN/Inf' if finite.size < values.size else ''}; float images must lie in "
                               f"[0, 1] (or pass uint8 0..255)")
        x, how = np.rint(values * 255.0).astype(np.uint8), "float [0,1]→uint8 (round(255·v))"
    else:
        raise HarnessError(f"{where}: {kind} of dtype {x.dtype}; expected uint8 (0..255) or float in [0, 1]")
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim == 3:
        return np.repeat(x[..., None], 3, axis=-1), f"{how} grey {kind}→RGB"
    if x.ndim == 4 and x.shape[-1] == 3:
        return x, f"{how} RGB {kind}"
    raise HarnessError(f"{where}: {kind} of shape {tuple(x.shape)}; expected (N, H, W, 3), (N, H, W, 1) or "
                       f"(N, H, W)" + (" channels-last" if kind == "array" else ""))


def _batch_to_uint8(value: Any, where: str) -> tuple[np.ndarray, str]:
    """One array / tensor of N images → uint8 (N, H, W, 3) and the conversion label."""
    if _is_tensor(value):
        x = value.detach().cpu()
        if x.ndim == 4 and x.shape[1] in (1, 3):  # torch's channels-first convention
            x = x.permute(0, 2, 3, 1)
        if str(x.dtype) == "torch.bfloat16":  # numpy has no bfloat16; float32 holds it exactly
            x = x.float()
        return _to_uint8(x.numpy(), where, "tensor")
    return _to_uint8(np.asarray(value), where, "array")


def _one_image(item: Any, where: str) -> tuple[np.ndarray, str]:
    """One image of an iterable: a PIL image (the file decoder's rules) or one (H, W[, C]) array / tensor."""
    from PIL import Image

    if isinstance(item, Image.Image):
        return to_rgb(item, where)
    if isinstance(item, np.ndarray) or _is_tensor(item):
        if item.ndim not in (2, 3):
            raise HarnessError(f"{where}: an image of shape {tuple(item.shape)}; expected (H, W), (H, W, C) or, "
                               f"for a tensor, (C, H, W)")
        image, how = _batch_to_uint8(item[None], where)
        return image[0], how.replace(" array", " image").replace(" tensor", " image")
    raise HarnessError(f"{where}: a {type(item).__name__}; expected a PIL image or a numpy array / torch tensor")


def image_source(images: Any, what: str = "images") -> ImageSource:
    """The ``images`` argument of ``harness.score``: a folder / .npz path, an array, a tensor or an iterable of
    PIL images (or single-image arrays), all of one size. ``what`` names the argument in messages."""
    if isinstance(images, (str, os.PathLike)):
        return ImageSource(Path(images))
    if isinstance(images, np.ndarray) or _is_tensor(images):
        array, how = _batch_to_uint8(images, what)
        if len(array) == 0:
            raise HarnessError(f"{what}: no images (an empty {'tensor' if _is_tensor(images) else 'array'})")
        label = f"<{what}: {'tensor' if _is_tensor(images) else 'array'} of {len(array)} images {array.shape[1:3]}>"
        return ImageSource.from_array(np.ascontiguousarray(array), label, Counter({how: len(array)}))
    if isinstance(images, (bytes, dict)) or not hasattr(images, "__iter__") or hasattr(images, "getpixel"):
        raise HarnessError(f"{what}: a {type(images).__name__}; expected a folder or .npz path, a uint8/float "
                           f"array or tensor (N, H, W, 3), or an iterable of PIL images")
    out: list[np.ndarray] = []
    decoded: Counter[str] = Counter()
    for i, item in enumerate(images):
        image, how = _one_image(item, f"{what}[{i}]")
        if out and image.shape != out[0].shape:
            raise HarnessError(f"{what}[{i}]: size {image.shape[:2]} (H, W) but {what}[0] is {out[0].shape[:2]}; "
                               f"give images of one size")
        out.append(image)
        decoded[how] += 1
    if not out:
        raise HarnessError(f"{what}: no images (an empty {type(images).__name__})")
    label = f"<{what}: {len(out)} images {out[0].shape[:2]}>"
    return ImageSource.from_array(np.stack(out), label, decoded)
