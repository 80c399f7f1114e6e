"""Image files written byte by byte for the decoder tests (independent of Pillow's encoders)."""

from __future__ import annotations

import struct
import zlib

import numpy as np


def _chunk(tag: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))


def png16(values: np.ndarray, colour_type: int) -> bytes:
    """A 16-bit PNG written byte by byte (grey 0, RGB 2, grey+alpha 4, RGBA 6): an independent encoder."""
    h, w = values.shape[:2]
    raw = values.astype(">u2").reshape(h, -1).view(np.uint8)
    rows = np.concatenate([np.zeros((h, 1), np.uint8), raw], axis=1)
    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes()))
            + _chunk(b"IEND", b""))
