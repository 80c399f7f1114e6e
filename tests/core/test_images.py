"""One image decoder (harness/images.py): a corpus of odd images, one per PIL mode, each written to a file and
decoded, checked against an expected array computed here from the raw values with plain float arithmetic."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from harness.errors import HarnessError
from harness.images import decode_bytes, decode_file, to_rgb
from tests.support.image_files import png16

RNG = np.random.default_rng(14)
H, W = 5, 7


def _nearest(x: np.ndarray) -> np.ndarray:
    """Round half up in float64 (the expected values never sit on a tie)."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.uint8)


def _grey3(values: np.ndarray) -> np.ndarray:
    return np.stack([values] * 3, axis=-1).astype(np.uint8)


def _over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float64)[..., None] / 255.0
    return _nearest(rgb * a + 255.0 * (1.0 - a))


def _case_grey16():
    v = RNG.integers(0, 65536, (H, W))
    v[0, :4] = [0, 65535, 257 * 100, 257 * 100 + 128]  # exact levels and the largest offset rounding down
    return png16(v, 0), "png", _grey3(_nearest(v / 257.0)), "I;16→RGB (÷257)"


def _case_rgb16():
    v = RNG.integers(0, 65536, (H, W, 3))
    return png16(v, 2), "png", (v // 256).astype(np.uint8), "RGB;16B→RGB (high byte ⌊v/256⌋)"


def _case_rgba16():
    v = RNG.integers(0, 65536, (H, W, 4))
    hi = v // 256
    label = "RGBA;16B→RGB (alpha over white, high byte ⌊v/256⌋)"
    return png16(v, 6), "png", _over_white(hi[..., :3], hi[..., 3]), label


def _saved(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def _case_i16_tiff():
    v = RNG.integers(0, 65536, (H, W)).astype(np.uint16)
    return _saved(Image.fromarray(v), "TIFF"), "tif", _grey3(_nearest(v / 257.0)), "I;16→RGB (÷257)"


def _case_i32():
    v = RNG.integers(0, 2**31 - 1, (H, W)).astype(np.int32)
    v[0, :2] = [0, 2**31 - 1]
    return (_saved(Image.fromarray(v), "TIFF"), "tif", _grey3(_nearest(v * 255.0 / (2**31 - 1))),
            "I→RGB (×255/(2³¹−1))")


def _case_float():
    v = RNG.random((H, W)).astype(np.float32)
    v[0, :2] = [0.0, 1.0]
    expected = _grey3(_nearest(v.astype(np.float64) * 255.0))
    return _saved(Image.fromarray(v), "TIFF"), "tif", expected, "F→RGB (×255, [0,1])"


def _case_rgba():
    v = RNG.integers(0, 256, (H, W, 4)).astype(np.uint8)
    v[0, 0, 3], v[0, 1, 3] = 0, 255
    expected = _over_white(v[..., :3], v[..., 3])
    return _saved(Image.fromarray(v, "RGBA"), "PNG"), "png", expected, "RGBA→RGB (alpha over white)"


def _case_rgba_opaque():
    v = RNG.integers(0, 256, (H, W, 4)).astype(np.uint8)
    v[..., 3] = 255
    return _saved(Image.fromarray(v, "RGBA"), "PNG"), "png", v[..., :3].copy(), "RGBA→RGB (opaque alpha dropped)"


def _case_la():
    v = RNG.integers(0, 256, (H, W, 2)).astype(np.uint8)
    expected = _over_white(_grey3(v[..., 0]), v[..., 1])
    return _saved(Image.fromarray(v, "LA"), "PNG"), "png", expected, "LA→RGB (alpha over white)"


def _palette_image(transparent: int | None):
    palette = RNG.integers(0, 256, (16, 3)).astype(np.uint8)
    index = RNG.integers(0, 16, (H, W)).astype(np.uint8)
    index[0, :2] = [3, 4]  # the transparent entry and an opaque one are both used
    image = Image.fromarray(index, "P")
    image.putpalette(palette.ravel().tolist())
    if transparent is not None:
        image.info["transparency"] = transparent
    return image, palette, index


def _case_palette():
    image, palette, index = _palette_image(None)
    return _saved(image, "PNG"), "png", palette[index], "P→RGB (palette)"


def _case_palette_transparency():
    image, palette, index = _palette_image(3)
    alpha = np.where(index == 3, 0, 255)
    buf = io.BytesIO()
    image.save(buf, format="PNG", transparency=3)
    return buf.getvalue(), "png", _over_white(palette[index], alpha), "P→RGB (alpha over white)"


def _case_bilevel():
    bits = RNG.integers(0, 2, (H, W)).astype(bool)
    return _saved(Image.fromarray(bits), "PNG"), "png", _grey3(bits * 255), "1→RGB (×255)"


def _case_grey():
    v = RNG.integers(0, 256, (H, W)).astype(np.uint8)
    return _saved(Image.fromarray(v), "PNG"), "png", _grey3(v), "L→RGB"


def _case_rgb():
    v = RNG.integers(0, 256, (H, W, 3)).astype(np.uint8)
    return _saved(Image.fromarray(v), "PNG"), "png", v, "RGB"


def _case_cmyk():
    v = RNG.integers(0, 256, (H, W, 4)).astype(np.uint8)
    c = v.astype(np.float64)
    expected = _nearest((255.0 - c[..., :3]) * (255.0 - c[..., 3:]) / 255.0)
    image = Image.frombytes("CMYK", (W, H), v.tobytes())
    return _saved(image, "TIFF"), "tif", expected, "CMYK→RGB ((255−c)(255−k)/255)"


def _case_ycbcr():
    v = RNG.integers(0, 256, (H, W, 3)).astype(np.uint8)
    expected = np.empty_like(v)
    for (i, j), _ in np.ndenumerate(v[..., 0]):  # one pixel at a time, JFIF's equations as written
        y, cb, cr = (float(x) for x in v[i, j])
        rgb = (y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128), y + 1.772 * (cb - 128))
        expected[i, j] = [min(255, max(0, int(np.floor(x + 0.5)))) for x in rgb]
    return _saved(Image.frombytes("YCbCr", (W, H), v.tobytes()), "TIFF"), "tif", expected, "YCbCr→RGB (JFIF BT.601)"


CASES = {f.__name__[6:]: f for f in (_case_grey16, _case_rgb16, _case_rgba16, _case_i16_tiff, _case_i32, _case_float,
                                     _case_rgba, _case_rgba_opaque, _case_la, _case_palette,
                                     _case_palette_transparency, _case_bilevel, _case_grey, _case_rgb, _case_cmyk,
                                     _case_ycbcr)}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_mode_decodes_to_its_stated_rgb(name, tmp_path):
    data, suffix, expected, label = CASES[name]()
    path = tmp_path / f"{name}.{suffix}"
    path.write_bytes(data)
    array, got = decode_file(path)
    assert got == label
    assert array.dtype == np.uint8 and array.shape == (H, W, 3)
    np.testing.assert_array_equal(array, expected)
    again, _ = decode_bytes(data, name)  # the in-memory path (run-directory PNGs, parquet rows) agrees
    np.testing.assert_array_equal(again, expected)


def test_sixteen_bit_grey_is_not_clipped_to_black_and_white(tmp_path):
    """The bug: PIL's convert("RGB") maps every 16-bit value above 255 to 255."""
    levels = np.arange(256)
    path = tmp_path / "ramp.png"
    path.write_bytes(png16((levels * 257).reshape(16, 16), 0))
    array, _ = decode_file(path)
    np.testing.assert_array_equal(array[..., 0].ravel(), levels)


@pytest.mark.parametrize(("image", "message"), [
    (Image.new("LAB", (3, 2)), "mode LAB is not supported"),
    (Image.new("HSV", (3, 2)), "mode HSV is not supported"),
    (Image.new("RGBa", (3, 2)), "mode RGBa is not supported"),
    (Image.fromarray(np.full((2, 3), 2.5, np.float32)), "mode F values 2.5..2.5; float [0, 1] expects 0..1"),
    (Image.fromarray(np.array([[np.nan, 0.5]], np.float32)), "with NaN/Inf"),
    (Image.fromarray(np.array([[-3, 7]], np.int32)), "mode I values -3..7"),
])
def test_modes_without_a_stated_rule_are_refused_by_name(image, message):
    with pytest.raises(HarnessError, match=message.replace("[", r"\[").replace("(", r"\(")):
        to_rgb(image, "odd.tif")
    with pytest.raises(HarnessError, match="odd.tif"):
        to_rgb(image, "odd.tif")


def test_multi_frame_and_unreadable_files_are_refused(tmp_path):
    frames = [Image.new("L", (4, 4), v) for v in (0, 255)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    with pytest.raises(HarnessError, match=r"anim.gif: 2 frames"):
        decode_file(gif)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(HarnessError, match=r"bad.png: unreadable image"):
        decode_file(bad)


@pytest.mark.parametrize(("mode", "layout"), [("I;16", "<u2"), ("I;16L", "<u2"), ("I;16B", ">u2"), ("I;16N", "=u2")])
def test_sixteen_bit_byte_orders(mode, layout):
    values = RNG.integers(0, 65536, (H, W))
    image = Image.frombytes(mode, (W, H), values.astype(layout).tobytes())
    array, label = to_rgb(image, "in memory")
    assert label == f"{mode}→RGB (÷257)"
    np.testing.assert_array_equal(array, _grey3(_nearest(values / 257.0)))
