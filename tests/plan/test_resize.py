"""`image_size`: generated images resized (PIL, LANCZOS by default) before saving, recorded in the cell id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.cli import main
from harness.errors import ProtocolError
from harness.plan.protocol import load_protocol, make_plan
from harness.plan.resize import apply_resize, parse_image_size
from harness.store import read_cell

SMOKE = ["smoke", "--set", "metrics=[]", "--set", "steps=[1]", "--set", "cfg=[1.0]", "--set", "n=3"]


def _ids(*overrides: str) -> list[str]:
    return [c.cell_id for c in make_plan(load_protocol("protocols/smoke.yaml", list(overrides))).cells]


def test_native_size_keeps_the_cell_ids_and_another_size_changes_them() -> None:
    native = _ids()
    assert _ids("image_size=28") == native  # fm-tiny makes 28 px images: nothing to resize, same ids
    resized = _ids("image_size={size: 32, filter: lanczos}")
    assert not set(resized) & set(native)
    assert _ids("image_size={size: 32, filter: bicubic}") != resized  # the filter is part of the identity


@pytest.mark.parametrize("raw, fragment", [
    ("image_size=0", "'image_size.size' has value 0; expected an integer in [8, 8192]"),
    ("image_size={size: 64, filter: nearest}", "'image_size.filter' has value 'nearest'; expected one of lanczos"),
    ("image_size={width: 64}", "key 'image_size' has value {'width': 64}"),
])
def test_bad_image_size_is_refused_with_the_key(raw: str, fragment: str) -> None:
    with pytest.raises(ProtocolError, match=fragment.replace("[", r"\[").replace("]", r"\]")
                       .replace("{", r"\{").replace("}", r"\}")):
        load_protocol("protocols/smoke.yaml", [raw])


def test_run_saves_resized_pngs_equal_to_pil_lanczos_of_the_native_images(tmp_path: Path) -> None:
    assert main(["run", *SMOKE, "--results", str(tmp_path / "native"), "--executor", "debug"]) == 0
    assert main(["run", *SMOKE, "--set", "image_size=64", "--results", str(tmp_path / "big"),
                 "--executor", "debug"]) == 0
    (native_cell,) = (tmp_path / "native" / "cells").iterdir()
    (big_cell,) = (tmp_path / "big" / "cells").iterdir()
    assert read_cell(big_cell).resize == (64, "lanczos") and read_cell(native_cell).resize is None
    for i in range(3):
        small = np.asarray(Image.open(native_cell / "images" / f"{i:07d}.png"))
        big = np.asarray(Image.open(big_cell / "images" / f"{i:07d}.png"))
        assert small.shape == (28, 28, 3) and big.shape == (64, 64, 3)
        expected = np.asarray(Image.fromarray(small).resize((64, 64), Image.Resampling.LANCZOS))
        np.testing.assert_array_equal(big, expected)  # same seeds: the native pixels, then PIL LANCZOS


def test_apply_resize_is_identity_without_a_resize() -> None:
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert apply_resize(image, None) is image
    assert parse_image_size("p.yaml", None) is None
