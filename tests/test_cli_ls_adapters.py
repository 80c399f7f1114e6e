"""`harness ls adapters`: every family with its conditioning, guidance kind, knobs, samplers and NFE rule."""

from __future__ import annotations

import pytest

from harness.adapters import discover
from harness.cli import main


@pytest.fixture(scope="module")
def listing() -> dict[str, str]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["ls", "adapters"]) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == "adapters:"
    return {line.split()[0]: line for line in lines[1:] if line.startswith("  ") and not line.startswith("    ")}


def test_every_family_is_listed(listing: dict[str, str]) -> None:
    assert set(listing) == set(discover())


@pytest.mark.parametrize("family, fragments", [
    ("sd3", ["text", "guidance=cfg", "knobs=none", "nfe/sample=steps at cfg=0; 2*steps at cfg=7"]),
    ("flux", ["guidance=embedded", "knobs=true_cfg_scale", "nfe/sample=steps "]),
    ("soflow", ["class", "guidance=none", "samplers=renoise", "nfe/sample=steps "]),
    ("dmd2", ["guidance=none", "samplers=lcm", "cards=dmd2-sdxl-1step,dmd2-sdxl-4step"]),
    ("hyper_sdxl", ["samplers=tcd,ddim"]),
    ("imf", ["guidance=interval", "knobs=t_min,t_max"]),
])
def test_capabilities_per_family(listing: dict[str, str], family: str, fragments: list[str]) -> None:
    for fragment in fragments:
        assert fragment in listing[family], (family, fragment, listing[family])
